package packet

import (
	"encoding/binary"
	"net/netip"
)

// Transport protocol numbers Parsed reports.
const (
	ICMPv4 uint8 = 1
	TCP    uint8 = 6
	UDP    uint8 = 17
	ICMPv6 uint8 = 58
)

// Header sizes.
const (
	ipv4MinLen = 20
	ipv6Len    = 40
	tcpMinLen  = 20
	udpLen     = 8
	icmpMinLen = 8
)

// Fault is why Decode refused a packet; the router counts each as a drop
// reason of its own.
type Fault uint8

const (
	// FaultNone: the packet decoded.
	FaultNone Fault = iota
	// FaultNotIP: the version nibble is neither 4 nor 6.
	FaultNotIP
	// FaultShort: shorter than the fixed IP header.
	FaultShort
	// FaultTruncated: the IP header's length runs past the bytes given.
	FaultTruncated
	// FaultMalformed: the IP header contradicts itself (an IPv4 header
	// length below 20 or past the total length), or the transport header
	// of an unfragmented packet does (a TCP data offset or UDP length
	// past the packet, a TCP, UDP or ICMP header cut short).
	FaultMalformed
)

// Parsed is an IP packet's headers as the data path reads them: a value
// filled by Decode in place, without allocating, so that each reader
// goroutine reuses one. A step that rewrites the packet (the NAT) updates
// the fields it changed.
type Parsed struct {
	// Version is 4 or 6.
	Version uint8
	// Length is the packet's length per its header (IPv4 total length,
	// IPv6 40 + payload length); bytes past it (link padding) are not
	// part of the packet.
	Length int
	// Proto is the IPv4 protocol, or the next header of the fixed IPv6
	// header: an extension header's number when one follows.
	Proto uint8
	// L4 is the offset of the header Proto names: the IPv4 header
	// length, or 40.
	L4 int
	// TTL is the IPv4 TTL or the IPv6 hop limit.
	TTL uint8
	// Src and Dst are the packet's addresses.
	Src, Dst netip.Addr
	// FragOffset (bytes) and MoreFragments are an IPv4 fragment's; both
	// zero for a packet that is not one (IPv6 fragments are extension
	// headers: Proto 44).
	FragOffset    int
	MoreFragments bool

	// HasPorts is whether SrcPort and DstPort are set: Proto is TCP or
	// UDP, the packet is not an IPv4 fragment other than the first, and
	// its transport header's ports lie within Length.
	HasPorts         bool
	SrcPort, DstPort uint16
	// TCPFlags are a TCP segment's flags (with HasPorts), and
	// TransportEnd the offset of a TCP segment's payload (L4 plus its data
	// offset; 0 when not known, as for a fragment).
	TCPFlags     uint8
	TransportEnd int
}

// IsFragment reports whether the packet is an IPv4 fragment.
func (p *Parsed) IsFragment() bool { return p.FragOffset != 0 || p.MoreFragments }

// SrcAddrPort is the source address and port (port 0 without HasPorts).
func (p *Parsed) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Src, p.SrcPort) }

// DstAddrPort is the destination address and port (port 0 without
// HasPorts).
func (p *Parsed) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Dst, p.DstPort) }

// Decode fills p from the headers of b and reports FaultNone, or why b is
// not a packet the router may forward: it checks the IP header as far as
// routing needs (version, header length, total length against the bytes
// given) and, for an unfragmented packet, that its transport header lies
// within it, since gVisor slices by a TCP data offset or UDP length
// without checking them. The stack validates the rest (checksums,
// options, extension headers). On a fault p is left partly filled.
func (p *Parsed) Decode(b []byte) Fault {
	*p = Parsed{}
	if len(b) < 1 {
		return FaultShort
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4MinLen {
			return FaultShort
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		switch {
		case ihl < ipv4MinLen || total < ihl:
			return FaultMalformed
		case total > len(b):
			return FaultTruncated
		}
		fo := binary.BigEndian.Uint16(b[6:8])
		p.Version, p.Length, p.Proto, p.L4, p.TTL = 4, total, b[9], ihl, b[8]
		p.FragOffset, p.MoreFragments = int(fo&0x1fff)*8, fo&0x2000 != 0
		p.Src, p.Dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		b = b[:total]
		if !p.IsFragment() && !p.transportOK(b[ihl:], p.Proto) {
			return FaultMalformed
		}
		if p.FragOffset == 0 {
			p.ports(b)
		}
		return FaultNone
	case 6:
		if len(b) < ipv6Len {
			return FaultShort
		}
		total := ipv6Len + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return FaultTruncated
		}
		p.Version, p.Length, p.Proto, p.L4, p.TTL = 6, total, b[6], ipv6Len, b[7]
		p.Src, p.Dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		b = b[:total]
		if l4, next, ok := skipExtensions(b); ok && !p.transportOK(l4, next) {
			return FaultMalformed
		}
		p.ports(b)
		return FaultNone
	default:
		return FaultNotIP
	}
}

