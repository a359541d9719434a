package gso

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// udpSpec describes one test datagram.
type udpSpec struct {
	src, dst         netip.AddrPort
	id               uint16
	df               bool
	tos, ttl         uint8
	payload          []byte
	noCsum, badCsum  bool
	flowLabel        uint32
	udpLenOff        int // added to the UDP length field
	fragment, option bool
	badIPCsum        bool
}

var (
	udpSrc4 = netip.MustParseAddrPort("10.244.0.4:40000")
	udpDst4 = netip.MustParseAddrPort("10.244.1.2:5201")
	udpSrc6 = netip.MustParseAddrPort("[fd00:10:244::4]:40000")
	udpDst6 = netip.MustParseAddrPort("[fd00:10:244:1::2]:5201")
)

func udpDatagram(s udpSpec) []byte {
	if s.ttl == 0 {
		s.ttl = 63
	}
	ipLen := 20
	if s.src.Addr().Is6() {
		ipLen = 40
	} else if s.option {
		ipLen = 24
	}
	b := make([]byte, ipLen+8+len(s.payload))
	udp := header.UDP(b[ipLen:])
	udp.Encode(&header.UDPFields{SrcPort: s.src.Port(), DstPort: s.dst.Port(), Length: uint16(8 + len(s.payload) + s.udpLenOff)})
	copy(b[ipLen+8:], s.payload)
	src, dst := s.src.Addr().AsSlice(), s.dst.Addr().AsSlice()
	if s.src.Addr().Is6() {
		b[0] = 0x60 | s.tos>>4
		b[1] = s.tos<<4 | uint8(s.flowLabel>>16&0x0f)
		binary.BigEndian.PutUint16(b[2:], uint16(s.flowLabel))
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
		b[6], b[7] = protoUDP, s.ttl
		copy(b[8:], src)
		copy(b[24:], dst)
	} else {
		b[0] = 0x40 | uint8(ipLen/4)
		b[1] = s.tos
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], s.id)
		if s.df {
			b[6] = ipv4DF
		}
		if s.fragment {
			b[6] |= 0x20 // MF
		}
		b[8], b[9] = s.ttl, protoUDP
		copy(b[12:], src)
		copy(b[16:], dst)
		binary.BigEndian.PutUint16(b[10:], ^checksum.Checksum(b[:ipLen], 0))
		if s.badIPCsum {
			b[11] ^= 0x10
		}
	}
	if !s.noCsum {
		sum := ^checksum.Checksum(b[ipLen:], udpPseudoSum(checksum.Checksum(append(append([]byte{}, src...), dst...), 0), len(b)-ipLen))
		if sum == 0 {
			sum = 0xffff
		}
		if s.badCsum {
			sum ^= 0x0101
		}
		binary.BigEndian.PutUint16(b[ipLen+6:], sum)
	}
	return b
}

// udpFlow is n datagrams of size payload bytes each (the last last bytes,
// when last > 0) with consecutive IPv4 IDs; mod changes the specs first.
func udpFlow(v6 bool, n, size, last int, mod func(i int, s *udpSpec)) [][]byte {
	var out [][]byte
	for i := range n {
		s := udpSpec{src: udpSrc4, dst: udpDst4, id: 100 + uint16(i), df: true}
		if v6 {
			s.src, s.dst = udpSrc6, udpDst6
		}
		sz := size
		if last > 0 && i == n-1 {
			sz = last
		}
		s.payload = payloadOf(i*size, sz)
		if mod != nil {
			mod(i, &s)
		}
		out = append(out, udpDatagram(s))
	}
	return out
}

// addAll adds pkts to a fresh run the way the router does, and returns the
// groups of input indexes that became one output each.
func addAll(t *testing.T, pkts [][]byte) (outs [][]byte, infos []Info, groups [][]int) {
	t.Helper()
	var r UDPRun
	var cur []int
	emit := func() {
		if r.Len() == 0 {
			return
		}
		b, info := r.Packet()
		outs, infos, groups = append(outs, bytes.Clone(b)), append(infos, info), append(groups, cur)
		cur = nil
		r.Reset()
	}
	for i, b := range pkts {
		var p packet.Parsed
		p.Decode(b)
		if r.Add(b, &p) {
			cur = append(cur, i)
			continue
		}
		emit()
		if r.Add(b, &p) {
			cur = append(cur, i)
			continue
		}
		outs, infos, groups = append(outs, bytes.Clone(b)), append(infos, Info{}), append(groups, []int{i})
	}
	emit()
	return outs, infos, groups
}

