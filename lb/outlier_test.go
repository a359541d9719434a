package lb

import (
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// picksOf returns how many of n Picks from e, each for a new client port,
// chose ap.
func picksOf(e *Entry, ap netip.AddrPort, n int) int {
	got := 0
	for i := range n {
		b, _ := e.Pick(Flow{Src: netip.AddrPortFrom(netip.MustParseAddr("10.244.0.9"), uint16(1000+i)), Dst: netip.MustParseAddrPort("10.103.92.81:80"), Proto: TCP})
		if b.AddrPort() == ap {
			got++
		}
	}
	return got
}

func TestOutlierEjectsAndReturns(t *testing.T) {
	for _, pk := range []PickerKind{PickRandom, PickRoundRobin, PickLeastConn, PickMaglev} {
		t.Run(pk.String(), func(t *testing.T) {
			clk := newFakeClock()
			tb := newTable(t, Options{Picker: pk, Clock: clk})
			mustSet(t, tb, makeService("default", "my-service"))
			e := mustLookup(t, tb, myServiceKey)
			dead := e.Backends()[1]
			const n = 300
			for range DefaultOutlierFailures - 1 {
				e.connectFailed(dead)
			}
			if got := picksOf(e, dead.AddrPort(), n); got == 0 {
				t.Fatalf("%d picks after %d failures chose %v %d times, want it still in use", n, DefaultOutlierFailures-1, dead, got)
			}
			e.connectFailed(dead)
			if got := picksOf(e, dead.AddrPort(), n); got != 0 {
				t.Fatalf("%d picks after %d failures chose %v %d times, want it ejected", n, DefaultOutlierFailures, dead, got)
			}
			if st := e.Stats(); st.Ejected != 1 || !st.Backends[1].Ejected || st.Backends[1].Ejections != 1 {
				t.Errorf("Stats() = %+v, want backend 1 ejected once", st)
			}
			// The Table's updates keep the state.
			mustSet(t, tb, makeService("default", "my-service", func(s *Service) { s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.1.9")) }))
			e = mustLookup(t, tb, myServiceKey)
			if got := picksOf(e, dead.AddrPort(), n); got != 0 {
				t.Fatalf("after a Table update, %d picks chose %v %d times, want it still ejected", n, dead, got)
			}
			clk.Advance(DefaultOutlierBaseEjection)
			if got := picksOf(e, dead.AddrPort(), n); got == 0 {
				t.Fatalf("%v after its ejection: chosen 0 times in %d picks, want it back", dead, n)
			}
			// Back from an ejection, one failure ejects it again, for
			// twice as long.
			e.connectFailed(dead)
			clk.Advance(DefaultOutlierBaseEjection)
			if got := picksOf(e, dead.AddrPort(), n); got != 0 {
				t.Fatalf("second ejection: chosen %d times after %v, want it ejected for %v", got, DefaultOutlierBaseEjection, 2*DefaultOutlierBaseEjection)
			}
			clk.Advance(DefaultOutlierBaseEjection)
			if got := picksOf(e, dead.AddrPort(), n); got == 0 {
				t.Fatalf("second ejection: chosen 0 times after %v, want it back", 2*DefaultOutlierBaseEjection)
			}
			// A success restarts the count.
			connected(dead)
			for range DefaultOutlierFailures - 1 {
				e.connectFailed(dead)
			}
			if got := picksOf(e, dead.AddrPort(), n); got == 0 {
				t.Fatalf("after a success and %d failures: chosen 0 times, want it in use", DefaultOutlierFailures-1)
			}
			if os := tb.OutlierStats(); os.Ejections != 2 || os.Returns != 2 {
				t.Errorf("OutlierStats() = %+v, want 2 ejections, 2 returns", os)
			}
		})
	}
}

func TestOutlierKeepsShareInUse(t *testing.T) {
	tests := []struct {
		name      string
		endpoints []string
		failing   int // the first failing endpoints fail
		ejected   int
	}{
		{"one backend is never ejected", []string{"10.244.1.2"}, 1, 0},
		{"one of two", []string{"10.244.1.2", "10.244.1.3"}, 2, 1},
		{"one of three", []string{"10.244.1.2", "10.244.1.3", "10.244.1.4"}, 3, 1},
		{"two of four", []string{"10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5"}, 4, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, Options{})
			mustSet(t, tb, makeService("default", "my-service", func(s *Service) {
				s.Endpoints = nil
				for _, a := range tt.endpoints {
					s.Endpoints = append(s.Endpoints, makeEndpoint(a))
				}
			}))
			e := mustLookup(t, tb, myServiceKey)
			for _, b := range e.Backends()[:tt.failing] {
				for range 10 {
					e.connectFailed(b)
				}
			}
			if st := e.Stats(); st.Ejected != tt.ejected {
				t.Errorf("Stats().Ejected = %d with %d of %d backends failing, want %d", st.Ejected, tt.failing, len(tt.endpoints), tt.ejected)
			}
			if b, ok := e.Pick(makeFlow("10.244.0.9", 1, myServiceKey)); !ok || !b.IsValid() {
				t.Errorf("Pick = %v, %v, want a backend", b, ok)
			}
		})
	}
}

func TestOutlierDisabled(t *testing.T) {
	tb := newTable(t, Options{Outlier: OutlierOptions{Disabled: true}})
	mustSet(t, tb, makeService("default", "my-service"))
	e := mustLookup(t, tb, myServiceKey)
	for range 10 {
		e.connectFailed(e.Backends()[0])
	}
	if st := e.Stats(); st.Ejected != 0 || st.Backends[0].Failures != 10 {
		t.Errorf("Stats() = %+v, want nothing ejected and 10 failures counted", st)
	}
}

// TestNATEjectsFailingBackend runs connections through the NAT to three
// remote backends of which one fails in the way each case names: after
// DefaultOutlierFailures connections reach it, no more do.
func TestNATEjectsFailingBackend(t *testing.T) {
	dead := netip.MustParseAddr("10.244.1.3")
	tests := []struct {
		name string
		// fail answers the SYN of client, translated to backend, as the
		// dead backend does.
		fail func(t *testing.T, n *NAT, clk *fakeClock, syn []byte, client, backend netip.AddrPort)
	}{
		{"RST", func(t *testing.T, n *NAT, _ *fakeClock, _ []byte, client, backend netip.AddrPort) {
			ingress(t, n, false, tcp4(backend, client, header.TCPFlagRst|header.TCPFlagAck, ""))
		}},
		{"ICMP host unreachable", func(t *testing.T, n *NAT, _ *fakeClock, syn []byte, client, backend netip.AddrPort) {
			ingress(t, n, false, icmp4Unreachable(netip.MustParseAddr("10.244.1.1"), client.Addr(), header.ICMPv4HostUnreachable, syn))
		}},
		{"SYN retransmitted", func(t *testing.T, n *NAT, clk *fakeClock, _ []byte, client, _ netip.AddrPort) {
			clk.Advance(DefaultOutlierConnectTimeout)
			ingress(t, n, true, tcp4(client, vip, header.TCPFlagSyn, ""))
		}},
		{"half-open expiry", func(t *testing.T, n *NAT, clk *fakeClock, _ []byte, _, _ netip.AddrPort) {
			clk.Advance(DefaultNATTCPSynSentTimeout + time.Second)
			n.Reap()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, tb, clk := newTestNAT(t, NATOptions{}, makeService("default", "my-service", func(s *Service) {
				s.Endpoints = []Endpoint{makeEndpoint("10.244.1.2"), makeEndpoint("10.244.1.3"), makeEndpoint("10.244.1.4")}
			}))
			reached := 0
			for i := range 30 {
				client := netip.AddrPortFrom(clientA.Addr(), clientA.Port()+uint16(i))
				syn := tcp4(client, vip, header.TCPFlagSyn, "")
				if pass, _ := ingress(t, n, true, syn); !pass {
					t.Fatalf("SYN %d dropped", i)
				}
				_, backend := tuple(t, syn)
				if backend.Addr() != dead {
					ingress(t, n, false, tcp4(backend, client, header.TCPFlagSyn|header.TCPFlagAck, ""))
					continue
				}
				reached++
				tt.fail(t, n, clk, syn, client, backend)
			}
			if reached != DefaultOutlierFailures {
				t.Errorf("connections to the failing backend = %d of 30, want %d (then ejected)", reached, DefaultOutlierFailures)
			}
			if os := tb.OutlierStats(); os.Ejections != 1 {
				t.Errorf("OutlierStats() = %+v, want 1 ejection", os)
			}
		})
	}
}

// icmp4Unreachable builds an ICMP destination unreachable from src to dst
// quoting the start of b.
func icmp4Unreachable(src, dst netip.Addr, code header.ICMPv4Code, b []byte) []byte {
	quote := b[:header.IPv4MinimumSize+8]
	icmp := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(quote))
	ip := header.IPv4(icmp)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(icmp)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(icmp[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4DstUnreachable)
	ic.SetCode(code)
	copy(ic[header.ICMPv4MinimumSize:], quote)
	ic.SetChecksum(^checksum.Checksum(ic, 0))
	return icmp
}
