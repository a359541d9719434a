package gso

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// BenchmarkSegment64K segments a 64 KiB IPv4 TCP super-packet at MSS 1448
// (45 full segments and a short one). Compare with BenchmarkCopyChecksum64K,
// the least any software TSO must do: copy every byte and sum it once.
func BenchmarkSegment64K(b *testing.B) {
	pkt := makePacket(func(s *spec) { s.payload = payloadOf(0, 65535-52) })
	size, err := SegmentedSize(pkt, 1448)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, size)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := Segment(pkt, 1448, out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCopyChecksum64K is the baseline for BenchmarkSegment64K.
func BenchmarkCopyChecksum64K(b *testing.B) {
	pkt := makePacket(func(s *spec) { s.payload = payloadOf(0, 65535-52) })
	out := make([]byte, len(pkt))
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		copy(out, pkt)
		_ = checksum.Checksum(out, 0)
	}
}

// BenchmarkCoalesce44x1448 merges 44 IPv4 segments of 1448 payload bytes
// (with timestamps, as Linux sends them) into one super-packet.
func BenchmarkCoalesce44x1448(b *testing.B) {
	pkts := buildAll(stream(44, 1448))
	var n int64
	for _, p := range pkts {
		n += int64(len(p))
	}
	var c Coalescer
	emitted := 0
	emit := func(int, []byte, Info) { emitted++ }
	parsed := decodeAll(pkts)
	if c.Coalesce(pkts, parsed, 65535, emit); emitted != 1 {
		b.Fatalf("Coalesce(44 segments) emitted %d packets, want 1", emitted)
	}
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		c.Coalesce(pkts, parsed, 65535, emit)
	}
}
