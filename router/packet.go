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
