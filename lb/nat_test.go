package lb

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// The NAT as hostgw-master's router runs it: local pods 10.244.0.0/24,
// router address 169.254.244.1; my-service 10.103.92.81:80 → 10.244.0.4
// (local), 10.244.1.2, 10.244.1.3 (hostgw-node); kube-dns 10.96.0.10:53/UDP
// → 10.244.0.2, 10.244.0.3.
var (
	routerAddr = netip.MustParseAddr("169.254.244.1")
	vip        = netip.MustParseAddrPort("10.103.92.81:80")
	dnsVIP     = netip.MustParseAddrPort("10.96.0.10:53")
	clientA    = netip.MustParseAddrPort("10.244.0.9:40000") // a pod on hostgw-master
)

func newTestNAT(t *testing.T, opts NATOptions, services ...Service) (*NAT, *Table, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	table, err := NewTable(nil, Options{NodeName: masterNode, Clock: clk, Picker: PickRoundRobin})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Set(services); err != nil {
		t.Fatalf("Set: %v", err)
	}
	opts.Clock = clk
	n, err := NewNAT(table, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
	return n, table, clk
}

// tcp4 builds an IPv4 TCP segment with valid checksums.
func tcp4(src, dst netip.AddrPort, flags header.TCPFlags, payload string) []byte {
	total := header.IPv4MinimumSize + header.TCPMinimumSize + len(payload)
	b := make([]byte, total)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src.Addr()), DstAddr: packet.TCPIPAddr(dst.Addr())})
	ip.SetChecksum(^ip.CalculateChecksum())
	tc := header.TCP(b[header.IPv4MinimumSize:])
	tc.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 1000})
	copy(tc.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, packet.TCPIPAddr(src.Addr()), packet.TCPIPAddr(dst.Addr()), uint16(len(tc)))
	xsum = checksum.Checksum([]byte(payload), xsum)
	tc.SetChecksum(^tc.CalculateChecksum(xsum))
	return b
}

func udp4(src, dst netip.AddrPort, payload string) []byte {
	total := header.IPv4MinimumSize + header.UDPMinimumSize + len(payload)
	b := make([]byte, total)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src.Addr()), DstAddr: packet.TCPIPAddr(dst.Addr())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, packet.TCPIPAddr(src.Addr()), packet.TCPIPAddr(dst.Addr()), uint16(len(u)))
	xsum = checksum.Checksum([]byte(payload), xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	return b
}

// tuple reads a translated packet's addresses and checks every checksum.
func tuple(t *testing.T, b []byte) (src, dst netip.AddrPort) {
	t.Helper()
	ip := header.IPv4(b)
	if !ip.IsChecksumValid() {
		t.Fatalf("IPv4 header checksum invalid after translation: %x", b)
	}
	sa, da := ip.SourceAddress(), ip.DestinationAddress()
	s, _ := netip.AddrFromSlice(sa.AsSlice())
	d, _ := netip.AddrFromSlice(da.AsSlice())
	payloadLen := uint16(len(ip.Payload()))
	switch ip.TransportProtocol() {
	case header.TCPProtocolNumber:
		tc := header.TCP(ip.Payload())
		if !tc.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(tc.Payload(), 0), uint16(len(tc.Payload()))) {
			t.Fatalf("TCP checksum invalid after translation")
		}
		return netip.AddrPortFrom(s, tc.SourcePort()), netip.AddrPortFrom(d, tc.DestinationPort())
	default:
		u := header.UDP(ip.Payload())
		if !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
			t.Fatalf("UDP checksum invalid after translation (len %d)", payloadLen)
		}
		return netip.AddrPortFrom(s, u.SourcePort()), netip.AddrPortFrom(d, u.DestinationPort())
	}
}

// ingress decodes b as the router does and shows it to n. A packet the
// router would refuse before its hook fails the test, and so does a
// Parsed that no longer describes the packet Ingress passed.
func ingress(t testing.TB, n *NAT, fromTUN bool, b []byte) (pass bool, reply []byte) {
	t.Helper()
	var p packet.Parsed
	if f := p.Decode(b); f != packet.FaultNone {
		t.Fatalf("Decode(%x) = fault %d: the router drops it before the NAT", b, f)
	}
	pass, reply = n.Ingress(fromTUN, &p, b[:p.Length])
	var again packet.Parsed
	if again.Decode(b[:p.Length]); pass && again != p {
		t.Fatalf("after Ingress(%v), Parsed = %+v, but the packet decodes as %+v: the NAT must keep it current", fromTUN, p, again)
	}
	if reply != nil {
		reply = append([]byte(nil), reply...)
	}
	return pass, reply
}

