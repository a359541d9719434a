package router

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/tun"
)

// Segmentation offload. With an offload-capable TUN (tun.Device.Offload)
// the node kernel hands the router a pod's TCP stream as super-packets of
// up to 64 KiB (TSO) and takes them back whole; the overlay's Conn sends a
// super-packet's segments in one WriteBatch (UDP GSO on Linux) and
// receives runs of datagrams in one ReadBatch (UDP GRO). The router then
// works per super-packet, not per segment, on the same path as any packet:
//
//	TUN Read (one 64 KiB TSO packet) → tunEndpoint.receive → hook →
//	  fastPath.forward: software TSO (gso.Segment) → one WriteBatch to the peer
//	ReadBatch (runs of datagrams) → overlayEndpoint.receive: per-datagram
//	  checks and hook → software GRO (gso.Coalescer: consecutive segments
//	  of one flow, each checksum verified) → fastPath.forward → one TUN
//	  Write with a GSO header
//
// A super-packet the fast path cannot take (for the router, TTL 1, no
// route, too big for a link, IPv4 options) is cut into its segments by
// ipLink.inject, which then go through the stack one by one as any packet
// does. Counters count segments: what the wire carries. This file holds
// the super-packet helpers those steps share.

// maxSegmentScratch bounds the buffer one super-packet is segmented into
// (64 KiB of payload cut at the smallest MSS Linux sends, 48 bytes, with a
// header per segment is about 240 KiB).
const maxSegmentScratch = 256 << 10

// superShape checks that b is a TCP super-packet of the family gsoType
// names, and returns its segment count and the bytes its segments take on
// the wire.
func superShape(b []byte, mss int, gsoType tun.GSOType) (nseg, wire int, ok bool) {
	v4 := b[0]>>4 == 4
	if mss < 1 || v4 != (gsoType == tun.GSOTCPv4) || (!v4 && gsoType != tun.GSOTCPv6) {
		return 0, 0, false
	}
	hdr, ok := tcpHeaderEnd(b)
	if !ok {
		return 0, 0, false
	}
	nseg = segmentCount(len(b)-hdr, mss)
	return nseg, len(b) + (nseg-1)*hdr, true
}

// segmentCount is how many segments of at most mss bytes carry payload
// bytes (one, for none).
func segmentCount(payload, mss int) int {
	return max(1, (payload+mss-1)/mss)
}

// tcpHeaderEnd is the offset of a TCP packet's payload (IPv4 without a
// fragment offset, or IPv6 whose next header is TCP).
func tcpHeaderEnd(b []byte) (int, bool) {
	var l4 int
	if b[0]>>4 == 4 {
		if b[9] != 6 {
			return 0, false
		}
		l4 = int(b[0]&0x0f) * 4
	} else {
		if b[6] != 6 {
			return 0, false
		}
		l4 = 40
	}
	if len(b) < l4+20 {
		return 0, false
	}
	end := l4 + int(b[l4+12]>>4)*4
	return end, end >= l4+20 && end <= len(b)
}

// segment cuts super-packet b into segments of mss payload bytes in
// *scratch (grown as needed, up to maxSegmentScratch): out[:total] holds n
// segments of segSize bytes, the last possibly shorter.
func segment(scratch *[]byte, b []byte, mss int) (out []byte, n, segSize, total int, ok bool) {
	need, err := gso.SegmentedSize(b, mss)
	if err != nil || need > maxSegmentScratch {
		return nil, 0, 0, 0, false
	}
	if cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	out = (*scratch)[:need]
	if n, segSize, total, err = gso.Segment(b, mss, out); err != nil {
		return nil, 0, 0, 0, false
	}
	return out[:total], n, segSize, total, true
}

// superOffload is the metadata of TCP super-packet b (partial checksum;
// hdr bytes of IP and TCP header, segments of mss payload bytes) for the
// node kernel to take it as one TSO packet.
func superOffload(b []byte, hdr, mss int) tun.Offload {
	t, l4 := tun.GSOTCPv6, 40
	if b[0]>>4 == 4 {
		t, l4 = tun.GSOTCPv4, int(b[0]&0x0f)*4
	}
	return tun.Offload{NeedsCsum: true, GSOType: t, HdrLen: uint16(hdr), GSOSize: uint16(mss), CsumStart: uint16(l4), CsumOffset: 16}
}

// ipProto is the network protocol number of IP packet b.
func ipProto(b []byte) tcpip.NetworkProtocolNumber {
	if b[0]>>4 == 4 {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}
