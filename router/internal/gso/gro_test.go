package gso

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
)

// stream returns the specs of n consecutive segments of one flow, each
// carrying size payload bytes, with mods applied to every one.
func stream(n, size int, mods ...func(*spec)) []spec {
	specs := make([]spec, n)
	for i := range specs {
		specs[i] = makeSpec(mods...)
		specs[i].seq += uint32(i * size)
		specs[i].id += uint16(i)
		specs[i].payload = payloadOf(i*size, size)
	}
	return specs
}

// pair is two segments of a flow, the second changed by mod.
func pair(mod func(*spec), common ...func(*spec)) []spec {
	s := stream(2, 1448, common...)
	mod(&s[1])
	return s
}

// pairFirst is two segments of a flow, the first changed by mod.
func pairFirst(mod func(*spec), common ...func(*spec)) []spec {
	s := stream(2, 1448, common...)
	mod(&s[0])
	return s
}

// merged builds what Coalesce should emit for a run: the first spec with
// every payload, the last spec's flags and a partial checksum.
func merged(t *testing.T, run []spec) ([]byte, Info) {
	t.Helper()
	s := run[0]
	s.payload = nil
	for _, r := range run {
		s.payload = append(s.payload, r.payload...)
	}
	s.flags = run[len(run)-1].flags
	pkt := build(s)
	start, off, err := SetPartial(pkt)
	if err != nil {
		t.Fatalf("SetPartial(expected super-packet): %v", err)
	}
	typ := TCPv4
	if s.v6 {
		typ = TCPv6
	}
	return pkt, Info{Type: typ, HdrLen: start + 20 + len(s.opts), SegSize: len(run[0].payload), CsumStart: start, CsumOffset: off}
}

// checkCoalesce runs Coalesce over pkts and checks that it emits groups, in
// order: a group of one index is that input unchanged, a longer group is
// the super-packet merged from those inputs (built from specs).
func checkCoalesce(t *testing.T, specs []spec, pkts [][]byte, maxSize int, groups [][]int) {
	t.Helper()
	var c Coalescer
	got := coalesce(&c, pkts, maxSize)
	describe := func() string {
		var s string
		for _, e := range got {
			s += fmt.Sprintf("\n  %d bytes %+v", len(e.pkt), e.info)
		}
		return s
	}
	if len(got) != len(groups) {
		t.Fatalf("Coalesce emitted %d packets, want %d (groups %v):%s", len(got), len(groups), groups, describe())
	}
	for i, g := range groups {
		e := got[i]
		if len(g) == 1 {
			if e.info != (Info{}) || !same(e.in, pkts[g[0]]) {
				t.Errorf("output %d = %d bytes %+v, want input %d unchanged:%s", i, len(e.pkt), e.info, g[0], describe())
			}
			continue
		}
		run := make([]spec, len(g))
		for k, idx := range g {
			run[k] = specs[idx]
		}
		want, wantInfo := merged(t, run)
		if e.info != wantInfo {
			t.Errorf("output %d info = %+v, want %+v", i, e.info, wantInfo)
		}
		if !bytes.Equal(e.pkt, want) {
			t.Errorf("output %d = %d bytes\n% x\nwant super-packet of inputs %v, %d bytes\n% x", i, len(e.pkt), e.pkt[:min(len(e.pkt), 80)], g, len(want), want[:min(len(want), 80)])
		}
		if len(e.pkt) > maxSize {
			t.Errorf("output %d is %d bytes, above maxSize %d", i, len(e.pkt), maxSize)
		}
		full := append([]byte(nil), e.pkt...)
		if err := Complete(full, e.info.CsumStart, e.info.CsumOffset); err != nil {
			t.Fatalf("Complete(output %d): %v", i, err)
		}
		checkValid(t, fmt.Sprintf("output %d after Complete", i), full)
	}
}

func buildAll(specs []spec) [][]byte {
	pkts := make([][]byte, len(specs))
	for i, s := range specs {
		pkts[i] = build(s)
	}
	return pkts
}

