package wireguard

import (
	"net/netip"
	"slices"
)

// sources maps an inner packet's source address to the peer whose
// allowed IPs hold it: a packet that authenticates as one peer's must come
// from that peer's addresses (WireGuard's cryptokey routing). It is
// immutable once built; the most specific prefix wins.
type sources struct {
	byPrefix map[netip.Prefix]*peer
	lens4    []int // prefix lengths in use, longest first
	lens6    []int
}

func newSources(peers []Peer, byKey map[Key]*peer) *sources {
	s := &sources{byPrefix: make(map[netip.Prefix]*peer)}
	for _, p := range peers {
		for _, c := range p.AllowedIPs {
			c = c.Masked()
			s.byPrefix[c] = byKey[p.PublicKey]
			if c.Addr().Is4() {
				s.lens4 = append(s.lens4, c.Bits())
			} else {
				s.lens6 = append(s.lens6, c.Bits())
			}
		}
	}
	for _, l := range []*[]int{&s.lens4, &s.lens6} {
		slices.Sort(*l)
		*l = slices.Compact(*l)
		slices.Reverse(*l)
	}
	return s
}

// sourceOf is pkt's source address, or the zero Addr for a packet too
// short to have one.
func sourceOf(pkt []byte) netip.Addr {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(pkt[12:16]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(pkt[8:24]))
	}
	return netip.Addr{}
}

// lookup is the peer that owns pkt's source address, or nil for none or a
// packet too short to have one.
func (s *sources) lookup(pkt []byte) *peer {
	a := sourceOf(pkt)
	var lens []int
	switch {
	case a.Is4():
		lens = s.lens4
	case a.Is6():
		lens = s.lens6
	default:
		return nil
	}
	for _, l := range lens {
		pfx, _ := a.Prefix(l)
		if p, ok := s.byPrefix[pfx]; ok {
			return p
		}
	}
	return nil
}
