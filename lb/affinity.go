package lb

import (
	"net/netip"
	"sync"
	"time"
)

// Clock tells the time. Tests inject a fake one; the Table's default is
// the system clock. Now must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// affinity is a ClientIP session-affinity map of one Service key: client
// address → the backend its last new connection went to, and when. It
// plays the part of kube-proxy's "-m recent" lists: a new connection
// within the timeout of the client's last one goes to the same backend,
// and refreshes the time.
//
// The map holds at most max clients. Expired clients are dropped when
// met; a new client arriving at a full map evicts an expired client or,
// failing that, the least recently seen of a few sampled ones (as Redis
// approximates LRU), so both memory and the cost of a Pick stay bounded.
//
// One affinity outlives the Entry that made it: an update of the Service
// hands it to the new Entry, whose Pick checks that the recorded backend
// is still usable.
type affinity struct {
	max int

	// mu guards m.
	mu sync.Mutex
	m  map[netip.Addr]affinityRecord
}

type affinityRecord struct {
	backend netip.AddrPort
	last    time.Time
}

// evictSample is how many clients a full map looks at to find one to evict.
const evictSample = 16

func newAffinity(max int) *affinity {
	return &affinity{max: max, m: make(map[netip.Addr]affinityRecord)}
}

// get returns the client's backend if its last connection was less than
// timeout before now, and makes now its last connection.
func (a *affinity) get(client netip.Addr, now time.Time, timeout time.Duration) (netip.AddrPort, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.m[client]
	if !ok {
		return netip.AddrPort{}, false
	}
	if now.Sub(r.last) >= timeout {
		delete(a.m, client)
		return netip.AddrPort{}, false
	}
	r.last = now
	a.m[client] = r
	return r.backend, true
}

// put records backend as client's, at now. It reports whether it evicted
// a live client to make room.
func (a *affinity) put(client netip.Addr, backend netip.AddrPort, now time.Time, timeout time.Duration) (evictedLive bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.m[client]; !ok && len(a.m) >= a.max {
		evictedLive = a.evictLocked(now, timeout)
	}
	a.m[client] = affinityRecord{backend: backend, last: now}
	return evictedLive
}

// evictLocked makes room for one client: it drops the expired clients
// among a sample of the map, or else the least recently seen of them.
func (a *affinity) evictLocked(now time.Time, timeout time.Duration) (evictedLive bool) {
	var (
		oldest     netip.Addr
		oldestTime time.Time
		n, expired int
	)
	for c, r := range a.m {
		if now.Sub(r.last) >= timeout {
			delete(a.m, c)
			expired++
		} else if !oldest.IsValid() || r.last.Before(oldestTime) {
			oldest, oldestTime = c, r.last
		}
		if n++; n == evictSample {
			break
		}
	}
	if expired > 0 {
		return false
	}
	delete(a.m, oldest)
	return true
}

func (a *affinity) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
