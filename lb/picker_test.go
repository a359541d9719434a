package lb

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// chiSquare returns Pearson's statistic of counts against a uniform split.
func chiSquare(counts []int) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	exp := float64(total) / float64(len(counts))
	var x2 float64
	for _, c := range counts {
		d := float64(c) - exp
		x2 += d * d / exp
	}
	return x2
}

// checkUniform fails unless counts look uniform: chi-square below the
// 0.999 quantile for k-1 degrees of freedom, and every bucket within 5
// sigma of its binomial mean. With a fixed seed the outcome is fixed; the
// bounds say how lucky the seed would have to be to pass a biased picker.
func checkUniform(t *testing.T, what string, counts []int) {
	t.Helper()
	// 0.999 quantiles of chi-square for 1..9 degrees of freedom.
	crit := []float64{10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88}
	total := 0
	for _, c := range counts {
		total += c
	}
	k := len(counts)
	if x2 := chiSquare(counts); x2 > crit[k-2] {
		t.Errorf("%s: counts %v: chi-square %.2f > %.2f (df %d, p 0.001): not uniform", what, counts, x2, crit[k-2], k-1)
	}
	p := 1 / float64(k)
	mean, sigma := float64(total)*p, math.Sqrt(float64(total)*p*(1-p))
	for i, c := range counts {
		if math.Abs(float64(c)-mean) > 5*sigma {
			t.Errorf("%s: bucket %d has %d of %d, want %.0f ± %.0f (5σ)", what, i, c, total, mean, 5*sigma)
		}
	}
}

// pickCounts picks n times from e with varying client ports and counts
// picks per backend, in e.Backends() order.
func pickCounts(t *testing.T, e *Entry, n int) []int {
	t.Helper()
	counts := make([]int, len(e.Backends()))
	for i := range n {
		b, ok := e.Pick(makeFlow("10.244.0.9", uint16(10000+i), e.Key()))
		if !ok {
			t.Fatalf("Pick() = false on an entry with backends %v", backendAddrs(e.Backends()))
		}
		j := slices.Index(e.Backends(), b)
		if j < 0 {
			t.Fatalf("Pick() = %v, want one of %v", b, backendAddrs(e.Backends()))
		}
		counts[j]++
	}
	return counts
}

func TestRandomUniform(t *testing.T) {
	// my-service's three nginx pods, as kube-proxy's KUBE-SVC chain with
	// probabilities 1/3, 1/2, 1 would split them.
	tb := newTable(t, Options{Rand: newLockedSource(42)})
	mustSet(t, tb, makeService("default", "my-service"))
	counts := pickCounts(t, mustLookup(t, tb, myServiceKey), 3000)
	checkUniform(t, "random over 3 backends", counts)
	t.Logf("random, 3000 picks: %v (chi-square %.2f)", counts, chiSquare(counts))

	// kube-dns metrics: two coredns pods, "probability 0.5".
	mustSet(t, tb, makeKubeDNS())
	counts = pickCounts(t, mustLookup(t, tb, metricsKey), 3000)
	checkUniform(t, "random over 2 backends", counts)
}

func TestRandomDetectsBias(t *testing.T) {
	// checkUniform must be able to fail: a 40/30/30 split over 3,000
	// picks is far outside its bounds.
	if x2 := chiSquare([]int{1200, 900, 900}); x2 < 13.82 {
		t.Errorf("chi-square of a 40/30/30 split = %.2f, want above the critical 13.82", x2)
	}
}

