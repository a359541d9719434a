package lb

import (
	"maps"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Go maps never give their memory back: a map keeps the buckets of the
// most entries it ever held, empty or not, and so would a flow map after
// a flood — the router would hold the flood's memory with no flow left.
// The flow maps (the NAT's shards, the Limiter's clients, Egress's flows,
// the host UDP relays' flows, the proxy's connections) therefore record
// their peak and are rebuilt into a right-sized map when their live
// count falls below a quarter of it. A rebuild copies at most a quarter
// of the peak, and the peak restarts from the live count, so a map is
// rebuilt at most once per fall from a peak: amortized, one copy per
// deleted entry at most. Maps that never held shrinkMinPeak entries are
// left alone.
const (
	shrinkMinPeak = 1024
	shrinkRatio   = 4
)

// mapPeak is the most entries a map held since it was last built. Its
// map's lock guards it.
type mapPeak int

// grew notes that the map holds n entries.
func (p *mapPeak) grew(n int) {
	if n > int(*p) {
		*p = mapPeak(n)
	}
}

// shrink reports whether a map of n live entries should be rebuilt, and if
// so restarts the peak from n.
func (p *mapPeak) shrink(n int) bool {
	if int(*p) < shrinkMinPeak || n*shrinkRatio >= int(*p) {
		return false
	}
	*p = mapPeak(n)
	return true
}

// rebuilt returns a copy of m sized for its entries; the old map's memory
// goes with the old map.
func rebuilt[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	maps.Copy(n, m)
	return n
}

// osReturn gives the heap's free memory back to the operating system after
// a map shrank from a large peak. The runtime alone would wait for its
// next collection — up to two minutes when nothing allocates, as on an
// idle router after a flood — and then scavenge slowly; the RSS would
// stay at the flood's level meanwhile. debug.FreeOSMemory collects and
// scavenges at once; it costs a collection (the packet path keeps
// running beside it) and runs at most once per osReturnEvery.
type osReturn struct {
	// freed is the estimated map memory dropped since the last return:
	// the peaks of the maps rebuilt, in entries.
	freed atomic.Int64
	last  atomic.Int64 // unix nanoseconds of the last return
}

const (
	// osReturnEntries is how many dropped map entries are worth a
	// collection: about a few megabytes of buckets and flows.
	osReturnEntries = 16 << 10
	osReturnEvery   = 10 * time.Second
)

// dropped notes that a map of peak entries was rebuilt.
func (r *osReturn) dropped(peak int) { r.freed.Add(int64(peak)) }

// maybe returns the free memory to the OS if enough was dropped and the
// last return was long enough ago. It is for reapers, never the packet
// path.
func (r *osReturn) maybe(now time.Time) bool {
	if r.freed.Load() < osReturnEntries || now.UnixNano()-r.last.Load() < int64(osReturnEvery) {
		return false
	}
	r.freed.Store(0)
	r.last.Store(now.UnixNano())
	debug.FreeOSMemory()
	return true
}
