package lb

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// persist calls n.Persist(path), fails the test on error, and stops the
// NAT's recording when the test ends.
func persist(t testing.TB, n *NAT, path string) FlowRestore {
	t.Helper()
	res, err := n.Persist(path)
	if err != nil {
		t.Fatalf("Persist(%s) = %v", path, err)
	}
	t.Cleanup(func() {
		if err := n.ClosePersist(); err != nil {
			t.Errorf("ClosePersist: %v", err)
		}
	})
	return res
}

// connect runs a TCP handshake from client to the VIP through n and
// returns the backend and the source it sees.
func connect(t *testing.T, n *NAT, client netip.AddrPort) (backend, seen netip.AddrPort) {
	t.Helper()
	syn := tcp4(client, vip, header.TCPFlagSyn, "")
	if pass, _ := ingress(t, n, true, syn); !pass {
		t.Fatalf("SYN from %s dropped; stats %+v", client, n.Stats())
	}
	seen, backend = tuple(t, syn)
	synack := tcp4(backend, seen, header.TCPFlagSyn|header.TCPFlagAck, "")
	if pass, _ := ingress(t, n, local(backend), synack); !pass {
		t.Fatalf("SYN-ACK from %s dropped", backend)
	}
	ack := tcp4(client, vip, header.TCPFlagAck, "")
	if pass, _ := ingress(t, n, true, ack); !pass {
		t.Fatalf("ACK from %s dropped", client)
	}
	return backend, seen
}

func local(backend netip.AddrPort) bool {
	return netip.MustParsePrefix("10.244.0.0/24").Contains(backend.Addr())
}

// checkFlow sends data from client through n and a reply from backend
// (as seen) and checks both translate as the connection began.
func checkFlow(t *testing.T, n *NAT, client, backend, seen netip.AddrPort) {
	t.Helper()
	data := tcp4(client, vip, header.TCPFlagAck|header.TCPFlagPsh, "after")
	if pass, reply := ingress(t, n, true, data); !pass {
		t.Fatalf("data from %s dropped (reply %x); stats %+v", client, reply, n.Stats())
	}
	if s, d := tuple(t, data); s != seen || d != backend {
		t.Errorf("data from %s went %s -> %s, want %s -> %s", client, s, d, seen, backend)
	}
	reply := tcp4(backend, seen, header.TCPFlagAck, "back")
	if pass, _ := ingress(t, n, local(backend), reply); !pass {
		t.Fatalf("reply from %s dropped", backend)
	}
	if s, d := tuple(t, reply); s != vip || d != client {
		t.Errorf("reply from %s went %s -> %s, want %s -> %s", backend, s, d, vip, client)
	}
}

