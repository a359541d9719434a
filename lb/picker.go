package lb

import (
	"math/rand/v2"
	"sync/atomic"
)

// Picker chooses a backend for a new connection.
//
// A Picker is built over a fixed set of backends and never changes it; the
// Table builds a new Picker when a Service's usable endpoints change. Pick
// is safe for concurrent use, takes no lock and does not allocate. It
// reports false only when the Picker has no backends.
type Picker interface {
	Pick(f Flow) (Backend, bool)
}

var (
	_ Picker = (*randomPicker)(nil)
	_ Picker = (*roundRobin)(nil)
	_ Picker = (*leastConn)(nil)
	_ Picker = (*maglev)(nil)
)

// runtimeSource is the default random source: the runtime's per-thread
// ChaCha8 generator behind math/rand/v2's top-level functions. It is safe
// for concurrent use and takes no lock.
type runtimeSource struct{}

func (runtimeSource) Uint64() uint64 { return rand.Uint64() }

// Every Picker skips backends that outlier detection ejected (see
// OutlierOptions) while another is usable, at the cost of one atomic load
// per candidate it considers.

// NewRandom returns a Picker that chooses uniformly at random among
// backends, drawing from src (nil: the runtime's generator). kube-proxy's
// iptables chain of "statistic mode random probability 1/n, 1/(n-1), ..."
// rules gives each of n endpoints the same 1/n; so does this. src must be
// safe for concurrent use.
func NewRandom(backends []Backend, src rand.Source) Picker {
	if src == nil {
		src = runtimeSource{}
	}
	return &randomPicker{backends: backends, rnd: rand.New(src)}
}

type randomPicker struct {
	backends []Backend
	rnd      *rand.Rand // holds only its Source; safe if that is
}

func (p *randomPicker) Pick(Flow) (Backend, bool) {
	n := len(p.backends)
	if n == 0 {
		return Backend{}, false
	}
	b := p.backends[p.rnd.IntN(n)]
	if b.c.usable() {
		return b, true
	}
	// b is ejected: draw again, uniformly among the rest.
	for range 2 * n {
		if o := p.backends[p.rnd.IntN(n)]; o.c.usable() {
			return o, true
		}
	}
	return firstUsable(p.backends, b), true
}

// firstUsable returns the first of backends that is not ejected, or else
// def. Pickers call it when their draws keep meeting ejected backends.
func firstUsable(backends []Backend, def Backend) Backend {
	for _, b := range backends {
		if b.c.usable() {
			return b
		}
	}
	return def
}

// NewRoundRobin returns a Picker that hands out backends in turn: over any
// k·n consecutive Picks each of n backends is chosen exactly k times.
func NewRoundRobin(backends []Backend) Picker {
	return &roundRobin{backends: backends, cursor: new(atomic.Uint64)}
}

type roundRobin struct {
	backends []Backend
	// cursor is shared with the Entry's earlier and later pickers, so a
	// Service update does not restart the rotation.
	cursor *atomic.Uint64
}

func (p *roundRobin) Pick(Flow) (Backend, bool) {
	n := uint64(len(p.backends))
	if n == 0 {
		return Backend{}, false
	}
	b := p.backends[(p.cursor.Add(1)-1)%n]
	if b.c.usable() {
		return b, true
	}
	// b is ejected: take the next turns until one is not, so the
	// others share b's turns evenly.
	for range n {
		if o := p.backends[(p.cursor.Add(1)-1)%n]; o.c.usable() {
			return o, true
		}
	}
	return b, true
}

// NewLeastConn returns a Picker that chooses the backend with the fewest
// active connections (Backend.Acquire minus Release). Ties go round-robin:
// the scan starts one backend further on each Pick and keeps the first
// minimum it meets, so equally loaded backends take turns even when a
// burst of Picks comes before their Acquires. A Pick costs one atomic load
// per backend.
func NewLeastConn(backends []Backend) Picker {
	return &leastConn{backends: backends, cursor: new(atomic.Uint64)}
}

type leastConn struct {
	backends []Backend
	cursor   *atomic.Uint64
}

func (p *leastConn) Pick(Flow) (Backend, bool) {
	n := len(p.backends)
	if n == 0 {
		return Backend{}, false
	}
	start := int((p.cursor.Add(1) - 1) % uint64(n))
	// An ejected backend has no active connections: it would win every
	// pick. Skip ejected ones; if all are, fall back to the plain scan.
	best, min := -1, int64(0)
	for i := 0; i < n && (best < 0 || min > 0); i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		b := p.backends[j]
		if a := b.Active(); (best < 0 || a < min) && b.c.usable() {
			best, min = j, a
		}
	}
	if best < 0 {
		best = start
	}
	return p.backends[best], true
}
