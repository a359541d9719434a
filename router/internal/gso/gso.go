package gso

import (
	"encoding/binary"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// Type is a virtio_net_hdr gso_type value.
type Type uint8

// The gso_type values this package produces.
const (
	None  Type = 0 // VIRTIO_NET_HDR_GSO_NONE: a plain packet
	TCPv4 Type = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	TCPv6 Type = 4 // VIRTIO_NET_HDR_GSO_TCPV6
)

// Info describes a super-packet: what a virtio_net_hdr says about it.
type Info struct {
	Type       Type
	HdrLen     int // IP + TCP header length
	SegSize    int // TCP payload bytes per segment (MSS); the last may be shorter
	CsumStart  int // offset of the TCP header (= IP header length)
	CsumOffset int // offset of the checksum field within the TCP header: 16
}

// Header field offsets and values used throughout.
const (
	ipv4MinLen = 20
	ipv6Len    = 40
	tcpMinLen  = 20
	protoTCP   = 6

	tcpCsumOffset = 16 // checksum field within the TCP header

	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpCWR = 0x80

	ipv4DF = 0x40 // in byte 6
)

// shape is what parse learned about a TCP/IP packet. The packet's length
// equals its IP total length.
type shape struct {
	v6      bool
	ipLen   int // IP header length: where the TCP header starts
	hdrLen  int // IP + TCP header length: where the payload starts
	payload int // TCP payload length
}

// fault describes malformed input without allocating: the Coalescer meets
// non-TCP packets all the time and only needs to know "no". Segment and
// SetPartial turn it into an error.
type fault struct {
	format string // "" for no fault; a format with n %d verbs
	n      int
	a, b   int
}

func (f fault) err(op string) error {
	switch f.n {
	case 0:
		return fmt.Errorf("%s: %s", op, f.format)
	case 1:
		return fmt.Errorf("%s: "+f.format, op, f.a)
	default:
		return fmt.Errorf("%s: "+f.format, op, f.a, f.b)
	}
}

func fault0(format string) fault           { return fault{format: format} }
func fault1(format string, a int) fault    { return fault{format: format, n: 1, a: a} }
func fault2(format string, a, b int) fault { return fault{format: format, n: 2, a: a, b: b} }

// parse checks that pkt is exactly one whole TCP/IP packet: IPv4 (any
// header length, not a fragment) or IPv6 whose next header is TCP, with its
// IP length equal to len(pkt) and a TCP header that fits.
func parse(pkt []byte) (shape, fault) {
	var p shape
	if len(pkt) == 0 {
		return p, fault0("empty packet, want an IPv4 or IPv6 TCP packet")
	}
	switch v := pkt[0] >> 4; v {
	case 4:
		if len(pkt) < ipv4MinLen {
			return p, fault1("IPv4 packet of %d bytes is shorter than the 20-byte header", len(pkt))
		}
		p.ipLen = int(pkt[0]&0x0f) * 4
		if p.ipLen < ipv4MinLen {
			return p, fault1("IPv4 header length %d is below the minimum 20", p.ipLen)
		}
		if total := int(binary.BigEndian.Uint16(pkt[2:])); total != len(pkt) {
			return p, fault2("IPv4 total length %d does not match the packet's %d bytes", total, len(pkt))
		}
		if p.ipLen > len(pkt) {
			return p, fault2("IPv4 header length %d exceeds the packet's %d bytes", p.ipLen, len(pkt))
		}
		if frag := binary.BigEndian.Uint16(pkt[6:]); frag&0x3fff != 0 {
			return p, fault1("IPv4 fragment (flags and offset %#04x), want a whole packet", int(frag))
		}
		if proto := pkt[9]; proto != protoTCP {
			return p, fault1("IPv4 protocol %d is not TCP (6)", int(proto))
		}
	case 6:
		if len(pkt) < ipv6Len {
			return p, fault1("IPv6 packet of %d bytes is shorter than the 40-byte header", len(pkt))
		}
		p.v6, p.ipLen = true, ipv6Len
		if total := ipv6Len + int(binary.BigEndian.Uint16(pkt[4:])); total != len(pkt) {
			return p, fault2("IPv6 length %d (40 + payload length) does not match the packet's %d bytes", total, len(pkt))
		}
		if next := pkt[6]; next != protoTCP {
			return p, fault1("IPv6 next header %d is not TCP (6); extension headers are not supported", int(next))
		}
	default:
		return p, fault1("IP version %d, want 4 or 6", int(v))
	}
	tcpLen := len(pkt) - p.ipLen
	if tcpLen < tcpMinLen {
		return p, fault1("TCP segment of %d bytes is shorter than the 20-byte header", tcpLen)
	}
	doff := int(pkt[p.ipLen+12]>>4) * 4
	if doff < tcpMinLen {
		return p, fault1("TCP data offset %d is below the minimum 20", doff)
	}
	if doff > tcpLen {
		return p, fault2("TCP header length %d exceeds the segment's %d bytes", doff, tcpLen)
	}
	p.hdrLen = p.ipLen + doff
	p.payload = len(pkt) - p.hdrLen
	return p, fault{}
}

// segments is how many segments of at most mss payload bytes p splits into
// (mss >= 1); a packet without payload is one segment.
func (p shape) segments(mss int) int {
	if p.payload == 0 {
		return 1
	}
	return (p.payload-1)/mss + 1
}

// addrSum is the checksum of the packet's source and destination addresses.
func (p shape) addrSum(pkt []byte) uint16 {
	if p.v6 {
		return checksum.Checksum(pkt[8:40], 0)
	}
	return checksum.Checksum(pkt[12:20], 0)
}

// pseudoSum is the TCP pseudo-header sum, not complemented, for a TCP
// segment (header + payload) of tcpLen bytes.
func pseudoSum(addrSum uint16, tcpLen int) uint16 {
	return checksum.Combine(checksum.Combine(addrSum, protoTCP), uint16(tcpLen))
}

// setIPLength makes pkt's IP header describe pkt's length: the IPv6
// payload length, or the IPv4 total length, ID id and header checksum
// (ipLen bytes of header).
func setIPLength(pkt []byte, v6 bool, ipLen int, id uint16) {
	if v6 {
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(pkt)-ipv6Len))
		return
	}
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:], id)
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^checksum.Checksum(pkt[:ipLen], 0))
}

