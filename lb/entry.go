package lb

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Flow is what a picker sees of a new connection (TCP) or flow (UDP).
type Flow struct {
	Src, Dst netip.AddrPort
	Proto    Protocol
}

// Key returns the ServiceKey a flow to f.Dst matches.
func (f Flow) Key() ServiceKey {
	return ServiceKey{VIP: f.Dst.Addr().Unmap(), Port: f.Dst.Port(), Proto: f.Proto}
}

// Backend is one usable endpoint of an Entry: where a connection goes,
// with the endpoint's conditions and topology as the Entry was built from.
//
// A Backend is a small value; copies share its counters. The counters of
// an endpoint that stays in its Service's usable set survive updates of
// the Table, so Acquire on one snapshot and Release on a later one match.
type Backend struct {
	Addr                        netip.Addr
	Port                        uint16
	Ready, Serving, Terminating bool
	NodeName, Zone              string

	c *backendCounters
}

// backendCounters belong to one endpoint of one Entry key; they are shared
// by every Backend value and snapshot of it.
type backendCounters struct {
	picks  atomic.Uint64
	conns  atomic.Uint64
	active atomic.Int64
	entry  *entryCounters

	// out is the backend's outlier state; od the Table's policy (nil
	// outside a Table: never ejected); addr and name name it in logs.
	out  backendOutlier
	od   *outlier
	addr netip.AddrPort
	name ServicePortName
}

// NewBackend returns a Backend with its own counters, for pickers used
// outside a Table.
func NewBackend(ap netip.AddrPort) Backend {
	return Backend{Addr: ap.Addr(), Port: ap.Port(), Ready: true, Serving: true, c: &backendCounters{entry: new(entryCounters)}}
}

// AddrPort returns the backend's address and port.
func (b Backend) AddrPort() netip.AddrPort { return netip.AddrPortFrom(b.Addr, b.Port) }

// IsValid reports whether b is a backend, not the zero Backend.
func (b Backend) IsValid() bool { return b.c != nil }

func (b Backend) String() string { return b.AddrPort().String() }

// Acquire counts a connection to b as established (total and active, for
// b and its Entry). The data path calls it once per connection it carries
// to b, and Release once when that connection ends; least-connections
// picks by the active count. Safe for concurrent use; no-op on the zero
// Backend.
func (b Backend) Acquire() {
	if b.c == nil {
		return
	}
	b.c.conns.Add(1)
	b.c.active.Add(1)
	b.c.entry.conns.Add(1)
	b.c.entry.active.Add(1)
}

// Release ends a connection counted by Acquire.
func (b Backend) Release() {
	if b.c == nil {
		return
	}
	b.c.active.Add(-1)
	b.c.entry.active.Add(-1)
}

// Active returns b's active connections (Acquire minus Release).
func (b Backend) Active() int64 {
	if b.c == nil {
		return 0
	}
	return b.c.active.Load()
}

// entryCounters belong to one key of one Service and survive updates of
// the Service.
type entryCounters struct {
	picks         atomic.Uint64
	refused       atomic.Uint64 // Pick with no backend
	conns         atomic.Uint64
	active        atomic.Int64
	affinityHits  atomic.Uint64
	affinityEvict atomic.Uint64
	cursor        atomic.Uint64 // round-robin and least-connections tie-break
	// ejectMu serializes ejection decisions (the share check).
	ejectMu sync.Mutex
}

// Entry is the data path's view of one Service key: the usable backends,
// how to pick one, and the Service settings the data path needs. An Entry
// is immutable once published, apart from its counters and affinity
// state; an update of its Service publishes a new Entry that carries that
// state over. An Entry stays usable after it is replaced (a connection
// that picked from it may still Release its Backend).
type Entry struct {
	key           ServiceKey
	name          ServicePortName
	mode          Mode
	pickerKind    PickerKind
	proxyProtocol bool
	status        Status
	// backends are sorted by address and port.
	backends []Backend
	picker   Picker

	// aff is nil without ClientIP affinity.
	aff        *affinity
	affTimeout time.Duration
	clock      Clock

	c *entryCounters
}

// Key returns the (VIP, port, protocol) e serves.
func (e *Entry) Key() ServiceKey { return e.key }

// Name returns the Service port e belongs to.
func (e *Entry) Name() ServicePortName { return e.name }

// Mode returns the Service's mode, the Table's default resolved.
func (e *Entry) Mode() Mode { return e.mode }

// PickerKind returns the Service's picker, the Table's default resolved.
func (e *Entry) PickerKind() PickerKind { return e.pickerKind }

// ProxyProtocol reports whether proxy mode sends a PROXY v2 header.
func (e *Entry) ProxyProtocol() bool { return e.proxyProtocol }