// TestUDPRunRoundTrip: a run merged by UDPRun and split by SegmentUDP gives
// back the datagrams it was made of, byte for byte (IPv4 IDs incrementing,
// as the kernel's segmentation makes them), for both families and with a
// shorter last datagram.
func TestUDPRunRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name            string
		v6              bool
		n, size, last   int
		wantOutputs     int
		wantFirstGroupN int
	}{
		{"v4 equal", false, 10, 1400, 0, 1, 10},
		{"v4 shorter last", false, 5, 64, 20, 1, 5},
		{"v6", true, 8, 1000, 0, 1, 8},
		{"v4 64 KiB bound", false, 50, 1400, 0, 2, 46}, // 20+8+46*1400 = 64,428 ≤ 65,535
		{"v4 64 datagrams", false, 70, 10, 0, 2, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := udpFlow(tc.v6, tc.n, tc.size, tc.last, nil)
			outs, infos, groups := addAll(t, in)
			if len(outs) != tc.wantOutputs || len(groups[0]) != tc.wantFirstGroupN {
				t.Fatalf("%d datagrams became %d outputs, first of %d; want %d, first of %d", tc.n, len(outs), len(groups[0]), tc.wantOutputs, tc.wantFirstGroupN)
			}
			var back [][]byte
			for i, o := range outs {
				info := infos[i]
				if info.Type == None {
					back = append(back, o)
					continue
				}
				ipLen := 20
				if tc.v6 {
					ipLen = 40
				}
				if info.Type != UDPL4 || info.HdrLen != ipLen+8 || info.SegSize != tc.size || info.CsumStart != ipLen || info.CsumOffset != 6 {
					t.Fatalf("output %d: Info %+v, want UDP_L4, hdrLen %d, segSize %d, csum %d+6", i, info, ipLen+8, tc.size, ipLen)
				}
				// The checksum field holds the pseudo-header sum over the
				// whole UDP length, which the UDP length field gives.
				udpLen := int(binary.BigEndian.Uint16(o[ipLen+4:]))
				if udpLen != len(o)-ipLen {
					t.Errorf("output %d: UDP length %d, want %d", i, udpLen, len(o)-ipLen)
				}
				var addrs []byte
				if tc.v6 {
					addrs = o[8:40]
				} else {
					addrs = o[12:20]
					if !header.IPv4(o).IsChecksumValid() || int(binary.BigEndian.Uint16(o[2:])) != len(o) {
						t.Errorf("output %d: IPv4 header %x: bad checksum or total length", i, o[:20])
					}
				}
				if got, want := binary.BigEndian.Uint16(o[ipLen+6:]), udpPseudoSum(checksum.Checksum(addrs, 0), udpLen); got != want {
					t.Errorf("output %d: checksum field %#04x, want the pseudo-header sum %#04x", i, got, want)
				}
				need, err := SegmentedUDPSize(o, info.SegSize)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, need)
				n, size, total, err := SegmentUDP(o, info.SegSize, buf)
				if err != nil || total != need {
					t.Fatalf("SegmentUDP: %d, %d, %d, %v; want total %d", n, size, total, err, need)
				}
				for j := range n {
					back = append(back, buf[j*size:min((j+1)*size, total)])
				}
			}
			if len(back) != len(in) {
				t.Fatalf("split back into %d datagrams, want %d", len(back), len(in))
			}
			for i := range in {
				if !bytes.Equal(back[i], in[i]) {
					t.Errorf("datagram %d after the round trip:\n got %x\nwant %x", i, back[i], in[i])
				}
			}
		})
	}
}