// A second NAT that adopts the first one's flow file translates its
// connections as the first did: the same backend, the same hairpin
// source, UDP flows on their backend; the file then holds the flows it
// adopted and no more.
func TestPersistRestoresFlows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vr0.flows")
	svcs := []Service{makeService("default", "my-service"), makeKubeDNS()}
	a, _, _ := newTestNAT(t, NATOptions{}, svcs...)
	if res := persist(t, a, path); res != (FlowRestore{}) {
		t.Errorf("Persist on no file = %+v, want nothing found", res)
	}
	type conn struct{ client, backend, seen netip.AddrPort }
	var conns []conn
	for i := range 3 { // round-robin: the local backend and both remote ones
		c := netip.AddrPortFrom(clientA.Addr(), clientA.Port()+uint16(i))
		b, s := connect(t, a, c)
		conns = append(conns, conn{c, b, s})
	}
	q := udp4(clientA, dnsVIP, "q")
	ingress(t, a, true, q)
	_, dnsBackend := tuple(t, q)
	// A closed connection is not carried over.
	closedClient := netip.AddrPortFrom(clientA.Addr(), 50000)
	cb, cs := connect(t, a, closedClient)
	ingress(t, a, true, tcp4(closedClient, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
	ingress(t, a, local(cb), tcp4(cb, cs, header.TCPFlagFin|header.TCPFlagAck, ""))

	// The restart: a new NAT over a new Table with the same Services. No
	// ClosePersist on a: a crash does not call it either.
	b, _, clk := newTestNAT(t, NATOptions{}, svcs...)
	res := persist(t, b, path)
	if want := (FlowRestore{Restored: 5}); res != want {
		t.Errorf("Persist = %+v, want %+v (3 TCP, 1 UDP, 1 closed)", res, want)
	}
	for _, c := range conns {
		checkFlow(t, b, c.client, c.backend, c.seen)
	}
	// The round-robin picker would send a new flow to the other coredns.
	q2 := udp4(clientA, dnsVIP, "q2")
	ingress(t, b, true, q2)
	if _, d := tuple(t, q2); d != dnsBackend {
		t.Errorf("UDP flow went to %s after the restart, want its backend %s", d, dnsBackend)
	}
	if st := b.Stats(); st.Flows != 5 || st.FlowsTotal != 0 || st.MidStream != 0 {
		t.Errorf("stats after the restart = %+v, want 5 flows, none created, no mid-stream segment", st)
	}
	// Each adopted flow counts against its backend and its client again.
	e := mustLookup(t, b.table, myServiceKey)
	var active int64
	for _, bk := range e.Backends() {
		active += bk.Active()
	}
	if active != 3 {
		t.Errorf("active connections on my-service's backends = %d, want 3", active)
	}

	// A third start finds the flows b adopted, and b's changes: a
	// connection b saw end is gone from the file.
	ingress(t, b, true, tcp4(conns[0].client, vip, header.TCPFlagRst, ""))
	clk.Advance(closedLinger + time.Second)
	b.Reap()
	c, _, _ := newTestNAT(t, NATOptions{}, svcs...)
	if res := persist(t, c, path); res.Restored != 3 || res.Dropped+res.Corrupt+res.Foreign != 0 {
		t.Errorf("third Persist = %+v, want 3 restored (2 TCP, 1 UDP) and nothing skipped", res)
	}
}

// flowFileWith writes a flow file with one live TCP flow per client port
// through a NAT and returns its path and the NAT.
func flowFileWith(t *testing.T, ports ...uint16) (string, *NAT) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vr0.flows")
	a, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	persist(t, a, path)
	for _, p := range ports {
		connect(t, a, netip.AddrPortFrom(clientA.Addr(), p))
	}
	return path, a
}