// SegmentedSize is the number of bytes Segment writes for pkt and mss: the
// size out must have.
func SegmentedSize(pkt []byte, mss int) (int, error) {
	p, f := parse(pkt)
	if f.format != "" {
		return 0, f.err("segmented size")
	}
	if mss < 1 {
		return 0, fmt.Errorf("segmented size: mss %d, want at least 1", mss)
	}
	return len(pkt) + (p.segments(mss)-1)*p.hdrLen, nil
}

// Segment splits the TCP super-packet pkt (IPv4 without fragmentation, or
// IPv6 whose next header is TCP; its length must equal its IP length) into
// segments carrying at most mss payload bytes each, written back to back
// into out, which must not overlap pkt.
//
// Each segment gets a copy of pkt's headers with: the IPv4 total length, ID
// (pkt's ID + i, wrapping) and header checksum, or the IPv6 payload length;
// the TCP sequence number advanced by the payload before it; FIN and PSH
// only on the last segment and CWR only on the first; and the TCP checksum
// computed in full (pkt's checksum field is ignored: it may hold a partial
// or a full sum).
//
// It returns the number of segments n, the size of every segment but the
// last (hdrLen+mss, all equal; the one segment's size when n is 1) and the
// total bytes written. A packet with no more than mss payload bytes becomes
// one segment, its checksums completed. out must hold SegmentedSize(pkt,
// mss) bytes: len(pkt) + (n-1)*hdrLen. Malformed input or a short out is an
// error, never a panic.
func Segment(pkt []byte, mss int, out []byte) (n, segSize, total int, err error) {
	p, f := parse(pkt)
	if f.format != "" {
		return 0, 0, 0, f.err("segment")
	}
	if mss < 1 {
		return 0, 0, 0, fmt.Errorf("segment: mss %d, want at least 1", mss)
	}
	n = p.segments(mss)
	if need := len(pkt) + (n-1)*p.hdrLen; len(out) < need {
		return 0, 0, 0, fmt.Errorf("segment: out holds %d bytes, need %d for %d segments of a %d-byte packet (see SegmentedSize)", len(out), need, n, len(pkt))
	}

	hdr, data := pkt[:p.hdrLen], pkt[p.hdrLen:]
	addrSum := p.addrSum(pkt)
	id := binary.BigEndian.Uint16(pkt[4:]) // IPv4 only
	seq := binary.BigEndian.Uint32(pkt[p.ipLen+4:])
	flags := pkt[p.ipLen+13]
	for i := range n {
		chunk := min(mss, len(data))
		seg := out[total : total+p.hdrLen+chunk]
		copy(seg, hdr)
		copy(seg[p.hdrLen:], data[:chunk])
		data = data[chunk:]
		setIPLength(seg, p.v6, p.ipLen, id+uint16(i))
		tcp := seg[p.ipLen:]
		binary.BigEndian.PutUint32(tcp[4:], seq)
		seq += uint32(chunk)
		fl := flags
		if i != n-1 {
			fl &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			fl &^= tcpCWR
		}
		tcp[13] = fl
		tcp[tcpCsumOffset], tcp[tcpCsumOffset+1] = 0, 0
		binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], ^checksum.Checksum(tcp, pseudoSum(addrSum, len(tcp))))
		total += len(seg)
	}
	segSize = total
	if n > 1 {
		segSize = p.hdrLen + mss
	}
	return n, segSize, total, nil
}
