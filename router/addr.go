package router

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/vrouter/vrouter/router/packet"
)

// subnet converts a prefix to a gVisor subnet.
func subnet(p netip.Prefix) tcpip.Subnet {
	p = p.Masked()
	addr := packet.TCPIPAddr(p.Addr())
	mask := tcpip.MaskFromBytes(netPrefixMask(p))
	s, err := tcpip.NewSubnet(addr, mask)
	if err != nil {
		// A masked netip.Prefix always forms a valid subnet.
		panic(fmt.Sprintf("subnet(%s): %v", p, err))
	}
	return s
}

func netPrefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	mask := make([]byte, n)
	bits := p.Bits()
	for i := range mask {
		switch {
		case bits >= 8:
			mask[i] = 0xff
			bits -= 8
		case bits > 0:
			mask[i] = ^byte(0xff >> bits)
			bits = 0
		}
	}
	return mask
}

// prefixFromSubnet converts a gVisor subnet back to netip.
func prefixFromSubnet(s tcpip.Subnet) netip.Prefix {
	return netip.PrefixFrom(packet.NetipAddr(s.ID()), s.Prefix())
}

// protoOf is the network protocol number for an address.
func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// tcpipError converts a gVisor error to a Go error. It is the one place
// where tcpip.Error crosses into the rest of the program.
func tcpipError(err tcpip.Error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("netstack: %s", err)
}