func TestNATTranslatesBothWays(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	// Round-robin over 10.244.0.4, 10.244.1.2, 10.244.1.3: three
	// connections reach all three, the local one through the router
	// address.
	seen := map[netip.Addr]bool{}
	for i := range 3 {
		client := netip.AddrPortFrom(clientA.Addr(), clientA.Port()+uint16(i))
		syn := tcp4(client, vip, header.TCPFlagSyn, "")
		if pass, _ := ingress(t, n, true, syn); !pass {
			t.Fatalf("SYN %d to the VIP dropped", i)
		}
		src, dst := tuple(t, syn)
		if dst.Port() != 80 {
			t.Errorf("SYN went to %s, want port 80", dst)
		}
		seen[dst.Addr()] = true
		local := dst.Addr() == netip.MustParseAddr("10.244.0.4")
		wantSrc := client
		if local {
			wantSrc = netip.AddrPortFrom(routerAddr, client.Port())
		}
		if src != wantSrc {
			t.Errorf("backend %s sees source %s, want %s", dst, src, wantSrc)
		}

		// The backend's reply comes back (from the TUN if local, else from
		// a peer) and is translated back to the VIP.
		synack := tcp4(dst, src, header.TCPFlagSyn|header.TCPFlagAck, "")
		if pass, _ := ingress(t, n, local, synack); !pass {
			t.Fatalf("reply dropped")
		}
		rs, rd := tuple(t, synack)
		if rs != vip || rd != client {
			t.Errorf("reply %s -> %s after translation, want %s -> %s", rs, rd, vip, client)
		}
		// Data on the established flow follows the same translation.
		data := tcp4(client, vip, header.TCPFlagAck|header.TCPFlagPsh, "GET / HTTP/1.1\r\n\r\n")
		ingress(t, n, true, data)
		if _, d2 := tuple(t, data); d2 != dst {
			t.Errorf("data went to %s, want the flow's backend %s", d2, dst)
		}
	}
	if len(seen) != 3 {
		t.Errorf("backends reached = %v, want all three", seen)
	}
	st := n.Stats()
	if st.Flows != 3 || st.FlowsTotal != 3 || st.HairpinSNAT != 1 {
		t.Errorf("stats = %+v, want 3 flows, 3 total, 1 hairpin", st)
	}
}

func TestNATPassesOtherTraffic(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	pod := netip.MustParseAddrPort("10.244.1.2:80")
	for _, tc := range []struct {
		name    string
		fromTUN bool
		b       []byte
	}{
		{"pod to pod", true, tcp4(clientA, pod, header.TCPFlagSyn, "")},
		{"VIP port without a Service", true, tcp4(clientA, netip.AddrPortFrom(vip.Addr(), 81), header.TCPFlagSyn, "")},
		{"VIP from a peer", false, tcp4(netip.MustParseAddrPort("10.244.1.9:5555"), vip, header.TCPFlagSyn, "")},
		{"ICMP", true, []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 244, 0, 9, 10, 103, 92, 81, 8, 0, 0, 0, 0, 0, 0, 0}},
	} {
		orig := append([]byte(nil), tc.b...)
		pass, reply := ingress(t, n, tc.fromTUN, tc.b)
		if !pass || reply != nil || string(orig) != string(tc.b) {
			t.Errorf("%s: pass=%v reply=%v changed=%v, want passed untouched", tc.name, pass, reply != nil, string(orig) != string(tc.b))
		}
	}
	if st := n.Stats(); st.FlowsTotal != 0 {
		t.Errorf("flows created = %d, want 0", st.FlowsTotal)
	}
}

func TestNATRefusesServiceWithoutEndpoints(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service", func(s *Service) { s.Endpoints = nil }))
	syn := tcp4(clientA, vip, header.TCPFlagSyn, "")
	pass, reply := ingress(t, n, true, syn)
	if pass {
		t.Fatal("SYN to a Service without endpoints passed")
	}
	ip := header.IPv4(reply)
	if reply == nil || !ip.IsValid(len(reply)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		t.Fatalf("reply = %x, want an ICMPv4 packet", reply)
	}
	ic := header.ICMPv4(ip.Payload())
	if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4PortUnreachable {
		t.Errorf("ICMP type %d code %d, want port unreachable", ic.Type(), ic.Code())
	}
	if checksum.Checksum(ic, 0) != 0xffff {
		t.Error("ICMP checksum invalid")
	}
	if got, want := ip.DestinationAddress(), packet.TCPIPAddr(clientA.Addr()); got != want {
		t.Errorf("ICMP to %s, want the client %s", got, want)
	}
	// The quoted packet is the client's, so its kernel finds the socket.
	if q := header.IPv4(ic.Payload()); q.DestinationAddress() != packet.TCPIPAddr(vip.Addr()) {
		t.Errorf("quoted packet to %s, want the VIP", q.DestinationAddress())
	}
	if st := n.Stats(); st.RefusedNoEndpoints != 1 || st.Flows != 0 {
		t.Errorf("stats = %+v, want 1 refusal and no flow", st)
	}
}

