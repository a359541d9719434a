package wireguard

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

func TestReplayFilter(t *testing.T) {
	var f replayFilter
	accept := func(ctr uint64, want bool) {
		t.Helper()
		if got := f.accept(ctr); got != want {
			t.Fatalf("accept(%d) = %v, want %v", ctr, got, want)
		}
	}
	accept(0, true)
	accept(0, false)
	accept(2, true)
	accept(1, true) // late, inside the window
	accept(1, false)
	accept(5000, true)
	accept(5000-replayWindow, true) // the oldest the window holds
	accept(5000-replayWindow-1, false)
	accept(4999, true)
	accept(3000, false) // far behind
	accept(5000+10*replayWindow, true)
	accept(5001, false)
	// A jump of one block clears only that block.
	f = replayFilter{}
	for i := range uint64(200) {
		accept(i, true)
	}
	accept(64*3+5, false)
	accept(264, true)
	accept(64*3+5, false)
	accept(263, true)
}

// recorder is a Socket that keeps a copy of every datagram it sends.
type recorder struct {
	Socket
	mu   sync.Mutex
	sent [][]byte
}

func (r *recorder) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	r.mu.Lock()
	for off := 0; off < len(b); off += segSize {
		r.sent = append(r.sent, bytes.Clone(b[off:min(off+segSize, len(b))]))
	}
	r.mu.Unlock()
	return r.Socket.WriteBatch(b, segSize, addr)
}

func (r *recorder) last(typ byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.sent) - 1; i >= 0; i-- {
		if r.sent[i][0] == typ {
			return r.sent[i]
		}
	}
	return nil
}

// pair is two Conns that know each other, with a session up; a's socket
// records what it sends.
func pair(t *testing.T) (a, b node, rec *recorder) {
	t.Helper()
	s, err := listenStd(0)
	if err != nil {
		t.Fatal(err)
	}
	rec = &recorder{Socket: s}
	a, b = pairOn(t, rec)
	return a, b, rec
}

