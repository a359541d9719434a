package gso

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestSegment(t *testing.T) {
	tests := []struct {
		name    string
		pkt     []byte
		mss     int
		wantN   int
		wantSeg int // segSize
	}{
		{"v4 64K", makePacket(func(s *spec) { s.payload = payloadOf(0, 65535-52) }), 1448, 46, 52 + 1448},
		{"v4 exact multiple", makePacket(func(s *spec) { s.payload = payloadOf(0, 3*1448) }), 1448, 3, 52 + 1448},
		{"v4 one more byte", makePacket(func(s *spec) { s.payload = payloadOf(0, 3*1448+1) }), 1448, 4, 52 + 1448},
		{"v4 mss larger than payload", makePacket(func(s *spec) { s.payload = payloadOf(0, 100) }), 1448, 1, 52 + 100},
		{"v4 mss equal to payload", makePacket(func(s *spec) { s.payload = payloadOf(0, 1448) }), 1448, 1, 52 + 1448},
		{"v4 huge mss", makePacket(func(s *spec) { s.payload = payloadOf(0, 1448) }), int(^uint(0) >> 1), 1, 52 + 1448},
		{"v4 no payload", makePacket(func(s *spec) { s.payload = nil }), 1448, 1, 52},
		{"v4 mss 1", makePacket(func(s *spec) { s.payload = payloadOf(0, 7) }), 1, 7, 52 + 1},
		{"v4 odd sizes", makePacket(func(s *spec) { s.payload = payloadOf(0, 1001) }), 333, 4, 52 + 333},
		{"v4 no options", makePacket(func(s *spec) { s.opts = nil; s.payload = payloadOf(0, 4000) }), 1460, 3, 40 + 1460},
		{"v4 IP options", makePacket(func(s *spec) { s.ipOpts = []byte{1, 1, 1, 0}; s.payload = payloadOf(0, 4000) }), 1400, 3, 56 + 1400},
		{"v4 not DF", makePacket(func(s *spec) { s.df = false; s.payload = payloadOf(0, 4000) }), 1400, 3, 52 + 1400},
		{"v6 64K", makePacket(v6, func(s *spec) { s.payload = payloadOf(0, 65535-32) }), 1428, 46, 72 + 1428},
		{"v6 exact multiple", makePacket(v6, func(s *spec) { s.payload = payloadOf(0, 2*1428) }), 1428, 2, 72 + 1428},
		{"v6 short", makePacket(v6, func(s *spec) { s.payload = payloadOf(0, 10) }), 1428, 1, 72 + 10},
		{"v6 traffic class", makePacket(v6, func(s *spec) { s.tclass = 0xb8; s.payload = payloadOf(0, 3000) }), 1000, 3, 72 + 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := append([]byte(nil), tt.pkt...)
			size, err := SegmentedSize(tt.pkt, tt.mss)
			if err != nil {
				t.Fatalf("SegmentedSize: %v", err)
			}
			out := make([]byte, size+7) // larger than needed is fine
			n, segSize, total, err := Segment(tt.pkt, tt.mss, out)
			if err != nil {
				t.Fatalf("Segment(mss %d): %v", tt.mss, err)
			}
			if !bytes.Equal(tt.pkt, orig) {
				t.Fatalf("Segment modified its input")
			}
			if n != tt.wantN || segSize != tt.wantSeg || total != size {
				t.Fatalf("Segment(mss %d) = n %d, segSize %d, total %d; want %d, %d, %d", tt.mss, n, segSize, total, tt.wantN, tt.wantSeg, size)
			}
			checkSegments(t, tt.pkt, out[:total], n, segSize)
		})
	}
}