func TestNATMovesUDPFlowsOffRemovedEndpoints(t *testing.T) {
	n, table, _ := newTestNAT(t, NATOptions{}, makeKubeDNS())
	client := netip.MustParseAddrPort("10.244.0.7:5353") // a local pod with a fixed source port
	q := udp4(client, dnsVIP, "query")
	ingress(t, n, true, q)
	_, first := tuple(t, q)

	// Remove the endpoint the flow uses.
	if err := table.Set([]Service{makeKubeDNS(func(s *Service) {
		var keep []Endpoint
		for _, e := range s.Endpoints {
			if e.Addr != first.Addr() {
				keep = append(keep, e)
			}
		}
		s.Endpoints = keep
	})}); err != nil {
		t.Fatal(err)
	}
	q2 := udp4(client, dnsVIP, "query again")
	if pass, _ := ingress(t, n, true, q2); !pass {
		t.Fatal("query after the endpoint left was dropped; want it moved")
	}
	seenBy, second := tuple(t, q2)
	if second.Addr() == first.Addr() {
		t.Fatalf("query still goes to removed endpoint %s", first)
	}
	// Replies from the new backend are translated; the old backend's are not.
	rep := udp4(second, seenBy, "answer")
	ingress(t, n, true, rep)
	if s, _ := tuple(t, rep); s != dnsVIP {
		t.Errorf("reply from the new backend comes from %s, want %s", s, dnsVIP)
	}
	if st := n.Stats(); st.Migrated != 1 || st.Flows != 1 {
		t.Errorf("stats = %+v, want 1 migrated flow", st)
	}

	// All endpoints gone: the flow is refused, not blackholed.
	if err := table.Set([]Service{makeKubeDNS(func(s *Service) { s.Endpoints = nil })}); err != nil {
		t.Fatal(err)
	}
	if pass, reply := ingress(t, n, true, udp4(client, dnsVIP, "q3")); pass || reply == nil {
		t.Errorf("with no endpoints: pass=%v reply=%v, want refused with ICMP", pass, reply != nil)
	}
}

func TestNATKeepsTCPFlowsOnEndpointRemoval(t *testing.T) {
	n, table, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	syn := tcp4(clientA, vip, header.TCPFlagSyn, "")
	ingress(t, n, true, syn)
	_, backend := tuple(t, syn)
	if err := table.Set([]Service{makeService("default", "my-service", func(s *Service) {
		var keep []Endpoint
		for _, e := range s.Endpoints {
			if e.Addr != backend.Addr() {
				keep = append(keep, e)
			}
		}
		s.Endpoints = keep
	})}); err != nil {
		t.Fatal(err)
	}
	data := tcp4(clientA, vip, header.TCPFlagAck, "more")
	ingress(t, n, true, data)
	if _, d := tuple(t, data); d != backend {
		t.Errorf("established connection moved to %s, want it kept on %s (kube-proxy keeps it)", d, backend)
	}
	// New connections avoid the removed endpoint.
	for i := range 10 {
		s := tcp4(netip.AddrPortFrom(clientA.Addr(), 41000+uint16(i)), vip, header.TCPFlagSyn, "")
		ingress(t, n, true, s)
		if _, d := tuple(t, s); d.Addr() == backend.Addr() {
			t.Fatalf("new connection went to removed endpoint %s", backend)
		}
	}
}

