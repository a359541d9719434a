package lb

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// Default Options.
const (
	// DefaultMode is the mode of a Service that names none, as
	// kube-proxy's: nat.
	DefaultMode = ModeNAT
	// DefaultPicker is the picker of a Service that names none, as
	// kube-proxy's iptables "statistic mode random": random.
	DefaultPicker = PickRandom
	// DefaultAffinityMaxClients bounds one key's ClientIP affinity map.
	DefaultAffinityMaxClients = 16384
)

// Options configures a Table. The zero value of each field is the default
// its comment names.
type Options struct {
	// NodeName is this node's name, for internalTrafficPolicy Local and
	// node topology hints. Empty: no endpoint is local.
	NodeName string
	// Zone is this node's topology zone, for zone hints.
	Zone string
	// Clock tells time for session affinity. Default: the system clock.
	Clock Clock
	// Rand is the source for random picks and must be safe for concurrent
	// use. Default: the runtime's lock-free per-thread generator.
	Rand rand.Source
	// Mode is the mode of Services with ModeDefault. Default
	// DefaultMode.
	Mode Mode
	// Picker is the picker of Services with PickDefault. Default
	// DefaultPicker.
	Picker PickerKind
	// Maglev configures Maglev pickers.
	Maglev MaglevOptions
	// AffinityMaxClients bounds each key's ClientIP affinity map.
	// Default DefaultAffinityMaxClients.
	AffinityMaxClients int
	// Outlier configures the ejection of backends that fail repeatedly.
	Outlier OutlierOptions
}

// shardBits sets the number of snapshot shards. 256 shards keep a shard at
// ~80 keys with 10,000 dual-stack Services, so copying one is cheap,
// while the fixed array of shard maps (2 KiB) is copied per update.
const shardBits = 8

// tableSnapshot is one published version of the table. It and the maps it
// points to are never modified after publication: an update copies the
// array and the shards it touches, and publishes a new snapshot. That is
// a two-level persistent map: one update costs O(2^shardBits + keys in the
// touched shards), not O(all keys).
type tableSnapshot struct {
	shards [1 << shardBits]map[ServiceKey]*Entry
	len    int
}

// Table is the Service table: every Service's entries, keyed by
// (ClusterIP, port, protocol), published to the packet path as an
// immutable snapshot.
//
// Lookup, and Pick on the Entry it returns, are for the packet path: they
// take no lock and do not allocate. Set, Upsert and Delete are for the
// reconciler; they serialize among themselves and never block Lookup.
type Table struct {
	log  *zap.Logger
	opts Options
	// rnd is shared by all random pickers; it holds only opts.Rand.
	rnd *rand.Rand

	snap atomic.Pointer[tableSnapshot]

	// outlier is the ejection policy every backend the Table builds
	// shares.
	outlier *outlier

	// mu guards services and gen, and serializes publishing snapshots.
	mu       sync.Mutex
	services map[ServiceName]*serviceState
	gen      uint64
}

// serviceState is what the table keeps of one Service.
type serviceState struct {
	svc     *Service // the Table's own copy
	entries []*Entry // one per key, in svc.Keys order
	seen    uint64   // Set's gen that last listed the Service
}