// checkSegments checks that segs (n segments, each segSize bytes but the
// last) are a correct segmentation of pkt.
func checkSegments(t *testing.T, pkt, segs []byte, n, segSize int) {
	t.Helper()
	isV4 := pkt[0]>>4 == 4
	orig := tcpHeader(pkt)
	hdrLen := len(pkt) - len(tcpPayload(pkt))
	ipLen := hdrLen - int(orig.DataOffset())
	var payload []byte
	for i := range n {
		end := min((i+1)*segSize, len(segs))
		if i == n-1 {
			end = len(segs)
		}
		seg := segs[i*segSize : end]
		checkValid(t, "segment "+strconv.Itoa(i), seg)
		if len(seg) < hdrLen {
			t.Fatalf("segment %d is %d bytes, shorter than the %d-byte header", i, len(seg), hdrLen)
		}
		tcp := tcpHeader(seg)
		if got, want := tcp.SequenceNumber(), orig.SequenceNumber()+uint32(len(payload)); got != want {
			t.Errorf("segment %d seq = %d, want %d", i, got, want)
		}
		wantFlags := orig.Flags()
		if i != n-1 {
			wantFlags &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if i != 0 {
			wantFlags &^= header.TCPFlagCwr
		}
		if got := tcp.Flags(); got != wantFlags {
			t.Errorf("segment %d flags = %v, want %v", i, got, wantFlags)
		}
		if isV4 {
			ip := header.IPv4(seg)
			if got, want := ip.ID(), header.IPv4(pkt).ID()+uint16(i); got != want {
				t.Errorf("segment %d IPv4 ID = %d, want %d", i, got, want)
			}
		}
		// Everything else in the headers is copied.
		masked := func(b []byte) []byte {
			h := append([]byte(nil), b[:hdrLen]...)
			if isV4 {
				clear(h[2:6])   // total length, ID
				clear(h[10:12]) // header checksum
			} else {
				clear(h[4:6]) // payload length
			}
			clear(h[ipLen+4 : ipLen+8]) // seq
			h[ipLen+13] = 0             // flags
			clear(h[ipLen+16 : ipLen+18])
			return h
		}
		if got, want := masked(seg), masked(pkt); !bytes.Equal(got, want) {
			t.Errorf("segment %d headers (mutable fields zeroed)\n% x\nwant\n% x", i, got, want)
		}
		payload = append(payload, tcpPayload(seg)...)
	}
	if !bytes.Equal(payload, tcpPayload(pkt)) {
		t.Errorf("segments carry %d payload bytes that differ from the original %d", len(payload), len(tcpPayload(pkt)))
	}
}

func TestSegmentFlags(t *testing.T) {
	all := uint8(tcpACK | tcpPSH | tcpFIN | tcpCWR | 0x40 /* ECE */)
	for _, n := range []int{1, 2, 3} {
		pkt := makePacket(func(s *spec) { s.flags = all; s.payload = payloadOf(0, n*100) })
		segs := segmentAll(t, pkt, 100)
		if len(segs) != n {
			t.Fatalf("Segment(%d payload bytes, mss 100) = %d segments, want %d", n*100, len(segs), n)
		}
		for i, seg := range segs {
			want := uint8(tcpACK | 0x40)
			if i == 0 {
				want |= tcpCWR
			}
			if i == n-1 {
				want |= tcpPSH | tcpFIN
			}
			if got := tcpHeader(seg)[13]; got != want {
				t.Errorf("%d segments: segment %d flags = %#02x, want %#02x", n, i, got, want)
			}
		}
	}
}

func TestSegmentWraps(t *testing.T) {
	pkt := makePacket(func(s *spec) {
		s.id = 0xfffe
		s.seq = 0xffffffff - 1500
		s.payload = payloadOf(0, 4*1000)
	})
	segs := segmentAll(t, pkt, 1000)
	wantIDs := []uint16{0xfffe, 0xffff, 0, 1}
	wantSeqs := []uint32{0xffffffff - 1500, 0xffffffff - 500, 499, 1499}
	for i, seg := range segs {
		if got := header.IPv4(seg).ID(); got != wantIDs[i] {
			t.Errorf("segment %d ID = %#x, want %#x", i, got, wantIDs[i])
		}
		if got := tcpHeader(seg).SequenceNumber(); got != wantSeqs[i] {
			t.Errorf("segment %d seq = %d, want %d", i, got, wantSeqs[i])
		}
	}
}

// The input's TCP checksum field may hold anything: a partial sum from the
// kernel, a full sum, or garbage. Segment's output does not depend on it.
func TestSegmentIgnoresInputChecksum(t *testing.T) {
	for _, mod := range []func(*spec){func(*spec) {}, v6} {
		pkt := makePacket(mod, func(s *spec) { s.payload = payloadOf(0, 5000) })
		want := segmentAll(t, pkt, 1448)
		partial := append([]byte(nil), pkt...)
		if _, _, err := SetPartial(partial); err != nil {
			t.Fatal(err)
		}
		garbage := append([]byte(nil), pkt...)
		tcpHeader(garbage).SetChecksum(0xbeef)
		for name, in := range map[string][]byte{"partial": partial, "garbage": garbage} {
			got := segmentAll(t, in, 1448)
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("%s checksum input: segment %d differs from the full-checksum input's", name, i)
				}
			}
		}
	}
}