func TestCoalesceRules(t *testing.T) {
	const max = 65535
	merge, refuse := [][]int{{0, 1}}, [][]int{{0}, {1}}
	other := netip.MustParseAddr("10.244.1.3")
	tests := []struct {
		name    string
		specs   []spec
		maxSize int
		want    [][]int
	}{
		{"control v4", pair(func(*spec) {}), max, merge},
		{"control v6", pair(func(*spec) {}, v6), max, merge},
		{"control no options", pair(func(*spec) {}, func(s *spec) { s.opts = nil }), max, merge},
		{"v4 DF with equal IDs", pair(func(s *spec) { s.id-- }), max, merge},
		{"v4 ID wraps", pair(func(*spec) {}, func(s *spec) { s.id = 0xffff }), max, merge},
		{"seq wraps", pair(func(*spec) {}, func(s *spec) { s.seq = 0xffffffff - 100 }), max, merge},
		{"PSH on last", pair(func(s *spec) { s.flags |= tcpPSH }), max, merge},
		{"shorter last", pair(func(s *spec) { s.payload = s.payload[:1] }), max, merge},
		{"exactly maxSize", pair(func(*spec) {}), 52 + 2*1448, merge},
		{"v6 maxSize", pair(func(*spec) {}, v6), 72 + 2*1448, merge},
		{"ipv6 flow", pair(func(*spec) {}, v6, func(s *spec) { s.tclass, s.ttl = 0x28, 3 }), max, merge},

		{"other source", pair(func(s *spec) { s.src = other }), max, refuse},
		{"other destination", pair(func(s *spec) { s.dst = other }), max, refuse},
		{"other source port", pair(func(s *spec) { s.sport++ }), max, refuse},
		{"other destination port", pair(func(s *spec) { s.dport++ }), max, refuse},
		{"v6 after v4", pair(v6), max, refuse},
		{"v6 other source", pair(func(s *spec) { s.src = netip.MustParseAddr("fd00:244:1::3") }, v6), max, refuse},
		{"v4 IP options on second", pair(func(s *spec) { s.ipOpts = []byte{1, 1, 1, 0} }), max, refuse},
		{"v4 IP options on both", pair(func(*spec) {}, func(s *spec) { s.ipOpts = []byte{1, 1, 1, 0} }), max, refuse},
		{"v4 fragment", pair(func(s *spec) { s.mf = true }), max, refuse},
		{"v4 fragment offset", pair(func(s *spec) { s.fragOff = 1 }), max, refuse},
		{"v4 TOS", pair(func(s *spec) { s.tos = 3 }), max, refuse},
		{"v4 TTL", pair(func(s *spec) { s.ttl-- }), max, refuse},
		{"v4 DF differs", pair(func(s *spec) { s.df = false }), max, refuse},
		{"v4 ID skips", pair(func(s *spec) { s.id++ }), max, refuse},
		{"v4 ID goes back", pair(func(s *spec) { s.id -= 2 }), max, refuse},
		{"v4 equal IDs without DF", pair(func(s *spec) { s.id-- }, func(s *spec) { s.df = false }), max, refuse},
		{"v4 bad header checksum", pair(func(s *spec) { s.badIPCsum = true }), max, refuse},
		{"v4 bad header checksum first", pairFirst(func(s *spec) { s.badIPCsum = true }), max, refuse},
		{"v6 hop limit", pair(func(s *spec) { s.ttl-- }, v6), max, refuse},
		{"v6 traffic class", pair(func(s *spec) { s.tclass = 1 }, v6), max, refuse},
		{"v6 flow label", pair(func(s *spec) { s.flow++ }, v6), max, refuse},
		{"v6 extension header", pair(func(s *spec) { s.setProto, s.proto = true, 60 }, v6), max, refuse},
		{"TCP header length", pair(func(s *spec) { s.opts = append(append([]byte(nil), s.opts...), 1, 1, 1, 1) }), max, refuse},
		{"TCP option bytes", pair(func(s *spec) { s.opts = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x35, 0, 0, 0x56, 0x78} }), max, refuse},
		{"ack", pair(func(s *spec) { s.ack++ }), max, refuse},
		{"window", pair(func(s *spec) { s.win++ }), max, refuse},
		{"sequence gap", pair(func(s *spec) { s.seq++ }), max, refuse},
		{"sequence overlap", pair(func(s *spec) { s.seq-- }), max, refuse},
		{"sequence repeated", pair(func(s *spec) { s.seq -= 1448 }), max, refuse},
		{"SYN", pair(func(s *spec) { s.flags |= 0x02 }), max, refuse},
		{"FIN", pair(func(s *spec) { s.flags |= tcpFIN }), max, refuse},
		{"RST", pair(func(s *spec) { s.flags |= 0x04 }), max, refuse},
		{"URG", pair(func(s *spec) { s.flags |= 0x20 }), max, refuse},
		{"ECE", pair(func(s *spec) { s.flags |= 0x40 }), max, refuse},
		{"CWR", pair(func(s *spec) { s.flags |= tcpCWR }), max, refuse},
		{"CWR first", pairFirst(func(s *spec) { s.flags |= tcpCWR }), max, refuse},
		{"no ACK", pair(func(s *spec) { s.flags = tcpPSH }), max, refuse},
		{"reserved bit", pair(func(s *spec) { s.reserved = 1 }), max, refuse},
		{"reserved bit on both", pair(func(*spec) {}, func(s *spec) { s.reserved = 1 }), max, refuse},
		{"empty payload", pair(func(s *spec) { s.payload = nil }), max, refuse},
		{"empty payloads", stream(2, 0), max, refuse},
		{"longer payload", pair(func(s *spec) { s.payload = payloadOf(1448, 1449) }), max, refuse},
		{"bad TCP checksum", pair(func(s *spec) { s.badTCPCsum = true }), max, refuse},
		{"bad TCP checksum first", pairFirst(func(s *spec) { s.badTCPCsum = true }), max, refuse},
		{"v6 bad TCP checksum", pair(func(s *spec) { s.badTCPCsum = true }, v6), max, refuse},
		{"PSH on first", pairFirst(func(s *spec) { s.flags |= tcpPSH }), max, refuse},
		{"above maxSize", pair(func(*spec) {}), 52 + 2*1448 - 1, refuse},
		{"maxSize below one segment", pair(func(*spec) {}), 10, refuse},
		{"maxSize negative", pair(func(*spec) {}), -1, refuse},

		{"three segments", stream(3, 1448), max, [][]int{{0, 1, 2}}},
		{"short segment ends run", func() []spec {
			s := stream(4, 1448)
			s[1].payload = s[1].payload[:1000]
			s[2].seq -= 448
			s[3].seq -= 448
			return s
		}(), max, [][]int{{0, 1}, {2, 3}}},
		{"PSH ends run", func() []spec {
			s := stream(4, 1448)
			s[1].flags |= tcpPSH
			return s
		}(), max, [][]int{{0, 1}, {2, 3}}},
		{"corrupt middle segment", func() []spec {
			s := stream(5, 1448)
			s[2].badTCPCsum = true
			return s
		}(), max, [][]int{{0, 1}, {2}, {3, 4}}},
		{"maxSize splits runs", stream(7, 1448), 52 + 3*1448, [][]int{{0, 1, 2}, {3, 4, 5}, {6}}},
		{"two flows back to back", append(stream(2, 1448), stream(2, 1448, func(s *spec) { s.sport = 1 })...), max, [][]int{{0, 1}, {2, 3}}},
		{"interleaved flows", func() []spec {
			a, b := stream(2, 1448), stream(2, 1448, func(s *spec) { s.sport = 1 })
			return []spec{a[0], b[0], a[1], b[1]}
		}(), max, [][]int{{0}, {1}, {2}, {3}}},
		{"FIN closes stream", func() []spec {
			s := stream(3, 1448)
			s[2].flags |= tcpFIN
			return s
		}(), max, [][]int{{0, 1}, {2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkCoalesce(t, tt.specs, buildAll(tt.specs), tt.maxSize, tt.want)
		})
	}
}