// NewTable returns an empty Table. log may be nil.
func NewTable(log *zap.Logger, opts Options) (*Table, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Rand == nil {
		opts.Rand = runtimeSource{}
	}
	if opts.Mode == ModeDefault {
		opts.Mode = DefaultMode
	}
	if opts.Picker == PickDefault {
		opts.Picker = DefaultPicker
	}
	if opts.Mode > ModeProxy {
		return nil, fmt.Errorf("new lb table: mode %v: want nat or proxy", opts.Mode)
	}
	if opts.Picker > PickMaglev {
		return nil, fmt.Errorf("new lb table: picker %v: want random, round-robin, least-connections or maglev", opts.Picker)
	}
	if err := opts.Maglev.validate(); err != nil {
		return nil, fmt.Errorf("new lb table: %w", err)
	}
	if opts.AffinityMaxClients < 0 {
		return nil, fmt.Errorf("new lb table: affinity max clients %d: want ≥ 1, or 0 for %d", opts.AffinityMaxClients, DefaultAffinityMaxClients)
	}
	if opts.AffinityMaxClients == 0 {
		opts.AffinityMaxClients = DefaultAffinityMaxClients
	}
	if err := opts.Outlier.setDefaults(); err != nil {
		return nil, fmt.Errorf("new lb table: %w", err)
	}
	t := &Table{
		log:      log.Named("lb"),
		opts:     opts,
		rnd:      rand.New(opts.Rand),
		services: make(map[ServiceName]*serviceState),
	}
	t.outlier = &outlier{opts: opts.Outlier, clock: opts.Clock, log: t.log}
	t.snap.Store(new(tableSnapshot))
	return t, nil
}

// Lookup returns the Entry for key, or nil if no Service has that key. It
// reads the current snapshot: no lock, no allocation. The Entry stays
// valid after later updates, which replace it rather than change it.
func (t *Table) Lookup(key ServiceKey) *Entry {
	return t.snap.Load().shards[shardOf(key)][key]
}

// Len returns the number of keys in the current snapshot.
func (t *Table) Len() int { return t.snap.Load().len }

// Entries returns every Entry of the current snapshot, sorted by Service
// port name and key. For stats and debugging, not the packet path.
func (t *Table) Entries() []*Entry {
	s := t.snap.Load()
	out := make([]*Entry, 0, s.len)
	for _, sh := range s.shards {
		for _, e := range sh {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *Entry) int {
		return cmp.Or(
			cmp.Compare(a.name.Namespace, b.name.Namespace),
			cmp.Compare(a.name.Name, b.name.Name),
			cmp.Compare(a.name.Port, b.name.Port),
			a.key.VIP.Compare(b.key.VIP),
			cmp.Compare(a.key.Port, b.key.Port),
			cmp.Compare(a.key.Proto, b.key.Proto))
	})
	return out
}

// Stats returns the counters of every Entry, sorted as Entries.
func (t *Table) Stats() []EntryStats {
	es := t.Entries()
	out := make([]EntryStats, len(es))
	for i, e := range es {
		out[i] = e.Stats()
	}
	return out
}

// Set makes services the Table's whole desired state: it adds the new
// Services, rebuilds the changed ones (Service.Equal), deletes those not
// listed and keeps the rest, Entries and all, as they are. It is
// idempotent.
//
// If a new or changed Service is invalid, a name is listed twice, or a
// Service claims a key another one has, Set changes nothing and returns
// every problem.
//
// Cost: comparing each listed Service with the kept one is O(size of
// services) and allocates nothing for unchanged ones (walking the kept
// Services to find deletions is skipped when the counts show none); each changed Service
// costs O(its endpoints × keys) to rebuild (plus a Maglev table per key
// if it uses Maglev); publishing copies the 256-shard array and each
// touched shard (~keys/256 entries).
func (t *Table) Set(services []Service) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	var (
		errs    []error
		changed []*Service
		fresh   map[ServiceName]int // index in services of names not yet in the Table
	)
	for i := range services {
		s := &services[i]
		name := s.Key()
		st := t.services[name]
		switch {
		case st == nil:
			if fresh == nil {
				fresh = make(map[ServiceName]int)
			}
			if j, dup := fresh[name]; dup {
				errs = append(errs, fmt.Errorf("services[%d]: %s is also services[%d] (want each Service once)", i, name, j))
				continue
			}
			fresh[name] = i
		case st.seen == t.gen:
			errs = append(errs, fmt.Errorf("services[%d]: %s is listed twice (want each Service once)", i, name))
			continue
		default:
			st.seen = t.gen
			if st.svc.Equal(s) {
				continue // valid: it was when it was stored
			}
		}
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("services[%d]: %w", i, err))
			continue
		}
		changed = append(changed, s)
	}
	if len(errs) > 0 {
		return fmt.Errorf("set services: %w", errors.Join(errs...))
	}
	var deleted []ServiceName
	if len(t.services)-len(services)+len(fresh) > 0 {
		for name, st := range t.services {
			if st.seen != t.gen {
				deleted = append(deleted, name)
			}
		}
	}
	if err := t.checkLocked(changed, deleted); err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	t.applyLocked(changed, deleted)
	return nil
}