func TestSegmentErrors(t *testing.T) {
	good := makePacket(func(s *spec) { s.payload = payloadOf(0, 3000) })
	mut := func(b []byte, f func([]byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	tests := []struct {
		name string
		pkt  []byte
		mss  int
		out  int // len(out); -1 means SegmentedSize of good
		want string
	}{
		{"empty", nil, 1000, 10000, "empty packet"},
		{"version 5", mut(good, func(b []byte) { b[0] = 0x55 }), 1000, 10000, "IP version 5"},
		{"v4 too short", good[:19], 1000, 10000, "shorter than the 20-byte header"},
		{"v4 ihl 4", mut(good, func(b []byte) { b[0] = 0x44 }), 1000, 10000, "IPv4 header length 16"},
		{"v4 ihl beyond packet", makePacket(func(s *spec) { s.opts, s.payload = nil, nil })[:20], 1000, 10000, "total length 40"},
		{"v4 truncated", good[:len(good)-1], 1000, 10000, "does not match the packet's"},
		{"v4 trailing bytes", append(append([]byte(nil), good...), 0), 1000, 10000, "does not match the packet's"},
		{"v4 ihl past end", mut(good[:20], func(b []byte) { b[0] = 0x46; binary.BigEndian.PutUint16(b[2:], 20) }), 1000, 10000, "exceeds the packet's"},
		{"v4 more fragments", makePacket(func(s *spec) { s.mf = true }), 1000, 10000, "fragment"},
		{"v4 fragment offset", makePacket(func(s *spec) { s.fragOff = 185 }), 1000, 10000, "fragment"},
		{"v4 UDP", makePacket(func(s *spec) { s.setProto, s.proto = true, 17 }), 1000, 10000, "protocol 17 is not TCP"},
		{"v6 too short", makePacket(v6)[:39], 1000, 10000, "shorter than the 40-byte header"},
		{"v6 hop-by-hop", makePacket(v6, func(s *spec) { s.setProto, s.proto = true, 0 }), 1000, 10000, "next header 0"},
		{"v6 routing header", makePacket(v6, func(s *spec) { s.setProto, s.proto = true, 43 }), 1000, 10000, "next header 43"},
		{"v6 truncated", makePacket(v6)[:100], 1000, 10000, "does not match"},
		{"v6 jumbo", mut(makePacket(v6)[:60], func(b []byte) { b[4], b[5] = 0, 0 }), 1000, 10000, "does not match"},
		{"tcp too short", mut(good[:30], func(b []byte) { binary.BigEndian.PutUint16(b[2:], 30) }), 1000, 10000, "TCP segment of 10 bytes"},
		{"tcp data offset 4", mut(good, func(b []byte) { b[32] = 0x40 }), 1000, 10000, "TCP data offset 16"},
		{"tcp header past end", mut(makePacket(func(s *spec) { s.payload = nil }), func(b []byte) { b[32] = 0xf0 }), 1000, 10000, "TCP header length 60 exceeds"},
		{"mss 0", good, 0, 10000, "mss 0"},
		{"mss negative", good, -5, 10000, "mss -5"},
		{"out too small", good, 1000, 3052 + 2*52 - 1, "out holds 3155 bytes, need 3156"},
		{"out nil", good, 1000, 0, "out holds 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make([]byte, tt.out)
			n, segSize, total, err := Segment(tt.pkt, tt.mss, out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Segment(%s) = %d, %d, %d, %v; want error containing %q", tt.name, n, segSize, total, err, tt.want)
			}
			if n != 0 || segSize != 0 || total != 0 {
				t.Errorf("Segment(%s) = %d, %d, %d with an error, want zeros", tt.name, n, segSize, total)
			}
			if !bytes.Equal(out, make([]byte, tt.out)) {
				t.Errorf("Segment(%s) wrote to out despite the error", tt.name)
			}
			if tt.name != "out too small" && tt.name != "out nil" {
				if _, err := SegmentedSize(tt.pkt, tt.mss); err == nil {
					t.Errorf("SegmentedSize(%s) = nil error, want one", tt.name)
				}
			}
		})
	}
}

// Complete(SetPartial(p)) restores the full checksum gVisor computes.
func TestSetPartialComplete(t *testing.T) {
	for _, mod := range []func(*spec){func(*spec) {}, v6} {
		for _, size := range []int{0, 1, 2, 3, 1447, 1448, 65535 - 72} {
			pkt := makePacket(mod, func(s *spec) { s.payload = payloadOf(7, size) })
			want := append([]byte(nil), pkt...)
			start, off, err := SetPartial(pkt)
			if err != nil {
				t.Fatalf("SetPartial(%d payload bytes): %v", size, err)
			}
			ipLen := 20
			if pkt[0]>>4 == 6 {
				ipLen = 40
			}
			if start != ipLen || off != 16 {
				t.Fatalf("SetPartial = %d, %d; want %d, 16", start, off, ipLen)
			}
			// The field holds gVisor's pseudo-header sum.
			ip := header.IPv4(pkt)
			src, dst := ip.SourceAddress(), ip.DestinationAddress()
			if ipLen == 40 {
				src, dst = header.IPv6(pkt).SourceAddress(), header.IPv6(pkt).DestinationAddress()
			}
			wantPartial := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(pkt)-ipLen))
			if got := tcpHeader(pkt).Checksum(); got != wantPartial {
				t.Fatalf("SetPartial wrote %#04x, want pseudo-header sum %#04x", got, wantPartial)
			}
			if err := Complete(pkt, start, off); err != nil {
				t.Fatalf("Complete(%d, %d): %v", start, off, err)
			}
			if !bytes.Equal(pkt, want) {
				t.Fatalf("Complete(SetPartial(pkt)) checksum %#04x, want %#04x", tcpHeader(pkt).Checksum(), tcpHeader(want).Checksum())
			}
		}
	}
	if _, _, err := SetPartial(makePacket(func(s *spec) { s.mf = true })); err == nil {
		t.Errorf("SetPartial(fragment) = nil error, want one")
	}
}