func TestNATReapsAndReleases(t *testing.T) {
	n, table, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service"), makeKubeDNS())
	// A UDP flow, an unanswered SYN, a closed TCP flow and an established one.
	ingress(t, n, true, udp4(clientA, dnsVIP, "q"))
	ingress(t, n, true, tcp4(netip.MustParseAddrPort("10.244.0.9:1001"), vip, header.TCPFlagSyn, ""))

	closed := netip.MustParseAddrPort("10.244.0.9:1002")
	s := tcp4(closed, vip, header.TCPFlagSyn, "")
	ingress(t, n, true, s)
	bsrc, bdst := tuple(t, s)
	ingress(t, n, false, tcp4(bdst, bsrc, header.TCPFlagSyn|header.TCPFlagAck, ""))
	ingress(t, n, true, tcp4(closed, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
	ingress(t, n, false, tcp4(bdst, bsrc, header.TCPFlagFin|header.TCPFlagAck, ""))

	est := netip.MustParseAddrPort("10.244.0.9:1003")
	s = tcp4(est, vip, header.TCPFlagSyn, "")
	ingress(t, n, true, s)
	esrc, edst := tuple(t, s)
	ingress(t, n, edst.Addr() == netip.MustParseAddr("10.244.0.4"), tcp4(edst, esrc, header.TCPFlagSyn|header.TCPFlagAck, ""))
	ingress(t, n, true, tcp4(est, vip, header.TCPFlagAck, ""))

	active := func() int64 {
		var sum int64
		for _, st := range table.Stats() {
			sum += st.Active
		}
		return sum
	}
	// The closed flow gave its count back when it closed.
	if got := active(); got != 3 {
		t.Fatalf("active connections = %d, want 3", got)
	}
	steps := []struct {
		after time.Duration
		flows uint64
	}{
		{11 * time.Second, 3}, // the closed flow lingers 10s
		{20 * time.Second, 1}, // UDP idle 30s, unanswered SYN 30s (SYN_SENT)
		{24 * time.Hour, 0},   // established, idle 24h
	}
	for _, st := range steps {
		clk.Advance(st.after)
		n.Reap()
		if got := n.Stats().Flows; got != st.flows {
			t.Fatalf("after %v more: %d flows, want %d", st.after, got, st.flows)
		}
	}
	if got := active(); got != 0 {
		t.Errorf("active connections after reaping = %d, want 0", got)
	}
	if st := n.tcpLimit.Stats(); st.Active != 0 {
		t.Errorf("TCP limiter still holds %d, want 0", st.Active)
	}
}

// TestNATTCPHandshakeTimeouts holds TCP flows to conntrack's states: a
// SYN alone times out as SYN_SENT, a SYN answered by a SYN-ACK as
// SYN_RECV, and only the client's ACK of that SYN-ACK earns the
// established timeout. A reply that is not a SYN-ACK does not move a
// flow out of SYN_SENT.
func TestNATTCPHandshakeTimeouts(t *testing.T) {
	const (
		synSent = 5 * time.Second
		synRecv = 20 * time.Second
		est     = time.Hour
	)
	// Each step is a packet of the connection: from the client (fwd) or
	// from the backend with these flags.
	type step struct {
		fwd   bool
		flags header.TCPFlags
	}
	syn := step{true, header.TCPFlagSyn}
	synAck := step{false, header.TCPFlagSyn | header.TCPFlagAck}
	ack := step{true, header.TCPFlagAck}
	for _, tc := range []struct {
		name     string
		steps    []step
		lifetime time.Duration // the flow lives this long idle, and no longer
		halfOpen bool          // its expiry counts as half-open
	}{
		{"SYN only", []step{syn}, synSent, true},
		{"SYN retransmitted", []step{syn, syn}, synSent, true},
		{"SYN, SYN-ACK", []step{syn, synAck}, synRecv, true},
		{"SYN, SYN-ACK retransmitted", []step{syn, synAck, synAck}, synRecv, true},
		{"SYN, bare ACK from the backend", []step{syn, {false, header.TCPFlagAck}}, synSent, true},
		{"SYN, ACK before any SYN-ACK", []step{syn, ack}, synSent, true},
		{"SYN, SYN-ACK, ACK", []step{syn, synAck, ack}, est, false},
		{"SYN, SYN-ACK, data", []step{syn, synAck, {true, header.TCPFlagAck | header.TCPFlagPsh}}, est, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, clk := newTestNAT(t, NATOptions{TCPSynSentTimeout: synSent, TCPSynRecvTimeout: synRecv, TCPEstablishedTimeout: est},
				makeService("default", "my-service"))
			first := tcp4(clientA, vip, header.TCPFlagSyn, "")
			ingress(t, n, true, first)
			bsrc, bdst := tuple(t, first) // as the backend sees the client
			local := bdst.Addr() == netip.MustParseAddr("10.244.0.4")
			for _, s := range tc.steps[1:] {
				if s.fwd {
					ingress(t, n, true, tcp4(clientA, vip, s.flags, ""))
				} else {
					ingress(t, n, local, tcp4(bdst, bsrc, s.flags, ""))
				}
			}
			clk.Advance(tc.lifetime)
			n.Reap()
			if got := n.Stats().Flows; got != 1 {
				t.Fatalf("after %v idle: %d flows, want 1 (the flow lives %v)", tc.lifetime, got, tc.lifetime)
			}
			clk.Advance(time.Millisecond)
			n.Reap()
			st := n.Stats()
			if st.Flows != 0 || st.Expired != 1 {
				t.Fatalf("after %v idle: %d flows, %d expired; want 0 and 1", tc.lifetime+time.Millisecond, st.Flows, st.Expired)
			}
			if want := map[bool]uint64{true: 1}[tc.halfOpen]; st.ExpiredHalfOpen != want {
				t.Errorf("ExpiredHalfOpen = %d, want %d", st.ExpiredHalfOpen, want)
			}
			if got := n.tcpLimit.Stats().Active; got != 0 {
				t.Errorf("TCP limiter holds %d after expiry, want 0", got)
			}
		})
	}
}

// TestNATDefaultHandshakeTimeouts: with default options a SYN flood
// answered by the backends (the spoofed clients never send the final
// ACK) leaves its flows for SYN_RECV's 60 s, not the established 24 h.
func TestNATDefaultHandshakeTimeouts(t *testing.T) {
	n, _, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	const flood = 100
	for i := range flood {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)}), 5000)
		s := tcp4(client, vip, header.TCPFlagSyn, "")
		ingress(t, n, true, s)
		src, dst := tuple(t, s)
		ingress(t, n, dst.Addr() == netip.MustParseAddr("10.244.0.4"), tcp4(dst, src, header.TCPFlagSyn|header.TCPFlagAck, ""))
	}
	clk.Advance(DefaultNATTCPSynRecvTimeout + time.Second)
	n.Reap()
	if st := n.Stats(); st.Flows != 0 || st.ExpiredHalfOpen != flood {
		t.Fatalf("%v after a flood of %d answered SYNs: %d flows, %d half-open expired; want 0 and %d",
			DefaultNATTCPSynRecvTimeout+time.Second, flood, st.Flows, st.ExpiredHalfOpen, flood)
	}
}

