package gso

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/vrouter/vrouter/router/packet"
)

// UDPv4 and UDPv6 super-packets are one virtio_net_hdr gso_type,
// VIRTIO_NET_HDR_GSO_UDP_L4 (Linux 6.2): the IP version is the packet's.
const UDPL4 Type = 5

const (
	protoUDP  = 17
	udpHdrLen = 8

	// maxUDPSegments bounds the datagrams of one UDP super-packet, well
	// under the kernel's UDP_MAX_SEGMENTS (128).
	maxUDPSegments = 64
)

// udpPseudoSum is the UDP pseudo-header sum, not complemented, for a UDP
// datagram (header + payload) of udpLen bytes.
func udpPseudoSum(addrSum uint16, udpLen int) uint16 {
	return checksum.Combine(checksum.Combine(addrSum, protoUDP), uint16(udpLen))
}

// UDPRun gathers consecutive datagrams of one UDP flow, back to back, into
// a UDP super-packet (UDP GRO, as the kernel's udp_gro_receive does for a
// socket with UDP_GRO): one write of it to a TUN with UDP segmentation
// offload delivers them all, where each would take a system call and a
// pass through the node kernel of its own. The zero value is empty and
// ready to use; it is not safe for concurrent use.
//
// A datagram joins the run only if:
//   - it is a whole, unfragmented UDP/IP packet whose UDP length matches
//     (IPv4 without options, IPv6 whose next header is UDP), with payload;
//   - its UDP checksum is present and verifies, and so does its IPv4 header
//     checksum: a corrupt datagram is never merged (the merged packet's
//     checksums are computed afresh), only sent on unchanged so that its
//     receiver drops it;
//   - it has the run's IP version, addresses and ports; IPv4: the run's TOS,
//     TTL and DF, and ID = previous ID + 1 (or DF set and ID equal to the
//     previous one), as segmentation gives them back; IPv6: the run's
//     traffic class, flow label and hop limit;
//   - its payload equals the run's first payload, or is shorter, which
//     closes the run;
//   - the run stays within 64 datagrams and 65535 bytes.
type UDPRun struct {
	buf     []byte // the first datagram whole, then each other's payload
	n       int    // datagrams in buf
	ipLen   int
	seg     int // payload bytes of the first datagram
	lastID  uint16
	closed  bool // the last datagram was shorter than seg
	addrSum uint16
}

// Len is the number of datagrams in the run.
func (r *UDPRun) Len() int { return r.n }

// Add appends datagram b, decoded in p, to the run and reports whether it
// did. On false the run is unchanged: the caller sends the run (Packet,
// then Reset) and adds b again, or, if the run was empty, sends b on its
// own — it cannot join any run.
func (r *UDPRun) Add(b []byte, p *packet.Parsed) bool {
	if p.Proto != protoUDP || !p.HasPorts || p.Length != len(b) || p.IsFragment() || r.closed {
		return false
	}
	ipLen := p.L4
	v6 := p.Version == 6
	if !v6 && ipLen != ipv4MinLen || v6 && ipLen != ipv6Len || len(b) < ipLen+udpHdrLen {
		return false
	}
	udp := b[ipLen:]
	payload := len(udp) - udpHdrLen
	if payload <= 0 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) || !v6 && binary.BigEndian.Uint16(udp[6:]) == 0 {
		return false
	}
	if r.n > 0 && (!r.follows(b, v6, payload) || len(r.buf)+payload > maxIPLen || r.n >= maxUDPSegments) {
		return false
	}
	if !v6 && checksum.Checksum(b[:ipLen], 0) != 0xffff {
		return false
	}
	sh := shape{v6: v6, ipLen: ipLen}
	addrSum := sh.addrSum(b)
	if checksum.Checksum(udp, udpPseudoSum(addrSum, len(udp))) != 0xffff {
		return false
	}
	if r.n == 0 {
		r.buf = append(r.buf[:0], b...)
		r.ipLen, r.seg, r.addrSum = ipLen, payload, addrSum
	} else {
		r.buf = append(r.buf, udp[udpHdrLen:]...)
		r.closed = payload < r.seg
	}
	if !v6 {
		r.lastID = binary.BigEndian.Uint16(b[4:])
	}
	r.n++
	return true
}

