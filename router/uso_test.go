package router

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// udpBurst is n datagrams of size bytes from a pod on node a to one on b,
// as one connected pod socket sends them (DF set, IDs 0, 1, 2, …), back to
// back as a's router sends a run: one UDP_SEGMENT message.
func udpBurst(n, size int) (dgrams [][]byte, run []byte) {
	for i := range n {
		payload := bytes.Repeat([]byte{byte(i + 1)}, size)
		d := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, payload)
		ip := header.IPv4(d)
		ip.SetID(uint16(i))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		dgrams = append(dgrams, d)
		run = append(run, d...)
	}
	return dgrams, run
}

// sendRun sends run (datagrams of segSize bytes) from a's overlay socket to
// b's, as a's router would.
func sendRunTo(t *testing.T, nw *segNet, run []byte, segSize int) {
	t.Helper()
	nw.mu.Lock()
	from := nw.conns[ap("192.168.31.201:8285")]
	nw.mu.Unlock()
	if err := from.WriteBatch(run, segSize, ap("192.168.31.202:8285")); err != nil {
		t.Fatal(err)
	}
}

// recvOffloaded waits for the router to write a packet of either kind to
// the kernel.
func recvOffloaded(t *testing.T, m *offloadTUN) offloaded {
	t.Helper()
	select {
	case x := <-m.toK:
		return x
	case b := <-m.memTUN.toK:
		return offloaded{pkt: b}
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a packet to the kernel")
	}
	return offloaded{}
}

// forwarded is datagram d as the router forwards it: TTL one less, the
// IPv4 header checksum updated.
func forwarded(d []byte) []byte {
	d = bytes.Clone(d)
	decrementTTL(d)
	return d
}

// splitUDP cuts a UDP super-packet into its datagrams.
func splitUDP(t *testing.T, x offloaded) [][]byte {
	t.Helper()
	if x.o.GSOType == tun.GSONone {
		return [][]byte{x.pkt}
	}
	need, err := gso.SegmentedUDPSize(x.pkt, int(x.o.GSOSize))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, need)
	n, size, total, err := gso.SegmentUDP(x.pkt, int(x.o.GSOSize), out)
	if err != nil {
		t.Fatal(err)
	}
	var ds [][]byte
	for i := range n {
		ds = append(ds, out[i*size:min((i+1)*size, total)])
	}
	return ds
}

// TestUSOOverlayRun: a run of one flow's datagrams from a peer leaves for
// the TUN as one UDP super-packet, whose datagrams are the ones sent, each
// forwarded (TTL one less); without UDP offload, one write each.
func TestUSOOverlayRun(t *testing.T) {
	for _, noUSO := range []bool{false, true} {
		name := "uso"
		if noUSO {
			name = "no uso"
		}
		t.Run(name, func(t *testing.T) {
			nw := &segNet{}
			startOffloadNode(t, nw, "192.168.31.201:8285", "10.244.0.0/24", "fd00:10:244::/64", Options{},
				Peer{Name: "b", Endpoint: ap("192.168.31.202:8285"), PodCIDRs: pfxs("10.244.1.0/24", "fd00:10:244:1::/64")})
			b := newOffloadNodeUSO(t, nw, noUSO)
			const n, size = 12, 1000
			dgrams, run := udpBurst(n, size)
			sendRunTo(t, nw, run, len(dgrams[0]))
			var got [][]byte
			writes := 0
			for len(got) < n {
				x := recvOffloaded(t, b.tun)
				writes++
				if x.o.GSOType != tun.GSONone {
					want := tun.Offload{NeedsCsum: true, GSOType: tun.GSOUDPL4, HdrLen: 28, GSOSize: size, CsumStart: 20, CsumOffset: 6}
					if x.o != want {
						t.Fatalf("super-packet's Offload %+v, want %+v", x.o, want)
					}
				}
				got = append(got, splitUDP(t, x)...)
			}
			if wantWrites := map[bool]int{false: 1, true: n}[noUSO]; writes != wantWrites {
				t.Errorf("%d datagrams took %d TUN writes, want %d", n, writes, wantWrites)
			}
			for i := range dgrams {
				if !bytes.Equal(got[i], forwarded(dgrams[i])) {
					t.Errorf("datagram %d:\n got %x\nwant %x", i, got[i][:48], forwarded(dgrams[i])[:48])
				}
			}
			// Counted once the write returns, which can be after the
			// node kernel has the datagrams.
			waitFor(t, fmt.Sprintf("TUN tx packets to count the %d datagrams", n), func() bool { return b.r.Stats().TUN.TxPackets >= n })
		})
	}
}