// TestNATNewConnectionOnClosedFlow: a client that reuses the 5-tuple of a
// connection closed moments ago (FIN both ways, or RST) opens a new
// connection: its SYN starts a flow of its own, which lives on as any
// other, instead of inheriting the closed flow and losing it 10 s after
// its last packet.
func TestNATNewConnectionOnClosedFlow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(t *testing.T, n *NAT, bsrc, bdst netip.AddrPort, local bool)
	}{
		{"after FIN both ways", func(t *testing.T, n *NAT, bsrc, bdst netip.AddrPort, local bool) {
			ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
			ingress(t, n, local, tcp4(bdst, bsrc, header.TCPFlagFin|header.TCPFlagAck, ""))
			ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagAck, ""))
		}},
		{"after RST", func(t *testing.T, n *NAT, bsrc, bdst netip.AddrPort, local bool) {
			ingress(t, n, local, tcp4(bdst, bsrc, header.TCPFlagRst|header.TCPFlagAck, ""))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
			// connect opens a connection from clientA and returns the
			// backend's view of it.
			connect := func() (bsrc, bdst netip.AddrPort, local bool) {
				syn := tcp4(clientA, vip, header.TCPFlagSyn, "")
				if pass, _ := ingress(t, n, true, syn); !pass {
					t.Fatal("SYN to the VIP dropped")
				}
				bsrc, bdst = tuple(t, syn)
				local = bdst.Addr() == netip.MustParseAddr("10.244.0.4")
				ingress(t, n, local, tcp4(bdst, bsrc, header.TCPFlagSyn|header.TCPFlagAck, ""))
				ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagAck, ""))
				return bsrc, bdst, local
			}
			bsrc, bdst, local := connect()
			tc.close(t, n, bsrc, bdst, local)
			clk.Advance(2 * time.Second)

			_, second, _ := connect()
			if second == bdst {
				t.Errorf("the new connection went to %s, the closed one's backend: round-robin should pick anew", second)
			}
			st := n.Stats()
			if st.Flows != 1 || st.FlowsTotal != 2 || st.Expired != 1 || st.ExpiredHalfOpen != 0 {
				t.Errorf("after a new SYN on the closed flow: stats = %+v, want 1 flow, 2 created, 1 expired, 0 half-open", st)
			}
			if got := n.tcpLimit.Stats().Active; got != 1 {
				t.Errorf("TCP limiter holds %d, want 1 (the new connection)", got)
			}
			// Idle for longer than a closed flow lingers, the new
			// connection is still tracked and still translated.
			clk.Advance(closedLinger + time.Second)
			n.Reap()
			data := tcp4(clientA, vip, header.TCPFlagAck|header.TCPFlagPsh, "GET / HTTP/1.1\r\n\r\n")
			if pass, reply := ingress(t, n, true, data); !pass || reply != nil {
				t.Fatalf("data %v after idling: pass %v, reply %x; want it forwarded", closedLinger+time.Second, pass, reply)
			}
			if _, d := tuple(t, data); d != second {
				t.Errorf("data after idling went to %s, want the new connection's backend %s", d, second)
			}
		})
	}
}

func TestNATCapsFlowsPerClient(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{MaxPerClient: 2}, makeService("default", "my-service"))
	for i := range 3 {
		client := netip.AddrPortFrom(clientA.Addr(), 2000+uint16(i))
		syn := tcp4(client, vip, header.TCPFlagSyn, "")
		pass, _ := ingress(t, n, true, syn)
		if want := i < 2; pass != want {
			t.Errorf("connection %d: pass = %v, want %v", i, pass, want)
		}
		if pass {
			// Completed handshakes: early drop may not end them.
			establish(t, n, client, syn)
		}
	}
	// Another client is not affected.
	if pass, _ := ingress(t, n, true, tcp4(netip.MustParseAddrPort("10.244.0.10:2000"), vip, header.TCPFlagSyn, "")); !pass {
		t.Error("another client refused")
	}
	if st := n.Stats(); st.RefusedCap != 1 || st.EvictedPerClient != 0 {
		t.Errorf("cap refusals = %d, per-client evictions = %d, want 1 and 0", st.RefusedCap, st.EvictedPerClient)
	}
}

// establish completes the handshake of the connection syn, a SYN from
// client that Ingress translated (in place): the backend's SYN-ACK, the
// client's ACK.
func establish(t *testing.T, n *NAT, client netip.AddrPort, syn []byte) {
	t.Helper()
	src, dst := tuple(t, syn)
	if pass, _ := ingress(t, n, false, tcp4(dst, src, header.TCPFlagSyn|header.TCPFlagAck, "")); !pass {
		t.Fatalf("SYN-ACK to %v dropped", src)
	}
	if pass, _ := ingress(t, n, true, tcp4(client, vip, header.TCPFlagAck, "")); !pass {
		t.Fatalf("ACK from %v dropped", client)
	}
}

