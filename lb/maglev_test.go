package lb

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// nginxBackends returns n backends 10.244.1.1:80 … 10.244.1.n:80.
func nginxBackends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = NewBackend(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(1 + i/250), byte(1 + i%250)}), 80))
	}
	return bs
}

// randomFlows yields n TCP flows from random pod addresses and ports to
// my-service, from a fixed seed.
func randomFlows(n int) func(yield func(Flow) bool) {
	return func(yield func(Flow) bool) {
		r := rand.New(rand.NewPCG(7, 7))
		for range n {
			src := netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(256)), byte(r.IntN(256))})
			f := Flow{
				Src:   netip.AddrPortFrom(src, uint16(1024+r.IntN(60000))),
				Dst:   netip.AddrPortFrom(myServiceKey.VIP, 80),
				Proto: TCP,
			}
			if !yield(f) {
				return
			}
		}
	}
}

func mustMaglev(t testing.TB, bs []Backend, opts MaglevOptions) *maglev {
	t.Helper()
	p, err := NewMaglev(bs, opts)
	if err != nil {
		t.Fatalf("NewMaglev(%d backends, %+v) = %v", len(bs), opts, err)
	}
	return p.(*maglev)
}

func TestMaglevBalance(t *testing.T) {
	for _, tc := range []struct{ n, m int }{{3, 65537}, {10, 65537}, {10, 4093}, {100, 65537}} {
		t.Run(fmt.Sprintf("%d backends, M=%d", tc.n, tc.m), func(t *testing.T) {
			p := mustMaglev(t, nginxBackends(tc.n), MaglevOptions{TableSize: tc.m})
			// Slots: every backend gets ⌊M/N⌋ or ⌈M/N⌉.
			slots := make([]int, tc.n)
			for _, i := range p.table {
				slots[i]++
			}
			lo, hi := slices.Min(slots), slices.Max(slots)
			if lo < tc.m/tc.n || hi > tc.m/tc.n+1 {
				t.Errorf("slots per backend from %d to %d, want %d or %d", lo, hi, tc.m/tc.n, tc.m/tc.n+1)
			}
			// Flows: each backend within 5% of its share, which with
			// 20,000 flows per backend is 7 binomial sigmas.
			nflows := 20000 * tc.n
			counts := make([]int, tc.n)
			for f := range randomFlows(nflows) {
				b, _ := p.Pick(f)
				counts[slices.Index(p.backends, b)]++
			}
			mean := float64(nflows) / float64(tc.n)
			for i, c := range counts {
				if d := float64(c)/mean - 1; d < -0.05 || d > 0.05 {
					t.Errorf("backend %v got %d of %d flows, %.1f%% off its share %.0f, want within 5%%", p.backends[i], c, nflows, d*100, mean)
				}
			}
		})
	}
}

// TestMaglevMinimalDisruption removes one of N backends and checks that
// about 1/N of the flows move: those of the removed backend, and only a
// few others.
func TestMaglevMinimalDisruption(t *testing.T) {
	const n, nflows = 10, 100000
	bs := nginxBackends(n)
	before := mustMaglev(t, bs, MaglevOptions{})
	removed := bs[3]
	after := mustMaglev(t, slices.Delete(slices.Clone(bs), 3, 4), MaglevOptions{})

	var moved, movedOthers, onRemoved int
	for f := range randomFlows(nflows) {
		b1, _ := before.Pick(f)
		b2, _ := after.Pick(f)
		if b2.AddrPort() == removed.AddrPort() {
			t.Fatalf("flow %v still goes to the removed backend %v", f, removed)
		}
		if b1.AddrPort() == removed.AddrPort() {
			onRemoved++
		}
		if b1.AddrPort() != b2.AddrPort() {
			moved++
			if b1.AddrPort() != removed.AddrPort() {
				movedOthers++
			}
		}
	}
	frac, share := float64(moved)/nflows, 1.0/n
	t.Logf("removing 1 of %d backends moved %.2f%% of %d flows (%.2f%% were on it, %.2f%% of all flows moved between survivors)",
		n, frac*100, nflows, float64(onRemoved)/nflows*100, float64(movedOthers)/nflows*100)
	if frac > share*1.2 {
		t.Errorf("moved %.2f%% of flows, want ≈ 1/%d = %.0f%% (at most %.0f%%)", frac*100, n, share*100, share*120)
	}
	if others := float64(movedOthers) / nflows; others > 0.02 {
		t.Errorf("%.2f%% of flows moved between surviving backends, want under 2%%", others*100)
	}

	// A modulo hash (what Maglev replaces) would move most flows; the
	// comparison shows the test can tell the two apart.
	var modMoved int
	for f := range randomFlows(nflows) {
		h := hashFlow(&f)
		if bs[h%n].AddrPort() != slices.Delete(slices.Clone(bs), 3, 4)[h%(n-1)].AddrPort() {
			modMoved++
		}
	}
	if float64(modMoved)/nflows < 3*share {
		t.Errorf("modulo hashing moved only %d of %d flows; the baseline is broken", modMoved, nflows)
	}
}