// TestUSONeverRepairsCorruption: a datagram corrupted on the underlay is
// never merged, where its checksum would be computed afresh: it reaches
// the kernel as it arrived, between the runs before and after it.
func TestUSONeverRepairsCorruption(t *testing.T) {
	nw := &segNet{}
	startOffloadNode(t, nw, "192.168.31.201:8285", "10.244.0.0/24", "fd00:10:244::/64", Options{},
		Peer{Name: "b", Endpoint: ap("192.168.31.202:8285"), PodCIDRs: pfxs("10.244.1.0/24", "fd00:10:244:1::/64")})
	b := newOffloadNodeUSO(t, nw, false)
	dgrams, run := udpBurst(7, 500)
	bad := len(dgrams[0])*3 + header.IPv4MinimumSize + header.UDPMinimumSize + 10
	run[bad] ^= 0xff
	sendRunTo(t, nw, run, len(dgrams[0]))
	var kinds []string
	var got [][]byte
	for len(got) < 7 {
		x := recvOffloaded(t, b.tun)
		ds := splitUDP(t, x)
		kinds = append(kinds, map[bool]string{true: "super", false: "plain"}[x.o.GSOType != tun.GSONone]+"×"+string(rune('0'+len(ds))))
		got = append(got, ds...)
	}
	if want := []string{"super×3", "plain×1", "super×3"}; !slices.Equal(kinds, want) {
		t.Errorf("writes %v, want %v", kinds, want)
	}
	corrupt := forwarded(dgrams[3])
	corrupt[bad-len(dgrams[0])*3] ^= 0xff
	if !bytes.Equal(got[3], corrupt) {
		t.Errorf("corrupt datagram reached the kernel as %x, want it as it arrived (%x)", got[3][:40], corrupt[:40])
	}
}

// TestUSOReadSuper: a UDP super-packet from the node kernel (a pod's
// UDP_SEGMENT send) crosses to the peer as its datagrams, each with a
// complete checksum, in order.
func TestUSOReadSuper(t *testing.T) {
	nw := &segNet{}
	a := startOffloadNode(t, nw, "192.168.31.201:8285", "10.244.0.0/24", "fd00:10:244::/64", Options{},
		Peer{Name: "b", Endpoint: ap("192.168.31.202:8285"), PodCIDRs: pfxs("10.244.1.0/24", "fd00:10:244:1::/64")})
	b := newOffloadNodeUSO(t, nw, false)
	dgrams, _ := udpBurst(5, 700)
	var payload []byte
	for _, d := range dgrams {
		payload = append(payload, d[28:]...)
	}
	super := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, payload)
	// What the kernel hands over: UDP length of the whole, the
	// pseudo-header sum in the checksum field.
	super[26], super[27] = 0, 0
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpipAddr("10.244.0.4"), tcpipAddr("10.244.1.2"), uint16(len(super)-20))
	super[26], super[27] = byte(sum>>8), byte(sum)
	a.tun.fromK <- offloaded{super, tun.Offload{NeedsCsum: true, GSOType: tun.GSOUDPL4, HdrLen: 28, GSOSize: 700, CsumStart: 20, CsumOffset: 6}}
	var got [][]byte
	for len(got) < len(dgrams) {
		got = append(got, splitUDP(t, recvOffloaded(t, b.tun))...)
	}
	for i := range dgrams {
		if !bytes.Equal(got[i], forwarded(forwarded(dgrams[i]))) {
			t.Errorf("datagram %d at the peer's kernel:\n got %x\nwant %x", i, got[i][:40], forwarded(forwarded(dgrams[i]))[:40])
		}
	}
	if s := a.r.Stats(); s.TUN.RxPackets != uint64(len(dgrams)) {
		t.Errorf("sender's TUN rx packets %d, want %d (the datagrams)", s.TUN.RxPackets, len(dgrams))
	}
	// A malformed one (a TCP packet called a UDP super-packet) is
	// counted, not forwarded.
	a.tun.fromK <- offloaded{tcp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, header.TCPFlagAck, make([]byte, 3000)),
		tun.Offload{NeedsCsum: true, GSOType: tun.GSOUDPL4, HdrLen: 28, GSOSize: 700, CsumStart: 20, CsumOffset: 6}}
	waitFor(t, "a malformed drop", func() bool { return a.r.Stats().Drops[DropMalformed] == 1 })
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func tcpipAddr(s string) tcpip.Address { return packet.TCPIPAddr(addr(s)) }

// newOffloadNodeUSO starts router b of offloadPair on an offloadTUN with
// or without UDP offload, which shows the test every write in order.
func newOffloadNodeUSO(t *testing.T, nw *segNet, noUSO bool) *offloadNode {
	t.Helper()
	n := startOffloadNodeOn(t, nw, &offloadTUN{memTUN: newMemTUN("vr0"), fromK: make(chan offloaded, 256), toK: make(chan offloaded, 256), noUSO: noUSO, ordered: true},
		"192.168.31.202:8285", "10.244.1.0/24", "fd00:10:244:1::/64", Options{},
		Peer{Name: "a", Endpoint: ap("192.168.31.201:8285"), PodCIDRs: pfxs("10.244.0.0/24", "fd00:10:244::/64")})
	return n
}
