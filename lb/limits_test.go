package lb

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

func mustLimiter(t testing.TB, opts LimiterOptions) *Limiter {
	t.Helper()
	l, err := NewLimiter(opts)
	if err != nil {
		t.Fatalf("NewLimiter(%+v) = %v", opts, err)
	}
	return l
}

var (
	client1 = netip.MustParseAddr("10.244.0.4")
	client2 = netip.MustParseAddr("10.244.1.2")
	client3 = netip.MustParseAddr("10.244.1.3")
)

func TestLimiterGlobal(t *testing.T) {
	l := mustLimiter(t, LimiterOptions{Max: 3})
	for i, c := range []netip.Addr{client1, client2, client3} {
		if !l.Acquire(c) {
			t.Fatalf("Acquire #%d (%v) = false under the cap of 3", i+1, c)
		}
	}
	if l.Acquire(client1) {
		t.Errorf("4th Acquire = true, want false at the global cap 3")
	}
	l.Release(client2)
	if !l.Acquire(client2) {
		t.Errorf("Acquire after a Release = false, want true")
	}
	if got, want := l.Stats(), (LimiterStats{Active: 3, RefusedGlobal: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestLimiterPerClient(t *testing.T) {
	l := mustLimiter(t, LimiterOptions{MaxPerClient: 2})
	for range 2 {
		if !l.Acquire(client1) {
			t.Fatalf("Acquire(%v) = false under its cap of 2", client1)
		}
	}
	if l.Acquire(client1) {
		t.Errorf("3rd Acquire(%v) = true, want false at the per-client cap 2", client1)
	}
	// Another client is not affected; an IPv4-mapped address is the same client.
	if !l.Acquire(client2) {
		t.Errorf("Acquire(%v) = false, want true: its own count is 0", client2)
	}
	if l.Acquire(netip.AddrFrom16(client1.As16())) {
		t.Errorf("Acquire(::ffff:%v) = true, want false: the same client as %v", client1, client1)
	}
	if got, want := l.Stats(), (LimiterStats{Active: 3, Clients: 2, RefusedPerClient: 2}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	l.Release(client1)
	l.Release(client1)
	l.Release(client2)
	if got, want := l.Stats(), (LimiterStats{RefusedPerClient: 2}); got != want {
		t.Errorf("after releasing all: Stats() = %+v, want %+v (no client state left)", got, want)
	}
	// A stray Release is counted, not allowed to drive counts negative.
	l.Release(client3)
	if s := l.Stats(); s.Active != 0 || s.UnmatchedReleases != 1 {
		t.Errorf("after a stray Release: Stats() = %+v, want Active 0, UnmatchedReleases 1", s)
	}
}

func TestLimiterBoth(t *testing.T) {
	l := mustLimiter(t, LimiterOptions{Max: 3, MaxPerClient: 2})
	got := []bool{l.Acquire(client1), l.Acquire(client1), l.Acquire(client1), l.Acquire(client2), l.Acquire(client3)}
	want := []bool{true, true, false, true, false}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Acquire client1 ×3, client2, client3 = %v, want %v", got, want)
	}
	if s := l.Stats(); s.Active != 3 || s.RefusedGlobal != 1 || s.RefusedPerClient != 1 {
		t.Errorf("Stats() = %+v, want Active 3, RefusedGlobal 1, RefusedPerClient 1", s)
	}
	// A per-client refusal gives back its global slot.
	l.Release(client2)
	if !l.Acquire(client3) {
		t.Errorf("Acquire(%v) after a Release = false, want true", client3)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	const maxConns = 50
	l := mustLimiter(t, LimiterOptions{Max: maxConns, MaxPerClient: 20})
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := 0
	held := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := netip.AddrFrom4([4]byte{10, 244, 0, byte(g % 4)})
			for range 2000 {
				if !l.Acquire(c) {
					continue
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				l.Release(c)
			}
		}()
	}
	wg.Wait()
	s := l.Stats()
	if s.Active != 0 || s.Clients != 0 || peak > maxConns {
		t.Errorf("after concurrent use: Stats() = %+v, peak %d, want Active 0, no clients, peak ≤ %d", s, peak, maxConns)
	}
	if _, err := NewLimiter(LimiterOptions{Max: -1}); err == nil {
		t.Errorf("NewLimiter(Max -1) = nil error, want one")
	}
}