func TestMaglevDeterministic(t *testing.T) {
	bs := nginxBackends(10)
	shuffled := slices.Clone(bs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	a, b := mustMaglev(t, bs, MaglevOptions{TableSize: 4093}), mustMaglev(t, shuffled, MaglevOptions{TableSize: 4093})
	for f := range randomFlows(1000) {
		x, _ := a.Pick(f)
		y, _ := b.Pick(f)
		if x.AddrPort() != y.AddrPort() {
			t.Fatalf("Pick(%v) = %v and %v for the same backends in another order, want the same", f, x, y)
		}
	}

	// Two tables (two nodes) built from the same Service agree.
	svc := makeService("default", "my-service", func(s *Service) { s.Picker = PickMaglev })
	t1, t2 := newTable(t, Options{}), newTable(t, Options{NodeName: workerNode})
	mustSet(t, t1, svc)
	slices.Reverse(svc.Endpoints)
	mustSet(t, t2, svc)
	for f := range randomFlows(1000) {
		x, _ := mustLookup(t, t1, myServiceKey).Pick(f)
		y, _ := mustLookup(t, t2, myServiceKey).Pick(f)
		if x.AddrPort() != y.AddrPort() {
			t.Fatalf("two nodes pick %v and %v for %v, want the same", x, y, f)
		}
	}
}

func TestMaglevByClientIP(t *testing.T) {
	tb := newTable(t, Options{Maglev: MaglevOptions{TableSize: 251, ByClientIP: true}})
	mustSet(t, tb, makeService("default", "my-service", func(s *Service) { s.Picker = PickMaglev }))
	e := mustLookup(t, tb, myServiceKey)
	seen := map[string]bool{}
	for f := range randomFlows(300) {
		first, _ := e.Pick(f)
		seen[first.String()] = true
		f.Src = netip.AddrPortFrom(f.Src.Addr(), f.Src.Port()+1)
		if b, _ := e.Pick(f); b != first {
			t.Fatalf("client %v: Pick from two source ports = %v, %v, want the same backend", f.Src.Addr(), first, b)
		}
	}
	if len(seen) != 3 {
		t.Errorf("300 clients used backends %v, want all 3", seen)
	}
}

func TestMaglevOptions(t *testing.T) {
	for _, m := range []int{1, 4096, 65536, 65539} {
		if _, err := NewMaglev(nginxBackends(3), MaglevOptions{TableSize: m}); err == nil {
			t.Errorf("NewMaglev(TableSize %d) = nil error, want one: not a prime ≤ 65537", m)
		}
		if _, err := NewTable(nil, Options{Maglev: MaglevOptions{TableSize: m}}); err == nil {
			t.Errorf("NewTable(Maglev.TableSize %d) = nil error, want one", m)
		}
	}
	if _, err := NewMaglev(nginxBackends(251), MaglevOptions{TableSize: 251}); err == nil {
		t.Errorf("NewMaglev(251 backends, TableSize 251) = nil error, want one: too many backends")
	}
	// The Table falls back to random rather than failing the Service.
	tb := newTable(t, Options{Picker: PickMaglev, Maglev: MaglevOptions{TableSize: 3}})
	mustSet(t, tb, makeService("default", "my-service"))
	if _, ok := mustLookup(t, tb, myServiceKey).picker.(*randomPicker); !ok {
		t.Errorf("3 backends with Maglev table size 3: picker %T, want the random fallback", mustLookup(t, tb, myServiceKey).picker)
	}
	if p, err := NewMaglev(nil, MaglevOptions{}); err != nil {
		t.Errorf("NewMaglev(no backends) = %v", err)
	} else if b, ok := p.Pick(Flow{}); ok {
		t.Errorf("Pick on an empty Maglev = %v, true, want false", b)
	}
}

func TestMaglevTablesShared(t *testing.T) {
	tb := newTable(t, Options{Picker: PickMaglev})
	mustSet(t, tb, makeKubeDNS())
	table := func(k ServiceKey) *uint16 {
		t.Helper()
		p, ok := mustLookup(t, tb, k).picker.(*maglev)
		if !ok || len(p.table) != DefaultMaglevTableSize {
			t.Fatalf("Lookup(%v) picker %T, want a Maglev picker with a full table", k, mustLookup(t, tb, k).picker)
		}
		return &p.table[0]
	}
	// dns, dns-tcp and metrics go to the same two pods: one table.
	dns := table(dnsUDPKey)
	if table(dnsTCPKey) != dns || table(metricsKey) != dns {
		t.Errorf("kube-dns keys over the same pods have separate Maglev tables, want one shared")
	}
	// A change that keeps the addresses (a pod starts terminating while
	// another is ready) keeps the table; one that changes them builds anew.
	mustSet(t, tb, makeKubeDNS(func(s *Service) { s.Endpoints[0].NodeName = workerNode }))
	if table(dnsUDPKey) != dns {
		t.Errorf("update without an address change rebuilt the Maglev table, want it kept")
	}
	mustSet(t, tb, makeKubeDNS(func(s *Service) { s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.0.5")) }))
	if table(dnsUDPKey) == dns {
		t.Errorf("update adding a pod kept the old Maglev table, want a new one")
	}
	if n := len(mustLookup(t, tb, dnsUDPKey).Backends()); n != 3 {
		t.Errorf("after adding a pod: %d backends, want 3", n)
	}
}
