package gso

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// spec describes a TCP/IP packet for makePacket. Checksums are computed
// with gVisor's header package, independently of the code under test.
type spec struct {
	v6           bool
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
	flags        uint8 // TCP flags byte
	win          uint16
	urgent       uint16
	opts         []byte // TCP options, a multiple of 4 bytes
	reserved     uint8  // low nibble of TCP byte 12
	payload      []byte

	// IPv4
	id      uint16
	df, mf  bool
	fragOff uint16 // in 8-byte units
	tos     uint8
	ttl     uint8 // also IPv6 hop limit
	ipOpts  []byte
	proto   uint8 // IPv4 protocol / IPv6 next header; 0 means TCP unless setProto

	setProto bool

	// IPv6
	tclass uint8
	flow   uint32

	badTCPCsum bool
	badIPCsum  bool
}

// tsOpts is NOP NOP timestamp, as Linux sends on every data segment.
var tsOpts = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}

// payloadOf returns n deterministic, non-trivial bytes starting at offset off
// of one stream.
func payloadOf(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint32(off + i)
		b[i] = byte(x*2654435761>>24) ^ byte(x)
	}
	return b
}

func makeSpec(mods ...func(*spec)) spec {
	s := spec{
		src: netip.MustParseAddr("10.244.1.2"), dst: netip.MustParseAddr("10.244.0.4"),
		sport: 43210, dport: 80, seq: 1000, ack: 5000, flags: tcpACK, win: 502,
		opts: tsOpts, id: 100, df: true, ttl: 64, payload: payloadOf(0, 1448),
	}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func v6(s *spec) {
	s.v6 = true
	s.src, s.dst = netip.MustParseAddr("fd00:244:1::2"), netip.MustParseAddr("fd00:244::4")
	s.flow = 0x12345
}

func makePacket(mods ...func(*spec)) []byte { return build(makeSpec(mods...)) }

func build(s spec) []byte {
	ipLen := 40
	if !s.v6 {
		ipLen = 20 + len(s.ipOpts)
	}
	tcpLen := 20 + len(s.opts) + len(s.payload)
	b := make([]byte, ipLen+tcpLen)
	proto := uint8(protoTCP)
	if s.setProto {
		proto = s.proto
	}
	if s.v6 {
		binary.BigEndian.PutUint32(b[0:], 6<<28|uint32(s.tclass)<<20|s.flow&0xfffff)
		binary.BigEndian.PutUint16(b[4:], uint16(tcpLen))
		b[6], b[7] = proto, s.ttl
		copy(b[8:24], s.src.AsSlice())
		copy(b[24:40], s.dst.AsSlice())
	} else {
		b[0] = 0x40 | byte(ipLen/4)
		b[1] = s.tos
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], s.id)
		frag := s.fragOff
		if s.df {
			frag |= 0x4000
		}
		if s.mf {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], frag)
		b[8], b[9] = s.ttl, proto
		copy(b[12:16], s.src.AsSlice())
		copy(b[16:20], s.dst.AsSlice())
		copy(b[20:], s.ipOpts)
		ip := header.IPv4(b)
		ip.SetChecksum(^ip.CalculateChecksum())
		if s.badIPCsum {
			b[10] ^= 0x40
		}
	}
	t := header.TCP(b[ipLen:])
	binary.BigEndian.PutUint16(t[0:], s.sport)
	binary.BigEndian.PutUint16(t[2:], s.dport)
	binary.BigEndian.PutUint32(t[4:], s.seq)
	binary.BigEndian.PutUint32(t[8:], s.ack)
	t[12] = byte((20+len(s.opts))/4)<<4 | s.reserved&0x0f
	t[13] = s.flags
	binary.BigEndian.PutUint16(t[14:], s.win)
	binary.BigEndian.PutUint16(t[18:], s.urgent)
	copy(t[20:], s.opts)
	copy(t[20+len(s.opts):], s.payload)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(s.src), addr(s.dst), uint16(tcpLen))
	t.SetChecksum(^checksum.Checksum(t, sum))
	if s.badTCPCsum {
		t[17] ^= 0x01
	}
	return b
}

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// checkValid fails unless pkt is a TCP/IP packet whose IP header and TCP
// checksums gVisor accepts.
func checkValid(t *testing.T, what string, pkt []byte) {
	t.Helper()
	if err := validate(pkt); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func validate(pkt []byte) error {
	if len(pkt) == 0 {
		return fmt.Errorf("empty packet")
	}
	var tcp header.TCP
	var src, dst tcpip.Address
	switch pkt[0] >> 4 {
	case 4:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.TotalLength()) != len(pkt) {
			return fmt.Errorf("invalid IPv4 header % x", pkt[:min(len(pkt), 20)])
		}
		if !ip.IsChecksumValid() {
			return fmt.Errorf("IPv4 header checksum %#04x invalid", ip.Checksum())
		}
		tcp, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
	case 6:
		ip := header.IPv6(pkt)
		if !ip.IsValid(len(pkt)) || int(ip.PayloadLength())+40 != len(pkt) {
			return fmt.Errorf("invalid IPv6 header % x", pkt[:min(len(pkt), 40)])
		}
		tcp, src, dst = header.TCP(ip.Payload()), ip.SourceAddress(), ip.DestinationAddress()
	default:
		return fmt.Errorf("IP version %d", pkt[0]>>4)
	}
	if len(tcp) < 20 || int(tcp.DataOffset()) < 20 || int(tcp.DataOffset()) > len(tcp) {
		return fmt.Errorf("bad TCP header % x", tcp[:min(len(tcp), 20)])
	}
	payload := tcp.Payload()
	if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
		return fmt.Errorf("TCP checksum %#04x invalid", tcp.Checksum())
	}
	return nil
}

