package router

import (
	"net/netip"
	"slices"
)

// prefixMap is an immutable longest-prefix-match table from pod CIDRs to
// values. A lookup masks the address once per distinct prefix length in the
// table, longest first, and probes a hash map: O(number of distinct lengths)
// — one or two in a cluster where every node gets a /24 (and a /64) — and
// independent of the number of prefixes.
type prefixMap[V any] struct {
	v4, v6 lengthMaps[V]
}

type lengthMaps[V any] struct {
	bits []int // distinct prefix lengths, longest first
	m    map[netip.Prefix]V
}

// newPrefixMap builds a table. Later entries replace earlier ones with the
// same prefix.
func newPrefixMap[V any](entries map[netip.Prefix]V) *prefixMap[V] {
	pm := &prefixMap[V]{}
	for p, v := range entries {
		p = p.Masked()
		lm := &pm.v6
		if p.Addr().Is4() {
			lm = &pm.v4
		}
		if lm.m == nil {
			lm.m = make(map[netip.Prefix]V)
		}
		lm.m[p] = v
		if !slices.Contains(lm.bits, p.Bits()) {
			lm.bits = append(lm.bits, p.Bits())
		}
	}
	for _, lm := range []*lengthMaps[V]{&pm.v4, &pm.v6} {
		slices.Sort(lm.bits)
		slices.Reverse(lm.bits)
	}
	return pm
}

// lookup returns the value of the longest prefix holding a.
func (pm *prefixMap[V]) lookup(a netip.Addr) (V, bool) {
	a = a.Unmap()
	lm := &pm.v6
	if a.Is4() {
		lm = &pm.v4
	}
	for _, b := range lm.bits {
		p, _ := a.Prefix(b)
		if v, ok := lm.m[p]; ok {
			return v, true
		}
	}
	var zero V
	return zero, false
}
