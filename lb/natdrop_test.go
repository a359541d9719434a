package lb

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// spoofed is the i-th address of hostgw-master's pod CIDR a flood sends
// from (10.244.0.100 up), one port per flow.
func spoofed(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(100 + i%100)}), uint16(10000+i/100))
}

// TestNATEarlyDrop: a table at its cap full of flows that were never
// confirmed — SYNs no one acknowledged, SYN-ACKs no client acknowledged,
// datagrams nobody answered, as a flood from spoofed sources leaves —
// still admits a new client's flow, in place of the oldest of them; a
// table full of confirmed flows refuses it, as before.
func TestNATEarlyDrop(t *testing.T) {
	const max = 8
	for _, tc := range []struct {
		name string
		// fill starts flow i from client and leaves it as the case says.
		fill      func(t *testing.T, n *NAT, client netip.AddrPort)
		udp       bool
		wantAdmit bool
	}{
		{name: "tcp SYN_SENT", wantAdmit: true, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			mustPass(t, n, true, tcp4(client, vip, header.TCPFlagSyn, ""))
		}},
		{name: "tcp SYN_RECV", wantAdmit: true, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			syn := tcp4(client, vip, header.TCPFlagSyn, "")
			mustPass(t, n, true, syn)
			src, dst := tuple(t, syn)
			mustPass(t, n, false, tcp4(dst, src, header.TCPFlagSyn|header.TCPFlagAck, ""))
		}},
		{name: "tcp ESTABLISHED", wantAdmit: false, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			syn := tcp4(client, vip, header.TCPFlagSyn, "")
			mustPass(t, n, true, syn)
			establish(t, n, client, syn)
		}},
		{name: "udp unanswered", udp: true, wantAdmit: true, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			mustPass(t, n, true, udp4(client, dnsVIP, "q"))
		}},
		{name: "udp answered once", udp: true, wantAdmit: true, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			q := udp4(client, dnsVIP, "q")
			mustPass(t, n, true, q)
			src, dst := tuple(t, q)
			mustPass(t, n, false, udp4(dst, src, "a"))
			mustPass(t, n, true, udp4(client, dnsVIP, "q again, at once"))
		}},
		{name: "udp stream", udp: true, wantAdmit: false, fill: func(t *testing.T, n *NAT, client netip.AddrPort) {
			streamUDP(t, n, client)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, _ := newTestNAT(t, NATOptions{MaxTCP: max, MaxUDP: max}, makeService("default", "my-service"), makeKubeDNS())
			for i := range max {
				tc.fill(t, n, spoofed(i))
			}
			syn := tcp4(clientA, vip, header.TCPFlagSyn, "")
			if tc.udp {
				syn = udp4(clientA, dnsVIP, "q")
			}
			pass, _ := ingress(t, n, true, syn)
			if pass != tc.wantAdmit {
				t.Fatalf("new flow from %v at the cap: pass = %v, want %v; stats %+v", clientA, pass, tc.wantAdmit, n.Stats())
			}
			st := n.Stats()
			want := NATStats{Flows: max, FlowsTotal: max, RefusedCap: 1}
			if tc.wantAdmit {
				want = NATStats{Flows: max, FlowsTotal: max + 1, EvictedCap: 1}
			}
			if st.Flows != want.Flows || st.FlowsTotal != want.FlowsTotal || st.RefusedCap != want.RefusedCap ||
				st.EvictedCap != want.EvictedCap || st.Expired != 0 || st.ExpiredHalfOpen != 0 {
				t.Errorf("Stats() = %+v, want Flows %d, FlowsTotal %d, RefusedCap %d, EvictedCap %d, nothing expired",
					st, want.Flows, want.FlowsTotal, want.RefusedCap, want.EvictedCap)
			}
			flows := map[netip.AddrPort]bool{}
			for _, f := range n.Flows() {
				flows[f.Client] = true
			}
			if tc.wantAdmit && (flows[spoofed(0)] || !flows[clientA] || !flows[spoofed(1)]) {
				t.Errorf("flows from %v (oldest) %v, %v (new) %v, %v %v: want the oldest ended in place of the new one",
					spoofed(0), flows[spoofed(0)], clientA, flows[clientA], spoofed(1), flows[spoofed(1)])
			}
			limit := n.tcpLimit
			if tc.udp {
				limit = n.udpLimit
			}
			if ls := limit.Stats(); ls.Active != max || ls.UnmatchedReleases != 0 {
				t.Errorf("limiter %+v, want %d active, no unmatched release", ls, max)
			}
		})
	}
}

