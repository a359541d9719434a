package wireguard

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// ipv4 is a minimal IPv4 packet from src to dst with payload (UDP
// protocol number; no checksum: the device does not look).
func ipv4(src, dst string, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 17
	copy(b[12:16], netip.MustParseAddr(src).AsSlice())
	copy(b[16:20], netip.MustParseAddr(dst).AsSlice())
	copy(b[20:], payload)
	return b
}

type node struct {
	c    *Conn
	key  Key
	addr netip.AddrPort
	in   chan batch // what the node's reader read
	pod  string     // an address behind it, for tests that set one
}

// batch is one ReadBatch's messages.
type batch struct {
	msgs [][]byte
	segs []int
	from []netip.AddrPort
}

func listen(t *testing.T) node {
	t.Helper()
	return listenWith(t, Options{})
}

// listenWith starts a Conn with a new key, MTU 1420 and the test's log,
// and its reader.
func listenWith(t *testing.T, opts Options) node {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	opts.PrivateKey, opts.MTU, opts.Logger = k, 1420, zaptest.NewLogger(t)
	c, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	n := node{c: c, key: k, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.LocalAddr().Port()), in: make(chan batch, 64)}
	done := make(chan struct{})
	go read(c, n.in, done)
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return n
}

// read is a router's overlay reader: it calls ReadBatch, which also
// answers handshakes, until c is closed, and passes on what it reads
// (dropped when nobody takes it). It closes done as it returns.
func read(c *Conn, in chan<- batch, done chan<- struct{}) {
	defer close(done)
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes, segSizes, froms := make([]int, 8), make([]int, 8), make([]netip.AddrPort, 8)
	for {
		n, err := c.ReadBatch(bufs, sizes, segSizes, froms)
		if err != nil {
			return
		}
		var b batch
		for i := range n {
			b.msgs = append(b.msgs, bytes.Clone(bufs[i][:sizes[i]]))
		}
		b.segs, b.from = slices.Clone(segSizes[:n]), slices.Clone(froms[:n])
		select {
		case in <- b:
		default:
		}
	}
}

func peerOf(name string, n node, cidr string) Peer {
	return Peer{Name: name, PublicKey: n.key.Public(), Endpoint: n.addr, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(cidr)}}
}

// waitUp waits until c has a session with every peer: the lower key of
// each pair starts it with a keepalive.
func waitUp(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps, err := c.Peers()
		if err != nil {
			t.Fatal(err)
		}
		up := len(ps) > 0
		for _, p := range ps {
			up = up && p.Up(time.Now())
		}
		if up {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session within 15 s: %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readOne waits for n's reader's next batch.
func readOne(t *testing.T, n node) (msgs [][]byte, segs []int, from []netip.AddrPort) {
	t.Helper()
	select {
	case b := <-n.in:
		return b.msgs, b.segs, b.from
	case <-time.After(10 * time.Second):
		t.Fatal("no packet within 10 s")
		return nil, nil, nil
	}
}

func TestConnCarriesPacketsBothWays(t *testing.T) {
	a, b := listen(t), listen(t)
	// The higher key's side first: the lower key's keepalive then starts
	// a handshake the other side can answer at once (else it is refused,
	// and retried 5 s later).
	first, second := func() error { return a.c.SetPeers([]Peer{peerOf("b", b, "10.244.1.0/24")}) },
		func() error { return b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}) }
	if pa, pb := a.key.Public(), b.key.Public(); bytes.Compare(pa[:], pb[:]) < 0 {
		first, second = second, first
	}
	if err := first(); err != nil {
		t.Fatal(err)
	}
	if err := second(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, a.c)
	// Three packets in one write, the last shorter.
	var batch []byte
	for i := range 3 {
		n := 100
		if i == 2 {
			n = 40
		}
		batch = append(batch, ipv4("10.244.0.5", "10.244.1.7", bytes.Repeat([]byte{byte('a' + i)}, n))...)
	}
	if err := a.c.WriteBatch(batch, 120, b.addr); err != nil {
		t.Fatal(err)
	}
	// The default socket reads a datagram at a time: a message each.
	var got []byte
	for len(got) < len(batch) {
		msgs, segs, from := readOne(t, b)
		for i, m := range msgs {
			if from[i] != a.addr {
				t.Errorf("message %d from %v, want %v", i, from[i], a.addr)
			}
			if segs[i] != 120 && segs[i] != len(m) {
				t.Errorf("message %d of %d bytes: segment size %d, want 120", i, len(m), segs[i])
			}
			got = append(got, m...)
		}
	}
	if !bytes.Equal(got, batch) {
		t.Fatalf("received %d bytes, want the %d sent", len(got), len(batch))
	}

	// And back.
	reply := ipv4("10.244.1.7", "10.244.0.5", []byte("pong"))
	if err := b.c.WriteBatch(reply, len(reply), a.addr); err != nil {
		t.Fatal(err)
	}
	msgs, _, from := readOne(t, a)
	if len(msgs) != 1 || !bytes.Equal(msgs[0], reply) || from[0] != b.addr {
		t.Fatalf("reply: %d messages from %v", len(msgs), from)
	}

	ps, err := a.c.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Name != "b" || !ps[0].Up(time.Now()) || ps[0].Handshakes < 1 || ps[0].RxBytes == 0 {
		t.Fatalf("peer status %+v, want b up after one handshake", ps)
	}
	if s := a.c.Stats(); s.InitiationsSent+s.InitiationsReceived == 0 || s.ResponsesSent+s.ResponsesReceived < 1 {
		t.Fatalf("handshake counters %+v", s)
	}
}