// Inputs that are not TCP segments pass through unchanged, in order, and
// never break a run they are not part of.
func TestCoalesceOtherPackets(t *testing.T) {
	specs := stream(4, 1448)
	pkts := buildAll(specs)
	udp := makePacket(func(s *spec) { s.setProto, s.proto = true, 17 })
	in := [][]byte{nil, {}, {0x45}, udp, pkts[0], pkts[1], {0x60, 0, 0}, pkts[2], pkts[3], udp}
	all := append(append([]spec{{}, {}, {}, {}}, specs[:2]...), spec{}, specs[2], specs[3], spec{})
	checkCoalesce(t, all, in, 65535, [][]int{{0}, {1}, {2}, {3}, {4, 5}, {6}, {7, 8}, {9}})
}

// Segment then Coalesce gives back the original super-packet.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*spec)
		mss  int
	}{
		{"v4 64K", func(s *spec) { s.payload = payloadOf(0, 65535-52) }, 1448},
		{"v4 PSH", func(s *spec) { s.flags |= tcpPSH; s.payload = payloadOf(0, 30000) }, 1448},
		{"v4 exact multiple", func(s *spec) { s.payload = payloadOf(0, 10*1448) }, 1448},
		{"v4 no options", func(s *spec) { s.opts = nil; s.payload = payloadOf(0, 20000) }, 1460},
		{"v4 not DF", func(s *spec) { s.df = false; s.payload = payloadOf(0, 20000) }, 1460},
		{"v4 ID and seq wrap", func(s *spec) { s.id, s.seq = 0xfffd, 0xfffffff0; s.payload = payloadOf(0, 20000) }, 1000},
		{"v4 two segments", func(s *spec) { s.payload = payloadOf(0, 1449) }, 1448},
		{"v6 64K", func(s *spec) { v6(s); s.payload = payloadOf(0, 65535-72) }, 1428},
		{"v6 PSH odd", func(s *spec) { v6(s); s.flags |= tcpPSH; s.payload = payloadOf(0, 12345) }, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := makePacket(tt.mod)
			segs := segmentAll(t, orig, tt.mss)
			var c Coalescer
			got := coalesce(&c, segs, 65535)
			if len(got) != 1 {
				t.Fatalf("Coalesce(%d segments) emitted %d packets, want 1", len(segs), len(got))
			}
			e := got[0]
			want := append([]byte(nil), orig...)
			start, off, _ := SetPartial(want)
			ipLen := start
			wantInfo := Info{Type: TCPv4, HdrLen: len(orig) - len(tcpPayload(orig)), SegSize: tt.mss, CsumStart: ipLen, CsumOffset: off}
			if orig[0]>>4 == 6 {
				wantInfo.Type = TCPv6
			}
			if e.info != wantInfo {
				t.Errorf("Coalesce info = %+v, want %+v", e.info, wantInfo)
			}
			if !bytes.Equal(e.pkt, want) {
				t.Fatalf("Coalesce(Segment(pkt)) differs from pkt with a partial checksum")
			}
			if err := Complete(e.pkt, e.info.CsumStart, e.info.CsumOffset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.pkt, orig) {
				t.Fatalf("Complete(Coalesce(Segment(pkt))) differs from pkt")
			}
			// And the super-packet segments into the same segments again.
			again := segmentAll(t, e.pkt, e.info.SegSize)
			for i := range segs {
				if !bytes.Equal(again[i], segs[i]) {
					t.Fatalf("segment %d of the coalesced packet differs from the original's", i)
				}
			}
		})
	}
}