// transportOK checks the transport header l4 of an unfragmented packet as
// far as the stack relies on it when it forwards: a TCP data offset inside
// the segment, a UDP length inside the datagram. For a TCP header right
// after the IP header it records where the payload starts.
func (p *Parsed) transportOK(l4 []byte, proto uint8) bool {
	switch proto {
	case TCP:
		if len(l4) < tcpMinLen {
			return false
		}
		off := int(l4[12]>>4) * 4
		if off < tcpMinLen || off > len(l4) {
			return false
		}
		if proto == p.Proto {
			p.TransportEnd = p.L4 + off
		}
		return true
	case UDP:
		if len(l4) < udpLen {
			return false
		}
		n := int(binary.BigEndian.Uint16(l4[4:6]))
		return n >= udpLen && n <= len(l4)
	case ICMPv4, ICMPv6:
		return len(l4) >= icmpMinLen
	}
	return true
}

// ports reads the ports (and TCP flags) of a TCP or UDP packet whose
// transport header follows the IP header, b being the packet.
func (p *Parsed) ports(b []byte) {
	switch p.Proto {
	case TCP:
		if len(b) < p.L4+tcpMinLen {
			return
		}
		p.TCPFlags = b[p.L4+13]
	case UDP:
		if len(b) < p.L4+udpLen {
			return
		}
	default:
		return
	}
	p.HasPorts = true
	p.SrcPort = binary.BigEndian.Uint16(b[p.L4:])
	p.DstPort = binary.BigEndian.Uint16(b[p.L4+2:])
}

// skipExtensions walks an IPv6 packet's extension headers to its transport
// header. It reports false for a fragment that is not the first, or for a
// chain it does not follow (the stack checks those itself).
func skipExtensions(b []byte) (l4 []byte, next uint8, ok bool) {
	next = b[6]
	off := ipv6Len
	for range 8 {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+2 > len(b) {
				return nil, 0, false
			}
			n := (int(b[off+1]) + 1) * 8
			if off+n > len(b) {
				return nil, 0, false
			}
			next, off = b[off], off+n
		case 44: // fragment
			if off+8 > len(b) {
				return nil, 0, false
			}
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff9 != 0 {
				return nil, 0, false // not the first fragment, or more follow
			}
			next, off = b[off], off+8
		default:
			return b[off:], next, true
		}
	}
	return nil, 0, false
}

// DecodeQuoted fills p from the packet an ICMP error quotes: a whole IP
// header and at least the first 4 bytes of a TCP or UDP header (its
// ports); the rest is usually cut off, and Length is what the header
// says, not what was quoted. It reports false for anything else.
func (p *Parsed) DecodeQuoted(b []byte) bool {
	*p = Parsed{}
	if len(b) < 1 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4MinLen {
			return false
		}
		fo := binary.BigEndian.Uint16(b[6:8])
		p.Version, p.Length, p.Proto, p.L4, p.TTL = 4, int(binary.BigEndian.Uint16(b[2:4])), b[9], int(b[0]&0x0f)*4, b[8]
		p.FragOffset, p.MoreFragments = int(fo&0x1fff)*8, fo&0x2000 != 0
		p.Src, p.Dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		if len(b) < ipv6Len {
			return false
		}
		p.Version, p.Length, p.Proto, p.L4, p.TTL = 6, ipv6Len+int(binary.BigEndian.Uint16(b[4:6])), b[6], ipv6Len, b[7]
		p.Src, p.Dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return false
	}
	if (p.Proto != TCP && p.Proto != UDP) || p.L4 < ipv4MinLen || len(b) < p.L4+4 {
		return false
	}
	p.HasPorts = true
	p.SrcPort = binary.BigEndian.Uint16(b[p.L4:])
	p.DstPort = binary.BigEndian.Uint16(b[p.L4+2:])
	return true
}