// TestNATCountsPortExhaustion: when every source port the NAT could
// translate a hairpin flow to already reaches the backend, the new flow is
// refused and counted as port exhaustion, not as a cap, and gives its
// client's slot back.
func TestNATCountsPortExhaustion(t *testing.T) {
	local := netip.MustParseAddrPort("10.244.0.4:80")
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service", func(s *Service) {
		s.Endpoints = []Endpoint{makeEndpoint(local.Addr().String())}
	}))
	takeHairpinPorts(n, local)
	if pass, _ := ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagSyn, "")); pass {
		t.Fatal("SYN passed with no hairpin port free")
	}
	st := n.Stats()
	if st.RefusedPorts != 1 || st.RefusedCap != 0 || st.Flows != 0 {
		t.Errorf("stats = %+v, want RefusedPorts 1, RefusedCap 0, Flows 0", st)
	}
	if got := n.tcpLimit.Stats().Active; got != 0 {
		t.Errorf("TCP limiter holds %d after the refusal, want 0", got)
	}
}

// TestNATHairpinPortsPerBackend: hairpin source ports are taken per
// backend address and port, so a backend whose ports toward the router
// address are all taken (a flood of connections to it) costs the others
// none: a new flow to another local backend, or to another port of the
// same one, keeps the client's port.
func TestNATHairpinPortsPerBackend(t *testing.T) {
	busy := netip.MustParseAddrPort("10.244.0.4:80")
	otherVIP, altVIP := netip.MustParseAddrPort("10.103.92.85:80"), netip.MustParseAddrPort("10.103.92.86:80")
	n, _, _ := newTestNAT(t, NATOptions{},
		makeService("default", "busy", func(s *Service) { s.Endpoints = []Endpoint{makeEndpoint(busy.Addr().String())} }),
		makeService("default", "other", func(s *Service) {
			s.ClusterIPs = []netip.Addr{otherVIP.Addr()}
			s.Endpoints = []Endpoint{makeEndpoint("10.244.0.5")}
		}),
		makeService("default", "alt", func(s *Service) {
			s.ClusterIPs = []netip.Addr{altVIP.Addr()}
			s.Ports = []ServicePort{{Port: 80, Proto: TCP, TargetPort: 8080}}
			s.Endpoints = []Endpoint{makeEndpoint(busy.Addr().String())}
		}),
	)
	takeHairpinPorts(n, busy)
	if pass, _ := ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagSyn, "")); pass {
		t.Fatalf("SYN to %v passed with no hairpin port free toward %v", vip, busy)
	}
	for _, tc := range []struct {
		vip     netip.AddrPort
		backend netip.AddrPort
	}{
		{otherVIP, netip.MustParseAddrPort("10.244.0.5:80")},
		{altVIP, netip.MustParseAddrPort("10.244.0.4:8080")},
	} {
		b := tcp4(clientA, tc.vip, header.TCPFlagSyn, "")
		if pass, _ := ingress(t, n, true, b); !pass {
			t.Fatalf("SYN %v -> %v refused while only %v's ports are taken", clientA, tc.vip, busy)
		}
		src, dst := tuple(t, b)
		if want := netip.AddrPortFrom(routerAddr, clientA.Port()); src != want || dst != tc.backend {
			t.Errorf("SYN %v -> %v translated to %v -> %v, want %v -> %v", clientA, tc.vip, src, dst, want, tc.backend)
		}
	}
	if st := n.Stats(); st.RefusedPorts != 1 || st.Flows != 2 {
		t.Errorf("stats = %+v, want RefusedPorts 1, Flows 2", st)
	}
}

// takeHairpinPorts fills n's table with a TCP flow from backend to every
// port of the router address.
func takeHairpinPorts(n *NAT, backend netip.AddrPort) {
	taken := &flow{}
	for port := range 1 << 16 {
		k := flowKey{src: backend, dst: netip.AddrPortFrom(routerAddr, uint16(port)), proto: TCP}
		n.shard(k).m[k] = taken
	}
}

