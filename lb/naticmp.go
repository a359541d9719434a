package lb

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// translateICMPError rewrites an ICMP error b about a translated flow —
// "port unreachable" from a backend with nothing listening, "fragmentation
// needed", "time exceeded" — as the client must see it: quoting its own
// packet to the VIP, and from the VIP when the backend sent it; p, b's
// headers, follows. Without this the client's kernel cannot match the
// error to its socket and waits for a timeout (kube-proxy's conntrack
// translates these too). Errors about no tracked flow are left alone.
func (n *NAT) translateICMPError(p *packet.Parsed, b []byte) {
	var icmp []byte
	v6 := p.Version == 6
	if v6 {
		if len(b) < p.L4+header.ICMPv6MinimumSize {
			return
		}
		icmp = b[p.L4:]
		if t := icmp[0]; t < 1 || t > 4 { // unreachable, too big, time exceeded, parameter problem
			return
		}
	} else {
		if len(b) < p.L4+header.ICMPv4MinimumSize || p.IsFragment() {
			return
		}
		icmp = b[p.L4:]
		if t := icmp[0]; t != 3 && t != 11 && t != 12 {
			return
		}
	}
	var q packet.Parsed
	quoted := icmp[8:]
	if !q.DecodeQuoted(quoted) || (q.Version == 6) != v6 {
		return
	}
	// The quoted packet went from the client (or its translated address)
	// to the backend: the reverse of the flow's reply key.
	f := n.lookup(flowKey{src: q.DstAddrPort(), dst: q.SrcAddrPort(), proto: Protocol(q.Proto)})
	if f == nil {
		return
	}
	f.mu.Lock()
	rev := f.rev
	f.mu.Unlock()
	if rev.src != q.DstAddrPort() || rev.dst != q.SrcAddrPort() {
		return
	}
	if unreachable := v6 && icmp[0] == 1 || !v6 && icmp[0] == 3 && icmp[1] != 4; unreachable &&
		f.fwd.proto == TCP && f.state.Load()&(stSynAck|stEstablished) == 0 {
		// The backend (or its node, or a router on the way) cannot
		// take the connection. "Fragmentation needed" is no failure.
		n.connectFailed(f)
	}
	// The quoted header: back to client → VIP.
	rewriteQuoted(quoted, &q, f.client, f.vip)
	// The outer header: from the VIP if the backend sent it; to the client.
	outerSrc := netip.Addr{}
	if p.Src == q.Dst {
		outerSrc = f.vip.Addr()
	}
	outerDst := netip.Addr{}
	if f.snat.IsValid() {
		outerDst = f.client.Addr()
	}
	setAddrs(b, outerSrc, outerDst)
	if outerSrc.IsValid() {
		p.Src = outerSrc
	}
	if outerDst.IsValid() {
		p.Dst = outerDst
	}
	// ICMP checksums cover the quoted bytes (and, for ICMPv6, the
	// addresses): recompute.
	icmp[2], icmp[3] = 0, 0
	if v6 {
		ip := header.IPv6(b)
		ic := header.ICMPv6(b[p.L4:p.Length])
		ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}))
	} else {
		binary.BigEndian.PutUint16(icmp[2:4], ^checksum.Checksum(b[p.L4:p.Length], 0))
	}
}

// rewriteQuoted sets a quoted packet's source and destination. Its IPv4
// header checksum is recomputed; its transport checksum, often cut off, is
// left as quoted (receivers match errors by addresses and ports).
func rewriteQuoted(b []byte, q *packet.Parsed, src, dst netip.AddrPort) {
	setAddrs(b, src.Addr(), dst.Addr())
	binary.BigEndian.PutUint16(b[q.L4:], src.Port())
	binary.BigEndian.PutUint16(b[q.L4+2:], dst.Port())
	if q.Version != 6 {
		ip := header.IPv4(b[:q.L4])
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
