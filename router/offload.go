package router

import (
	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
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
// Where the kernel has UDP segmentation offload on TUN (Linux 6.2;
// tun.Device.UDPOffload) UDP crosses the same way: a pod's UDP_SEGMENT
// send comes out of the TUN as one UDP super-packet, which
// tunEndpoint.receiveUDPSuper cuts into its datagrams (gso.SegmentUDP)
// before the checks; and consecutive datagrams of one flow that the fast
// path sends to the TUN — above all a peer's run, arriving as one ReadBatch
// — leave in one TUN Write as a UDP super-packet (gso.UDPRun, each
// datagram's checksum verified), which the node kernel cuts again at the
// receiving socket:
//
//	ReadBatch (a run of datagrams) → overlayEndpoint.receive: per-datagram
//	  checks and hook → fastPath.forward → fastPath.addUDP (gso.UDPRun) →
//	  flush at the end of the batch: one TUN Write with a UDP GSO header
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

// superShape checks that the packet p decoded is a TCP super-packet of the
// family gsoType names, and returns its segment count and the bytes its
// segments take on the wire.
func superShape(p *packet.Parsed, mss int, gsoType tun.GSOType) (nseg, wire int, ok bool) {
	v4 := p.Version == 4
	if mss < 1 || v4 != (gsoType == tun.GSOTCPv4) || (!v4 && gsoType != tun.GSOTCPv6) {
		return 0, 0, false
	}
	hdr, ok := tcpHeaderEnd(p)
	if !ok {
		return 0, 0, false
	}
	nseg = segmentCount(p.Length-hdr, mss)
	return nseg, p.Length + (nseg-1)*hdr, true
}

// segmentCount is how many segments of at most mss bytes carry payload
// bytes (one, for none).
func segmentCount(payload, mss int) int {
	return max(1, (payload+mss-1)/mss)
}

// tcpHeaderEnd is the offset of the payload of a TCP packet whose TCP
// header follows the IP header (Decode checked its data offset).
func tcpHeaderEnd(p *packet.Parsed) (int, bool) {
	return p.TransportEnd, p.Proto == packet.TCP && p.TransportEnd > 0
}

// segment cuts super-packet b, decoded in p, into segments of mss payload
// bytes in *scratch (grown as needed, up to maxSegmentScratch): out[:total]
// holds n segments of segSize bytes, the last possibly shorter. The
// scratch is sized from p; gso.Segment checks b itself as it cuts.
func segment(scratch *[]byte, p *packet.Parsed, b []byte, mss int) (out []byte, n, segSize, total int, ok bool) {
	hdr, ok := tcpHeaderEnd(p)
	if !ok || mss < 1 || p.Length != len(b) {
		return nil, 0, 0, 0, false
	}
	need := len(b) + (segmentCount(len(b)-hdr, mss)-1)*hdr
	if need > maxSegmentScratch {
		return nil, 0, 0, 0, false
	}
	if cap(*scratch) < need {
		*scratch = make([]byte, need)
	}
	out = (*scratch)[:need]
	n, segSize, total, err := gso.Segment(b, mss, out)
	if err != nil {
		return nil, 0, 0, 0, false
	}
	return out[:total], n, segSize, total, true
}

// superOffload is the metadata of the TCP super-packet p decoded (partial
// checksum, segments of mss payload bytes) for the node kernel to take it
// as one TSO packet.
func superOffload(p *packet.Parsed, mss int) tun.Offload {
	t := tun.GSOTCPv6
	if p.Version == 4 {
		t = tun.GSOTCPv4
	}
	return tun.Offload{NeedsCsum: true, GSOType: t, HdrLen: uint16(p.TransportEnd), GSOSize: uint16(mss), CsumStart: uint16(p.L4), CsumOffset: 16}
}
