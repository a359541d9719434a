package gso

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/vrouter/vrouter/router/packet"
)

// maxIPLen is the largest total IP length a super-packet may have.
const maxIPLen = 65535

// Coalescer merges runs of consecutive TCP segments of one flow into
// super-packets (GRO). The zero value is ready to use. It keeps a 64 KiB
// scratch buffer between calls; it is not safe for concurrent use.
type Coalescer struct {
	buf []byte // scratch for the super-packet being built
}

// Coalesce walks pkts in order and calls emit for each output, in the same
// order as the input, with first the index in pkts of the output's first
// input. parsed[i] is what packet.Parsed.Decode made of pkts[i] (whatever
// its fault): Coalesce reads the headers' layout from it instead of
// parsing again, and takes a packet Decode refused for one that is not a
// segment. Each output is either an input packet unchanged, with the zero
// Info (Type None), or a super-packet merged from a run of consecutive
// inputs, built in the Coalescer's scratch and valid only until emit
// returns, whose TCP checksum field holds the partial sum (as SetPartial
// leaves it) and whose Info describes it. emit must not be nil. maxSize bounds a
// super-packet's total IP length; values above 65535 mean 65535.
//
// A segment joins the current run only if:
//   - it has the run's IP version, addresses and ports;
//   - IPv4: header length 20, a valid header checksum, not a fragment, the
//     run's TOS, TTL and DF, and ID = previous ID + 1 (or DF set and ID equal
//     to the previous one);
//   - IPv6: next header TCP, the run's traffic class, flow label and hop limit;
//   - TCP: the run's header length and option bytes, acknowledgment number
//     and window; sequence number = previous sequence + previous payload;
//     flags exactly ACK, or ACK|PSH which ends the run; no reserved bits;
//   - its payload is not empty and equal to the run's first payload, or
//     shorter, which ends the run;
//   - its TCP checksum verifies: a corrupt segment is never merged, only
//     emitted unchanged so that its receiver drops it;
//   - the merged packet stays within maxSize.
//
// The first segment of a run must pass the same checks on its own. A run of
// one segment is emitted unchanged.
func (c *Coalescer) Coalesce(pkts [][]byte, parsed []packet.Parsed, maxSize int, emit func(first int, pkt []byte, info Info)) {
	maxSize = min(maxSize, maxIPLen)
	for i := 0; i < len(pkts); {
		var head segment
		if !head.parse(pkts[i], &parsed[i]) || !head.verify() {
			emit(i, pkts[i], Info{})
			i++
			continue
		}
		prev, size, j := head, len(head.b), i+1
		for !prev.last(&head) && j < len(pkts) {
			var s segment
			if !s.parse(pkts[j], &parsed[j]) || !s.follows(&head, &prev) || size+s.payload > maxSize || !s.verify() {
				break
			}
			size += s.payload
			prev = s
			j++
		}
		if j == i+1 {
			emit(i, pkts[i], Info{})
			i++
			continue
		}
		emit(i, c.merge(&head, pkts[i+1:j], size, prev.flags()), head.info())
		i = j
	}
}

// merge builds the super-packet of head followed by the payloads of rest
// (segments that passed follows) in the scratch buffer.
func (c *Coalescer) merge(head *segment, rest [][]byte, size int, flags byte) []byte {
	if c.buf == nil {
		c.buf = make([]byte, maxIPLen)
	}
	out := c.buf[:size]
	n := copy(out, head.b)
	for _, b := range rest {
		n += copy(out[n:], b[head.hdrLen:])
	}
	setIPLength(out, head.v6, head.ipLen, head.ipID())
	out[head.ipLen+13] = flags
	setPartial(out, head.shape)
	return out
}

// segment is a packet that may take part in a run.
type segment struct {
	b []byte
	shape
}

// parse reports whether b, decoded in p, is a TCP segment that could be
// merged at all, checking everything but its checksums: a whole,
// unfragmented TCP/IP packet with payload (IPv4 without options, IPv6 whose
// next header is TCP), flags ACK or ACK|PSH.
func (s *segment) parse(b []byte, p *packet.Parsed) bool {
	if p.Proto != protoTCP || p.TransportEnd == 0 || p.Length != len(b) || p.IsFragment() {
		return false
	}
	if p.Version == 4 && p.L4 != ipv4MinLen {
		return false
	}
	sh := shape{v6: p.Version == 6, ipLen: p.L4, hdrLen: p.TransportEnd, payload: len(b) - p.TransportEnd}
	if sh.payload == 0 {
		return false
	}
	tcp := b[sh.ipLen:]
	if tcp[12]&0x0f != 0 || tcp[13]&^tcpPSH != tcpACK {
		return false
	}
	s.b, s.shape = b, sh
	return true
}

// verify reports whether the segment's IPv4 header checksum (if any) and
// TCP checksum are valid.
func (s *segment) verify() bool {
	if !s.v6 && checksum.Checksum(s.b[:s.ipLen], 0) != 0xffff {
		return false
	}
	return checksum.Checksum(s.b[s.ipLen:], pseudoSum(s.addrSum(s.b), len(s.b)-s.ipLen)) == 0xffff
}

func (s *segment) flags() byte  { return s.b[s.ipLen+13] }
func (s *segment) seq() uint32  { return binary.BigEndian.Uint32(s.b[s.ipLen+4:]) }
func (s *segment) ipID() uint16 { return binary.BigEndian.Uint16(s.b[4:]) }

// last reports whether s ends the run that head started: it has PSH set or
// a payload shorter than head's.
func (s *segment) last(head *segment) bool {
	return s.flags()&tcpPSH != 0 || s.payload < head.payload
}

// follows reports whether s (parsed) can join the run that head started and
// prev currently ends, checking everything but the checksums and the size.
func (s *segment) follows(head, prev *segment) bool {
	b, h := s.b, head.b
	if s.v6 != head.v6 || s.hdrLen != head.hdrLen || s.payload > head.payload {
		return false
	}
	if s.v6 {
		// Version, traffic class and flow label; hop limit; addresses.
		if !bytes.Equal(b[0:4], h[0:4]) || b[7] != h[7] || !bytes.Equal(b[8:40], h[8:40]) {
			return false
		}
	} else {
		// TOS; DF (parse refused MF and offsets); TTL; addresses.
		if b[1] != h[1] || b[6]&ipv4DF != h[6]&ipv4DF || b[8] != h[8] || !bytes.Equal(b[12:20], h[12:20]) {
			return false
		}
		id, pid := s.ipID(), prev.ipID()
		if id != pid+1 && (id != pid || b[6]&ipv4DF == 0) {
			return false
		}
	}
	t, ht := b[s.ipLen:s.hdrLen], h[head.ipLen:head.hdrLen]
	// Ports (0:4), ack (8:12), window (14:16), options (20:): all equal.
	if !bytes.Equal(t[0:4], ht[0:4]) || !bytes.Equal(t[8:12], ht[8:12]) ||
		!bytes.Equal(t[14:16], ht[14:16]) || !bytes.Equal(t[tcpMinLen:], ht[tcpMinLen:]) {
		return false
	}
	return s.seq() == prev.seq()+uint32(prev.payload)
}

// info describes the super-packet that a run started by s becomes.
func (s *segment) info() Info {
	typ := TCPv4
	if s.v6 {
		typ = TCPv6
	}
	return Info{Type: typ, HdrLen: s.hdrLen, SegSize: s.payload, CsumStart: s.ipLen, CsumOffset: tcpCsumOffset}
}