func TestRoundRobinExact(t *testing.T) {
	tb := newTable(t, Options{Picker: PickRoundRobin})
	mustSet(t, tb, makeService("default", "my-service"))
	e := mustLookup(t, tb, myServiceKey)
	var seq []string
	for i := range 6 {
		b, _ := e.Pick(makeFlow("10.244.0.9", uint16(i), myServiceKey))
		seq = append(seq, b.String())
	}
	want := []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80", "10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"}
	if !slices.Equal(seq, want) {
		t.Errorf("round-robin picks = %v, want %v", seq, want)
	}

	// Concurrent pickers still split exactly evenly.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		counts = map[netip.AddrPort]int{}
	)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[netip.AddrPort]int{}
			for i := range 3000 {
				b, _ := e.Pick(makeFlow(fmt.Sprintf("10.244.1.%d", 10+g), uint16(i), myServiceKey))
				local[b.AddrPort()]++
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range local {
				counts[k] += v
			}
		}()
	}
	wg.Wait()
	for _, b := range e.Backends() {
		if got := counts[b.AddrPort()]; got != 4000 {
			t.Errorf("4×3000 concurrent round-robin picks: %v got %d, want exactly 4000", b, got)
		}
	}
}

func TestLeastConn(t *testing.T) {
	tb := newTable(t, Options{Picker: PickLeastConn})
	mustSet(t, tb, makeService("default", "my-service"))
	e := mustLookup(t, tb, myServiceKey)
	bs := e.Backends()
	// Load: 10.244.0.4 has 3, 10.244.1.2 has 1, 10.244.1.3 has 2.
	for i, n := range []int{3, 1, 2} {
		for range n {
			bs[i].Acquire()
		}
	}
	f := makeFlow("10.244.0.9", 1, myServiceKey)
	for range 5 {
		if b, _ := e.Pick(f); b.AddrPort() != bs[1].AddrPort() {
			t.Fatalf("Pick() with active %d/%d/%d = %v, want the least loaded %v", bs[0].Active(), bs[1].Active(), bs[2].Active(), b, bs[1])
		}
	}
	// Pick and acquire until all are even: the picks fill the gaps.
	var got []string
	for range 3 {
		b, _ := e.Pick(f)
		b.Acquire()
		got = append(got, b.String())
	}
	slices.Sort(got)
	if want := []string{"10.244.1.2:80", "10.244.1.2:80", "10.244.1.3:80"}; !slices.Equal(got, want) {
		t.Errorf("picks that level the load = %v, want %v", got, want)
	}
	// All at 3: ties rotate through every backend.
	seen := map[string]bool{}
	for range 3 {
		b, _ := e.Pick(f)
		seen[b.String()] = true
	}
	if len(seen) != 3 {
		t.Errorf("three Picks among equally loaded backends chose %v, want all three (ties go round-robin)", seen)
	}
	// Releasing makes a backend the least loaded again.
	bs[0].Release()
	if b, _ := e.Pick(f); b.AddrPort() != bs[0].AddrPort() {
		t.Errorf("Pick() after Release on %v = %v, want %v", bs[0], b, bs[0])
	}
}

