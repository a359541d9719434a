package router

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/packet"
)

// txChecksumOffload is what both link endpoints advertise. A router must
// not recompute the transport checksum of a packet it forwards: that would
// turn a corrupted segment into a valid one, and costs a pass over every
// byte. With the capability set, gVisor leaves forwarded packets' checksums
// alone — and also skips the transport checksum of packets the stack
// itself sends (proxy mode's TCP), which finishChecksum then computes, as
// a NIC with checksum offload would.
const txChecksumOffload = stack.CapabilityTXChecksumOffload

// finishChecksum computes the TCP or UDP checksum of a packet the stack
// originated. Other packets (ICMP carries its own checksum) are left alone.
func finishChecksum(b []byte) {
	var (
		l4       []byte
		proto    uint8
		src, dst netip.Addr
	)
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		ip := header.IPv4(b)
		ihl := int(ip.HeaderLength())
		total := int(ip.TotalLength())
		if ihl < header.IPv4MinimumSize || total > len(b) || ihl > total || ip.FragmentOffset() != 0 || ip.More() {
			return
		}
		l4, proto = b[ihl:total], ip.Protocol()
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6:
		total := header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return
		}
		l4, proto = b[header.IPv6MinimumSize:total], b[6]
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return
	}
	var off int
	switch proto {
	case uint8(header.TCPProtocolNumber):
		if len(l4) < header.TCPMinimumSize {
			return
		}
		off = 16
	case uint8(header.UDPProtocolNumber):
		if len(l4) < header.UDPMinimumSize {
			return
		}
		off = 6
	default:
		return
	}
	l4[off], l4[off+1] = 0, 0
	xsum := header.PseudoHeaderChecksum(tcpipProto(proto), packet.TCPIPAddr(src), packet.TCPIPAddr(dst), uint16(len(l4)))
	sum := ^checksum.Checksum(l4, xsum)
	if sum == 0 && proto == uint8(header.UDPProtocolNumber) {
		sum = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(l4[off:], sum)
}

// identity is how this router signs packets it originates onto the overlay.
// Its own addresses (169.254.244.1) are the same on every node and
// link-local, so a peer would refuse them as spoofed and could not forward
// them; ICMP errors it sends to remote pods (time exceeded, fragmentation
// needed) carry the network address of its pod CIDR instead — the node's
// overlay identity, which peers accept and traceroute shows.
type identity struct {
	router map[netip.Addr]netip.Addr // router address → pod CIDR address of its family
}

// rewriteSource replaces a router-address source in b. Only ICMP can have
// one on the overlay (proxy mode's TCP uses Service addresses).
func (id *identity) rewriteSource(b []byte) {
	if id == nil || len(id.router) == 0 {
		return
	}
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		ip := header.IPv4(b)
		to, ok := id.router[netip.AddrFrom4([4]byte(b[12:16]))]
		if !ok {
			return
		}
		ip.SetSourceAddressWithChecksumUpdate(packet.TCPIPAddr(to))
	case len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6:
		to, ok := id.router[netip.AddrFrom16([16]byte(b[8:24]))]
		if !ok || b[6] != uint8(header.ICMPv6ProtocolNumber) {
			return
		}
		ip := header.IPv6(b)
		ip.SetSourceAddress(packet.TCPIPAddr(to))
		total := header.IPv6MinimumSize + int(ip.PayloadLength())
		if total > len(b) || total-header.IPv6MinimumSize < header.ICMPv6MinimumSize {
			return
		}
		ic := header.ICMPv6(b[header.IPv6MinimumSize:total])
		ic.SetChecksum(0)
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	}
}

func newIdentity(cfg Config) *identity {
	id := &identity{router: map[netip.Addr]netip.Addr{}}
	for _, a := range cfg.Addresses {
		for _, p := range cfg.PodCIDRs {
			if p.Addr().Is4() == a.Is4() {
				id.router[a] = p.Masked().Addr()
				break
			}
		}
	}
	return id
}

func tcpipProto(p uint8) tcpip.TransportProtocolNumber { return tcpip.TransportProtocolNumber(p) }