// streamUDP starts a UDP flow from client to kube-dns that is confirmed:
// a query, its answer, and another query udpStreamAfter later.
func streamUDP(t *testing.T, n *NAT, client netip.AddrPort) (answer []byte) {
	t.Helper()
	q := udp4(client, dnsVIP, "q")
	mustPass(t, n, true, q)
	src, dst := tuple(t, q)
	mustPass(t, n, false, udp4(dst, src, "a"))
	n.clock.(*fakeClock).Advance(udpStreamAfter)
	mustPass(t, n, true, udp4(client, dnsVIP, "q2"))
	return udp4(dst, src, "a2")
}

// TestNATEarlyDropSkipsConfirmed: with confirmed and unconfirmed flows
// mixed at the cap, each new flow ends an unconfirmed one, oldest first,
// until none is left; then new flows are refused and every confirmed flow
// is still there.
func TestNATEarlyDropSkipsConfirmed(t *testing.T) {
	const max = 16
	n, _, _ := newTestNAT(t, NATOptions{MaxTCP: max}, makeService("default", "my-service"))
	confirmed := map[netip.AddrPort]bool{}
	for i := range max {
		client := spoofed(i)
		syn := tcp4(client, vip, header.TCPFlagSyn, "")
		mustPass(t, n, true, syn)
		if i%2 == 0 {
			establish(t, n, client, syn)
			confirmed[client] = true
		}
	}
	for i := range max {
		client := netip.AddrPortFrom(clientA.Addr(), 20000+uint16(i))
		syn := tcp4(client, vip, header.TCPFlagSyn, "")
		// The first 8 end the 8 unconfirmed flows and are confirmed in
		// turn; then none is left to end.
		pass, _ := ingress(t, n, true, syn)
		if want := i < max/2; pass != want {
			t.Fatalf("SYN %d from %v: pass = %v, want %v; stats %+v", i, client, pass, want, n.Stats())
		}
		if pass {
			establish(t, n, client, syn)
			confirmed[client] = true
		}
	}
	for _, f := range n.Flows() {
		delete(confirmed, f.Client)
	}
	if len(confirmed) != 0 {
		t.Errorf("confirmed flows ended by early drop: %v", confirmed)
	}
	if st := n.Stats(); st.EvictedCap != max/2 || st.Flows != max || st.RefusedCap != max/2 {
		t.Errorf("Stats() = %+v, want EvictedCap %d, Flows %d, RefusedCap %d", st, max/2, max, max/2)
	}
}

// TestNATEarlyDropPerClient: a client at its own cap ends its own oldest
// unconfirmed flow for a new one, never another client's; with only
// confirmed flows of its own it is refused.
func TestNATEarlyDropPerClient(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{MaxPerClient: 3}, makeService("default", "my-service"))
	other := netip.MustParseAddrPort("10.244.0.10:5000")
	mustPass(t, n, true, tcp4(other, vip, header.TCPFlagSyn, "")) // oldest on the list, another client's
	var syns [][]byte
	for i := range 3 {
		syn := tcp4(netip.AddrPortFrom(clientA.Addr(), 3000+uint16(i)), vip, header.TCPFlagSyn, "")
		mustPass(t, n, true, syn)
		syns = append(syns, syn)
	}
	// Confirm the second: the first is the one to go.
	establish(t, n, netip.AddrPortFrom(clientA.Addr(), 3001), syns[1])
	syn3 := tcp4(netip.AddrPortFrom(clientA.Addr(), 3003), vip, header.TCPFlagSyn, "")
	mustPass(t, n, true, syn3)
	flows := map[netip.AddrPort]bool{}
	for _, f := range n.Flows() {
		flows[f.Client] = true
	}
	for c, want := range map[netip.AddrPort]bool{other: true, netip.AddrPortFrom(clientA.Addr(), 3000): false,
		netip.AddrPortFrom(clientA.Addr(), 3001): true, netip.AddrPortFrom(clientA.Addr(), 3002): true,
		netip.AddrPortFrom(clientA.Addr(), 3003): true} {
		if flows[c] != want {
			t.Errorf("flow from %v tracked = %v, want %v", c, flows[c], want)
		}
	}
	// Confirm the rest: now the client is refused.
	establish(t, n, netip.AddrPortFrom(clientA.Addr(), 3002), syns[2])
	establish(t, n, netip.AddrPortFrom(clientA.Addr(), 3003), syn3)
	if pass, _ := ingress(t, n, true, tcp4(netip.AddrPortFrom(clientA.Addr(), 3004), vip, header.TCPFlagSyn, "")); pass {
		t.Error("SYN from a client at its cap with only confirmed flows admitted")
	}
	if st := n.Stats(); st.EvictedPerClient != 1 || st.EvictedCap != 0 || st.RefusedCap != 1 {
		t.Errorf("Stats() = %+v, want EvictedPerClient 1, EvictedCap 0, RefusedCap 1", st)
	}
}

