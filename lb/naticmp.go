package lb

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// translateICMPError rewrites an ICMP error about a translated flow —
// "port unreachable" from a backend with nothing listening, "fragmentation
// needed", "time exceeded" — as the client must see it: quoting its own
// packet to the VIP, and from the VIP when the backend sent it. Without
// this the client's kernel cannot match the error to its socket and waits
// for a timeout (kube-proxy's conntrack translates these too). Errors
// about no tracked flow are left alone.
func (n *NAT) translateICMPError(b []byte) {
	var icmp []byte
	v6 := b[0]>>4 == 6
	if v6 {
		if len(b) < header.IPv6MinimumSize+header.ICMPv6MinimumSize || b[6] != uint8(header.ICMPv6ProtocolNumber) {
			return
		}
		icmp = b[header.IPv6MinimumSize:]
		if t := icmp[0]; t < 1 || t > 4 { // unreachable, too big, time exceeded, parameter problem
			return
		}
	} else {
		ihl := int(b[0]&0xf) * 4
		if ihl < header.IPv4MinimumSize || len(b) < ihl+header.ICMPv4MinimumSize || b[9] != uint8(header.ICMPv4ProtocolNumber) {
			return
		}
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
			return
		}
		icmp = b[ihl:]
		if t := icmp[0]; t != 3 && t != 11 && t != 12 {
			return
		}
	}
	quoted := icmp[8:]
	q, ok := parseQuoted(quoted)
	if !ok || q.v6 != v6 {
		return
	}
	// The quoted packet went from the client (or its translated address)
	// to the backend: the reverse of the flow's reply key.
	f := n.lookup(flowKey{src: q.dst, dst: q.src, proto: q.proto})
	if f == nil {
		return
	}
	f.mu.Lock()
	rev := f.rev
	f.mu.Unlock()
	if rev.src != q.dst || rev.dst != q.src {
		return
	}
	// The quoted header: back to client → VIP.
	rewriteQuoted(quoted, q, f.client, f.vip)
	// The outer header: from the VIP if the backend sent it; to the client.
	outerSrc := netip.Addr{}
	if src := ipSrc(b); src == q.dst.Addr() {
		outerSrc = f.vip.Addr()
	}
	outerDst := netip.Addr{}
	if f.snat.IsValid() {
		outerDst = f.client.Addr()
	}
	setAddrs(b, outerSrc, outerDst)
	// ICMP checksums cover the quoted bytes (and, for ICMPv6, the
	// addresses): recompute.
	icmp[2], icmp[3] = 0, 0
	if v6 {
		ip := header.IPv6(b)
		plen := int(ip.PayloadLength())
		if header.IPv6MinimumSize+plen > len(b) {
			return
		}
		ic := header.ICMPv6(b[header.IPv6MinimumSize : header.IPv6MinimumSize+plen])
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	} else {
		total := int(binary.BigEndian.Uint16(b[2:4]))
		ihl := int(b[0]&0xf) * 4
		if total > len(b) || total < ihl {
			return
		}
		binary.BigEndian.PutUint16(icmp[2:4], ^checksum.Checksum(b[ihl:total], 0))
	}
}

// parseQuoted reads the addresses and ports of the packet an ICMP error
// quotes: a full IP header and at least the 4 bytes of ports.
func parseQuoted(b []byte) (pkt, bool) {
	var p pkt
	if len(b) < 1 {
		return p, false
	}
	var src, dst netip.Addr
	switch b[0] >> 4 {
	case 4:
		if len(b) < header.IPv4MinimumSize {
			return p, false
		}
		p.l4 = int(b[0]&0xf) * 4
		p.proto = Protocol(b[9])
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		if len(b) < header.IPv6MinimumSize {
			return p, false
		}
		p.v6 = true
		p.l4 = header.IPv6MinimumSize
		p.proto = Protocol(b[6])
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
	default:
		return p, false
	}
	if (p.proto != TCP && p.proto != UDP) || p.l4 < header.IPv4MinimumSize || len(b) < p.l4+4 {
		return p, false
	}
	p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[p.l4:]))
	p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[p.l4+2:]))
	return p, true
}

// rewriteQuoted sets a quoted packet's source and destination. Its IPv4
// header checksum is recomputed; its transport checksum, often cut off, is
// left as quoted (receivers match errors by addresses and ports).
func rewriteQuoted(b []byte, q pkt, src, dst netip.AddrPort) {
	setAddrs(b, src.Addr(), dst.Addr())
	binary.BigEndian.PutUint16(b[q.l4:], src.Port())
	binary.BigEndian.PutUint16(b[q.l4+2:], dst.Port())
	if !q.v6 {
		ip := header.IPv4(b[:q.l4])
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	}
}

// setAddrs overwrites an IP header's source and destination (invalid ones
// are left), fixing the IPv4 header checksum.
func setAddrs(b []byte, src, dst netip.Addr) {
	if b[0]>>4 == 6 {
		if src.IsValid() {
			a := src.As16()
			copy(b[8:24], a[:])
		}
		if dst.IsValid() {
			a := dst.As16()
			copy(b[24:40], a[:])
		}
		return
	}
	if src.IsValid() {
		a := src.As4()
		copy(b[12:16], a[:])
	}
	if dst.IsValid() {
		a := dst.As4()
		copy(b[16:20], a[:])
	}
	ihl := int(b[0]&0xf) * 4
	ip := header.IPv4(b[:ihl])
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
}

func ipSrc(b []byte) netip.Addr {
	if b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24]))
	}
	return netip.AddrFrom4([4]byte(b[12:16]))
}

// isICMP reports whether b is an ICMP or ICMPv6 packet (without IPv6
// extension headers), cheaply, for the packet path.
func isICMP(b []byte) bool {
	switch {
	case len(b) >= header.IPv4MinimumSize && b[0]>>4 == 4:
		return b[9] == uint8(header.ICMPv4ProtocolNumber)
	case len(b) >= header.IPv6MinimumSize && b[0]>>4 == 6:
		return b[6] == uint8(header.ICMPv6ProtocolNumber)
	}
	return false
}