// follows reports whether datagram b, of payload bytes, may join the run:
// everything but its checksum and the run's bounds.
func (r *UDPRun) follows(b []byte, v6 bool, payload int) bool {
	h := r.buf
	if v6 != (h[0]>>4 == 6) || payload > r.seg {
		return false
	}
	if v6 {
		// Version, traffic class and flow label; hop limit; addresses.
		if !bytes.Equal(b[0:4], h[0:4]) || b[7] != h[7] || !bytes.Equal(b[8:40], h[8:40]) {
			return false
		}
	} else {
		// TOS; DF (Add refused MF and offsets); TTL; addresses.
		if b[1] != h[1] || b[6]&ipv4DF != h[6]&ipv4DF || b[8] != h[8] || !bytes.Equal(b[12:20], h[12:20]) {
			return false
		}
		id := binary.BigEndian.Uint16(b[4:])
		if id != r.lastID+1 && (id != r.lastID || b[6]&ipv4DF == 0) {
			return false
		}
	}
	// Ports.
	return bytes.Equal(b[r.ipLen:r.ipLen+4], h[r.ipLen:r.ipLen+4])
}

// Packet returns what the run became: with one datagram, that datagram as
// it was added and the zero Info; with more, a UDP super-packet — the first
// datagram's headers with the IP and UDP lengths of the whole, a fresh IPv4
// header checksum and the UDP pseudo-header sum in the checksum field (as
// virtio_net_hdr's NEEDS_CSUM wants it) — and its Info. The packet is the
// run's buffer, valid until the next Add or Reset. An empty run returns nil.
func (r *UDPRun) Packet() ([]byte, Info) {
	if r.n <= 1 {
		if r.n == 0 {
			return nil, Info{}
		}
		return r.buf, Info{}
	}
	out, ipLen := r.buf, r.ipLen
	setIPLength(out, out[0]>>4 == 6, ipLen, binary.BigEndian.Uint16(out[4:]))
	udpLen := len(out) - ipLen
	binary.BigEndian.PutUint16(out[ipLen+4:], uint16(udpLen))
	binary.BigEndian.PutUint16(out[ipLen+udpCsumOffset:], udpPseudoSum(r.addrSum, udpLen))
	return out, Info{Type: UDPL4, HdrLen: ipLen + udpHdrLen, SegSize: r.seg, CsumStart: ipLen, CsumOffset: udpCsumOffset}
}

// Reset empties the run, keeping its buffer.
func (r *UDPRun) Reset() { r.buf, r.n, r.closed = r.buf[:0], 0, false }

// parseUDP checks pkt, a UDP super-packet (or datagram), for SegmentUDP:
// a whole IPv4 packet without options or fragmentation, or an IPv6 packet
// whose next header is UDP, with a UDP header.
func parseUDP(pkt []byte) (shape, fault) {
	if len(pkt) == 0 {
		return shape{}, fault0("empty packet")
	}
	var p shape
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4MinLen {
			return shape{}, fault1("%d-byte packet is shorter than an IPv4 header", len(pkt))
		}
		if ihl := int(pkt[0]&0x0f) * 4; ihl != ipv4MinLen {
			return shape{}, fault1("IPv4 header of %d bytes: options are not supported", ihl)
		}
		if tl := int(binary.BigEndian.Uint16(pkt[2:])); tl != len(pkt) {
			return shape{}, fault2("IPv4 total length %d, packet is %d bytes", tl, len(pkt))
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return shape{}, fault0("IPv4 fragment")
		}
		if pkt[9] != protoUDP {
			return shape{}, fault1("IPv4 protocol %d, want UDP (17)", int(pkt[9]))
		}
		p.ipLen = ipv4MinLen
	case 6:
		if len(pkt) < ipv6Len {
			return shape{}, fault1("%d-byte packet is shorter than an IPv6 header", len(pkt))
		}
		if pl := int(binary.BigEndian.Uint16(pkt[4:])); pl+ipv6Len != len(pkt) {
			return shape{}, fault2("IPv6 payload length %d, packet is %d bytes", pl, len(pkt))
		}
		if pkt[6] != protoUDP {
			return shape{}, fault1("IPv6 next header %d, want UDP (17)", int(pkt[6]))
		}
		p.v6, p.ipLen = true, ipv6Len
	default:
		return shape{}, fault1("IP version %d", int(pkt[0]>>4))
	}
	if len(pkt) < p.ipLen+udpHdrLen {
		return shape{}, fault1("%d-byte packet has no room for a UDP header", len(pkt))
	}
	p.hdrLen = p.ipLen + udpHdrLen
	p.payload = len(pkt) - p.hdrLen
	return p, fault{}
}