func TestNATRunStops(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- n.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func FuzzNATIngress(f *testing.F) {
	f.Add(true, tcp4(clientA, vip, header.TCPFlagSyn, ""))
	f.Add(true, udp4(clientA, dnsVIP, "q"))
	f.Add(false, []byte{0x45, 0, 0, 20})
	f.Add(true, []byte{0x60, 0, 0, 0, 0, 8, 17, 64})
	for _, frag := range fragment4(udp4(clientA, dnsVIP, strings.Repeat("x", 100)), 48, 3) {
		f.Add(true, frag)
	}
	for _, frag := range udp6Fragments(clientA6(), netip.MustParseAddrPort("[fd00:10:96::a]:53"), strings.Repeat("x", 100), 48, 3) {
		f.Add(true, frag)
	}
	f.Fuzz(func(t *testing.T, fromTUN bool, b []byte) {
		n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"), makeKubeDNS())
		var p packet.Parsed
		if p.Decode(b) != packet.FaultNone {
			return // the router drops it before the NAT
		}
		n.Ingress(fromTUN, &p, b[:p.Length])
	})
}

func TestNATResetsMidStreamSegments(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	seg := tcp4(clientA, vip, header.TCPFlagAck|header.TCPFlagPsh, "data of a connection no flow knows")
	pass, reply := ingress(t, n, true, seg)
	if pass {
		t.Fatal("mid-stream segment passed; want it refused")
	}
	ip := header.IPv4(reply)
	if reply == nil || !ip.IsValid(len(reply)) || ip.TransportProtocol() != header.TCPProtocolNumber {
		t.Fatalf("reply = %x, want a TCP segment", reply)
	}
	tc := header.TCP(ip.Payload())
	if tc.Flags()&header.TCPFlagRst == 0 || tc.SequenceNumber() != header.TCP(seg[header.IPv4MinimumSize:]).AckNumber() {
		t.Errorf("reply flags %v seq %d, want RST with seq = the segment's ack", tc.Flags(), tc.SequenceNumber())
	}
	if src, dst := tuple(t, reply); src != vip || dst != clientA {
		t.Errorf("RST %s -> %s, want %s -> %s", src, dst, vip, clientA)
	}
	if st := n.Stats(); st.MidStream != 1 || st.FlowsTotal != 0 {
		t.Errorf("stats = %+v, want 1 mid-stream refusal and no flow", st)
	}
	// A RST to the VIP is dropped without an answer.
	if pass, reply := ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagRst, "")); pass || reply != nil {
		t.Errorf("RST to the VIP: pass=%v reply=%v, want dropped silently", pass, reply != nil)
	}
}

func TestNATDropsLocalPolicyWithoutLocalEndpoints(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service", func(s *Service) {
		s.InternalTrafficPolicy = PolicyLocal
		s.Endpoints = []Endpoint{makeEndpoint("10.244.1.2")} // on hostgw-node only
		s.Endpoints[0].NodeName = workerNode
	}))
	pass, reply := ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagSyn, ""))
	if pass || reply != nil {
		t.Errorf("SYN with no local endpoint: pass=%v reply=%v, want dropped without an answer (kube-proxy drops)", pass, reply != nil)
	}
}

func TestNATSameClientPortToOneBackendThroughTwoVIPs(t *testing.T) {
	vip2 := netip.MustParseAddrPort("10.103.92.82:80")
	remoteOnly := func(s *Service) { s.Endpoints = []Endpoint{makeEndpoint("10.244.1.2")} }
	n, _, _ := newTestNAT(t, NATOptions{},
		makeService("default", "a", remoteOnly),
		makeService("default", "b", remoteOnly, func(s *Service) { s.ClusterIPs = []netip.Addr{vip2.Addr()} }))
	s1 := tcp4(clientA, vip, header.TCPFlagSyn, "")
	s2 := tcp4(clientA, vip2, header.TCPFlagSyn, "")
	for _, s := range [][]byte{s1, s2} {
		if pass, _ := ingress(t, n, true, s); !pass {
			t.Fatal("SYN dropped; want the second one translated to another source port")
		}
	}
	src1, dst1 := tuple(t, s1)
	src2, dst2 := tuple(t, s2)
	if dst1 != dst2 || src1 == src2 {
		t.Fatalf("backend sees %s and %s from %s and %s; want one backend, two distinct sources", dst1, dst2, src1, src2)
	}
	if src2.Addr() != clientA.Addr() {
		t.Errorf("second connection's source %s, want the client's address %s with another port", src2, clientA.Addr())
	}
	// Each reply goes back to the client's own port, from the right VIP.
	for _, c := range []struct {
		seen, vip netip.AddrPort
	}{{src1, vip}, {src2, vip2}} {
		r := tcp4(dst1, c.seen, header.TCPFlagSyn|header.TCPFlagAck, "")
		ingress(t, n, false, r)
		if s, d := tuple(t, r); s != c.vip || d != clientA {
			t.Errorf("reply translated to %s -> %s, want %s -> %s", s, d, c.vip, clientA)
		}
	}
	if st := n.Stats(); st.HairpinSNAT != 0 {
		t.Errorf("hairpin count = %d, want 0 (only the port changed)", st.HairpinSNAT)
	}
}

