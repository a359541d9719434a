package lb

import (
	"net/netip"
	"runtime"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// natFlowBudget is the memory a tracked nat connection may cost (the
// project's target): its flow, both map entries and its share of the
// per-client limiter.
const natFlowBudget = 2 << 10

// natFlowMemory starts n TCP flows through NAT.Ingress, as SYNs from
// local clients to my-service, and returns the live heap they added per
// flow: runtime.MemStats.HeapAlloc after a collection, before and after.
// The SYNs are built first, so only what the NAT keeps is counted.
func natFlowMemory(tb testing.TB, n int) float64 {
	tb.Helper()
	table := newTable(tb, Options{NodeName: masterNode, Picker: PickRoundRobin})
	mustSet(tb, table, makeService("default", "my-service"))
	nat, err := NewNAT(table, nil, NATOptions{Clock: newFakeClock(), MaxPerClient: 1 << 16})
	if err != nil {
		tb.Fatal(err)
	}
	nat.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})

	// Clients 10.244.0.10, .11, ... with up to 60,000 ports each: a
	// third of the flows reach the local backend and are translated to
	// the router address, keeping their port where it is free, so the
	// ports differ across clients as far as they go.
	const perClient = 60000
	syns := make([][]byte, n)
	for i := range syns {
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i/perClient)}), uint16(1024+i%perClient))
		syns[i] = tcp4(client, vip, header.TCPFlagSyn, "")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, b := range syns {
		if pass, _ := ingress(tb, nat, true, b); !pass {
			tb.Fatalf("Ingress(SYN %d) dropped it; stats %+v", i, nat.Stats())
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := nat.Stats().Flows; got != uint64(n) {
		tb.Fatalf("after %d SYNs, Stats().Flows = %d, want %d", n, got, n)
	}
	runtime.KeepAlive(syns)
	runtime.KeepAlive(nat)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n)
}

// BenchmarkNATFlowMemory reports the heap one tracked TCP flow holds
// (B/flow) with 100,000 flows; the target is natFlowBudget.
//
//	go test -run '^$' -bench NATFlowMemory -benchtime 3x ./lb/
func BenchmarkNATFlowMemory(b *testing.B) {
	var sum float64
	for range b.N {
		sum += natFlowMemory(b, 100000)
	}
	b.ReportMetric(sum/float64(b.N), "B/flow")
}

// A tracked nat connection stays within its memory budget. Memory, unlike
// time, is deterministic enough to gate on: a flow that outgrows the
// budget is a regression.
func TestNATFlowMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 20,000 flows")
	}
	if got := natFlowMemory(t, 20000); got > natFlowBudget {
		t.Errorf("heap per tracked TCP flow = %.0f B, want ≤ %d B", got, natFlowBudget)
	} else {
		t.Logf("heap per tracked TCP flow: %.0f B (budget %d B)", got, natFlowBudget)
	}
}