// TestUDPRunRules: each rule of UDPRun keeps a datagram out of the run
// (starting a new one, or passing on alone), and only those.
func TestUDPRunRules(t *testing.T) {
	type groups = [][]int
	for _, tc := range []struct {
		name string
		v6   bool
		mod  func(i int, s *udpSpec) // applied to datagram 2 of 4
		want groups
	}{
		{"same flow", false, func(int, *udpSpec) {}, groups{{0, 1, 2, 3}}},
		{"bad checksum passes alone", false, func(_ int, s *udpSpec) { s.badCsum = true }, groups{{0, 1}, {2}, {3}}},
		{"no checksum passes alone", false, func(_ int, s *udpSpec) { s.noCsum = true }, groups{{0, 1}, {2}, {3}}},
		{"other source port", false, func(_ int, s *udpSpec) { s.src = netip.AddrPortFrom(s.src.Addr(), 1) }, groups{{0, 1}, {2}, {3}}},
		{"other destination", false, func(_ int, s *udpSpec) { s.dst = netip.MustParseAddrPort("10.244.1.3:5201") }, groups{{0, 1}, {2}, {3}}},
		{"other TTL", false, func(_ int, s *udpSpec) { s.ttl = 5 }, groups{{0, 1}, {2}, {3}}},
		{"other TOS", false, func(_ int, s *udpSpec) { s.tos = 4 }, groups{{0, 1}, {2}, {3}}},
		{"ID gap", false, func(_ int, s *udpSpec) { s.id += 7 }, groups{{0, 1}, {2}, {3}}},
		// A longer one starts a run of its own, which the next, shorter,
		// joins and closes.
		{"longer", false, func(_ int, s *udpSpec) { s.payload = payloadOf(0, 101) }, groups{{0, 1}, {2, 3}}},
		{"shorter closes the run", false, func(_ int, s *udpSpec) { s.payload = payloadOf(0, 50) }, groups{{0, 1, 2}, {3}}},
		{"empty", false, func(_ int, s *udpSpec) { s.payload = nil }, groups{{0, 1}, {2}, {3}}},
		{"fragment", false, func(_ int, s *udpSpec) { s.fragment = true }, groups{{0, 1}, {2}, {3}}},
		{"IPv4 options", false, func(_ int, s *udpSpec) { s.option = true }, groups{{0, 1}, {2}, {3}}},
		{"IPv4 header checksum wrong", false, func(_ int, s *udpSpec) { s.badIPCsum = true }, groups{{0, 1}, {2}, {3}}},
		{"UDP length wrong", false, func(_ int, s *udpSpec) { s.udpLenOff = -4 }, groups{{0, 1}, {2}, {3}}},
		{"v6 same flow", true, func(int, *udpSpec) {}, groups{{0, 1, 2, 3}}},
		{"v6 other flow label", true, func(_ int, s *udpSpec) { s.flowLabel = 9 }, groups{{0, 1}, {2}, {3}}},
		{"v6 bad checksum", true, func(_ int, s *udpSpec) { s.badCsum = true }, groups{{0, 1}, {2}, {3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := udpFlow(tc.v6, 4, 100, 0, func(i int, s *udpSpec) {
				if i == 2 {
					tc.mod(i, s)
				}
			})
			_, _, got := addAll(t, in)
			if !equalGroups(got, tc.want) {
				t.Errorf("groups %v, want %v", got, tc.want)
			}
		})
	}
	// The same ID twice is a run only with DF set.
	for _, df := range []bool{true, false} {
		in := udpFlow(false, 3, 100, 0, func(i int, s *udpSpec) { s.id, s.df = 7, df })
		_, _, got := addAll(t, in)
		want := groups{{0, 1, 2}}
		if !df {
			want = groups{{0}, {1}, {2}}
		}
		if !equalGroups(got, want) {
			t.Errorf("equal IDs, DF %t: groups %v, want %v", df, got, want)
		}
	}
	// Not UDP at all.
	var r UDPRun
	tcp := makePacket()
	var p packet.Parsed
	p.Decode(tcp)
	if r.Add(tcp, &p) || r.Len() != 0 {
		t.Errorf("a TCP segment joined a UDP run")
	}
	if b, info := r.Packet(); b != nil || info != (Info{}) {
		t.Errorf("empty run's Packet = %x, %+v; want nil", b, info)
	}
}

func equalGroups(a, b [][]int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

// TestSegmentUDPErrors: malformed input is an error naming the fault, never
// a panic.
func TestSegmentUDPErrors(t *testing.T) {
	good := udpFlow(false, 1, 300, 0, nil)[0]
	trunc := bytes.Clone(good)
	binary.BigEndian.PutUint16(trunc[2:], 9999)
	tcp := makePacket()
	for _, tc := range []struct {
		name    string
		pkt     []byte
		seg     int
		outLen  int
		wantErr string
	}{
		{"empty", nil, 100, 1000, "empty packet"},
		{"version", []byte{0x50, 0, 0, 0}, 100, 1000, "IP version 5"},
		{"total length", trunc, 100, 1000, "IPv4 total length 9999"},
		{"TCP", tcp, 100, 4000, "want UDP"},
		{"zero segment", good, 0, 1000, "segment size 0"},
		{"short out", good, 100, 10, "out holds 10 bytes"},
		{"no UDP header", good[:24], 100, 1000, "IPv4 total length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := SegmentUDP(tc.pkt, tc.seg, make([]byte, tc.outLen))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("SegmentUDP = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzSegmentUDP: any packet and segment size give an error or datagrams
// whose payloads, back to back, are the input's, each with valid checksums.
func FuzzSegmentUDP(f *testing.F) {
	f.Add(udpFlow(false, 1, 300, 0, nil)[0], 100)
	f.Add(udpFlow(true, 1, 300, 0, nil)[0], 7)
	f.Add([]byte{0x45}, 1)
	f.Fuzz(func(t *testing.T, pkt []byte, seg int) {
		need, err := SegmentedUDPSize(pkt, seg)
		if err != nil || need > 1<<20 {
			return
		}
		out := make([]byte, need)
		n, size, total, err := SegmentUDP(pkt, seg, out)
		if err != nil {
			t.Fatalf("SegmentUDP failed after SegmentedUDPSize passed: %v", err)
		}
		p, _ := parseUDP(pkt)
		var data []byte
		for i := range n {
			d := out[i*size : min((i+1)*size, total)]
			var pp packet.Parsed
			if f := pp.Decode(d); f != packet.FaultNone || pp.Length != len(d) {
				t.Fatalf("datagram %d of %d does not decode whole: %v", i, n, f)
			}
			sh := shape{v6: p.v6, ipLen: p.ipLen}
			if checksum.Checksum(d[p.ipLen:], udpPseudoSum(sh.addrSum(d), len(d)-p.ipLen)) != 0xffff {
				t.Fatalf("datagram %d: UDP checksum does not verify", i)
			}
			data = append(data, d[p.hdrLen:]...)
		}
		if !bytes.Equal(data, pkt[p.hdrLen:]) {
			t.Fatalf("payloads differ from the input's")
		}
	})
}

// FuzzUDPRun: whatever datagrams come, in any order and however mutated,
// the outputs of adding them to runs (as the router does) split back into
// exactly the datagrams added, in order — IPv4 IDs aside where DF allowed
// equal ones, which segmentation numbers afresh — and a datagram whose
// checksum does not verify only ever comes out unchanged, alone.
func FuzzUDPRun(f *testing.F) {
	f.Add(uint8(6), uint16(300), uint8(0), []byte{}, false)
	f.Add(uint8(20), uint16(1400), uint8(3), []byte{2, 30, 0x01}, true)
	f.Add(uint8(70), uint16(10), uint8(9), []byte{1, 4, 0x40, 5, 20, 0x80}, false)
	f.Fuzz(func(t *testing.T, n uint8, size uint16, last uint8, muts []byte, v6 bool) {
		if n == 0 || size == 0 || size > 2000 {
			return
		}
		in := udpFlow(v6, int(n), int(size), int(last), nil)
		for ; len(muts) >= 3; muts = muts[3:] {
			p := in[int(muts[0])%len(in)]
			p[int(muts[1])%len(p)] ^= muts[2]
		}
		outs, infos, groups := addAll(t, in)
		for k, o := range outs {
			info := infos[k]
			if info.Type == None {
				if len(groups[k]) != 1 || !bytes.Equal(o, in[groups[k][0]]) {
					t.Fatalf("output %d (plain) is not input %v unchanged", k, groups[k])
				}
				continue
			}
			need, err := SegmentedUDPSize(o, info.SegSize)
			if err != nil {
				t.Fatalf("output %d: %v", k, err)
			}
			buf := make([]byte, need)
			m, sz, total, err := SegmentUDP(o, info.SegSize, buf)
			if err != nil || m != len(groups[k]) {
				t.Fatalf("output %d: SegmentUDP = %d datagrams, %v; want %d", k, m, err, len(groups[k]))
			}
			for j, i := range groups[k] {
				got, want := bytes.Clone(buf[j*sz:min((j+1)*sz, total)]), bytes.Clone(in[i])
				if !v6 && want[6]&ipv4DF != 0 {
					// IDs may have been equal; compare without ID and
					// header checksum.
					got[4], got[5], got[10], got[11] = 0, 0, 0, 0
					want[4], want[5], want[10], want[11] = 0, 0, 0, 0
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("output %d, datagram %d (input %d):\n got %x\nwant %x", k, j, i, got, want)
				}
			}
		}
	})
}
