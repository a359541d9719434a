package lb

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// LimiterOptions configures a Limiter. Zero means no limit.
type LimiterOptions struct {
	// Max caps the connections (or flows) tracked at once.
	Max int64
	// MaxPerClient caps those of one client address.
	MaxPerClient int64
}

// Limiter caps the connections or flows the data path tracks, in all and
// per client address, and counts what it refuses. The data path calls
// Acquire for each new connection before it creates state for it, and
// Release exactly once for each Acquire that returned true, when the state
// goes. Use one Limiter per kind of state (TCP connections, UDP flows).
//
// Acquire and Release are safe for concurrent use. The global count is one
// atomic compare-and-swap; the per-client count, kept only when
// MaxPerClient is set, takes one of 64 sharded mutexes. Per-client memory
// is bounded by the clients with state: a client's count goes when it
// drops to zero.
type Limiter struct {
	max, maxPerClient int64

	active           atomic.Int64
	refusedGlobal    atomic.Uint64
	refusedClient    atomic.Uint64
	unmatchedRelease atomic.Uint64

	shards *[limiterShards]limiterShard
}

const limiterShards = 64

type limiterShard struct {
	// mu guards m and peak.
	mu   sync.Mutex
	m    map[netip.Addr]int64
	peak mapPeak
	_    [32]byte // one shard per cache line
}

// NewLimiter returns a Limiter.
func NewLimiter(opts LimiterOptions) (*Limiter, error) {
	if opts.Max < 0 {
		return nil, fmt.Errorf("new limiter: max %d: want ≥ 1, or 0 for no limit", opts.Max)
	}
	if opts.MaxPerClient < 0 {
		return nil, fmt.Errorf("new limiter: max per client %d: want ≥ 1, or 0 for no limit", opts.MaxPerClient)
	}
	l := &Limiter{max: opts.Max, maxPerClient: opts.MaxPerClient}
	if l.maxPerClient > 0 {
		l.shards = new([limiterShards]limiterShard)
		for i := range l.shards {
			l.shards[i].m = make(map[netip.Addr]int64)
		}
	}
	return l, nil
}

// Acquire counts a new connection from client and reports true, or
// reports false and counts a refusal if that would exceed a cap.
func (l *Limiter) Acquire(client netip.Addr) bool {
	_, ok := l.acquire(client)
	return ok
}

// acquire is Acquire that also returns the client's count with the new
// connection (0 without a per-client cap).
func (l *Limiter) acquire(client netip.Addr) (int64, bool) {
	n, over := l.try(client)
	if over != underCaps {
		l.refuse(over)
		return 0, false
	}
	return n, true
}

// A capOver says which cap a try met.
type capOver uint8

const (
	underCaps capOver = iota
	overMax
	overPerClient
)

// try is acquire without counting a refusal: a caller that can make room
// (the NAT's early drop) tries again, and calls refuse only when it gives
// up.
func (l *Limiter) try(client netip.Addr) (int64, capOver) {
	if l.max > 0 {
		for {
			n := l.active.Load()
			if n >= l.max {
				return 0, overMax
			}
			if l.active.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		l.active.Add(1)
	}
	if l.shards == nil {
		return 0, underCaps
	}
	client = client.Unmap()
	sh := l.shard(client)
	sh.mu.Lock()
	n := sh.m[client]
	if n >= l.maxPerClient {
		sh.mu.Unlock()
		l.active.Add(-1)
		return 0, overPerClient
	}
	sh.m[client] = n + 1
	sh.peak.grew(len(sh.m))
	sh.mu.Unlock()
	return n + 1, underCaps
}

// refuse counts a refusal by the cap over names.
func (l *Limiter) refuse(over capOver) {
	switch over {
	case overMax:
		l.refusedGlobal.Add(1)
	case overPerClient:
		l.refusedClient.Add(1)
	}
}

// Release ends a connection that Acquire let in.
func (l *Limiter) Release(client netip.Addr) {
	if l.shards != nil {
		client = client.Unmap()
		sh := l.shard(client)
		sh.mu.Lock()
		n, ok := sh.m[client]
		switch {
		case !ok:
			sh.mu.Unlock()
			// A Release without its Acquire: count it rather than
			// drive the counts negative.
			l.unmatchedRelease.Add(1)
			return
		case n <= 1:
			delete(sh.m, client)
			if sh.peak.shrink(len(sh.m)) {
				// A flood of clients left: see shrink.go.
				sh.m = rebuilt(sh.m)
			}
		default:
			sh.m[client] = n - 1
		}
		sh.mu.Unlock()
	}
	l.active.Add(-1)
}

func (l *Limiter) shard(client netip.Addr) *limiterShard {
	return &l.shards[hashClient(client)%limiterShards]
}

// LimiterStats is a snapshot of a Limiter's counters.
type LimiterStats struct {
	// Active counts connections acquired and not released.
	Active int64
	// Clients counts client addresses with active connections (0 when
	// there is no per-client cap, which keeps no per-client state).
	Clients int
	// RefusedGlobal and RefusedPerClient count Acquires refused by each
	// cap; UnmatchedReleases counts Releases of a client with nothing
	// acquired (a bug in the caller; seen only with a per-client cap).
	RefusedGlobal, RefusedPerClient, UnmatchedReleases uint64
}

// Stats returns l's counters.
func (l *Limiter) Stats() LimiterStats {
	s := LimiterStats{
		Active:            l.active.Load(),
		RefusedGlobal:     l.refusedGlobal.Load(),
		RefusedPerClient:  l.refusedClient.Load(),
		UnmatchedReleases: l.unmatchedRelease.Load(),
	}
	if l.shards != nil {
		for i := range l.shards {
			sh := &l.shards[i]
			sh.mu.Lock()
			s.Clients += len(sh.m)
			sh.mu.Unlock()
		}
	}
	return s
}
