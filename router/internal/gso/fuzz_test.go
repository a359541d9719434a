package gso

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

func fuzzSeeds() [][]byte {
	return [][]byte{
		makePacket(func(s *spec) { s.payload = payloadOf(0, 5000) }),
		makePacket(func(s *spec) { s.flags |= tcpPSH | tcpFIN | tcpCWR; s.payload = payloadOf(0, 3001) }),
		makePacket(func(s *spec) { s.ipOpts = []byte{1, 1, 1, 0}; s.payload = payloadOf(0, 2000) }),
		makePacket(func(s *spec) { s.opts = nil; s.id = 0xffff; s.df = false; s.payload = payloadOf(0, 2000) }),
		makePacket(v6, func(s *spec) { s.payload = payloadOf(0, 4321) }),
		makePacket(v6, func(s *spec) { s.flags |= tcpPSH; s.payload = payloadOf(0, 999) }),
		makePacket(func(s *spec) { s.payload = nil }),
		makePacket(func(s *spec) { s.mf = true }),
		{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2},
		{0x60},
		{},
	}
}

// FuzzSegment: Segment never panics, agrees with SegmentedSize, and its
// segments are valid packets that carry the input's payload; coalescing
// them gives well-formed output.
func FuzzSegment(f *testing.F) {
	for _, p := range fuzzSeeds() {
		for _, mss := range []int{1000, 1, 536, 65535} {
			f.Add(p, mss)
		}
	}
	f.Add([]byte{0x45}, 0)
	f.Add(fuzzSeeds()[0], -1)
	f.Fuzz(func(t *testing.T, pkt []byte, mss int) {
		orig := append([]byte(nil), pkt...)
		size, sizeErr := SegmentedSize(pkt, mss)
		out := make([]byte, max(size, 0)+len(pkt)+64)
		n, segSize, total, err := Segment(pkt, mss, out)
		if (err == nil) != (sizeErr == nil) {
			t.Fatalf("Segment error %v but SegmentedSize error %v", err, sizeErr)
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("Segment modified its input")
		}
		if err != nil {
			return
		}
		if total != size {
			t.Fatalf("Segment total %d, SegmentedSize %d", total, size)
		}
		// pkt with its checksums made by SetPartial and Complete (and the
		// IPv4 header checksum fixed) is a packet gVisor accepts.
		if err := validateIgnoringTCPChecksum(pkt); err != nil {
			t.Fatalf("Segment accepted a packet gVisor finds malformed, or SetPartial+Complete failed: %v", err)
		}
		checkSegments(t, pkt, out[:total], n, segSize)
		if _, _, _, err := Segment(pkt, mss, out[:total-1]); err == nil {
			t.Fatalf("Segment into %d bytes, one short, succeeded", total-1)
		}

		segs := make([][]byte, 0, n)
		for off := 0; off < total; off += segSize {
			segs = append(segs, out[off:min(off+segSize, total)])
		}
		var c Coalescer
		checkCoalesceInvariants(t, &c, segs, 65535)
	})
}

// validateIgnoringTCPChecksum is validate for a packet whose TCP checksum
// field may hold anything.
func validateIgnoringTCPChecksum(pkt []byte) error {
	p := append([]byte(nil), pkt...)
	if len(p) > 0 && p[0]>>4 == 4 && len(p) >= 20 {
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^checksum.Checksum(p[:int(p[0]&0x0f)*4], 0))
	}
	if _, _, err := SetPartial(p); err != nil {
		return err
	}
	ipLen := 40
	if p[0]>>4 == 4 {
		ipLen = int(p[0]&0x0f) * 4
	}
	if err := Complete(p, ipLen, 16); err != nil {
		return err
	}
	return validate(p)
}

// FuzzCoalesce: Coalesce never panics, emits every input exactly once in
// order, either unchanged or merged into a super-packet that is valid once
// completed, within maxSize, and segments back into exactly the inputs it
// merged — each of which was itself valid.
//
// The inputs are the segments of pkt (or, if pkt does not segment, pkt cut
// into length-prefixed pieces), then changed by muts: triples of segment
// index, byte offset and XOR mask. If fix is set, checksums are recomputed
// after the changes so that the merge rules, not just the checksum check,
// get exercised.
func FuzzCoalesce(f *testing.F) {
	for _, p := range fuzzSeeds() {
		f.Add(p, uint16(1000), uint32(65535), []byte{}, false)
		f.Add(p, uint16(700), uint32(3000), []byte{1, 30, 0x01}, true)
		f.Add(p, uint16(500), uint32(1<<20), []byte{2, 9, 0x80, 0, 40, 0x08}, false)
		f.Add(p, uint16(0), uint32(65535), []byte{}, false)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, mss uint16, maxSize uint32, muts []byte, fix bool) {
		var pkts [][]byte
		if size, err := SegmentedSize(pkt, int(mss)); err == nil && size <= 1<<17 {
			out := make([]byte, size)
			n, segSize, total, err := Segment(pkt, int(mss), out)
			if err != nil {
				t.Fatalf("Segment after SegmentedSize succeeded: %v", err)
			}
			for off := 0; off < total; off += segSize {
				pkts = append(pkts, out[off:min(off+segSize, total):min(off+segSize, total)])
			}
			if len(pkts) != n {
				t.Fatalf("Segment n = %d, got %d segments", n, len(pkts))
			}
		} else {
			for rest := pkt; len(rest) > 0; {
				l := min(int(rest[0]), len(rest)-1)
				pkts = append(pkts, rest[1:1+l:1+l])
				rest = rest[1+l:]
			}
		}
		for ; len(muts) >= 3 && len(pkts) > 0; muts = muts[3:] {
			p := pkts[int(muts[0])%len(pkts)]
			if len(p) > 0 {
				p[int(muts[1])%len(p)] ^= muts[2]
			}
		}
		if fix {
			for _, p := range pkts {
				fixChecksums(p)
			}
		}
		var c Coalescer
		checkCoalesceInvariants(t, &c, pkts, int(maxSize))
	})
}

