package wireguard

import (
	"net/netip"
	"slices"
)

// sources maps an inner packet's source address to the configured
// endpoint of the peer whose allowed IPs hold it: the sender the router
// sees for a packet the device decrypted. It is immutable once built; the
// most specific prefix wins, as in the device's own table.
type sources struct {
	byPrefix map[netip.Prefix]netip.AddrPort
	lens4    []int // prefix lengths in use, longest first
	lens6    []int
}

func newSources(peers []Peer) *sources {
	s := &sources{byPrefix: make(map[netip.Prefix]netip.AddrPort)}
	for _, p := range peers {
		for _, c := range p.AllowedIPs {
			c = c.Masked()
			s.byPrefix[c] = p.Endpoint
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

// lookup is the endpoint of the peer that owns pkt's source address, or
// the zero AddrPort (which is no peer's) for none or a packet too short
// to have one.
func (s *sources) lookup(pkt []byte) netip.AddrPort {
	var a netip.Addr
	var lens []int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		a, lens = netip.AddrFrom4([4]byte(pkt[12:16])), s.lens4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		a, lens = netip.AddrFrom16([16]byte(pkt[8:24])), s.lens6
	default:
		return netip.AddrPort{}
	}
	for _, l := range lens {
		pfx, _ := a.Prefix(l)
		if ep, ok := s.byPrefix[pfx]; ok {
			return ep
		}
	}
	return netip.AddrPort{}
}
