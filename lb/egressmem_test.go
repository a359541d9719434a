package lb

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkEgressUDPFlowMemory reports what one open egress UDP flow
// holds (B/flow: live heap; stack-B/flow: goroutine stacks) with 2,000
// flows from one pod: its egress stack endpoint, its host socket and its
// two goroutines. The flows reach egOutside, which must be a local
// address (a network namespace of its own with it on lo):
//
//	go test -c ./lb/ && unshare -n sh -c 'ip link set lo up &&
//	  ip addr add 198.51.100.10/32 dev lo &&
//	  ./lb.test -test.run "^$" -test.bench EgressUDPFlowMemory -test.benchtime 1x'
func BenchmarkEgressUDPFlowMemory(b *testing.B) {
	const n = 2000
	var heap, stack float64
	for range b.N {
		h, s := egressUDPFlowMemory(b, n)
		heap += h
		stack += s
	}
	b.ReportMetric(heap/float64(b.N), "B/flow")
	b.ReportMetric(stack/float64(b.N), "stack-B/flow")
}

func egressUDPFlowMemory(b *testing.B, n int) (heap, stack float64) {
	dst, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(egOutside, 0)))
	if err != nil {
		b.Skipf("listen on %v: %v (see the benchmark's comment)", egOutside, err)
	}
	defer dst.Close()
	e := newTestEgress(b, EgressOptions{MaxFlows: 1 << 20, MaxFlowsPerPod: 1 << 20, UDPTimeout: time.Hour})
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	datagrams := make([][]byte, n)
	for i := range datagrams {
		datagrams[i] = udp4(netip.AddrPortFrom(egPod, uint16(10000+i)), to, "q")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, d := range datagrams {
		egressIngress(b, e, d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Protos[EgressUDP].Flows < uint64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.Stats().Protos[EgressUDP].Flows; got != uint64(n) {
		b.Fatalf("%d datagrams from as many ports opened %d egress UDP flows", n, got)
	}
	time.Sleep(200 * time.Millisecond) // goroutines parked
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(datagrams)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n),
		(float64(after.StackInuse) - float64(before.StackInuse)) / float64(n)
}
