package router

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/router/packet"
)

func TestDecrementTTLMatchesRecompute(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100000 {
		b := make([]byte, header.IPv4MinimumSize)
		for j := range b {
			b[j] = byte(rng.UintN(256))
		}
		b[0] = 0x45
		b[8] = byte(2 + rng.UintN(254))
		if i%1000 == 0 {
			b[8] = 2 // the smallest TTL the fast path forwards
		}
		h := header.IPv4(b)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		want := bytes.Clone(b)
		header.IPv4(want).SetTTL(b[8] - 1)
		header.IPv4(want).SetChecksum(0)
		header.IPv4(want).SetChecksum(^header.IPv4(want).CalculateChecksum())

		decrementTTL(b)
		if !header.IPv4(b).IsChecksumValid() {
			t.Fatalf("header %x: checksum invalid after decrementTTL", b)
		}
		if b[8] != want[8] {
			t.Fatalf("TTL %d, want %d", b[8], want[8])
		}
	}
	b := make([]byte, header.IPv6MinimumSize)
	b[0], b[7] = 0x60, 64
	decrementTTL(b)
	if b[7] != 63 {
		t.Errorf("IPv6 hop limit %d, want 63", b[7])
	}
}

// dualPair is two dual-stack routers, a and b, as in TestDualStack; a's
// TUN MTU is 1500 (larger than the tunnel), so it answers "fragmentation
// needed" for what does not fit the tunnel.
func dualPair(t *testing.T, opts Options) (a, b *node) {
	t.Helper()
	nw := overlaytest.NewNetwork()
	cfg := func(pods []string, peerName, peerUnderlay string, peerPods []string) Config {
		c := Config{Addresses: []netip.Addr{routerAddr4, addr("fd69:7672::1")}}
		// The hairpin case plays a packet as the NAT hands it on,
		// translated to the router's address; the kernel never sends
		// from it, and the TUN's source check, which runs before the
		// hook, would refuse it.
		c.NodeAddresses = []netip.Addr{routerAddr4}
		for _, p := range pods {
			c.PodCIDRs = append(c.PodCIDRs, netip.MustParsePrefix(p))
		}
		pp := Peer{Name: peerName, Endpoint: netip.MustParseAddrPort(peerUnderlay)}
		for _, p := range peerPods {
			pp.PodCIDRs = append(pp.PodCIDRs, netip.MustParsePrefix(p))
		}
		c.Peers = []Peer{pp}
		return c
	}
	aOpts := opts
	aOpts.TUNMTU = 1500
	a = startNode(t, nw, "a", "192.168.31.201:8285", "10.244.0.0/24", aOpts)
	b = startNode(t, nw, "b", "192.168.31.202:8285", "10.244.1.0/24", opts)
	if err := a.r.Set(cfg([]string{"10.244.0.0/24", "fd00:10:244::/64"}, "b", "192.168.31.202:8285", []string{"10.244.1.0/24", "fd00:10:244:1::/64"})); err != nil {
		t.Fatal(err)
	}
	if err := b.r.Set(cfg([]string{"10.244.1.0/24", "fd00:10:244:1::/64"}, "a", "192.168.31.201:8285", []string{"10.244.0.0/24", "fd00:10:244::/64"})); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// drain collects what the router writes to m until it has been quiet for
// quiet.
func drain(m *memTUN, quiet time.Duration) [][]byte {
	var got [][]byte
	for {
		select {
		case b := <-m.toK:
			got = append(got, b)
		case <-time.After(quiet):
			return got
		}
	}
}

// comparable blanks what differs between two stacks for the same packet
// (the IPv4 identification and header checksum of packets a stack
// originates).
func comparable(pkts [][]byte) string {
	var s string
	for _, p := range pkts {
		p = bytes.Clone(p)
		if len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4 && p[9] == uint8(header.ICMPv4ProtocolNumber) {
			copy(p[4:6], []byte{0, 0})
			copy(p[10:12], []byte{0, 0})
		}
		s += fmt.Sprintf("%x\n", p)
	}
	return s
}

func tcp4(src, dst netip.Addr, ttl uint8, flags header.TCPFlags, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: ttl, Protocol: uint8(header.TCPProtocolNumber),
		Flags: header.IPv4FlagDontFragment, SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1, AckNum: 2, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 100})
	copy(tcp.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, packet.TCPIPAddr(src), packet.TCPIPAddr(dst), uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return b
}