// Upsert adds svc or replaces the Service of the same name. An unchanged
// Service is a no-op. Cost: O(svc's endpoints × keys) plus the touched
// shards, independent of the other Services.
func (t *Table) Upsert(svc Service) error {
	if err := svc.Validate(); err != nil {
		return fmt.Errorf("upsert service: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.services[svc.Key()]; st != nil && st.svc.Equal(&svc) {
		return nil
	}
	changed := []*Service{&svc}
	if err := t.checkLocked(changed, nil); err != nil {
		return fmt.Errorf("upsert service: %w", err)
	}
	t.applyLocked(changed, nil)
	return nil
}

// Delete removes the Service namespace/name and all its keys, and reports
// whether it was there.
func (t *Table) Delete(namespace, name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := ServiceName{namespace, name}
	if t.services[n] == nil {
		return false
	}
	t.applyLocked(nil, []ServiceName{n})
	return true
}

// Service returns a copy of the Service namespace/name as last set, and
// whether there is one.
func (t *Table) Service(namespace, name string) (Service, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.services[ServiceName{namespace, name}]
	if st == nil {
		return Service{}, false
	}
	return *st.svc.clone(), true
}

// checkLocked reports keys that changed Services (valid, each name once)
// would share: a key belongs to one Service. The keys of changed Services
// must not clash among themselves, nor with a key that stays with a
// Service that is neither changed nor deleted.
func (t *Table) checkLocked(changed []*Service, deleted []ServiceName) error {
	cur := t.snap.Load()
	{
		moving := make(map[ServiceName]bool, len(changed)+len(deleted))
		for _, s := range changed {
			moving[s.Key()] = true
		}
		for _, n := range deleted {
			moving[n] = true
		}
		claimed := make(map[ServiceKey]ServiceName)
		var errs []error
		for _, s := range changed {
			name := s.Key()
			for _, k := range s.Keys() {
				if other, dup := claimed[k]; dup {
					errs = append(errs, fmt.Errorf("service %s: key %v is also Service %s's (want each VIP or node port, port and protocol in one Service)", name, k, other))
					continue
				}
				claimed[k] = name
				if e := cur.shards[shardOf(k)][k]; e != nil && !moving[e.name.ServiceName] {
					errs = append(errs, fmt.Errorf("service %s: key %v is also Service %s's (want each VIP or node port, port and protocol in one Service)", name, k, e.name.ServiceName))
				}
			}
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
	}
	return nil
}

// applyLocked rebuilds the changed Services, which passed checkLocked,
// drops the deleted ones and publishes one snapshot with all of it.
func (t *Table) applyLocked(changed []*Service, deleted []ServiceName) {
	next := *t.snap.Load()
	var copied [1 << shardBits]bool
	shard := func(k ServiceKey) map[ServiceKey]*Entry {
		i := shardOf(k)
		if !copied[i] {
			copied[i] = true
			next.shards[i] = maps.Clone(next.shards[i])
			if next.shards[i] == nil {
				next.shards[i] = make(map[ServiceKey]*Entry)
			}
		}
		return next.shards[i]
	}
	// Deletions first: a key that moves from one Service to another in
	// this update must end up with the new one.
	var puts []*Entry
	for _, n := range deleted {
		for _, e := range t.services[n].entries {
			delete(shard(e.key), e.key)
		}
		delete(t.services, n)
	}
	var rebuilt int
	mc := make(maglevCache)
	for _, s := range changed {
		s = s.clone()
		name := s.Key()
		old := t.services[name]
		st := &serviceState{svc: s, seen: t.gen}
		for _, ks := range s.keySpecs() {
			var prev *Entry
			if old != nil {
				prev = old.entry(ks.key)
			}
			st.entries = append(st.entries, t.buildEntry(s, &s.Ports[ks.port], ks, prev, mc))
		}
		if old != nil {
			for _, e := range old.entries {
				if st.entry(e.key) == nil {
					delete(shard(e.key), e.key)
				}
			}
		}
		puts = append(puts, st.entries...)
		t.services[name] = st
		rebuilt++
	}
	for _, e := range puts {
		shard(e.key)[e.key] = e
	}
	next.len = 0
	for _, sh := range next.shards {
		next.len += len(sh)
	}
	t.snap.Store(&next)
	t.log.Debug("published service table",
		zap.Int("rebuilt", rebuilt), zap.Int("deleted", len(deleted)), zap.Int("keys", next.len))
}

// entry returns st's Entry for key, or nil.
func (st *serviceState) entry(key ServiceKey) *Entry {
	for _, e := range st.entries {
		if e.key == key {
			return e
		}
	}
	return nil
}

// buildEntry makes the Entry of one key of s, carrying over the counters,
// the round-robin cursor and the affinity map of prev (the same key's
// Entry in the previous version of s), and the counters of every backend
// that stays.
func (t *Table) buildEntry(s *Service, p *ServicePort, ks keySpec, prev *Entry, mc maglevCache) *Entry {
	key := ks.key
	e := &Entry{
		key:           key,
		name:          ServicePortName{s.Key(), p.Name},
		mode:          cmp.Or(s.Mode, t.opts.Mode),
		pickerKind:    cmp.Or(s.Picker, t.opts.Picker),
		proxyProtocol: s.ProxyProtocol,
		clock:         t.opts.Clock,
	}
	if prev != nil {
		e.c = prev.c
	} else {
		e.c = new(entryCounters)
	}

	cands, status := usableEndpoints(s, p, key.VIP, ks.policy, t.opts.NodeName, t.opts.Zone)
	e.status = status
	if len(cands) > 0 {
		e.backends = make([]Backend, len(cands))
	}
	for i, c := range cands {
		b := Backend{
			Addr: c.addr, Port: c.port,
			Ready: c.ep.Ready, Serving: c.ep.Serving, Terminating: c.ep.Terminating,
			NodeName: c.ep.NodeName, Zone: c.ep.Zone,
		}
		if prev != nil {
			if j, ok := prev.index(b.AddrPort()); ok {
				b.c = prev.backends[j].c
			}
		}
		if b.c == nil {
			b.c = &backendCounters{entry: e.c, od: t.outlier, addr: b.AddrPort(), name: e.name}
		}
		e.backends[i] = b
	}

	switch e.pickerKind {
	case PickRoundRobin:
		e.picker = &roundRobin{backends: e.backends, cursor: &e.c.cursor}
	case PickLeastConn:
		e.picker = &leastConn{backends: e.backends, cursor: &e.c.cursor}
	case PickMaglev:
		if m := t.opts.Maglev.tableSize(); len(e.backends) < m && len(e.backends) < maglevEmpty {
			var prevPicker Picker
			if prev != nil {
				prevPicker = prev.picker
			}
			e.picker = mc.get(e.backends, m, t.opts.Maglev.ByClientIP, prevPicker)
			break
		}
		t.log.Warn("too many backends for maglev, picking at random",
			zap.Stringer("service", e.name), zap.Stringer("key", e.key), zap.Int("backends", len(e.backends)))
		fallthrough
	default:
		e.picker = &randomPicker{backends: e.backends, rnd: t.rnd}
	}

	if s.SessionAffinity == AffinityClientIP {
		e.affTimeout = cmp.Or(s.SessionAffinityTimeout, DefaultAffinityTimeout)
		if prev != nil && prev.aff != nil {
			e.aff = prev.aff
		} else {
			e.aff = newAffinity(t.opts.AffinityMaxClients)
		}
	}
	return e
}