// fixChecksums recomputes p's IPv4 header and TCP checksums if p parses.
func fixChecksums(p []byte) {
	if _, _, err := SetPartial(p); err != nil {
		return
	}
	ipLen := 40
	if p[0]>>4 == 4 {
		ipLen = int(p[0]&0x0f) * 4
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^checksum.Checksum(p[:ipLen], 0))
	}
	_ = Complete(p, ipLen, 16)
}

func checkCoalesceInvariants(t *testing.T, c *Coalescer, pkts [][]byte, maxSize int) {
	t.Helper()
	var inputs [][]byte
	for _, p := range pkts {
		inputs = append(inputs, append([]byte(nil), p...))
	}
	k := 0
	c.Coalesce(pkts, decodeAll(pkts), maxSize, func(first int, pkt []byte, info Info) {
		if k >= len(pkts) {
			t.Fatalf("Coalesce emitted more than the %d inputs", len(pkts))
		}
		if first != k {
			t.Fatalf("Coalesce emitted an output that starts at input %d as starting at %d", k, first)
		}
		if info.Type == None {
			if info != (Info{}) || !same(pkt, pkts[k]) {
				t.Fatalf("output with Info %+v is not input %d unchanged", info, k)
			}
			k++
			return
		}
		if err := checkSuper(pkt, info, pkts[k:], min(maxSize, 65535)); err != nil {
			t.Fatalf("super-packet at input %d: %v", k, err)
		}
		k += (len(pkt)-info.HdrLen-1)/info.SegSize + 1
	})
	if k != len(pkts) {
		t.Fatalf("Coalesce emitted %d of %d inputs", k, len(pkts))
	}
	for i := range pkts {
		if !bytes.Equal(pkts[i], inputs[i]) {
			t.Fatalf("Coalesce modified input %d", i)
		}
	}
}

// checkSuper checks a super-packet merged from the first segments of ins.
func checkSuper(pkt []byte, info Info, ins [][]byte, maxSize int) error {
	if len(pkt) > maxSize {
		return fmt.Errorf("%d bytes, above maxSize %d", len(pkt), maxSize)
	}
	if (info.Type == TCPv4) != (pkt[0]>>4 == 4) || (info.Type == TCPv6) != (pkt[0]>>4 == 6) {
		return fmt.Errorf("info %+v for IP version %d", info, pkt[0]>>4)
	}
	full := append([]byte(nil), pkt...)
	if err := Complete(full, info.CsumStart, info.CsumOffset); err != nil {
		return err
	}
	if err := validate(full); err != nil {
		return fmt.Errorf("after Complete: %v", err)
	}
	tcp := tcpHeader(full)
	if info.CsumOffset != 16 || info.CsumStart != len(full)-len(tcp) || info.HdrLen != info.CsumStart+int(tcp.DataOffset()) {
		return fmt.Errorf("info %+v does not match the headers", info)
	}
	if info.SegSize < 1 || len(full)-info.HdrLen <= info.SegSize {
		return fmt.Errorf("info %+v: payload %d is not more than one segment", info, len(full)-info.HdrLen)
	}
	size, err := SegmentedSize(full, info.SegSize)
	if err != nil {
		return err
	}
	out := make([]byte, size)
	n, segSize, total, err := Segment(full, info.SegSize, out)
	if err != nil {
		return err
	}
	if n > len(ins) {
		return fmt.Errorf("made of %d segments, only %d inputs left", n, len(ins))
	}
	for i := range n {
		seg := out[i*segSize : min((i+1)*segSize, total)]
		in := ins[i]
		if err := validate(in); err != nil {
			return fmt.Errorf("merged input %d is invalid: %v", i, err)
		}
		if len(seg) != len(in) {
			return fmt.Errorf("merged input %d is %d bytes, resegmented %d", i, len(in), len(seg))
		}
		// Equal but for checksums (both verified) and, for DF packets, the
		// IPv4 ID, which may stay fixed.
		a, b := append([]byte(nil), seg...), append([]byte(nil), in...)
		ipLen := info.CsumStart
		for _, x := range [][]byte{a, b} {
			x[ipLen+16], x[ipLen+17] = 0, 0
			if x[0]>>4 == 4 {
				x[10], x[11] = 0, 0
				if x[6]&ipv4DF != 0 {
					x[4], x[5] = 0, 0
				}
			}
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("merged input %d differs from its resegmented copy:\n% x\n% x", i, b[:info.HdrLen], a[:info.HdrLen])
		}
	}
	return nil
}