// editFile applies edit to the bytes of the file at path.
func editFile(t *testing.T, path string, edit func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// restart adopts path in a new NAT with my-service and returns it with
// what Persist found.
func restart(t *testing.T, path string, services ...Service) (*NAT, FlowRestore) {
	t.Helper()
	if services == nil {
		services = []Service{makeService("default", "my-service")}
	}
	n, _, _ := newTestNAT(t, NATOptions{}, services...)
	return n, persist(t, n, path)
}

// A record is trusted only whole: damaged, cut short or from another file,
// it is skipped and counted, and the others are restored.
func TestPersistSkipsBadRecords(t *testing.T) {
	rec := func(i int) int { return flowFileHeader + i*flowRecordSize }
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want FlowRestore
	}{
		{"flipped bit", func(b []byte) []byte { b[rec(1)+40] ^= 1; return b }, FlowRestore{Restored: 2, Corrupt: 1}},
		{"checksum", func(b []byte) []byte { b[rec(0)] ^= 0xff; return b }, FlowRestore{Restored: 2, Corrupt: 1}},
		{"cut in a record", func(b []byte) []byte { return b[:rec(2)+50] }, FlowRestore{Restored: 2, Corrupt: 1}},
		{"cut at a record", func(b []byte) []byte { return b[:rec(1)] }, FlowRestore{Restored: 1}},
		{"impossible protocol", func(b []byte) []byte {
			r := b[rec(2) : rec(2)+flowRecordSize]
			r[9] = 1 // ICMP: no ports, never a flow
			binary.LittleEndian.PutUint32(r, recordSum(r))
			return b
		}, FlowRestore{Restored: 2, Corrupt: 1}},
		{"other generation", func(b []byte) []byte {
			r := b[rec(0) : rec(0)+flowRecordSize]
			g := binary.LittleEndian.Uint32(r[4:]) + 1
			binary.LittleEndian.PutUint32(r[4:], g)
			binary.LittleEndian.PutUint32(r, recordSum(r))
			return b
		}, FlowRestore{Restored: 2, Foreign: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := flowFileWith(t, 40000, 40001, 40002)
			editFile(t, path, tc.edit)
			n, res := restart(t, path)
			if res != tc.want {
				t.Errorf("Persist = %+v, want %+v", res, tc.want)
			}
			st := n.Stats()
			if st.Flows != uint64(tc.want.Restored) {
				t.Errorf("Flows = %d, want %d", st.Flows, tc.want.Restored)
			}
			if got := (FlowRestore{Restored: int(st.FileRestored), Corrupt: int(st.FileCorrupt), Foreign: int(st.FileForeign), Dropped: int(st.FileDropped)}); got != tc.want {
				t.Errorf("Stats() counts %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A file that is not a flow file of this version is refused as a whole,
// replaced by a good one, and the NAT runs.
func TestPersistRefusesBadFiles(t *testing.T) {
	header := func(edit func(h []byte)) func([]byte) []byte {
		return func(b []byte) []byte {
			edit(b[:flowFileHeader])
			binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
			return b
		}
	}
	for _, tc := range []struct {
		name, want string
		edit       func([]byte) []byte
	}{
		{"garbage", "bad magic", func([]byte) []byte { return []byte(strings.Repeat("garbage\n", 1000)) }},
		{"empty", "shorter than", func([]byte) []byte { return nil }},
		{"short header", "shorter than", func(b []byte) []byte { return b[:100] }},
		{"header checksum", "header checksum", func(b []byte) []byte { b[17] ^= 1; return b }},
		{"version", "version 2", header(func(h []byte) { binary.LittleEndian.PutUint32(h[8:], 2) })},
		{"record size", "record size 64", header(func(h []byte) { binary.LittleEndian.PutUint32(h[12:], 64) })},
		{"another boot", "before the node last booted", header(func(h []byte) { h[30] ^= 0xff })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "another boot" && bootID() == [16]byte{} {
				t.Skip("no /proc/sys/kernel/random/boot_id here")
			}
			path, _ := flowFileWith(t, 40000)
			editFile(t, path, tc.edit)
			n, res := restart(t, path)
			if !strings.Contains(res.Refused, tc.want) || res.Restored != 0 {
				t.Errorf("Persist = %+v, want refused with %q and nothing restored", res, tc.want)
			}
			if st := n.Stats(); st.FileRefused != 1 {
				t.Errorf("Stats().FileRefused = %d, want 1", st.FileRefused)
			}
			// The NAT works and records again: the next start finds its
			// new connection.
			connect(t, n, netip.AddrPortFrom(clientA.Addr(), 41000))
			if _, res := restart(t, path); res != (FlowRestore{Restored: 1}) {
				t.Errorf("Persist of the replaced file = %+v, want 1 restored", res)
			}
		})
	}
}

// Flows that no longer hold after the restart are dropped: their Service
// or backend left, or the router address moved. Their next segment is
// reset, as for any connection no flow knows.
func TestPersistDropsFlowsThatNoLongerHold(t *testing.T) {
	// Round-robin from 10.244.0.4 (local, hairpin), 10.244.1.2, 10.244.1.3.
	path, _ := flowFileWith(t, 40000, 40001, 40002)

	t.Run("backend left", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		editFile(t, path, func(b []byte) []byte { os.WriteFile(p, b, 0o600); return b })
		n, res := restart(t, p, makeService("default", "my-service", func(s *Service) {
			s.Endpoints = s.Endpoints[:2] // 10.244.1.3 left
		}))
		if res != (FlowRestore{Restored: 2, Dropped: 1}) {
			t.Errorf("Persist = %+v, want 2 restored, 1 dropped", res)
		}
		data := tcp4(netip.AddrPortFrom(clientA.Addr(), 40002), vip, header.TCPFlagAck, "x")
		if pass, reply := ingress(t, n, true, data); pass || reply == nil {
			t.Errorf("segment of the dropped flow: pass=%v reply=%v, want reset", pass, reply != nil)
		}
	})
	t.Run("service gone", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		editFile(t, path, func(b []byte) []byte { os.WriteFile(p, b, 0o600); return b })
		if _, res := restart(t, p, makeKubeDNS()); res != (FlowRestore{Dropped: 3}) {
			t.Errorf("Persist = %+v, want 3 dropped", res)
		}
	})
	t.Run("router address moved", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "f")
		editFile(t, path, func(b []byte) []byte { os.WriteFile(p, b, 0o600); return b })
		n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
		n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{netip.MustParseAddr("169.254.244.2")})
		if res := persist(t, n, p); res != (FlowRestore{Restored: 2, Dropped: 1}) {
			t.Errorf("Persist = %+v, want the hairpin flow dropped", res)
		}
	})
}