func icmpEcho4(src, dst netip.Addr, ttl uint8) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+8)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: ttl, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(b[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(7)
	ic.SetSequence(1)
	ic.SetChecksum(^checksum.Checksum(ic, 0))
	return b
}

// TestFastPathMatchesStack sends the same packets through two router pairs,
// one with the fast path and one forwarding everything in gVisor, and
// requires the same bytes at the far node's kernel and the same answers
// at the sender's.
func TestFastPathMatchesStack(t *testing.T) {
	pod, remote, remote6 := addr("10.244.0.4"), addr("10.244.1.2"), addr("fd00:10:244:1::2")
	badSum := udp4(pod, remote, 64, true, []byte("corrupt header"))
	badSum[10] ^= 0xff
	optioned := func() []byte {
		// An IPv4 header with one NOP option word.
		p := udp4(pod, remote, 64, true, []byte("options"))
		q := append(append(bytes.Clone(p[:20]), 1, 1, 1, 1), p[20:]...)
		q[0] = 0x46
		binary.BigEndian.PutUint16(q[2:4], uint16(len(q)))
		h := header.IPv4(q)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		return q
	}()
	fragment := func(flagsOffset uint16) []byte {
		p := udp4(pod, remote, 64, false, make([]byte, 600))
		binary.BigEndian.PutUint16(p[6:8], flagsOffset)
		h := header.IPv4(p)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
		return p
	}
	cases := []struct {
		name    string
		pkt     []byte
		crosses bool // reaches the far node (both paths must agree either way)
		hairpin bool // comes back out of the sender's TUN
	}{
		{"first fragment", fragment(0x2000), true, false},
		{"middle fragment", fragment(0x2000 | 185), true, false},
		{"last fragment", fragment(370), true, false},
		{"udp4", udp4(pod, remote, 64, true, []byte("hello")), true, false},
		{"udp4 tunnel-sized", udp4(pod, remote, 64, true, make([]byte, DefaultMTU-28)), true, false},
		{"tcp4", tcp4(pod, remote, 64, header.TCPFlagAck|header.TCPFlagPsh, []byte("GET / HTTP/1.1\r\n\r\n")), true, false},
		{"tcp4 syn", tcp4(pod, remote, 64, header.TCPFlagSyn, nil), true, false},
		{"icmp echo", icmpEcho4(pod, remote, 64), true, false},
		{"udp6", udp6(addr("fd00:10:244::4"), remote6, 64, []byte("v6")), true, false},
		{"ttl 2: the far router expires it", udp4(pod, remote, 2, true, []byte("ttl2")), false, false},
		{"ttl 1: expires here", udp4(pod, remote, 1, true, []byte("ttl1")), false, false},
		{"hop limit 2", udp6(addr("fd00:10:244::4"), remote6, 2, []byte("hl2")), false, false},
		{"too big for the tunnel, DF", udp4(pod, remote, 64, true, make([]byte, 1500-28)), false, false},
		{"too big for the tunnel, fragmentable", udp4(pod, remote, 64, false, make([]byte, 1500-28)), true, false},
		{"no route", udp4(pod, addr("10.99.0.1"), 64, true, []byte("nowhere")), false, false},
		{"bad header checksum", badSum, false, false},
		{"ipv4 options", optioned, true, false},
		{"to the router", icmpEcho4(pod, routerAddr4, 64), false, false},
		{"link-local destination", udp4(pod, addr("169.254.9.9"), 64, true, []byte("ll")), false, false},
		// The far router refuses these as spoofed (not from a's pod CIDRs);
		// both paths must still treat them alike up to there.
		{"link-local source", udp4(addr("169.254.9.9"), remote, 64, true, []byte("ll")), false, false},
		{"router's address as source", udp4(routerAddr4, remote, 64, true, []byte("snat")), false, false},
		{name: "hairpin NAT: the router's address to a local pod", pkt: udp4(routerAddr4, addr("10.244.0.5"), 64, true, []byte("snat")), hairpin: true},
		{"link-local source, IPv6", udp6(addr("fe80::1"), remote6, 64, []byte("ll6")), false, false},
	}
	fa, fb := dualPair(t, Options{})
	sa, sb := dualPair(t, Options{NoFastPath: true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fa.tun.send(bytes.Clone(c.pkt))
			sa.tun.send(bytes.Clone(c.pkt))
			const quiet = 80 * time.Millisecond
			fFar, sFar := drain(fb.tun, quiet), drain(sb.tun, quiet)
			fBack, sBack := drain(fa.tun, quiet), drain(sa.tun, quiet)
			if c.crosses && len(sFar) == 0 {
				t.Errorf("the stack did not forward it; the case expects it to cross")
			}
			if c.hairpin && len(sBack) == 0 {
				t.Errorf("the stack did not send it back to the node; the case expects it to")
			}
			if f, s := comparable(fFar), comparable(sFar); f != s {
				t.Errorf("far kernel got (fast path):\n%s\nwant (stack):\n%s", f, s)
			}
			if f, s := comparable(fBack), comparable(sBack); f != s {
				t.Errorf("sender's kernel got (fast path):\n%s\nwant (stack):\n%s", f, s)
			}
		})
	}
}