func TestNATTranslatesICMPErrorsBack(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS(func(s *Service) {
		s.Endpoints = []Endpoint{makeEndpoint("10.244.1.5")} // remote: no hairpin
	}))
	q := udp4(clientA, dnsVIP, "query")
	ingress(t, n, true, q)
	seenSrc, backend := tuple(t, q)

	// The backend's kernel has nothing on port 53: port unreachable,
	// quoting the translated query.
	quote := q[:header.IPv4MinimumSize+8]
	icmp := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(quote))
	ip := header.IPv4(icmp)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(icmp)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: packet.TCPIPAddr(backend.Addr()), DstAddr: packet.TCPIPAddr(seenSrc.Addr())})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(icmp[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4DstUnreachable)
	ic.SetCode(header.ICMPv4PortUnreachable)
	copy(ic[header.ICMPv4MinimumSize:], quote)
	ic.SetChecksum(^checksum.Checksum(ic, 0))

	if pass, _ := ingress(t, n, false, icmp); !pass {
		t.Fatal("ICMP error dropped")
	}
	if !ip.IsChecksumValid() || checksum.Checksum(ic, 0) != 0xffff {
		t.Fatal("checksums invalid after translation")
	}
	if got := ip.SourceAddress(); got != packet.TCPIPAddr(dnsVIP.Addr()) {
		t.Errorf("error comes from %s, want the VIP %s", got, dnsVIP.Addr())
	}
	q2 := header.IPv4(ic.Payload())
	u := header.UDP(q2[header.IPv4MinimumSize:])
	if q2.SourceAddress() != packet.TCPIPAddr(clientA.Addr()) || u.SourcePort() != clientA.Port() ||
		q2.DestinationAddress() != packet.TCPIPAddr(dnsVIP.Addr()) || u.DestinationPort() != dnsVIP.Port() {
		t.Errorf("quoted packet %s:%d -> %s:%d, want the client's own %s -> %s",
			q2.SourceAddress(), u.SourcePort(), q2.DestinationAddress(), u.DestinationPort(), clientA, dnsVIP)
	}
}

func TestNATClosedFlowsFreeTheirClientsSlots(t *testing.T) {
	n, table, _ := newTestNAT(t, NATOptions{MaxPerClient: 1}, makeService("default", "my-service", func(s *Service) {
		s.Endpoints = []Endpoint{makeEndpoint("10.244.1.2")}
	}))
	for i := range 3 {
		client := netip.AddrPortFrom(clientA.Addr(), 3000+uint16(i))
		syn := tcp4(client, vip, header.TCPFlagSyn, "")
		if pass, _ := ingress(t, n, true, syn); !pass {
			t.Fatalf("connection %d refused: the closed ones before it still hold the client's only slot", i)
		}
		src, dst := tuple(t, syn)
		ingress(t, n, false, tcp4(dst, src, header.TCPFlagSyn|header.TCPFlagAck, ""))
		ingress(t, n, true, tcp4(client, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
		ingress(t, n, false, tcp4(dst, src, header.TCPFlagFin|header.TCPFlagAck, ""))
	}
	if got := table.Stats()[0].Active; got != 0 {
		t.Errorf("active connections = %d after all closed, want 0", got)
	}
	if st := n.Stats(); st.Flows != 3 {
		t.Errorf("tracked flows = %d, want the 3 closed ones lingering", st.Flows)
	}
	n.Reap() // nothing expired yet; must not release twice
	if st := n.tcpLimit.Stats(); st.Active != 0 || st.UnmatchedReleases != 0 {
		t.Errorf("limiter = %+v, want 0 active and no unmatched release", st)
	}
}

// TestNATHostNetworkEndpoint: the kubernetes Service, whose endpoint is
// the API server on hostgw-master's own address. A client pod on the same
// node is translated to the router address (the node kernel would answer
// it directly otherwise); from the other node the client keeps its
// address, and the API server's reply, which comes back through a peer,
// is translated back to the VIP.
func TestNATHostNetworkEndpoint(t *testing.T) {
	apiVIP := netip.MustParseAddrPort("10.96.0.1:443")
	kubernetes := makeService("default", "kubernetes", func(s *Service) {
		s.ClusterIPs = []netip.Addr{apiVIP.Addr()}
		s.Ports = []ServicePort{{Name: "https", Port: 443, Proto: TCP, TargetPort: 6443}}
		s.Endpoints = []Endpoint{makeEndpoint("192.168.31.201")}
	})
	apiserver := netip.MustParseAddrPort("192.168.31.201:6443")
	for _, tc := range []struct {
		name    string
		local   []netip.Prefix
		wantSrc netip.AddrPort
		fromTUN bool // where the reply comes back from
	}{
		{"same node", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("192.168.31.201/32")},
			netip.AddrPortFrom(routerAddr, clientA.Port()), true},
		{"other node", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("192.168.31.202/32")},
			clientA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, _ := newTestNAT(t, NATOptions{}, kubernetes)
			n.SetLocal(tc.local, []netip.Addr{routerAddr})
			syn := tcp4(clientA, apiVIP, header.TCPFlagSyn, "")
			if pass, _ := ingress(t, n, true, syn); !pass {
				t.Fatal("SYN to 10.96.0.1:443 dropped")
			}
			src, dst := tuple(t, syn)
			if dst != apiserver || src != tc.wantSrc {
				t.Fatalf("SYN translated to %s -> %s, want %s -> %s", src, dst, tc.wantSrc, apiserver)
			}
			synack := tcp4(apiserver, src, header.TCPFlagSyn|header.TCPFlagAck, "")
			if pass, _ := ingress(t, n, tc.fromTUN, synack); !pass {
				t.Fatal("the API server's reply was dropped")
			}
			if rs, rd := tuple(t, synack); rs != apiVIP || rd != clientA {
				t.Errorf("reply translated to %s -> %s, want %s -> %s", rs, rd, apiVIP, clientA)
			}
		})
	}
}