// TestNATEarlyDropConcurrent floods new flows from spoofed sources at the
// cap while confirmed connections' packets and the reaper run: run with
// -race. No confirmed flow is ended and the counts add up.
func TestNATEarlyDropConcurrent(t *testing.T) {
	const max = 256
	n, _, clk := newTestNAT(t, NATOptions{MaxUDP: max}, makeKubeDNS())
	// Half the table: confirmed flows.
	var answered []netip.AddrPort
	var answers [][]byte
	for i := range max / 2 {
		client := netip.AddrPortFrom(clientA.Addr(), 30000+uint16(i))
		q := udp4(client, dnsVIP, "q")
		mustPass(t, n, true, q)
		src, dst := tuple(t, q)
		mustPass(t, n, false, udp4(dst, src, "a"))
		answers = append(answers, udp4(dst, src, "a2"))
		answered = append(answered, client)
	}
	clk.Advance(udpStreamAfter)
	for _, c := range answered {
		mustPass(t, n, true, udp4(c, dnsVIP, "q2"))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() { // the TUN reader: a flood of new flows
		defer wg.Done()
		for i := range 20 * max {
			q := udp4(spoofed(i), dnsVIP, "q")
			if pass, _ := ingressNoT(n, true, q); !pass {
				errs <- fmt.Errorf("flood datagram %d refused: stats %+v", i, n.Stats())
				return
			}
		}
	}()
	go func() { // an overlay reader: replies to the confirmed flows
		defer wg.Done()
		for i := range 20 * max {
			a := answers[i%len(answers)]
			ingressNoT(n, false, append([]byte(nil), a...))
			if i%max == 0 {
				n.Flows()
			}
		}
	}()
	go func() { // the reaper: nothing expires, the clock stands still
		defer wg.Done()
		for range 50 {
			n.Reap()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	tracked := map[netip.AddrPort]bool{}
	for _, f := range n.Flows() {
		tracked[f.Client] = true
	}
	for _, c := range answered {
		if !tracked[c] {
			t.Errorf("confirmed flow from %v ended", c)
		}
	}
	st := n.Stats()
	if st.Flows != max || st.FlowsTotal-st.EvictedCap != max {
		t.Errorf("Stats() = %+v, want Flows %d = FlowsTotal - EvictedCap", st, max)
	}
	if ls := n.udpLimit.Stats(); ls.Active != max || ls.UnmatchedReleases != 0 {
		t.Errorf("limiter %+v, want %d active, no unmatched release", ls, max)
	}
}

// ingressNoT is ingress for goroutines other than the test's.
func ingressNoT(n *NAT, fromTUN bool, b []byte) (bool, []byte) {
	var p packet.Parsed
	p.Decode(b)
	return n.Ingress(fromTUN, &p, b[:p.Length])
}

func mustPass(t *testing.T, n *NAT, fromTUN bool, b []byte) {
	t.Helper()
	if pass, _ := ingress(t, n, fromTUN, b); !pass {
		t.Fatalf("Ingress(fromTUN %v) dropped a packet; stats %+v", fromTUN, n.Stats())
	}
}