func TestAffinity(t *testing.T) {
	clock := newFakeClock()
	tb := newTable(t, Options{Clock: clock, Picker: PickRoundRobin})
	svc := makeService("default", "my-service", func(s *Service) {
		s.SessionAffinity = AffinityClientIP
		s.SessionAffinityTimeout = 60 * time.Second
	})
	mustSet(t, tb, svc)
	e := mustLookup(t, tb, myServiceKey)
	alice, bob := makeFlow("10.244.0.9", 1000, myServiceKey), makeFlow("10.244.1.9", 1000, myServiceKey)
	pick := func(f Flow) string {
		t.Helper()
		b, ok := mustLookup(t, tb, myServiceKey).Pick(f)
		if !ok {
			t.Fatalf("Pick(%v) = false", f)
		}
		return b.String()
	}

	first := pick(alice) // round-robin: 10.244.0.4
	if got := pick(bob); got == first {
		t.Fatalf("bob's first Pick = %v, the same as alice's: round-robin should have moved on", got)
	}
	// Within the timeout, alice's new connections (other source ports)
	// stick, though round-robin would move on; each refreshes the time.
	for i := range 5 {
		clock.Advance(50 * time.Second)
		alice.Src = netip.AddrPortFrom(alice.Src.Addr(), uint16(2000+i))
		if got := pick(alice); got != first {
			t.Fatalf("Pick(alice) %ds after her last connection = %v, want %v (timeout 60s)", 50, got, first)
		}
	}
	if st := e.Stats(); st.AffinityHits != 5 || st.AffinityClients != 2 {
		t.Errorf("Stats() = affinity hits %d clients %d, want 5, 2", st.AffinityHits, st.AffinityClients)
	}
	// After the timeout, the picker decides again: round-robin moves on.
	clock.Advance(60 * time.Second)
	second := pick(alice)
	if second == first {
		t.Errorf("Pick(alice) 60s after her last connection = %v, want another backend (affinity expired)", second)
	}
	if got := pick(alice); got != second {
		t.Errorf("Pick(alice) right after = %v, want her new backend %v", got, second)
	}

	// Bob comes back (his record expired long ago) and gets a new backend.
	bobBefore := pick(bob)
	if bobBefore == second {
		t.Fatalf("bob's backend %v is the one about to leave; the test needs another", bobBefore)
	}

	// Her backend leaves the Service: she moves, and sticks to the new one.
	svc.Endpoints = slices.DeleteFunc(slices.Clone(svc.Endpoints), func(ep Endpoint) bool {
		return netip.AddrPortFrom(ep.Addr, 80).String() == second
	})
	if err := tb.Upsert(svc); err != nil {
		t.Fatal(err)
	}
	third := pick(alice)
	if third == second {
		t.Fatalf("Pick(alice) after %v left = %v, want another backend", second, third)
	}
	if got := pick(alice); got != third {
		t.Errorf("Pick(alice) again = %v, want %v", got, third)
	}
	// The affinity map survived the update: bob, whose backend stayed,
	// still goes to it though round-robin would move on.
	for range 2 {
		if got := pick(bob); got != bobBefore {
			t.Errorf("Pick(bob) after an update = %v, want %v, his backend before it", got, bobBefore)
		}
	}

	// Turning affinity off forgets it.
	svc.SessionAffinity = AffinityNone
	if err := tb.Upsert(svc); err != nil {
		t.Fatal(err)
	}
	if a, _ := mustLookup(t, tb, myServiceKey).SessionAffinity(); a != AffinityNone {
		t.Errorf("SessionAffinity() = %v after turning it off", a)
	}
}

func TestAffinityBounded(t *testing.T) {
	clock := newFakeClock()
	tb := newTable(t, Options{Clock: clock, AffinityMaxClients: 4})
	mustSet(t, tb, makeService("default", "my-service", func(s *Service) { s.SessionAffinity = AffinityClientIP }))
	e := mustLookup(t, tb, myServiceKey)
	for i := range 10 {
		clock.Advance(time.Second)
		e.Pick(makeFlow(fmt.Sprintf("10.244.0.%d", 100+i), 1, myServiceKey))
	}
	st := e.Stats()
	if st.AffinityClients != 4 || st.AffinityEvictions != 6 {
		t.Errorf("10 clients into a map of 4: Stats() = clients %d evictions %d, want 4, 6", st.AffinityClients, st.AffinityEvictions)
	}
	// The most recent client is kept (the least recently seen go first).
	last := makeFlow("10.244.0.109", 2, myServiceKey)
	b1, _ := e.Pick(last)
	if st := e.Stats(); st.AffinityHits != 1 {
		t.Errorf("Pick(most recent client): affinity hits %d, want 1 (kept; got %v)", st.AffinityHits, b1)
	}
	// Expired clients make room without evicting live ones.
	clock.Advance(DefaultAffinityTimeout)
	for i := range 4 {
		e.Pick(makeFlow(fmt.Sprintf("10.244.1.%d", 100+i), 1, myServiceKey))
	}
	if st := e.Stats(); st.AffinityEvictions != 6 || st.AffinityClients > 4 {
		t.Errorf("after expiry: Stats() = clients %d evictions %d, want ≤4, still 6", st.AffinityClients, st.AffinityEvictions)
	}
}