// TestFastPathFollowsSet checks that cached forwarding decisions do not
// outlive the state they came from: a peer's new address, its removal.
func TestFastPathFollowsSet(t *testing.T) {
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "hostgw-master", "192.168.31.201:8285", "10.244.0.0/24", Options{})
	b := startNode(t, nw, "hostgw-node", "192.168.31.202:8285", "10.244.1.0/24", Options{}, a.asPeer())
	moved := startNode(t, nw, "hostgw-node", "192.168.31.203:8285", "10.244.1.0/24", Options{}, a.asPeer())
	pkt := func() []byte { return udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("x")) }

	if err := a.r.Set(a.config(b.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(pkt())
	b.tun.recv(t)

	if err := a.r.Set(a.config(moved.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(pkt())
	moved.tun.recv(t)
	b.tun.expectNone(t, 50*time.Millisecond)

	if err := a.r.Set(a.config()); err != nil {
		t.Fatal(err)
	}
	a.tun.send(pkt())
	ip, ic := icmpFrom(t, a.tun)
	if ic.Type() != header.ICMPv4DstUnreachable || ip.DestinationAddress() != packet.TCPIPAddr(addr("10.244.0.4")) {
		t.Errorf("after the peer left: got ICMP type %d to %s, want destination unreachable to 10.244.0.4", ic.Type(), ip.DestinationAddress())
	}
	moved.tun.expectNone(t, 50*time.Millisecond)
}

// TestStackForwardingBothWays forwards through gVisor (no fast path) in
// both directions at once. It guards the workaround for gVisor's IPv4
// forwarding reading the TTL from a freed buffer chunk (ipv4ForwardMu):
// without it, packets arrive with another packet's TTL, and -race reports
// the chunk's reuse.
func TestStackForwardingBothWays(t *testing.T) {
	_, a, b := seedPair(t, Options{NoFastPath: true})
	const n = 200
	for range n {
		a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, make([]byte, 1000)))
		b.tun.send(udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, make([]byte, 1000)))
	}
	for i := range n {
		for _, c := range []struct {
			at  *node
			src string
		}{{b, "10.244.0.4"}, {a, "10.244.1.2"}} {
			p := header.IPv4(c.at.tun.recv(t))
			if p.TTL() != 62 || p.SourceAddress() != packet.TCPIPAddr(addr(c.src)) || !p.IsChecksumValid() {
				t.Fatalf("packet %d at %s: from %s TTL %d checksum valid %t, want from %s TTL 62 valid",
					i, c.at.name, p.SourceAddress(), p.TTL(), p.IsChecksumValid(), c.src)
			}
		}
	}
}