// A computed checksum of 0 is sent as 0xffff for UDP (0 means none there)
// and left 0 for TCP.
func TestCompleteZero(t *testing.T) {
	// A transport segment whose bytes sum to 0xffff: the complement is 0.
	seg := make([]byte, 20)
	seg[0], seg[1] = 0x12, 0x34
	s := checksum.Checksum(seg, 0)
	binary.BigEndian.PutUint16(seg[10:], ^s) // s + ^s = 0xffff
	for _, tt := range []struct {
		off  int
		want uint16
	}{{6, 0xffff}, {16, 0}} {
		b := append([]byte(nil), seg...)
		if err := Complete(b, 0, tt.off); err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint16(b[tt.off:]); got != tt.want {
			t.Errorf("Complete(offset %d) stored %#04x, want %#04x", tt.off, got, tt.want)
		}
	}
}

func TestCompleteErrors(t *testing.T) {
	pkt := make([]byte, 40)
	for _, tt := range []struct{ start, off int }{
		{-1, 16}, {20, -1}, {41, 0}, {20, 19}, {39, 0}, {0, 39}, {int(^uint(0) >> 1), 16}, {20, int(^uint(0) >> 1)},
	} {
		if err := Complete(pkt, tt.start, tt.off); err == nil {
			t.Errorf("Complete(40 bytes, %d, %d) = nil, want an error", tt.start, tt.off)
		}
	}
	if !bytes.Equal(pkt, make([]byte, 40)) {
		t.Errorf("failed Complete calls wrote to the packet")
	}
	if err := Complete(pkt, 20, 18); err != nil {
		t.Errorf("Complete(40 bytes, 20, 18) = %v, want nil (field is the last two bytes)", err)
	}
}

func TestNoAllocs(t *testing.T) {
	pkt := makePacket(func(s *spec) { s.payload = payloadOf(0, 65535-52) })
	out := make([]byte, 70000)
	segs := segmentAll(t, pkt, 1448)
	var c Coalescer
	emit := func(int, []byte, Info) {}
	other := [][]byte{nil, {0x45}, makePacketUDP, pkt}
	segsParsed, otherParsed := decodeAll(segs), decodeAll(other)
	c.Coalesce(segs, segsParsed, 65535, emit) // warm up: allocates the scratch once
	for name, f := range map[string]func(){
		"Segment":          func() { _, _, _, _ = Segment(pkt, 1448, out) },
		"SegmentedSize":    func() { _, _ = SegmentedSize(pkt, 1448) },
		"SetPartial":       func() { _, _, _ = SetPartial(pkt) },
		"Complete":         func() { _ = Complete(pkt, 20, 16) },
		"Coalesce":         func() { c.Coalesce(segs, segsParsed, 65535, emit) },
		"Coalesce non-TCP": func() { c.Coalesce(other, otherParsed, 65535, emit) },
	} {
		if n := testing.AllocsPerRun(20, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

var makePacketUDP = makePacket(func(s *spec) { s.setProto, s.proto = true, 17 })
