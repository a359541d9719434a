package lb

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// pkt is what the NAT reads of a packet: its 5-tuple and where the
// transport header starts.
type pkt struct {
	v6       bool
	proto    Protocol
	src, dst netip.AddrPort
	l4       int   // offset of the transport header
	flags    uint8 // TCP flags
	fragment bool  // a fragment: ports unknown unless first
}

// parsePkt reads a TCP or UDP packet. It reports false for anything else
// (other protocols, IPv6 extension headers, non-first fragments, short
// packets), which the NAT passes untouched.
func parsePkt(b []byte) (pkt, bool) {
	var p pkt
	if len(b) < 1 {
		return p, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			return p, false
		}
		ihl := int(b[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || len(b) < ihl {
			return p, false
		}
		fo := binary.BigEndian.Uint16(b[6:8])
		if fo&0x1fff != 0 {
			return p, false // a non-first fragment carries no ports
		}
		p.fragment = fo&0x2000 != 0
		p.proto = Protocol(b[9])
		p.l4 = ihl
		src := netip.AddrFrom4([4]byte(b[12:16]))
		dst := netip.AddrFrom4([4]byte(b[16:20]))
		return p.ports(b, src, dst)
	case 6:
		if len(b) < header.IPv6MinimumSize {
			return p, false
		}
		p.v6 = true
		p.proto = Protocol(b[6])
		p.l4 = header.IPv6MinimumSize
		src := netip.AddrFrom16([16]byte(b[8:24]))
		dst := netip.AddrFrom16([16]byte(b[24:40]))
		return p.ports(b, src, dst)
	}
	return p, false
}

func (p pkt) ports(b []byte, src, dst netip.Addr) (pkt, bool) {
	switch p.proto {
	case TCP:
		if len(b) < p.l4+header.TCPMinimumSize {
			return p, false
		}
		p.flags = b[p.l4+13]
	case UDP:
		if len(b) < p.l4+header.UDPMinimumSize {
			return p, false
		}
	default:
		return p, false
	}
	sp := binary.BigEndian.Uint16(b[p.l4:])
	dp := binary.BigEndian.Uint16(b[p.l4+2:])
	p.src = netip.AddrPortFrom(src, sp)
	p.dst = netip.AddrPortFrom(dst, dp)
	return p, true
}

// rewrite translates p's source and/or destination in b, updating the IP
// and transport checksums incrementally. Invalid (zero) addresses are left
// as they are.
func rewrite(b []byte, p pkt, src, dst netip.AddrPort) {
	l4 := b[p.l4:]
	// A UDP-over-IPv4 datagram may carry no checksum (0); it must stay 0.
	udpNoSum := p.proto == UDP && !p.v6 && binary.BigEndian.Uint16(l4[6:8]) == 0
	var tr header.ChecksummableTransport
	if p.proto == TCP {
		tr = header.TCP(l4)
	} else {
		tr = header.UDP(l4)
	}
	if src.IsValid() && src != p.src {
		if src.Addr() != p.src.Addr() {
			old, nw := packet.TCPIPAddr(p.src.Addr()), packet.TCPIPAddr(src.Addr())
			if !udpNoSum {
				tr.UpdateChecksumPseudoHeaderAddress(old, nw, true)
			}
			if p.v6 {
				header.IPv6(b).SetSourceAddress(nw)
			} else {
				header.IPv4(b).SetSourceAddressWithChecksumUpdate(nw)
			}
		}
		if src.Port() != p.src.Port() {
			if udpNoSum {
				tr.SetSourcePort(src.Port())
			} else {
				tr.SetSourcePortWithChecksumUpdate(src.Port())
			}
		}
	}
	if dst.IsValid() && dst != p.dst {
		if dst.Addr() != p.dst.Addr() {
			old, nw := packet.TCPIPAddr(p.dst.Addr()), packet.TCPIPAddr(dst.Addr())
			if !udpNoSum {
				tr.UpdateChecksumPseudoHeaderAddress(old, nw, true)
			}
			if p.v6 {
				header.IPv6(b).SetDestinationAddress(nw)
			} else {
				header.IPv4(b).SetDestinationAddressWithChecksumUpdate(nw)
			}
		}
		if dst.Port() != p.dst.Port() {
			if udpNoSum {
				tr.SetDestinationPort(dst.Port())
			} else {
				tr.SetDestinationPortWithChecksumUpdate(dst.Port())
			}
		}
	}
}

// portUnreachable builds, into buf, the ICMP "port unreachable" a host at
// the VIP would send for packet b, addressed to b's source.
func portUnreachable(buf, b []byte, p pkt) []byte {
	if !p.v6 {
		// RFC 792: the original IP header and 8 bytes of its data; RFC
		// 1812 allows more, up to 576 bytes in all.
		quote := min(len(b), 576-header.IPv4MinimumSize-header.ICMPv4MinimumSize)
		total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + quote
		buf = buf[:total]
		clear(buf[:header.IPv4MinimumSize+header.ICMPv4MinimumSize])
		ip := header.IPv4(buf)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     packet.TCPIPAddr(p.dst.Addr()),
			DstAddr:     packet.TCPIPAddr(p.src.Addr()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		ic := header.ICMPv4(buf[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4DstUnreachable)
		ic.SetCode(header.ICMPv4PortUnreachable)
		copy(ic[header.ICMPv4MinimumSize:], b[:quote])
		ic.SetChecksum(0)
		ic.SetChecksum(^checksum.Checksum(ic, 0))
		return buf
	}
	quote := min(len(b), header.IPv6MinimumMTU-header.IPv6MinimumSize-header.ICMPv6MinimumSize)
	plen := header.ICMPv6MinimumSize + quote
	buf = buf[:header.IPv6MinimumSize+plen]
	clear(buf[:header.IPv6MinimumSize+header.ICMPv6MinimumSize])
	ip := header.IPv6(buf)
	src, dst := packet.TCPIPAddr(p.dst.Addr()), packet.TCPIPAddr(p.src.Addr())
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(plen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	ic := header.ICMPv6(buf[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6DstUnreachable)
	ic.SetCode(header.ICMPv6PortUnreachable)
	copy(ic[header.ICMPv6MinimumSize:], b[:quote])
	ic.SetChecksum(0)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: src, Dst: dst}))
	return buf
}

// tcpReset builds, into buf, the RST a host at the VIP would send for the
// TCP segment b (RFC 9293 3.10.7.1: a segment for no connection).
func tcpReset(buf, b []byte, p pkt) []byte {
	in := header.TCP(b[p.l4:])
	var ipPayload int
	if p.v6 {
		ipPayload = header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:6])) - p.l4
	} else {
		ipPayload = int(binary.BigEndian.Uint16(b[2:4])) - p.l4
	}
	segLen := uint32(ipPayload - int(in.DataOffset()))
	if in.Flags()&header.TCPFlagSyn != 0 {
		segLen++
	}
	if in.Flags()&header.TCPFlagFin != 0 {
		segLen++
	}
	fields := header.TCPFields{SrcPort: p.dst.Port(), DstPort: p.src.Port(), DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagRst}
	if in.Flags()&header.TCPFlagAck != 0 {
		fields.SeqNum = in.AckNumber()
	} else {
		fields.AckNum = in.SequenceNumber() + segLen
		fields.Flags |= header.TCPFlagAck
	}
	src, dst := packet.TCPIPAddr(p.dst.Addr()), packet.TCPIPAddr(p.src.Addr())
	var tcp header.TCP
	if p.v6 {
		buf = buf[:header.IPv6MinimumSize+header.TCPMinimumSize]
		clear(buf)
		header.IPv6(buf).Encode(&header.IPv6Fields{PayloadLength: header.TCPMinimumSize,
			TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		tcp = header.TCP(buf[header.IPv6MinimumSize:])
	} else {
		buf = buf[:header.IPv4MinimumSize+header.TCPMinimumSize]
		clear(buf)
		ip := header.IPv4(buf)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(buf)), TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
		tcp = header.TCP(buf[header.IPv4MinimumSize:])
	}
	tcp.Encode(&fields)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return buf
}
