package lb

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func TestMapPeak(t *testing.T) {
	tests := []struct {
		peak, live int
		want       bool
	}{
		{peak: shrinkMinPeak - 1, live: 0, want: false}, // never large
		{peak: shrinkMinPeak, live: 0, want: true},
		{peak: 4096, live: 1023, want: true},
		{peak: 4096, live: 1024, want: false}, // a quarter left: keep
		{peak: 4096, live: 4096, want: false},
	}
	for _, tt := range tests {
		var p mapPeak
		p.grew(tt.peak)
		p.grew(tt.live) // never lowers the peak
		if got := p.shrink(tt.live); got != tt.want {
			t.Errorf("peak %d: shrink(%d) = %v, want %v", tt.peak, tt.live, got, tt.want)
		}
		if tt.want && int(p) != tt.live {
			t.Errorf("peak %d: after shrink(%d) the peak is %d, want it restarted from %d", tt.peak, tt.live, p, tt.live)
		}
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A UDP flood through the NAT leaves memory behind only as long as its
// flows live: once they expired and the reaper went round the shards, the
// heap is back near where it started, and the flows that stayed still
// translate.
func TestNATGivesMemoryBackAfterFlood(t *testing.T) {
	n, _, clk := newTestNAT(t, NATOptions{UDPTimeout: 30 * time.Second}, makeKubeDNS())
	const clients, ports, keep = 4, 10000, 100
	src := func(c, p int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + c)}), uint16(10000+p))
	}
	base := heapAlloc()
	for c := range clients {
		for p := range ports {
			if pass, _ := ingress(t, n, true, udp4(src(c, p), dnsVIP, "q")); !pass {
				t.Fatalf("flood datagram %d from client %d refused: %+v", p, c, n.Stats())
			}
		}
	}
	peak := heapAlloc()
	// The first keep flows stay alive; the rest expire.
	clk.Advance(20 * time.Second)
	for p := range keep {
		ingress(t, n, true, udp4(src(0, p), dnsVIP, "q"))
	}
	clk.Advance(15 * time.Second)
	for range flowShards / shrinkPerReap {
		n.Reap()
	}
	if st := n.Stats(); st.Flows != keep {
		t.Fatalf("after the flood expired, Stats().Flows = %d, want %d", st.Flows, keep)
	}
	after := heapAlloc()
	t.Logf("NAT heap: baseline %s, %d flows %s, %d flows %s", mib(base), clients*ports, mib(peak), keep, mib(after))
	if peak < base+(clients*ports)*100 {
		t.Fatalf("the flood's heap %s is not above the baseline %s by 100 bytes a flow: the test measures nothing", mib(peak), mib(base))
	}
	if limit := base + (peak-base)/4; after > limit {
		t.Errorf("heap after the flood expired = %s, want below %s (baseline %s + a quarter of the flood's %s)", mib(after), mib(limit), mib(base), mib(peak-base))
	}
	for p := range keep {
		b := udp4(src(0, p), dnsVIP, "q")
		if pass, _ := ingress(t, n, true, b); !pass {
			t.Fatalf("kept flow from %s refused after the shrink", src(0, p))
		}
		if _, dst := tuple(t, b); dst == dnsVIP {
			t.Fatalf("kept flow from %s not translated after the shrink", src(0, p))
		}
	}
	if st := n.Stats(); st.Flows != keep || st.FlowsTotal != clients*ports {
		t.Errorf("Stats() = %+v, want the %d kept flows found again, no new ones", st, keep)
	}
}

// The Limiter's per-client maps shrink too once a flood of clients left.
func TestLimiterShrinksAfterClientsLeave(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{MaxPerClient: 1})
	if err != nil {
		t.Fatal(err)
	}
	const clients = 200000
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	base := heapAlloc()
	for i := range clients {
		if !l.Acquire(addr(i)) {
			t.Fatalf("Acquire(%s) refused", addr(i))
		}
	}
	peak := heapAlloc()
	for i := 10; i < clients; i++ {
		l.Release(addr(i))
	}
	after := heapAlloc()
	t.Logf("Limiter heap: baseline %s, %d clients %s, 10 clients %s", mib(base), clients, mib(peak), mib(after))
	// A map is rebuilt when it falls below a quarter of its peak, and
	// not again below shrinkMinPeak: up to that many entries' room
	// per shard stays.
	if limit := base + (peak-base)/2; after > limit {
		t.Errorf("heap after %d clients left = %s, want below %s", clients-10, mib(after), mib(limit))
	}
	if st := l.Stats(); st.Active != 10 || st.Clients != 10 {
		t.Errorf("Stats() = %+v, want 10 clients left", st)
	}
	for i := range 10 {
		if l.Acquire(addr(i)) {
			t.Errorf("Acquire(%s) allowed a second connection after the shrink: its count was lost", addr(i))
		}
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