// pairOn is pair with a on socket s.
func pairOn(t *testing.T, s Socket) (a, b node) {
	t.Helper()
	a, b = listenOn(t, s), listen(t)
	if err := b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := a.c.SetPeers([]Peer{peerOf("b", b, "10.244.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, a.c)
	waitUp(t, b.c)
	a.pod, b.pod = "10.244.0.5", "10.244.1.7"
	return a, b
}

// exchange sends a packet each way between the pods behind a and b and
// checks both arrive.
func exchange(t *testing.T, a, b node, payload string) {
	t.Helper()
	p := ipv4(a.pod, b.pod, []byte(payload))
	if err := a.c.WriteBatch(p, len(p), b.addr); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := readOne(t, b); len(msgs) != 1 || !bytes.Equal(msgs[0], p) {
		t.Fatalf("b received %q, want %q", msgs, p)
	}
	q := ipv4(b.pod, a.pod, []byte(payload))
	if err := b.c.WriteBatch(q, len(q), a.addr); err != nil {
		t.Fatal(err)
	}
	if msgs, _, _ := readOne(t, a); len(msgs) != 1 || !bytes.Equal(msgs[0], q) {
		t.Fatalf("a received %q, want %q", msgs, q)
	}
}

// TestTransportReplayRefused: a transport message sent again, from
// anywhere, is refused and does not move the peer's endpoint.
func TestTransportReplayRefused(t *testing.T) {
	a, b, rec := pair(t)
	exchange(t, a, b, "once")
	msg := rec.last(msgTransport)
	if msg == nil {
		t.Fatal("a sent no transport message")
	}
	u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	before := b.c.Stats().Refused[RefusedUnauthenticated]
	if _, err := u.Write(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.c.Stats().Refused[RefusedUnauthenticated] == before {
		if time.Now().After(deadline) {
			t.Fatal("the replayed message was not refused")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case got := <-b.in:
		t.Fatalf("the replayed message reached the router: %q", got.msgs)
	case <-time.After(100 * time.Millisecond):
	}
	if ps, _ := b.c.Peers(); len(ps) != 1 || ps[0].Endpoint != a.addr {
		t.Fatalf("a's endpoint at b after the replay: %+v, want %v", ps, a.addr)
	}
	// A forged one (a flipped bit) is refused too.
	msg[len(msg)-1] ^= 1
	if _, err := u.Write(msg); err != nil {
		t.Fatal(err)
	}
	for b.c.Stats().Refused[RefusedUnauthenticated] < before+2 {
		if time.Now().After(deadline) {
			t.Fatal("the forged message was not refused")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// age moves c's clock d ahead: its sessions, handshakes and timers are d
// older.
func age(c *Conn, d time.Duration) { c.skew.Add(int64(d)) }

// TestRekey: the initiator of a session older than Rekey-After-Time
// handshakes again as it sends; a session older than Reject-After-Time
// sends nothing, and what waits for the new one arrives after it.
func TestRekey(t *testing.T) {
	a, b, _ := pair(t)
	exchange(t, a, b, "before")
	ini, resp := a, b
	if kp := a.c.peers[b.key.Public()].current.Load(); !kp.initiator {
		ini, resp = b, a
	}
	hs := func(n node) uint64 {
		ps, _ := n.c.Peers()
		return ps[0].Handshakes
	}
	before := hs(ini)
	// A responder takes an initiation a peer sends within 50 ms of its
	// last (or within its timestamp's 16 ms) for a replay.
	time.Sleep(2 * initiationInterval)
	age(ini.c, rekeyAfterTime+time.Second)
	exchange(t, ini, resp, "rekey") // goes under the old session, starts a handshake
	deadline := time.Now().Add(5 * time.Second)
	for hs(ini) == before {
		if time.Now().After(deadline) {
			t.Fatal("no new handshake after Rekey-After-Time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	exchange(t, ini, resp, "after rekey")
	if ps, _ := ini.c.Peers(); ps[0].Rekeys == 0 {
		t.Fatalf("peer status %+v, want a rekey", ps[0])
	}

	// Past Reject-After-Time on the responder's side: it may not send
	// under the session; its packet waits for a handshake it starts.
	before = hs(resp)
	time.Sleep(2 * initiationInterval)
	age(resp.c, rejectAfterTime+time.Second)
	exchange(t, resp, ini, "expired")
	if hs(resp) == before {
		t.Fatal("the packet crossed without a new handshake")
	}
}

// listenOn is listen on socket s.
func listenOn(t *testing.T, s Socket) node {
	t.Helper()
	return listenWith(t, Options{Socket: s})
}

// TestCookieReply: a peer under load answers an initiation with a cookie
// reply; the retry carries mac2 keyed with that cookie (the paper,
// section 5.4.7), which such a peer requires.
func TestCookieReply(t *testing.T) {
	a := listen(t)
	// The "peer": a bare UDP socket with a key.
	kb, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	bAddr := u.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := a.c.SetPeers([]Peer{{Name: "b", PublicKey: kb.Public(), Endpoint: bAddr, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}}); err != nil {
		t.Fatal(err)
	}
	p := ipv4("10.244.0.5", "10.244.1.7", []byte("x"))
	if err := a.c.WriteBatch(p, len(p), bAddr); err != nil {
		t.Fatal(err)
	}
	readInitiation := func() []byte {
		t.Helper()
		buf := make([]byte, 2048)
		for {
			_ = u.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("no initiation: %v", err)
			}
			if n == initiationSize && buf[0] == msgInitiation {
				return bytes.Clone(buf[:n])
			}
		}
	}
	ini := readInitiation()
	if !checkMAC1(ini, macKeysOf(kb.Public())) {
		t.Fatal("the initiation's mac1 is not keyed to the peer's public key")
	}
	if !bytes.Equal(ini[132:148], make([]byte, 16)) {
		t.Fatal("mac2 set without a cookie")
	}
	// The cookie reply: the cookie sealed under HASH("cookie--" || b's
	// public key) with a random 24-byte nonce, bound to the initiation's
	// mac1, to a's index.
	cookie := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	reply := make([]byte, cookieSize)
	reply[0] = msgCookie
	copy(reply[4:8], ini[4:8])
	copy(reply[8:32], bytes.Repeat([]byte{7}, 24))
	aead, err := chacha20poly1305.NewX(func() []byte { k := hashOf(labelCookie, kb.Public()); return k[:] }())
	if err != nil {
		t.Fatal(err)
	}
	aead.Seal(reply[32:32], reply[8:32], cookie[:], ini[116:132])
	if _, err := u.WriteToUDPAddrPort(reply, a.addr); err != nil {
		t.Fatal(err)
	}
	// Wait until a has taken the cookie, then have it retry at once
	// (rather than after Rekey-Timeout).
	pa := a.c.peers[kb.Public()]
	deadline := time.Now().Add(5 * time.Second)
	for {
		pa.mu.Lock()
		got := pa.cookieAt
		pa.mu.Unlock()
		if !got.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cookie reply was not taken: refusals %v", a.c.Stats().Refused)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.c.initiate(pa, true, time.Now())
	retry := readInitiation()
	if want := mac(cookie[:], retry[:132]); !bytes.Equal(retry[132:148], want[:]) {
		t.Fatalf("retry's mac2 %x, want %x", retry[132:148], want)
	}
	// A cookie reply to the retry's index but bound to the first
	// initiation's mac1 is refused.
	copy(reply[4:8], retry[4:8])
	before := a.c.Stats().Refused[RefusedBadMAC]
	if _, err := u.WriteToUDPAddrPort(reply, a.addr); err != nil {
		t.Fatal(err)
	}
	for a.c.Stats().Refused[RefusedBadMAC] == before {
		if time.Now().After(deadline) {
			t.Fatal("a cookie reply bound to an old initiation was taken")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnderLoad: a router flooded with handshake initiations answers
// them with cookie replies instead of computing on them, and a real
// peer's handshake still completes, its retry carrying the cookie.
func TestUnderLoad(t *testing.T) {
	a, b := listen(t), listen(t)
	if err := b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	// The flood: initiations from no peer, with a valid mac1 (b's public
	// key is public), one every 0.5 ms.
	u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	stop, flooded := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-flooded }()
	go func() {
		defer close(flooded)
		msg := make([]byte, initiationSize)
		msg[0] = msgInitiation
		keys := macKeysOf(b.key.Public())
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Microsecond):
			}
			msg[8] = byte(i)
			addMACs(msg, keys, nil)
			_, _ = u.Write(msg)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.c.Stats().Refused[RefusedUnderLoad] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("b never came under load: refusals %v", b.c.Stats().Refused)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.c.SetPeers([]Peer{peerOf("b", b, "10.244.1.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, a.c)
	waitUp(t, b.c)
	a.pod, b.pod = "10.244.0.5", "10.244.1.7"
	exchange(t, a, b, "under load")
	pb := a.c.peers[b.key.Public()]
	pb.mu.Lock()
	gotCookie := !pb.cookieAt.IsZero()
	pb.mu.Unlock()
	if !gotCookie {
		t.Fatal("a never took a cookie from b")
	}
}

// TestTransportAllocatesNothing: sealing and opening a packet, the data
// path's per-packet work, allocate nothing.
func TestTransportAllocatesNothing(t *testing.T) {
	hs := &handshake{chainKey: [32]byte{1}, initiator: true, localIndex: 7, remoteIndex: 9}
	tx := newKeypair(hs, time.Now())
	hs.initiator = false
	rx := newKeypair(hs, time.Now())
	pkt := ipv4("10.244.0.5", "10.244.1.7", make([]byte, 1000))
	buf := make([]byte, 2048)
	var ctr uint64
	allocs := testing.AllocsPerRun(100, func() {
		n := tx.sealTransport(buf, pkt, paddedLen(len(pkt), 1420), ctr)
		ctr++
		p, ok := rx.openTransport(buf[:n])
		if !ok || !bytes.Equal(p[:len(pkt)], pkt) {
			t.Fatal("the packet did not survive sealing and opening")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per packet, want 0", allocs)
	}
}

// TestKeyChangeKeepsCounts: a router's key rotated at runtime ends its
// sessions and they handshake again; each peer's handshake counters, by
// name, go on rather than start over (they are counters in metrics).
func TestKeyChangeKeepsCounts(t *testing.T) {
	a, b, _ := pair(t)
	exchange(t, a, b, "before")
	count := func(n node) uint64 {
		ps, _ := n.c.Peers()
		return ps[0].Handshakes
	}
	beforeA, beforeB := count(a), count(b)
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * initiationInterval)
	if err := a.c.SetPrivateKey(k); err != nil {
		t.Fatal(err)
	}
	if ps, _ := a.c.Peers(); ps[0].Up(time.Now()) {
		t.Fatal("the session survived the key change")
	}
	a.key = k
	if err := b.c.SetPeers([]Peer{peerOf("a", a, "10.244.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitUp(t, a.c)
	waitUp(t, b.c)
	exchange(t, a, b, "after")
	if ca, cb := count(a), count(b); ca <= beforeA || cb <= beforeB {
		t.Fatalf("handshakes after the key change: a %d (before %d), b %d (before %d); want more than before", ca, beforeA, cb, beforeB)
	}
}

// movingSocket is a Socket that can move to another local port, as a
// node whose address changes (or a NAT that rebinds) does: it sends from
// the socket of the moment and reads from all it has had.
type movingSocket struct {
	mu    sync.Mutex
	cur   *stdSocket
	all   []*stdSocket
	in    chan datagram
	close chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

func newMovingSocket(t *testing.T) *movingSocket {
	m := &movingSocket{in: make(chan datagram, 64), close: make(chan struct{})}
	m.move(t)
	return m
}

// move opens a new socket and sends from it from now on.
func (m *movingSocket) move(t *testing.T) netip.AddrPort {
	t.Helper()
	s, err := listenStd(0)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.cur = s
	m.all = append(m.all, s)
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := s.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case m.in <- datagram{bytes.Clone(buf[:n]), from}:
			case <-m.close:
				return
			}
		}
	}()
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.LocalAddr().Port())
}

func (m *movingSocket) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	select {
	case d := <-m.in:
		sizes[0] = copy(bufs[0], d.b)
		segSizes[0], from[0] = sizes[0], d.from
		return 1, nil
	case <-m.close:
		return 0, net.ErrClosed
	}
}

func (m *movingSocket) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	m.mu.Lock()
	s := m.cur
	m.mu.Unlock()
	return s.WriteBatch(b, segSize, addr)
}

func (m *movingSocket) LocalAddr() netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.all[0].LocalAddr()
}

func (m *movingSocket) Close() error {
	m.once.Do(func() {
		close(m.close)
		m.mu.Lock()
		for _, s := range m.all {
			s.Close()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
	return nil
}

// TestRoaming: a peer heard from a new address under its session is
// answered there; its configured endpoint is what the router still sees.
func TestRoaming(t *testing.T) {
	ms := newMovingSocket(t)
	a, b := pairOn(t, ms)
	exchange(t, a, b, "before")
	moved := ms.move(t)
	p := ipv4(a.pod, b.pod, []byte("from the new address"))
	if err := a.c.WriteBatch(p, len(p), b.addr); err != nil {
		t.Fatal(err)
	}
	msgs, _, from := readOne(t, b)
	if len(msgs) != 1 || !bytes.Equal(msgs[0], p) || from[0] != a.addr {
		t.Fatalf("b read %q from %v, want the packet from a's configured endpoint %v", msgs, from, a.addr)
	}
	if ps, _ := b.c.Peers(); ps[0].Endpoint != moved {
		t.Fatalf("a's endpoint at b: %v, want %v", ps[0].Endpoint, moved)
	}
	// And the session goes on, b sending to where a was last heard from.
	exchange(t, a, b, "after")
}

// TestDisallowedSource: an authenticated packet whose inner source is not
// among its peer's allowed IPs is refused, packet by packet within a run.
func TestDisallowedSource(t *testing.T) {
	a, b, _ := pair(t)
	exchange(t, a, b, "before")
	good := ipv4(a.pod, b.pod, bytes.Repeat([]byte{'g'}, 80))
	bad := ipv4("10.244.1.9", b.pod, bytes.Repeat([]byte{'b'}, 80)) // b's own range
	var run []byte
	for _, p := range [][]byte{good, bad, good} {
		run = append(run, p...)
	}
	before := b.c.Stats().Refused[RefusedDisallowedSource]
	if err := a.c.WriteBatch(run, len(good), b.addr); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for len(got) < 2 {
		msgs, _, _ := readOne(t, b)
		got = append(got, msgs...)
	}
	if !bytes.Equal(got[0], good) || !bytes.Equal(got[1], good) {
		t.Fatalf("b read %q, want the two packets from a's own addresses", got)
	}
	if n := b.c.Stats().Refused[RefusedDisallowedSource] - before; n != 1 {
		t.Fatalf("%d refused as disallowed_source, want 1", n)
	}
}
