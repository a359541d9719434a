package router

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/router/packet"
)

// The seed's two nodes, in memory:
//
//	hostgw-master  underlay 192.168.31.201:8285  pods 10.244.0.0/24
//	hostgw-node    underlay 192.168.31.202:8285  pods 10.244.1.0/24
func seedPair(t *testing.T, opts Options) (nw *overlaytest.Network, a, b *node) {
	t.Helper()
	nw = overlaytest.NewNetwork()
	a = startNode(t, nw, "hostgw-master", "192.168.31.201:8285", "10.244.0.0/24", opts,
		Peer{Name: "hostgw-node", Endpoint: netip.MustParseAddrPort("192.168.31.202:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}})
	b = startNode(t, nw, "hostgw-node", "192.168.31.202:8285", "10.244.1.0/24", opts, a.asPeer())
	return nw, a, b
}

func TestForwardAcrossNodes(t *testing.T) {
	_, a, b := seedPair(t, Options{})

	pkt := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("hello"))
	a.tun.send(pkt)
	got := b.tun.recv(t)
	ip := header.IPv4(got)
	if !ip.IsValid(len(got)) || ip.SourceAddress() != packet.TCPIPAddr(addr("10.244.0.4")) || ip.DestinationAddress() != packet.TCPIPAddr(addr("10.244.1.2")) {
		t.Fatalf("hostgw-node kernel got %x, want the packet from 10.244.0.4 to 10.244.1.2", got)
	}
	// Two router hops: the sending and the receiving router each decrement.
	if ip.TTL() != 62 {
		t.Errorf("TTL = %d, want 62 (64 minus one per router)", ip.TTL())
	}
	if !bytes.Equal(header.UDP(ip.Payload()).Payload(), []byte("hello")) {
		t.Errorf("payload = %q, want %q", header.UDP(ip.Payload()).Payload(), "hello")
	}

	// And back.
	b.tun.send(udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("world")))
	back := header.IPv4(a.tun.recv(t))
	if back.SourceAddress() != packet.TCPIPAddr(addr("10.244.1.2")) {
		t.Errorf("reply source = %s, want 10.244.1.2", back.SourceAddress())
	}

	// The sender counts after its write returns, which may be after the
	// receiver has already handled the packet: wait for it.
	waitFor(t, "hostgw-master's tx counter", func() bool { return a.r.Stats().Peers["hostgw-node"].TxPackets == 1 })
	st := a.r.Stats()
	if p := st.Peers["hostgw-node"]; p.TxPackets != 1 || p.RxPackets != 1 || p.LastSeenUnixNano == 0 {
		t.Errorf("hostgw-master's counters for hostgw-node = %+v, want 1 packet each way and a last-seen time", p)
	}
	for reason, n := range st.Drops {
		if n != 0 {
			t.Errorf("drops[%s] = %d, want 0", reason, n)
		}
	}
}

func TestRoutesLookLikeHostGW(t *testing.T) {
	_, a, _ := seedPair(t, Options{})
	var got []string
	for _, rt := range a.r.Routes() {
		got = append(got, rt.String())
	}
	want := []string{"10.244.0.0/24 dev vr0", "10.244.1.0/24 via 192.168.31.202 dev overlay0"}
	if len(got) != len(want) {
		t.Fatalf("Routes() = %q, want %q", got, want)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("Routes() = %q, missing %q", got, w)
		}
	}
}

