package router

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// ipInfo is what the link endpoints need from an IP header before handing
// a packet to the stack.
type ipInfo struct {
	proto    tcpip.NetworkProtocolNumber
	src, dst netip.Addr
	// length is the packet's length per its header; trailing bytes past it
	// (link padding) are not part of the packet.
	length int
}

// parseIP checks the fixed IP header of b just enough to route it: version,
// header length, total length against what was received. The stack
// validates the rest (checksum, options, extension headers).
func parseIP(b []byte) (ipInfo, DropReason, bool) {
	if len(b) < 1 {
		return ipInfo{}, DropShort, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			return ipInfo{}, DropShort, false
		}
		ihl := int(b[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(b[2:4]))
		switch {
		case ihl < header.IPv4MinimumSize || total < ihl:
			return ipInfo{}, DropMalformed, false
		case total > len(b) || ihl > len(b):
			return ipInfo{}, DropTruncated, false
		}
		fo := binary.BigEndian.Uint16(b[6:8])
		if fo&0x3fff == 0 && !transportOK(b[ihl:total], b[9]) {
			return ipInfo{}, DropMalformed, false
		}
		return ipInfo{
			proto:  ipv4.ProtocolNumber,
			src:    netip.AddrFrom4([4]byte(b[12:16])),
			dst:    netip.AddrFrom4([4]byte(b[16:20])),
			length: total,
		}, 0, true
	case 6:
		if len(b) < header.IPv6MinimumSize {
			return ipInfo{}, DropShort, false
		}
		total := header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:6]))
		if total > len(b) {
			return ipInfo{}, DropTruncated, false
		}
		if l4, next, ok := skipExtensions(b[:total]); ok && !transportOK(l4, next) {
			return ipInfo{}, DropMalformed, false
		}
		return ipInfo{
			proto:  ipv6.ProtocolNumber,
			src:    netip.AddrFrom16([16]byte(b[8:24])),
			dst:    netip.AddrFrom16([16]byte(b[24:40])),
			length: total,
		}, 0, true
	default:
		return ipInfo{}, DropNotIP, false
	}
}

// expireTTL makes gVisor treat an IPv4 packet with TTL 1 as expired. gVisor's
// IPv4 forwarder only refuses TTL 0 and would forward a TTL 1 packet with
// TTL 0 (IPv6 refuses hop limit <= 1 correctly). A router must send "time
// exceeded" for it instead (RFC 1812 5.3.1), so the TTL is lowered to 0 here
// and the stack's own TTL check answers with the ICMP error. Only packets
// that are to be forwarded are touched.
func expireTTL(b []byte) {
	h := header.IPv4(b)
	if h.TTL() != 1 {
		return
	}
	h.SetTTL(0)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
}

// ipDst reads the destination of a packet parseIP accepted.
func ipDst(b []byte) netip.Addr {
	if b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[16:20]))
	}
	return netip.AddrFrom16([16]byte(b[24:40]))
}

// transportOK checks the transport header of an unfragmented packet as far
// as the stack relies on it when it forwards: a TCP data offset inside the
// segment, a UDP length inside the datagram. gVisor slices by these fields
// without checking them (a TCP data offset past the segment panics), so a
// packet that lies about them never reaches it.
func transportOK(l4 []byte, proto uint8) bool {
	switch proto {
	case uint8(header.TCPProtocolNumber):
		if len(l4) < header.TCPMinimumSize {
			return false
		}
		off := int(l4[12]>>4) * 4
		return off >= header.TCPMinimumSize && off <= len(l4)
	case uint8(header.UDPProtocolNumber):
		if len(l4) < header.UDPMinimumSize {
			return false
		}
		n := int(binary.BigEndian.Uint16(l4[4:6]))
		return n >= header.UDPMinimumSize && n <= len(l4)
	case uint8(header.ICMPv4ProtocolNumber), uint8(header.ICMPv6ProtocolNumber):
		return len(l4) >= header.ICMPv4MinimumSize
	}
	return true
}

// skipExtensions walks an IPv6 packet's extension headers to its transport
// header. It reports false for a fragment that is not the first, or for a
// chain it does not follow (the stack checks those itself).
func skipExtensions(b []byte) (l4 []byte, next uint8, ok bool) {
	next = b[6]
	off := header.IPv6MinimumSize
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
