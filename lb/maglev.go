package lb

import (
	"cmp"
	"fmt"
	"slices"
)

// DefaultMaglevTableSize is the Maglev lookup table size unless set: a
// prime, 100 times more slots than 655 backends, as the paper advises for
// ≤1% imbalance. A table costs 2 bytes per slot (128 KiB) per Service key;
// its build time is what `go test -run '^$' -bench MaglevBuild ./lb/`
// prints for M=65537.
const DefaultMaglevTableSize = 65537

// MaxMaglevTableSize is the largest table size: slots hold 16-bit indexes.
const MaxMaglevTableSize = 65537

// MaglevOptions configures a Maglev picker.
type MaglevOptions struct {
	// TableSize is the lookup table's size M: a prime larger than the
	// number of backends, at most MaxMaglevTableSize. 0 means
	// DefaultMaglevTableSize.
	TableSize int
	// ByClientIP hashes only the client's address instead of the
	// 5-tuple: a client's flows then all go to one backend (stateless
	// affinity that survives restarts and holds across nodes).
	ByClientIP bool
}

func (o *MaglevOptions) tableSize() int {
	if o.TableSize == 0 {
		return DefaultMaglevTableSize
	}
	return o.TableSize
}

func (o *MaglevOptions) validate() error {
	m := o.tableSize()
	if m < 3 || m > MaxMaglevTableSize || !isPrime(m) {
		return fmt.Errorf("maglev table size %d: want a prime from 3 to %d (e.g. 251, 4093, 65537)", o.TableSize, MaxMaglevTableSize)
	}
	return nil
}

// maglev is consistent hashing with a lookup table, after Eisenbud et
// al., "Maglev: A Fast and Reliable Software Network Load Balancer"
// (NSDI 2016), §3.4. Each backend has a permutation of the M slots,
// (offset + j·skip) mod M with offset and skip hashed from its address;
// backends take turns claiming their next free preferred slot until the
// table is full. Every backend ends up with ⌊M/N⌋ or ⌈M/N⌉
// slots, and removing one backend mostly moves only the flows that hashed
// to its slots.
//
// The table depends only on the backends' addresses, in order (sorted by
// address and port), and the hashes are unseeded: every node builds the
// same table and a flow goes to the same backend whichever node handles
// it. Hashing the address and not the port lets the keys of one Service
// whose ports go to the same pods (kube-dns's 53/UDP, 53/TCP and 9153/TCP)
// share one table, and lets an update that leaves a key's addresses as
// they were keep its table (see maglevCache).
type maglev struct {
	backends   []Backend
	table      []uint16
	byClientIP bool
}

const maglevEmpty = 0xffff

// NewMaglev returns a Maglev picker over backends. With more backends than
// fit (at least the table size, or above 65535) it cannot build a table,
// and returns an error.
func NewMaglev(backends []Backend, opts MaglevOptions) (Picker, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	m := opts.tableSize()
	if len(backends) >= m || len(backends) >= maglevEmpty {
		return nil, fmt.Errorf("maglev over %d backends: want fewer than the table size %d and than %d", len(backends), m, maglevEmpty)
	}
	cmpBackend := func(a, b Backend) int { return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port)) }
	if !slices.IsSortedFunc(backends, cmpBackend) {
		backends = slices.Clone(backends)
		slices.SortFunc(backends, cmpBackend)
	}
	return newMaglev(backends, m, opts.ByClientIP), nil
}

// newMaglev builds the lookup table of M slots; backends must be sorted
// and fewer than min(M, maglevEmpty).
func newMaglev(backends []Backend, m int, byClientIP bool) *maglev {
	return &maglev{backends: backends, byClientIP: byClientIP, table: maglevTable(backends, m)}
}

// maglevTable populates a table of m slots for backends (sorted, fewer
// than min(m, maglevEmpty)); nil for no backends.
func maglevTable(backends []Backend, m int) []uint16 {
	n := len(backends)
	if n == 0 {
		return nil
	}
	table := make([]uint16, m)
	for i := range table {
		table[i] = maglevEmpty
	}
	// next[i] is backend i's next preferred slot, skip[i] its stride.
	next := make([]uint32, 2*n)
	next, skip := next[:n], next[n:]
	mm := uint64(m)
	for i, b := range backends {
		next[i] = uint32(hashAddrPort(b.Addr, 0, 0x6f6666736574) % mm)   // "offset"
		skip[i] = uint32(hashAddrPort(b.Addr, 0, 0x736b6970)%(mm-1) + 1) // "skip"
	}
	m32 := uint32(m)
	for filled := 0; ; {
		for i := range n {
			c := next[i]
			for table[c] != maglevEmpty {
				if c += skip[i]; c >= m32 {
					c -= m32
				}
			}
			table[c] = uint16(i)
			if c += skip[i]; c >= m32 {
				c -= m32
			}
			next[i] = c
			if filled++; filled == m {
				return table
			}
		}
	}
}

func (p *maglev) Pick(f Flow) (Backend, bool) {
	if len(p.backends) == 0 {
		return Backend{}, false
	}
	var h uint64
	if p.byClientIP {
		h = hashClient(f.Src.Addr())
	} else {
		h = hashFlow(&f)
	}
	m := uint64(len(p.table))
	b := p.backends[p.table[h%m]]
	if b.c.usable() {
		return b, true
	}
	// b is ejected: its slots' flows move to the backends of the next
	// slots, as if b had left, while every other flow keeps its backend.
	for i := uint64(1); i < m && i <= 64; i++ {
		if o := p.backends[p.table[(h+i)%m]]; o.c.usable() {
			return o, true
		}
	}
	return firstUsable(p.backends, b), true
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// maglevCache shares Maglev tables among the Entries built in one update:
// keys whose backends have the same addresses in the same order get the
// same table. An Entry whose previous version had the same addresses
// keeps that version's table.
type maglevCache map[string][]uint16

// addrKey returns the cache key of backends' addresses.
func addrKey(backends []Backend) string {
	b := make([]byte, 0, 16*len(backends))
	for _, be := range backends {
		a := be.Addr.As16()
		b = append(b, a[:]...)
	}
	return string(b)
}

// sameAddrs reports whether a and b list the same addresses in order.
func sameAddrs(a, b []Backend) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Addr != b[i].Addr {
			return false
		}
	}
	return true
}

// get returns a Maglev picker over backends with table size m, reusing
// prev's table or one built earlier in this update when the addresses
// match. c may be nil (no sharing within the update).
func (c maglevCache) get(backends []Backend, m int, byClientIP bool, prev Picker) *maglev {
	if pm, ok := prev.(*maglev); ok && len(pm.table) == m && sameAddrs(pm.backends, backends) {
		return &maglev{backends: backends, byClientIP: byClientIP, table: pm.table}
	}
	if c == nil || len(backends) == 0 {
		return newMaglev(backends, m, byClientIP)
	}
	k := addrKey(backends)
	t, ok := c[k]
	if !ok || len(t) != m {
		t = maglevTable(backends, m)
		c[k] = t
	}
	return &maglev{backends: backends, byClientIP: byClientIP, table: t}
}