func TestOverlayRefusesBadDatagrams(t *testing.T) {
	nw, a, _ := seedPair(t, Options{})
	peerAddr := netip.MustParseAddrPort("192.168.31.202:8285")
	good := udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("x"))
	truncated := append([]byte(nil), good[:len(good)-1]...)
	badIHL := append([]byte(nil), good...)
	badIHL[0] = 0x42
	cases := []struct {
		name   string
		from   netip.AddrPort
		b      []byte
		reason DropReason
	}{
		{"empty", peerAddr, nil, DropShort},
		{"one byte", peerAddr, []byte{0x45}, DropShort},
		{"version 5", peerAddr, append([]byte{0x55}, make([]byte, 40)...), DropNotIP},
		{"bad IHL", peerAddr, badIHL, DropMalformed},
		{"truncated", peerAddr, truncated, DropTruncated},
		{"short IPv6", peerAddr, append([]byte{0x60}, make([]byte, 20)...), DropShort},
		{"unknown peer", netip.MustParseAddrPort("192.168.31.99:8285"), good, DropUnknownPeer},
		{"spoofed source", peerAddr, udp4(addr("10.244.0.9"), addr("10.244.0.4"), 64, true, nil), DropSpoofed},
		{"oversize", peerAddr, udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, false, make([]byte, DefaultMTU)), DropOversize},
		{"ipv6 on an ipv4 router", peerAddr, udp6(addr("fd00::1"), addr("fd00::2"), 64, nil), DropSpoofed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := a.r.Stats().Drops[tc.reason]
			if len(tc.b) == 0 {
				nw.Send(tc.from, a.underlay, []byte{})
			} else {
				nw.Send(tc.from, a.underlay, tc.b)
			}
			waitFor(t, "drop counted as "+tc.reason.String(), func() bool {
				return a.r.Stats().Drops[tc.reason] == before+1
			})
		})
	}
	a.tun.expectNone(t, 50*time.Millisecond)
	// The good datagram still goes through afterwards.
	nw.Send(peerAddr, a.underlay, good)
	a.tun.recv(t)
}

func TestTUNRefusesBadPackets(t *testing.T) {
	_, a, _ := seedPair(t, Options{})
	for _, tc := range []struct {
		b      []byte
		reason DropReason
	}{
		{[]byte{0x45, 0, 0}, DropShort},
		{append([]byte{0x15}, make([]byte, 30)...), DropNotIP},
		{udp6(addr("fd00::1"), addr("fd00::2"), 64, nil), DropFamily},
	} {
		before := a.r.Stats().Drops[tc.reason]
		a.tun.send(tc.b)
		waitFor(t, "drop "+tc.reason.String(), func() bool { return a.r.Stats().Drops[tc.reason] == before+1 })
	}
}

// TestTUNAdmitsOnlyLocalSources: hostgw-master's router takes from its
// kernel only packets from its pods, its node's own addresses and ICMP
// errors; a pod spoofing any other source is dropped and counted, so it
// cannot pass as another client (of the NAT's per-client cap, say).
func TestTUNAdmitsOnlyLocalSources(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	remotePod := addr("10.244.1.2")
	// An ICMP error from a router on the kernel's own path, about a
	// datagram remotePod sent.
	icmpErr := func(from netip.Addr) []byte {
		quoted := udp4(remotePod, addr("192.0.2.7"), 64, true, nil)
		total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + len(quoted)
		pkt := make([]byte, total)
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
			SrcAddr: packet.TCPIPAddr(from), DstAddr: packet.TCPIPAddr(remotePod)})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(ip.Payload())
		ic.SetType(header.ICMPv4DstUnreachable)
		ic.SetCode(header.ICMPv4HostUnreachable)
		copy(ic.Payload(), quoted)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
		return pkt
	}
	for _, tc := range []struct {
		name  string
		pkt   []byte
		admit bool
	}{
		{"a pod", udp4(addr("10.244.0.4"), remotePod, 64, true, []byte("pod")), true},
		{"the node's underlay address", udp4(addr("192.168.31.201"), remotePod, 64, true, []byte("node")), true},
		{"a source in the peer's pod CIDR", udp4(addr("10.244.1.99"), remotePod, 64, true, nil), false},
		{"a source outside the cluster", udp4(addr("203.0.113.9"), remotePod, 64, true, nil), false},
		{"the router's own address", udp4(routerAddr4, remotePod, 64, true, nil), false},
		{"an ICMP error from elsewhere", icmpErr(addr("203.0.113.1")), true},
		{"an ICMP echo from elsewhere", func() []byte {
			pkt := icmpErr(addr("203.0.113.1"))
			ic := header.ICMPv4(header.IPv4(pkt).Payload())
			ic.SetType(header.ICMPv4Echo)
			ic.SetCode(0)
			ic.SetChecksum(0)
			ic.SetChecksum(^checksum.Checksum(ic, 0))
			return pkt
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.r.Stats().Drops[DropSourceNotLocal]
			beforeRx := a.r.Stats().TUN.RxPackets
			a.tun.send(tc.pkt)
			if !tc.admit {
				waitFor(t, "drop counted as "+DropSourceNotLocal.String(), func() bool {
					return a.r.Stats().Drops[DropSourceNotLocal] == before+1
				})
				b.tun.expectNone(t, 50*time.Millisecond)
				if got := a.r.Stats().TUN.RxPackets; got != beforeRx {
					t.Errorf("TUN rx packets = %d, want %d: a refused packet is not received", got, beforeRx)
				}
				return
			}
			waitFor(t, "the packet to leave the TUN reader", func() bool { return a.r.Stats().TUN.RxPackets == beforeRx+1 })
			if tc.pkt[9] == uint8(header.UDPProtocolNumber) {
				// It crosses to the pod; the ICMP error does too, and
				// hostgw-node refuses it: its source is not the peer's.
				if got := header.IPv4(b.tun.recv(t)).SourceAddress(); got != header.IPv4(tc.pkt).SourceAddress() {
					t.Errorf("hostgw-node's kernel got source %s, want %s", got, header.IPv4(tc.pkt).SourceAddress())
				}
			}
			if got := a.r.Stats().Drops[DropSourceNotLocal]; got != before {
				t.Errorf("%s drops = %d, want %d", DropSourceNotLocal, got, before)
			}
		})
	}

	// A node whose pod CIDR is everything (a sidecar router) refuses no
	// source: the router answers a datagram to its own address from
	// anywhere with port unreachable.
	cfg := a.config()
	cfg.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	if err := a.r.Set(cfg); err != nil {
		t.Fatalf("Set(PodCIDRs 0.0.0.0/0): %v", err)
	}
	a.tun.send(udp4(addr("203.0.113.9"), routerAddr4, 64, true, nil))
	if _, icmp := icmpFrom(t, a.tun); icmp.Type() != header.ICMPv4DstUnreachable || icmp.Code() != header.ICMPv4PortUnreachable {
		t.Errorf("sidecar: answer to a datagram for the router is ICMP type %d code %d, want port unreachable", icmp.Type(), icmp.Code())
	}
}

