package lb

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestFlowStateAndCounters: a flow's description carries its TCP state as
// conntrack names it, its start and what it translated each way.
func TestFlowStateAndCounters(t *testing.T) {
	n, _, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	start := clk.Now()
	syn := tcp4(clientA, vip, header.TCPFlagSyn, "")
	ingress(t, n, true, syn)
	seen, backend := tuple(t, syn)
	state := func() FlowInfo {
		t.Helper()
		var got []FlowInfo
		n.EachFlow(func(f FlowInfo) bool { got = append(got, f); return true })
		if len(got) != 1 {
			t.Fatalf("EachFlow listed %+v, want one flow", got)
		}
		return got[0]
	}
	if f := state(); f.State != "SYN_SENT" || !f.Started.Equal(start) {
		t.Errorf("after the SYN: %+v, want SYN_SENT, started %v", f, start)
	}
	clk.Advance(time.Second)
	ingress(t, n, local(backend), tcp4(backend, seen, header.TCPFlagSyn|header.TCPFlagAck, ""))
	if f := state(); f.State != "SYN_RECV" {
		t.Errorf("after the SYN-ACK: state %q, want SYN_RECV", f.State)
	}
	ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagAck, "hello"))
	if f := state(); f.State != "ESTABLISHED" {
		t.Errorf("after the ACK: state %q, want ESTABLISHED", f.State)
	}
	ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagFin|header.TCPFlagAck, ""))
	f := state()
	if f.State != "FIN_WAIT" {
		t.Errorf("after the client's FIN: state %q, want FIN_WAIT", f.State)
	}
	const hdr = header.IPv4MinimumSize + header.TCPMinimumSize
	if want := [2]uint64{3, 1}; f.Packets != want {
		t.Errorf("Packets = %v, want %v (SYN, ACK with data, FIN from the client; SYN-ACK back)", f.Packets, want)
	}
	if want := [2]uint64{3*hdr + 5, hdr}; f.Bytes != want {
		t.Errorf("Bytes = %v, want %v", f.Bytes, want)
	}
	ingress(t, n, local(backend), tcp4(backend, seen, header.TCPFlagFin|header.TCPFlagAck, ""))
	if f := state(); f.State != "TIME_WAIT" {
		t.Errorf("after both FINs: state %q, want TIME_WAIT", f.State)
	}
	ingress(t, n, true, tcp4(clientA, vip, header.TCPFlagRst, ""))
	if f := state(); f.State != "CLOSE" {
		t.Errorf("after a RST: state %q, want CLOSE", f.State)
	}
}

// TestDeleteFlows: deleted flows leave the table and give back their
// backends' active counts; the next segment of one is reset, as no flow
// knows it.
func TestDeleteFlows(t *testing.T) {
	n, table, _ := newTestNAT(t, NATOptions{}, makeService("default", "my-service"))
	var backends []netip.AddrPort
	for i := range 3 {
		b, _ := connect(t, n, netip.AddrPortFrom(clientA.Addr(), clientA.Port()+uint16(i)))
		backends = append(backends, b)
	}
	victim := backends[1]
	if got := n.DeleteFlows(func(f FlowInfo) bool { return f.Backend == victim }); got != 1 {
		t.Fatalf("DeleteFlows(backend %s) = %d, want 1", victim, got)
	}
	for _, f := range n.Flows() {
		if f.Backend == victim {
			t.Errorf("flow %+v still listed after its deletion", f)
		}
	}
	if st := n.Stats(); st.Flows != 2 {
		t.Errorf("Stats().Flows = %d after deleting one of 3, want 2", st.Flows)
	}
	for _, es := range table.Stats() {
		for _, b := range es.Backends {
			if b.AddrPort == victim && b.Active != 0 {
				t.Errorf("backend %s active = %d after its flow was deleted, want 0", victim, b.Active)
			}
		}
	}
	data := tcp4(netip.AddrPortFrom(clientA.Addr(), clientA.Port()+1), vip, header.TCPFlagAck, "more")
	if pass, reply := ingress(t, n, true, data); pass || reply == nil || header.TCP(reply[header.IPv4MinimumSize:]).Flags()&header.TCPFlagRst == 0 {
		t.Errorf("segment of a deleted flow: pass %v, reply %x; want it dropped and answered with a RST", pass, reply)
	}
	if got := n.DeleteFlows(func(FlowInfo) bool { return true }); got != 2 {
		t.Errorf("DeleteFlows(all) = %d, want the 2 left", got)
	}
}

// TestProxyResetConns: ResetConns resets the selected proxied
// connections (the client sees its connection reset) and leaves the
// others open.
func TestProxyResetConns(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b1.endpoint()}))
	keep, kill := e.mustDial(proxyVIP), e.mustDial(proxyVIP)
	greeting(t, keep)
	greeting(t, kill)
	killPort := kill.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	if got := e.p.Conns(); len(got) != 2 || got[0].Started.IsZero() || time.Since(got[0].Started) > time.Minute {
		t.Fatalf("Conns() = %+v, want 2 started just now", got)
	}
	if err := echo(keep, "hello"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the echo counted", func() bool {
		for _, c := range e.p.Conns() {
			if c.Client.Port() != killPort {
				return c.Bytes[0] == 5 && c.Bytes[1] > 5 // the greeting and the echo
			}
		}
		return false
	})
	if n := e.p.ResetConns(func(c ProxyConnInfo) bool { return c.Client.Port() == killPort }); n != 1 {
		t.Fatalf("ResetConns(client port %d) = %d, want 1", killPort, n)
	}
	kill.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := kill.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("read on the reset connection = %v, want connection reset", err)
	}
	if err := echo(keep, "still here"); err != nil {
		t.Errorf("the other connection: %v, want it open", err)
	}
	eventually(t, "one connection left", func() bool { return len(e.p.Conns()) == 1 })
}
