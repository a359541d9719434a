package router

import (
	"net/netip"

	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// unreachable answers packets the overlay cannot deliver — a cluster
// address that no peer's pod CIDR holds — with the "net unreachable" /
// "no route" the stack would have sent had it a route per peer. The route
// table then holds one route per cluster CIDR instead of one per peer, and
// forwarding costs the same at 1,000 peers as at 2 (gVisor scans its route
// table linearly per packet; the overlay resolves the peer with one map
// probe per prefix length).
//
// Only local sources are answered (packets the node sent into the TUN):
// the error goes back through the TUN, from the router's address.
type unreachable struct {
	router  func(v4 bool) netip.Addr // the router's address of a family
	isLocal func(src netip.Addr) bool
	send    func(b []byte) bool // writes to the TUN; false on error
	limit   *rate.Limiter
}

// answer builds and sends the ICMP error for packet b, if it should.
// It reports whether an error was sent.
func (u *unreachable) answer(b []byte) bool {
	var p packet.Parsed
	if p.Decode(b) != packet.FaultNone || !u.isLocal(p.Src) || !u.limit.Allow() {
		return false
	}
	from := u.router(p.Src.Is4())
	if !from.IsValid() {
		return false
	}
	var msg []byte
	if p.Src.Is4() {
		// Never answer an ICMP error with one (RFC 1812 4.3.2.7).
		if p.Proto == packet.ICMPv4 && len(b) > p.L4 {
			if t := b[p.L4]; t != uint8(header.ICMPv4Echo) && t != uint8(header.ICMPv4EchoReply) {
				return false
			}
		}
		quote := min(len(b), 576-header.IPv4MinimumSize-header.ICMPv4MinimumSize)
		msg = make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+quote)
		ip := header.IPv4(msg)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(msg)), TTL: 64,
			Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: packet.TCPIPAddr(from), DstAddr: packet.TCPIPAddr(p.Src)})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(msg[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4DstUnreachable)
		ic.SetCode(header.ICMPv4NetUnreachable)
		copy(ic[header.ICMPv4MinimumSize:], b[:quote])
		ic.SetChecksum(^checksum.Checksum(ic, 0))
	} else {
		if b[6] == uint8(header.ICMPv6ProtocolNumber) && len(b) > header.IPv6MinimumSize && b[header.IPv6MinimumSize] < 128 {
			return false // an ICMPv6 error (types below 128)
		}
		quote := min(len(b), header.IPv6MinimumMTU-header.IPv6MinimumSize-header.ICMPv6MinimumSize)
		msg = make([]byte, header.IPv6MinimumSize+header.ICMPv6MinimumSize+quote)
		src, dst := packet.TCPIPAddr(from), packet.TCPIPAddr(p.Src)
		header.IPv6(msg).Encode(&header.IPv6Fields{PayloadLength: uint16(header.ICMPv6MinimumSize + quote),
			TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		ic := header.ICMPv6(msg[header.IPv6MinimumSize:])
		ic.SetType(header.ICMPv6DstUnreachable)
		ic.SetCode(header.ICMPv6NetworkUnreachable)
		copy(ic[header.ICMPv6MinimumSize:], b[:quote])
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: src, Dst: dst}))
	}
	return u.send(msg)
}