// icmpFrom reads the ICMPv4 message the router sent back to the kernel.
func icmpFrom(t *testing.T, m *memTUN) (header.IPv4, header.ICMPv4) {
	t.Helper()
	b := m.recv(t)
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		t.Fatalf("got %x, want an ICMPv4 packet", b)
	}
	return ip, header.ICMPv4(ip.Payload())
}

func TestICMPErrors(t *testing.T) {
	_, a, _ := seedPair(t, Options{TUNMTU: 1500})

	t.Run("no route", func(t *testing.T) {
		a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.9.9"), 64, true, nil))
		ip, ic := icmpFrom(t, a.tun)
		if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4NetUnreachable {
			t.Errorf("got ICMP type %d code %d, want destination unreachable / net unreachable", ic.Type(), ic.Code())
		}
		if ip.SourceAddress() != packet.TCPIPAddr(routerAddr4) || ip.DestinationAddress() != packet.TCPIPAddr(addr("10.244.0.4")) {
			t.Errorf("ICMP error %s -> %s, want %s -> 10.244.0.4", ip.SourceAddress(), ip.DestinationAddress(), routerAddr4)
		}
	})
	t.Run("ttl exceeded", func(t *testing.T) {
		a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 1, true, nil))
		_, ic := icmpFrom(t, a.tun)
		if ic.Type() != header.ICMPv4TimeExceeded {
			t.Errorf("got ICMP type %d, want time exceeded", ic.Type())
		}
	})
	t.Run("fragmentation needed", func(t *testing.T) {
		a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, make([]byte, 1500-28)))
		_, ic := icmpFrom(t, a.tun)
		if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4FragmentationNeeded {
			t.Fatalf("got ICMP type %d code %d, want fragmentation needed", ic.Type(), ic.Code())
		}
		if ic.MTU() != DefaultMTU {
			t.Errorf("fragmentation needed MTU = %d, want %d", ic.MTU(), DefaultMTU)
		}
	})
	// gVisor may bump a counter just after the ICMP error has left.
	waitFor(t, "no route, TTL, too big and ICMP counters = 1, 1, 1, 3", func() bool {
		st := a.r.Stats()
		return st.NoRoute == 1 && st.TTLExceeded == 1 && st.TooBig == 1 && st.ICMPErrorsSent == 3
	})
}