func TestConnRefusesPlainAndUnknownKeys(t *testing.T) {
	a, b := listen(t), listen(t)
	// b knows a, a does not know b: b's handshakes are refused.
	if err := b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := b.c.WriteBatch(ipv4("10.244.1.7", "10.244.0.5", []byte("x")), 100, a.addr); err != nil {
		t.Fatal(err)
	}
	// A plain overlay datagram: an IP packet in UDP.
	u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write(ipv4("10.244.1.7", "10.244.0.5", []byte("plain"))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := a.c.Stats()
		if s.Refused[RefusedUnknownKey] > 0 && s.Refused[RefusedNotWireGuard] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals %v, want unknown_key and not_wireguard", s.Refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnSetPeersRefusesBadKeys(t *testing.T) {
	a, b := listen(t), listen(t)
	pb := peerOf("b", b, "10.244.1.0/24")
	for name, peers := range map[string][]Peer{
		"no key":    {{Name: "x", Endpoint: b.addr}},
		"own key":   {{Name: "x", PublicKey: a.key.Public(), Endpoint: b.addr}},
		"duplicate": {pb, {Name: "c", PublicKey: pb.PublicKey, Endpoint: a.addr}},
	} {
		if err := a.c.SetPeers(peers); err == nil {
			t.Errorf("%s: SetPeers succeeded", name)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseKey(" " + k.String() + "\n")
	if err != nil || p != k {
		t.Fatalf("ParseKey(String()) = %v, %v", p, err)
	}
	for _, bad := range []string{"", "abc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", k.String() + "AA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) succeeded", bad)
		}
	}
	// The RFC 7748 test vector: Alice's private and public keys.
	priv := Key{0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a}
	want := Key{0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a}
	if got := priv.Public(); got != want {
		t.Fatalf("Public() = %x, want %x", got, want)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "wireguard.key")
	k, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first load: %v, created %v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
	again, created, err := LoadOrCreateKey(path)
	if err != nil || created || again != k {
		t.Fatalf("second load: %v, created %v, same key %v", err, created, again == k)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("a world-readable key file was accepted")
	}
	if err := os.WriteFile(path, []byte("nonsense"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); err == nil {
		t.Fatal("a key file of nonsense was accepted")
	}
}

func TestListenPortInUse(t *testing.T) {
	a := listen(t)
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Listen(Options{PrivateKey: k, MTU: 1420, Port: a.addr.Port()})
	if err == nil {
		b.Close()
		t.Fatalf("a second device listened on port %d", a.addr.Port())
	}
	if want := "address already in use"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Listen on a taken port: %v, want it to say %q", err, want)
	}
}

// TestGreetStartsSessionSoon: the lower key's first handshake reaches a
// router that does not know it yet and is refused; WireGuard would retry
// it 5 s later, but the higher key greets a second after it learns the
// peer, so the session is up well before.
func TestGreetStartsSessionSoon(t *testing.T) {
	a, b := listen(t), listen(t)
	if pa, pb := a.key.Public(), b.key.Public(); bytes.Compare(pa[:], pb[:]) > 0 {
		a, b = b, a // a: the lower key
	}
	if err := a.c.SetPeers([]Peer{peerOf("b", b, "10.244.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for a.c.Stats().InitiationsSent == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the lower key sent no handshake initiation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for b.c.Stats().Refused[RefusedUnknownKey] == 0 { // b does not know a yet
		if time.Now().After(deadline) {
			t.Fatal("the higher key did not refuse the lower key's first handshake")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, b.c)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("session up %v after the higher key learned its peer, want about %v", took, greetDelay)
	}
	if b.c.Stats().InitiationsSent == 0 {
		t.Fatal("the higher key started no handshake")
	}
}
