package lb

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// rewrite translates p's source and/or destination in b, updating the IP
// and transport checksums incrementally, and then p. Invalid (zero)
// addresses are left as they are.
func rewrite(b []byte, p *packet.Parsed, src, dst netip.AddrPort) {
	l4 := b[p.L4:]
	// A UDP-over-IPv4 datagram may carry no checksum (0); it must stay 0.
	udpNoSum := Protocol(p.Proto) == UDP && p.Version != 6 && binary.BigEndian.Uint16(l4[6:8]) == 0
	var tr header.ChecksummableTransport
	if Protocol(p.Proto) == TCP {
		tr = header.TCP(l4)
	} else {
		tr = header.UDP(l4)
	}
	if src.IsValid() && src != p.SrcAddrPort() {
		if src.Addr() != p.Src {
			old, nw := packet.TCPIPAddr(p.Src), packet.TCPIPAddr(src.Addr())
			if !udpNoSum {
				tr.UpdateChecksumPseudoHeaderAddress(old, nw, true)
			}
			if p.Version == 6 {
				header.IPv6(b).SetSourceAddress(nw)
			} else {
				header.IPv4(b).SetSourceAddressWithChecksumUpdate(nw)
			}
		}
		if src.Port() != p.SrcPort {
			if udpNoSum {
				tr.SetSourcePort(src.Port())
			} else {
				tr.SetSourcePortWithChecksumUpdate(src.Port())
			}
		}
	}
	if dst.IsValid() && dst != p.DstAddrPort() {
		if dst.Addr() != p.Dst {
			old, nw := packet.TCPIPAddr(p.Dst), packet.TCPIPAddr(dst.Addr())
			if !udpNoSum {
				tr.UpdateChecksumPseudoHeaderAddress(old, nw, true)
			}
			if p.Version == 6 {
				header.IPv6(b).SetDestinationAddress(nw)
			} else {
				header.IPv4(b).SetDestinationAddressWithChecksumUpdate(nw)
			}
		}
		if dst.Port() != p.DstPort {
			if udpNoSum {
				tr.SetDestinationPort(dst.Port())
			} else {
				tr.SetDestinationPortWithChecksumUpdate(dst.Port())
			}
		}
	}
	if src.IsValid() {
		p.Src, p.SrcPort = src.Addr(), src.Port()
	}
	if dst.IsValid() {
		p.Dst, p.DstPort = dst.Addr(), dst.Port()
	}
}

// portUnreachable builds, into buf, the ICMP "port unreachable" a host at
// the VIP would send for packet b, addressed to b's source.
func portUnreachable(buf, b []byte, p *packet.Parsed) []byte {
	if p.Version != 6 {
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
			SrcAddr:     packet.TCPIPAddr(p.Dst),
			DstAddr:     packet.TCPIPAddr(p.Src),
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
	src, dst := packet.TCPIPAddr(p.Dst), packet.TCPIPAddr(p.Src)
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
func tcpReset(buf, b []byte, p *packet.Parsed) []byte {
	in := header.TCP(b[p.L4:])
	var ipPayload int
	if p.Version == 6 {
		ipPayload = header.IPv6MinimumSize + int(binary.BigEndian.Uint16(b[4:6])) - p.L4
	} else {
		ipPayload = int(binary.BigEndian.Uint16(b[2:4])) - p.L4
	}
	segLen := uint32(ipPayload - int(in.DataOffset()))
	if in.Flags()&header.TCPFlagSyn != 0 {
		segLen++
	}
	if in.Flags()&header.TCPFlagFin != 0 {
		segLen++
	}
	fields := header.TCPFields{SrcPort: p.DstPort, DstPort: p.SrcPort, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagRst}
	if in.Flags()&header.TCPFlagAck != 0 {
		fields.SeqNum = in.AckNumber()
	} else {
		fields.AckNum = in.SequenceNumber() + segLen
		fields.Flags |= header.TCPFlagAck
	}
	src, dst := packet.TCPIPAddr(p.Dst), packet.TCPIPAddr(p.Src)
	var tcp header.TCP
	if p.Version == 6 {
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