func TestPeersChangeAtRuntime(t *testing.T) {
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "a", "192.168.31.201:8285", "10.244.0.0/24", Options{})
	b := startNode(t, nw, "b", "192.168.31.202:8285", "10.244.1.0/24", Options{}, a.asPeer())
	c := startNode(t, nw, "c", "192.168.31.203:8285", "10.244.2.0/24", Options{}, a.asPeer())

	toB := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("b"))
	toC := udp4(addr("10.244.0.4"), addr("10.244.2.2"), 64, true, []byte("c"))

	// Peer b added while c is idle, then c added.
	if err := a.r.Set(a.config(b.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(toB)
	b.tun.recv(t)
	if err := a.r.Set(a.config(b.asPeer(), c.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(toC)
	c.tun.recv(t)

	// Removing b leaves c working and makes b's pods unreachable.
	if err := a.r.Set(a.config(c.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(toB)
	_, ic := icmpFrom(t, a.tun)
	if ic.Type() != header.ICMPv4DstUnreachable {
		t.Errorf("to a removed peer: ICMP type %d, want destination unreachable", ic.Type())
	}
	a.tun.send(toC)
	c.tun.recv(t)

	// b moves to a new underlay address: re-added, traffic follows it.
	b.stop()
	b2 := startNode(t, nw, "b", "192.168.31.212:8285", "10.244.1.0/24", Options{}, a.asPeer())
	moved := b2.asPeer()
	if err := a.r.Set(a.config(moved, c.asPeer())); err != nil {
		t.Fatal(err)
	}
	a.tun.send(toB)
	b2.tun.recv(t)
	// A removed peer's counters went with it; the re-added one starts anew.
	waitFor(t, "peer b tx packets = 1 (counted since it was re-added)", func() bool { return a.r.Stats().Peers["b"].TxPackets == 1 })
	// Counters follow a peer's name across a change of address without
	// removal.
	cMoved := c.asPeer()
	cMoved.Endpoint = netip.MustParseAddrPort("192.168.31.213:8285")
	waitFor(t, "peer c tx packets = 2", func() bool { return a.r.Stats().Peers["c"].TxPackets == 2 })
	if err := a.r.Set(a.config(moved, cMoved)); err != nil {
		t.Fatal(err)
	}
	if got := a.r.Stats().Peers["c"].TxPackets; got != 2 {
		t.Errorf("peer c tx packets after its address changed = %d, want 2", got)
	}
	if err := a.r.Set(a.config(moved, c.asPeer())); err != nil {
		t.Fatal(err)
	}
	// A datagram from b's old address is now from an unknown peer.
	before := a.r.Stats().Drops[DropUnknownPeer]
	nw.Send(netip.MustParseAddrPort("192.168.31.202:8285"), a.underlay, udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, nil))
	waitFor(t, "unknown peer drop", func() bool { return a.r.Stats().Drops[DropUnknownPeer] == before+1 })

	// Set is idempotent.
	if err := a.r.Set(a.config(moved, c.asPeer())); err != nil {
		t.Fatal(err)
	}
	if n := len(a.r.Routes()); n != 3 {
		t.Errorf("after an idempotent Set: %d routes, want 3: %v", n, a.r.Routes())
	}
}

func TestSetRefusesWrongTables(t *testing.T) {
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "a", "192.168.31.201:8285", "10.244.0.0/24", Options{})
	ep := netip.MustParseAddrPort("192.168.31.202:8285")
	cases := map[string]Config{
		"overlaps local": a.config(Peer{Name: "x", Endpoint: ep, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.128/25")}}),
		"duplicate name": a.config(
			Peer{Name: "x", Endpoint: ep, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
			Peer{Name: "x", Endpoint: netip.MustParseAddrPort("192.168.31.203:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}),
		"duplicate endpoint": a.config(
			Peer{Name: "x", Endpoint: ep, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
			Peer{Name: "y", Endpoint: ep, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}}),
		"no port": a.config(Peer{Name: "x", Endpoint: netip.AddrPortFrom(ep.Addr(), 0), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}),
	}
	before := a.r.Routes()
	for name, cfg := range cases {
		if err := a.r.Set(cfg); err == nil {
			t.Errorf("%s: Set succeeded, want an error", name)
		}
	}
	if after := a.r.Routes(); len(after) != len(before) {
		t.Errorf("a refused Set changed the routes: %v -> %v", before, after)
	}
}

func TestDualStack(t *testing.T) {
	a, b := dualPair(t, Options{})
	// IPv6 pods over an IPv4 underlay.
	a.tun.send(udp6(addr("fd00:10:244::4"), addr("fd00:10:244:1::2"), 64, []byte("v6")))
	got := header.IPv6(b.tun.recv(t))
	if got.DestinationAddress() != packet.TCPIPAddr(addr("fd00:10:244:1::2")) || got.HopLimit() != 62 {
		t.Errorf("got IPv6 packet to %s hop limit %d, want fd00:10:244:1::2 with 62", got.DestinationAddress(), got.HopLimit())
	}
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("v4")))
	b.tun.recv(t)
}

func TestRunStopsOnCancelAndClosesDevices(t *testing.T) {
	nw := overlaytest.NewNetwork()
	tn := newMemTUN("vr0")
	conn, err := nw.Listen(netip.MustParseAddrPort("192.168.31.201:8285"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{TUN: tn, Overlay: conn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := tn.Write([][]byte{{0x45}}, nil); err == nil {
		t.Error("TUN still writable after Run returned; want it closed")
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("second Run succeeded, want an error")
	}
}

func TestNewRequiresDevices(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without TUN succeeded")
	}
	if _, err := New(Options{TUN: newMemTUN("x")}); err == nil {
		t.Error("New without overlay succeeded")
	}
	nw := overlaytest.NewNetwork()
	conn, _ := nw.Listen(netip.MustParseAddrPort("1.2.3.4:1"))
	defer conn.Close()
	if _, err := New(Options{TUN: newMemTUN("x"), Overlay: conn, MTU: 100}); err == nil {
		t.Error("New with MTU 100 succeeded")
	}
}

// TestKernelRoutes: a client pod on hostgw-node reaches a Service endpoint
// that is not a pod — the API server on hostgw-master's own address — the
// way the NAT hands such a packet on: the router routes it to the node
// kernel (KernelRoutes), which reaches 192.168.31.201 by its own routes.
// The API server's reply leaves hostgw-master's kernel into its router
// with the node's address as source, and hostgw-node's router admits it
// from that peer (its underlay address), not as spoofed.
func TestKernelRoutes(t *testing.T) {
	nw, a, b := seedPair(t, Options{})
	apiserver := addr("192.168.31.201")
	toAPI := udp4(addr("10.244.1.2"), apiserver, 64, true, []byte("req"))

	// Without a kernel route the router has nowhere to send it.
	b.tun.send(toAPI)
	if _, icmp := icmpFrom(t, b.tun); icmp.Type() != header.ICMPv4DstUnreachable || icmp.Code() != header.ICMPv4NetUnreachable {
		t.Fatalf("without KernelRoutes: ICMP type %d code %d, want net unreachable", icmp.Type(), icmp.Code())
	}

	cfg := b.config(a.asPeer())
	cfg.KernelRoutes = []netip.Prefix{netip.PrefixFrom(apiserver, 32)}
	if err := b.r.Set(cfg); err != nil {
		t.Fatalf("Set(KernelRoutes %v): %v", cfg.KernelRoutes, err)
	}
	b.tun.send(toAPI)
	got := header.IPv4(b.tun.recv(t))
	if got.DestinationAddress() != packet.TCPIPAddr(apiserver) || got.TTL() != 63 {
		t.Errorf("hostgw-node kernel got dst %s ttl %d, want %s ttl 63", got.DestinationAddress(), got.TTL(), apiserver)
	}

	before := b.r.Stats().Drops[DropSpoofed]
	a.tun.send(udp4(apiserver, addr("10.244.1.2"), 64, true, []byte("reply")))
	back := header.IPv4(b.tun.recv(t))
	if back.SourceAddress() != packet.TCPIPAddr(apiserver) {
		t.Errorf("reply source = %s, want %s", back.SourceAddress(), apiserver)
	}
	// Any other address outside the peer's pod CIDRs is still refused.
	// (hostgw-master's router would not take it from its kernel either:
	// TestTUNAdmitsOnlyLocalSources.)
	nw.Send(a.underlay, b.underlay, udp4(addr("192.168.31.77"), addr("10.244.1.2"), 64, true, nil))
	waitFor(t, "spoofed drop on hostgw-node", func() bool { return b.r.Stats().Drops[DropSpoofed] == before+1 })

	// A kernel route into the pod network would loop through the kernel.
	cfg.KernelRoutes = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	if err := b.r.Set(cfg); err == nil || !strings.Contains(err.Error(), "kernel route 10.244.0.0/16") {
		t.Errorf("Set(KernelRoutes 10.244.0.0/16) = %v, want an error naming it", err)
	}
}

// TestDualStackRoutes: the route of an IPv6 pod CIDR over an IPv4 underlay
// keeps its next hop, written as `ip route` writes one of the other family.
func TestDualStackRoutes(t *testing.T) {
	a, _ := dualPair(t, Options{})
	var got []string
	for _, rt := range a.r.Routes() {
		got = append(got, rt.String())
	}
	want := "fd00:10:244:1::/64 via inet 192.168.31.202 dev overlay0"
	if !slices.Contains(got, want) {
		t.Errorf("Routes() = %q, want a line %q", got, want)
	}
}

// TestInnerPacketsDroppedAreCounted: an inner packet with a bad IPv4
// header checksum or an option whose length runs past the header, and one
// to a broadcast or multicast address, are refused and counted, each
// under its own reason, from a peer; bad headers from the TUN too.
func TestInnerPacketsDroppedAreCounted(t *testing.T) {
	nw, a, _ := seedPair(t, Options{})
	peerAddr := netip.MustParseAddrPort("192.168.31.202:8285")
	good := func() []byte { return udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("x")) }
	badSum := good()
	badSum[10] ^= 0xff
	// A 24-byte header whose one option (type 7, record route) claims 40
	// bytes; the header checksum is right, so only the option is wrong.
	withOption := func(opt []byte) []byte {
		g := good()
		b := append(append(append([]byte(nil), g[:20]...), opt...), g[20:]...)
		ip := header.IPv4(b)
		ip.SetHeaderLength(uint8(20 + len(opt)))
		ip.SetTotalLength(uint16(len(b)))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return b
	}
	badOpt := withOption([]byte{7, 40, 4, 0})
	cases := []struct {
		name   string
		b      []byte
		reason DropReason
	}{
		{"bad header checksum", badSum, DropBadChecksum},
		{"option length past the header", badOpt, DropBadOptions},
		{"option length below 2", withOption([]byte{7, 1, 0, 0}), DropBadOptions},
		{"limited broadcast", udp4(addr("10.244.1.2"), addr("255.255.255.255"), 64, true, nil), DropBroadcast},
		{"multicast", udp4(addr("10.244.1.2"), addr("239.1.2.3"), 64, true, nil), DropBroadcast},
	}
	for _, tc := range cases {
		t.Run("overlay/"+tc.name, func(t *testing.T) {
			before := a.r.Stats().Drops[tc.reason]
			nw.Send(peerAddr, a.underlay, tc.b)
			waitFor(t, "drop counted as "+tc.reason.String(), func() bool {
				return a.r.Stats().Drops[tc.reason] == before+1
			})
		})
	}
	// From the kernel: a pod's packet with a bad checksum or options.
	for _, tc := range []struct {
		b      []byte
		reason DropReason
	}{
		{badSum, DropBadChecksum},
		{badOpt, DropBadOptions},
	} {
		b := slices.Clone(tc.b)
		ip := header.IPv4(b)
		ip.SetSourceAddress(packet.TCPIPAddr(addr("10.244.0.4")))
		ip.SetDestinationAddress(packet.TCPIPAddr(addr("10.244.1.2")))
		if tc.reason != DropBadChecksum {
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		}
		before := a.r.Stats().Drops[tc.reason]
		a.tun.send(b)
		waitFor(t, "TUN drop counted as "+tc.reason.String(), func() bool { return a.r.Stats().Drops[tc.reason] == before+1 })
		if tc.reason == DropBadOptions {
			// The stack still answers bad options with parameter
			// problem (RFC 1812 4.3.2.7) before it drops the packet.
			if got := a.tun.recv(t); len(got) < 21 || got[20] != uint8(header.ICMPv4ParamProblem) {
				t.Errorf("answer to a packet with a bad option = %x, want ICMP parameter problem", got)
			}
		}
	}
	a.tun.expectNone(t, 50*time.Millisecond)
	// A good packet still goes through, and is not counted.
	nw.Send(peerAddr, a.underlay, good())
	a.tun.recv(t)
	for _, r := range []DropReason{DropBadChecksum, DropBadOptions, DropBroadcast} {
		if got := a.r.Stats().Drops[r]; got != map[DropReason]uint64{DropBadChecksum: 2, DropBadOptions: 3, DropBroadcast: 2}[r] {
			t.Errorf("Drops[%s] = %d after the good packet", r, got)
		}
	}
}