// Persist is once per NAT; after ClosePersist changes are not recorded.
func TestPersistOnce(t *testing.T) {
	path, a := flowFileWith(t, 40000)
	if _, err := a.Persist(path); err == nil {
		t.Error("second Persist succeeded, want an error")
	}
	if err := a.ClosePersist(); err != nil {
		t.Fatal(err)
	}
	connect(t, a, netip.AddrPortFrom(clientA.Addr(), 40001)) // not recorded
	if _, res := restart(t, path); res != (FlowRestore{Restored: 1}) {
		t.Errorf("Persist = %+v, want the one flow recorded before ClosePersist", res)
	}
}

// BenchmarkNATFlow runs whole TCP connections through the NAT (SYN,
// SYN-ACK, ACK, FIN both ways, reaped) and reports ns/flow, without a
// flow file and with one: the difference is what recording costs a flow.
//
//	go test -run '^$' -bench NATFlow$ ./lb/
func BenchmarkNATFlow(b *testing.B) {
	for _, file := range []bool{false, true} {
		name := "memory"
		if file {
			name = "file"
		}
		b.Run(name, func(b *testing.B) {
			clk := newFakeClock()
			table := newTable(b, Options{NodeName: masterNode, Picker: PickRoundRobin, Clock: clk})
			mustSet(b, table, makeService("default", "my-service"))
			n, err := NewNAT(table, nil, NATOptions{Clock: clk, MaxPerClient: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
			if file {
				persist(b, n, filepath.Join(tmpfsDir(b), "vr0.flows"))
			}
			var p packet.Parsed
			send := func(fromTUN bool, pkt []byte) []byte {
				p.Decode(pkt)
				if pass, _ := n.Ingress(fromTUN, &p, pkt); !pass {
					b.Fatalf("packet dropped; stats %+v", n.Stats())
				}
				return pkt
			}
			b.ResetTimer()
			for i := range b.N {
				client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i/60000%200)}), uint16(1024+i%60000))
				send(true, tcp4(client, vip, header.TCPFlagSyn, ""))
				seen, backend := p.SrcAddrPort(), p.DstAddrPort()
				fromTUN := local(backend)
				send(fromTUN, tcp4(backend, seen, header.TCPFlagSyn|header.TCPFlagAck, ""))
				send(true, tcp4(client, vip, header.TCPFlagAck, ""))
				send(true, tcp4(client, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
				send(fromTUN, tcp4(backend, seen, header.TCPFlagFin|header.TCPFlagAck, ""))
				if i%4096 == 4095 {
					clk.Advance(closedLinger + time.Second)
					n.Reap()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/flow")
		})
	}
}

// Flow changes recorded from several goroutines at once (the TUN reader,
// the overlay reader, the reaper) leave a file whose every record is
// whole: run with -race.
func TestPersistConcurrentChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vr0.flows")
	a, _, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	persist(t, a, path)
	const flows = 300
	type tuple4 struct{ client, backend, seen netip.AddrPort }
	var ts []tuple4
	for i := range flows {
		c := netip.AddrPortFrom(clientA.Addr(), uint16(20000+i))
		syn := tcp4(c, vip, header.TCPFlagSyn, "")
		if pass, _ := ingress(t, a, true, syn); !pass {
			t.Fatalf("SYN %d dropped", i)
		}
		s, d := tuple(t, syn)
		ts = append(ts, tuple4{c, d, s})
	}
	// Decode and Ingress only: t.Fatal is for the test's goroutine.
	send := func(fromTUN bool, b []byte) {
		var p packet.Parsed
		p.Decode(b)
		a.Ingress(fromTUN, &p, b[:p.Length])
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // replies: SYN-ACK, then FIN from the odd ones' backends
		for i, x := range ts {
			send(local(x.backend), tcp4(x.backend, x.seen, header.TCPFlagSyn|header.TCPFlagAck, ""))
			if i%2 == 1 {
				send(local(x.backend), tcp4(x.backend, x.seen, header.TCPFlagFin|header.TCPFlagAck, ""))
			}
		}
	})
	wg.Go(func() { // clients: data, and FIN from the odd ones
		for i, x := range ts {
			send(true, tcp4(x.client, vip, header.TCPFlagAck, "x"))
			if i%2 == 1 {
				send(true, tcp4(x.client, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				a.Reap()
			}
		}
	})
	for _, x := range ts[:flows/2] { // and the TUN reader sends more
		send(true, tcp4(x.client, vip, header.TCPFlagAck, "y"))
	}
	close(done)
	wg.Wait()
	clk.Advance(closedLinger + time.Second)
	a.Reap()
	live := a.Stats().Flows
	_, res := restart(t, path)
	if res.Corrupt+res.Foreign+res.Dropped != 0 || uint64(res.Restored) != live {
		t.Errorf("Persist after concurrent changes = %+v, want %d restored (the live flows) and nothing skipped", res, live)
	}
	if live != flows/2 {
		t.Errorf("live flows = %d, want %d (the odd ones closed)", live, flows/2)
	}
}

// tmpfsDir is a temporary directory on tmpfs (/dev/shm), as /run is on a
// node, where there is one; else t.TempDir. It is removed when the test
// ends.
func tmpfsDir(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "vrouter-lb-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// BenchmarkFlowFileRecord is what the flow file costs one TCP flow on
// the packet path, alone: a slot, five record writes (start, SYN-ACK,
// established, a FIN each way) and the slot's release.
func BenchmarkFlowFileRecord(b *testing.B) {
	ff, err := createFlowFile(filepath.Join(tmpfsDir(b), "vr0.flows"), 1<<16, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ff.close()
	r := flowRecord{proto: TCP, client: clientA, vip: vip, backend: netip.MustParseAddrPort("10.244.1.2:80")}
	b.ReportAllocs()
	for range b.N {
		slot := ff.alloc()
		for _, st := range []uint32{0, stSynAck, stSynAck | stEstablished, stSynAck | stEstablished | stFinFwd, stSynAck | stEstablished | stFinFwd | stFinRev} {
			r.state = st
			ff.write(slot, &r)
		}
		ff.release(slot)
	}
}

// Records round-trip for both families, with and without a source
// translation.
func TestFlowRecordRoundTrip(t *testing.T) {
	for _, r := range []flowRecord{
		{proto: TCP, state: stSynAck | stEstablished, client: clientA, vip: vip,
			backend: netip.MustParseAddrPort("10.244.1.2:80")},
		{proto: UDP, client: clientA, vip: dnsVIP, backend: netip.MustParseAddrPort("10.244.0.2:53"),
			snat: netip.AddrPortFrom(routerAddr, 40000)},
		{proto: TCP, state: stFinFwd | stRST, client: netip.MustParseAddrPort("[fd00:10:244::9]:40000"),
			vip: netip.MustParseAddrPort("[fd00:10:96::1]:443"), backend: netip.MustParseAddrPort("[fd00:10:244:1::2]:8443"),
			snat: netip.MustParseAddrPort("[fd69:7672::1]:40001")},
	} {
		var b [flowRecordSize]byte
		r.encode(b[:], 7)
		got, st := decodeRecord(b[:], 7)
		if st != recordOK || got != r {
			t.Errorf("decodeRecord(encode(%+v)) = %+v, %d; want it back, recordOK", r, got, st)
		}
		if _, st := decodeRecord(b[:], 8); st != recordForeign {
			t.Errorf("decodeRecord(%+v) in another generation = %d, want recordForeign", r, st)
		}
	}
	var free [flowRecordSize]byte
	if _, st := decodeRecord(free[:], 7); st != recordFree {
		t.Errorf("decodeRecord(zeros) = %d, want recordFree", st)
	}
}

// Whatever the file holds, adopting it neither panics nor restores a flow
// that does not hold against the Table.
func FuzzPersist(f *testing.F) {
	seed := filepath.Join(f.TempDir(), "seed")
	ff, err := createFlowFile(seed, 4, []flowRecord{
		{proto: TCP, state: stSynAck | stEstablished, client: clientA, vip: vip, backend: netip.MustParseAddrPort("10.244.1.2:80")},
		{proto: TCP, client: clientA, vip: vip, backend: netip.MustParseAddrPort("10.244.0.4:80"), snat: netip.AddrPortFrom(routerAddr, clientA.Port())},
		{proto: UDP, client: clientA, vip: dnsVIP, backend: netip.MustParseAddrPort("10.244.0.2:53"), snat: netip.AddrPortFrom(routerAddr, clientA.Port())},
	})
	if err != nil {
		f.Fatal(err)
	}
	ff.close()
	b, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("VRFLOWS\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(tmpfsDir(t), "f") // ext4 writes a file renamed over another out at once
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		table := newTable(t, Options{NodeName: masterNode})
		mustSet(t, table, makeService("default", "my-service"), makeKubeDNS())
		n, err := NewNAT(table, nil, NATOptions{Clock: newFakeClock(), MaxTCP: 8, MaxUDP: 8})
		if err != nil {
			t.Fatal(err)
		}
		n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
		res, err := n.Persist(path)
		if err != nil {
			t.Fatal(err)
		}
		defer n.ClosePersist()
		if uint64(res.Restored) != n.Stats().Flows {
			t.Errorf("Persist = %+v, but %d flows", res, n.Stats().Flows)
		}
		for _, fl := range n.Flows() {
			e := table.Lookup(ServiceKey{VIP: fl.VIP.Addr(), Port: fl.VIP.Port(), Proto: fl.Proto})
			if e == nil || !slices.ContainsFunc(e.Backends(), func(b Backend) bool { return b.AddrPort() == fl.Backend }) {
				t.Errorf("restored flow %+v: not a backend of its VIP", fl)
			}
		}
	})
}

// Slots are handed out only where the file's pages are allocated, and
// grow allocates more ahead of the flows: a write can never fault on a
// page the file system has no room for.
func TestFlowFileGrows(t *testing.T) {
	ff, err := createFlowFile(filepath.Join(tmpfsDir(t), "vr0.flows"), 3*growSlots, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.close()
	for i := range growSlots {
		if s := ff.alloc(); s != uint32(i)+1 {
			t.Fatalf("alloc %d = %d, want %d", i, s, i+1)
		}
	}
	if s := ff.alloc(); s != 0 || ff.unrecorded.Load() != 1 {
		t.Fatalf("alloc past the allocated slots = %d (unrecorded %d), want 0 and counted", s, ff.unrecorded.Load())
	}
	if err := ff.grow(); err != nil {
		t.Fatalf("grow: %v", err)
	}
	st, err := os.Stat(ff.path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks int64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		blocks = sys.Blocks * 512
	}
	if want := slotOffset(2 * growSlots); blocks < want {
		t.Errorf("after grow the file has %d bytes allocated, want at least %d", blocks, want)
	}
	if s := ff.alloc(); s != growSlots+1 {
		t.Errorf("alloc after grow = %d, want %d", s, growSlots+1)
	}
	// Given-back slots come first, and grow stops at the file's size.
	ff.release(7)
	if s := ff.alloc(); s != 7 {
		t.Errorf("alloc after release(7) = %d, want 7", s)
	}
	handed := growSlots + 1
	for {
		if ff.alloc() != 0 {
			handed++
			continue
		}
		if ff.ready == ff.slots {
			break
		}
		if err := ff.grow(); err != nil {
			t.Fatal(err)
		}
	}
	if handed != int(ff.slots) {
		t.Errorf("handed out %d slots growing as needed, want all %d and no more", handed, ff.slots)
	}
}