// SessionAffinity returns the Service's affinity and its timeout.
func (e *Entry) SessionAffinity() (Affinity, time.Duration) {
	if e.aff == nil {
		return AffinityNone, 0
	}
	return AffinityClientIP, e.affTimeout
}

// Status says whether e has backends and, if not, how to refuse.
func (e *Entry) Status() Status { return e.status }

// NoEndpoints reports whether e has no usable backend: the data path
// refuses new connections at once (see Status for reject or drop).
func (e *Entry) NoEndpoints() bool { return len(e.backends) == 0 }

// Backends returns the usable backends, sorted by address and port. The
// slice is shared: do not modify it.
func (e *Entry) Backends() []Backend { return e.backends }

// Pick chooses the backend for a new connection: the client's affinity
// backend if the Service has ClientIP affinity and one is recorded, live
// and still usable; else the Service's picker's choice (which then
// becomes the client's affinity backend). It reports false, and counts a
// refusal, when e has no backends. Pick takes no lock unless the Service
// has affinity, and does not allocate on its own (affinity may grow its
// map for a new client). Safe for concurrent use.
//
// Pick does not count a connection: the data path calls Acquire on the
// Backend once the connection is set up.
func (e *Entry) Pick(f Flow) (Backend, bool) {
	if len(e.backends) == 0 {
		e.c.refused.Add(1)
		return Backend{}, false
	}
	if e.aff == nil {
		b, _ := e.picker.Pick(f)
		e.count(b)
		return b, true
	}
	client := f.Src.Addr()
	now := e.clock.Now()
	if ap, ok := e.aff.get(client, now, e.affTimeout); ok {
		if i, ok := e.index(ap); ok && e.backends[i].c.usable() {
			b := e.backends[i]
			e.c.affinityHits.Add(1)
			e.count(b)
			return b, true
		}
	}
	b, _ := e.picker.Pick(f)
	if e.aff.put(client, b.AddrPort(), now, e.affTimeout) {
		e.c.affinityEvict.Add(1)
	}
	e.count(b)
	return b, true
}

func (e *Entry) count(b Backend) {
	e.c.picks.Add(1)
	b.c.picks.Add(1)
}

// index returns the position of ap in e.backends.
func (e *Entry) index(ap netip.AddrPort) (int, bool) {
	return slices.BinarySearchFunc(e.backends, ap, func(b Backend, ap netip.AddrPort) int {
		return cmp.Or(b.Addr.Compare(ap.Addr()), cmp.Compare(b.Port, ap.Port()))
	})
}

// Stats returns e's counters.
func (e *Entry) Stats() EntryStats {
	s := EntryStats{
		Key:               e.key,
		Name:              e.name,
		Status:            e.status,
		Picks:             e.c.picks.Load(),
		Refused:           e.c.refused.Load(),
		Conns:             e.c.conns.Load(),
		Active:            e.c.active.Load(),
		AffinityHits:      e.c.affinityHits.Load(),
		AffinityEvictions: e.c.affinityEvict.Load(),
		Backends:          make([]BackendStats, len(e.backends)),
	}
	if e.aff != nil {
		s.AffinityClients = e.aff.len()
	}
	now := e.clock.Now().UnixNano()
	for i, b := range e.backends {
		s.Backends[i] = BackendStats{
			AddrPort:  b.AddrPort(),
			Picks:     b.c.picks.Load(),
			Conns:     b.c.conns.Load(),
			Active:    b.c.active.Load(),
			Ejected:   b.c.ejectedAt(now),
			Ejections: b.c.out.ejections.Load(),
			Failures:  uint64(max(b.c.out.fails.Load(), 0)),
		}
		if s.Backends[i].Ejected {
			s.Ejected++
		}
	}
	return s
}

// EntryStats is a snapshot of one Entry's counters. Counters belong to the
// Service key and survive updates of the Service; they restart when the
// Service is deleted.
type EntryStats struct {
	Key    ServiceKey
	Name   ServicePortName
	Status Status
	// Picks counts backends chosen; Refused counts Picks with no backend.
	Picks, Refused uint64
	// Conns and Active count connections through Acquire and Release.
	Conns  uint64
	Active int64
	// AffinityHits counts Picks answered by the affinity map;
	// AffinityEvictions counts live clients pushed out of a full map;
	// AffinityClients is the map's size.
	AffinityHits, AffinityEvictions uint64
	AffinityClients                 int
	// Backends are the current usable backends; Ejected counts those of
	// them ejected now by outlier detection (see OutlierOptions).
	Backends []BackendStats
	Ejected  int
}

// BackendStats is a snapshot of one backend's counters.
type BackendStats struct {
	AddrPort     netip.AddrPort
	Picks, Conns uint64
	Active       int64
	// Ejected: outlier detection left the backend out of picking now.
	// Ejections counts its ejections; Failures its connection failures
	// since its last success (see OutlierOptions).
	Ejected   bool
	Ejections uint64
	Failures  uint64
}
