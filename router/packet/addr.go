package packet

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// TCPIPAddr converts a netip address to gVisor's, without allocating: 4
// bytes for IPv4, 16 for IPv6 (an IPv4-mapped address stays 16 bytes, as
// it is in an IPv6 header; callers unmap configured addresses first). The
// zero Addr becomes the empty Address.
func TCPIPAddr(a netip.Addr) tcpip.Address {
	switch {
	case a.Is4():
		return tcpip.AddrFrom4(a.As4())
	case a.Is6():
		return tcpip.AddrFrom16(a.As16())
	}
	return tcpip.Address{}
}

// NetipAddr converts a gVisor address to netip, without allocating. The
// empty Address (or any length but 4 and 16) becomes the zero Addr.
func NetipAddr(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}