// FIN and CWR segments are never merged: a stream's first (CWR) and last
// (FIN) segments are emitted alone and the rest merged.
func TestRoundTripFlags(t *testing.T) {
	orig := makePacket(func(s *spec) { s.flags |= tcpFIN | tcpPSH | tcpCWR; s.payload = payloadOf(0, 10*1000) })
	segs := segmentAll(t, orig, 1000)
	var c Coalescer
	got := coalesce(&c, segs, 65535)
	if len(got) != 3 || got[0].info.Type != None || got[1].info.Type != TCPv4 || got[2].info.Type != None {
		t.Fatalf("Coalesce(CWR, 8 segments, FIN) = %d outputs, want unchanged, super-packet, unchanged", len(got))
	}
	var payload []byte
	for _, e := range got {
		payload = append(payload, tcpPayload(e.pkt)...)
	}
	if !bytes.Equal(payload, tcpPayload(orig)) {
		t.Fatalf("outputs carry a payload that differs from the original's")
	}
	if f := tcpHeader(got[1].pkt)[13]; f != tcpACK {
		t.Errorf("middle super-packet flags = %#02x, want ACK", f)
	}
}

// The Coalescer's scratch is reused: an output is valid until emit returns,
// and a later call overwrites it without disturbing the inputs.
func TestCoalesceReuse(t *testing.T) {
	var c Coalescer
	a := buildAll(stream(3, 1000))
	b := buildAll(stream(3, 500, v6))
	aCopy := [][]byte{append([]byte(nil), a[0]...), append([]byte(nil), a[1]...), append([]byte(nil), a[2]...)}
	for range 3 {
		ea, eb := coalesce(&c, a, 65535), coalesce(&c, b, 65535)
		if len(ea) != 1 || len(eb) != 1 || len(ea[0].pkt) != 52+3000 || len(eb[0].pkt) != 72+1500 {
			t.Fatalf("Coalesce reuse: got %d and %d outputs", len(ea), len(eb))
		}
	}
	for i := range a {
		if !bytes.Equal(a[i], aCopy[i]) {
			t.Fatalf("Coalesce modified input %d", i)
		}
	}
}

func TestCoalesceMaxSizeClamp(t *testing.T) {
	specs := stream(46, 1448)
	var c Coalescer
	got := coalesce(&c, buildAll(specs), 1<<20)
	if len(got) != 2 || len(got[0].pkt) != 52+45*1448 || got[1].info.Type != None {
		t.Fatalf("Coalesce(46 segments, maxSize 1 MiB) = %d outputs, want a 45-segment super-packet (%d bytes) and one unchanged", len(got), 52+45*1448)
	}
}