// SegmentUDP splits the UDP super-packet pkt (see UDPRun; its UDP length
// field and checksum are ignored: they describe the whole or hold a partial
// sum) into datagrams of at most segSize payload bytes each, written back
// to back into out, which must not overlap pkt and must hold
// len(pkt) + (n-1)*hdrLen bytes for n datagrams (SegmentedUDPSize). Each
// gets a copy of pkt's headers with its own IPv4 total length, ID (pkt's ID
// + i, wrapping) and header checksum, or IPv6 payload length, and its own
// UDP length and complete checksum (0xffff for a computed 0). It returns
// n, the size of every datagram but the last, and the total written.
// Malformed input or a short out is an error, never a panic.
func SegmentUDP(pkt []byte, segSize int, out []byte) (n, dgramSize, total int, err error) {
	p, f := parseUDP(pkt)
	if f.format != "" {
		return 0, 0, 0, f.err("segment UDP")
	}
	if segSize < 1 {
		return 0, 0, 0, fmt.Errorf("segment UDP: segment size %d, want at least 1", segSize)
	}
	n = p.segments(segSize)
	if need := len(pkt) + (n-1)*p.hdrLen; len(out) < need {
		return 0, 0, 0, fmt.Errorf("segment UDP: out holds %d bytes, need %d for %d datagrams of a %d-byte packet", len(out), need, n, len(pkt))
	}
	hdr, data := pkt[:p.hdrLen], pkt[p.hdrLen:]
	addrSum := p.addrSum(pkt)
	id := binary.BigEndian.Uint16(pkt[4:]) // IPv4 only
	for i := range n {
		chunk := min(segSize, len(data))
		d := out[total : total+p.hdrLen+chunk]
		copy(d, hdr)
		copy(d[p.hdrLen:], data[:chunk])
		data = data[chunk:]
		setIPLength(d, p.v6, p.ipLen, id+uint16(i))
		udp := d[p.ipLen:]
		binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
		udp[udpCsumOffset], udp[udpCsumOffset+1] = 0, 0
		sum := ^checksum.Checksum(udp, udpPseudoSum(addrSum, len(udp)))
		if sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(udp[udpCsumOffset:], sum)
		total += len(d)
	}
	dgramSize = total
	if n > 1 {
		dgramSize = p.hdrLen + segSize
	}
	return n, dgramSize, total, nil
}

// SegmentedUDPSize is the number of bytes SegmentUDP writes for pkt and
// segSize: the size out must have.
func SegmentedUDPSize(pkt []byte, segSize int) (int, error) {
	p, f := parseUDP(pkt)
	if f.format != "" {
		return 0, f.err("segmented UDP size")
	}
	if segSize < 1 {
		return 0, fmt.Errorf("segmented UDP size: segment size %d, want at least 1", segSize)
	}
	return len(pkt) + (p.segments(segSize)-1)*p.hdrLen, nil
}