// tcpPayload returns pkt's TCP payload (pkt must be valid).
func tcpPayload(pkt []byte) []byte {
	ipLen := 40
	if pkt[0]>>4 == 4 {
		ipLen = int(pkt[0]&0x0f) * 4
	}
	return header.TCP(pkt[ipLen:]).Payload()
}

func tcpHeader(pkt []byte) header.TCP {
	if pkt[0]>>4 == 4 {
		return header.TCP(pkt[int(pkt[0]&0x0f)*4:])
	}
	return header.TCP(pkt[40:])
}

// same reports whether a and b are the same slice (not merely equal bytes).
func same(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// emitted is one output of Coalesce, copied out of the scratch buffer.
type emitted struct {
	pkt  []byte
	info Info
	in   []byte // the input slice itself when info.Type == None
}

func coalesce(c *Coalescer, pkts [][]byte, maxSize int) []emitted {
	var out []emitted
	c.Coalesce(pkts, decodeAll(pkts), maxSize, func(_ int, pkt []byte, info Info) {
		e := emitted{pkt: append([]byte(nil), pkt...), info: info}
		if info.Type == None {
			e.in = pkt
		}
		out = append(out, e)
	})
	return out
}

// segmentAll segments pkt into a fresh buffer and returns the segments.
func segmentAll(t testing.TB, pkt []byte, mss int) [][]byte {
	t.Helper()
	size, err := SegmentedSize(pkt, mss)
	if err != nil {
		t.Fatalf("SegmentedSize(%d bytes, %d): %v", len(pkt), mss, err)
	}
	out := make([]byte, size)
	n, segSize, total, err := Segment(pkt, mss, out)
	if err != nil {
		t.Fatalf("Segment(%d bytes, %d): %v", len(pkt), mss, err)
	}
	if total != size {
		t.Fatalf("Segment(%d bytes, %d) total = %d, SegmentedSize = %d", len(pkt), mss, total, size)
	}
	segs := make([][]byte, 0, n)
	for off := 0; off < total; off += segSize {
		segs = append(segs, out[off:min(off+segSize, total):min(off+segSize, total)])
	}
	if len(segs) != n {
		t.Fatalf("Segment(%d bytes, %d) = %d segments of %d bytes in %d bytes: does not add up", len(pkt), mss, n, segSize, total)
	}
	return segs
}

// decodeAll decodes each of pkts as the router does before it coalesces,
// faults and all.
func decodeAll(pkts [][]byte) []packet.Parsed {
	parsed := make([]packet.Parsed, len(pkts))
	for i, b := range pkts {
		parsed[i].Decode(b)
	}
	return parsed
}
