package tun

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	tcpipcsum "gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// completeChecksum finishes the partial checksum o describes in place, as
// the kernel would before delivering the packet:
// the one's complement of the sum of pkt[CsumStart:] (whose checksum field
// holds the pseudo-header sum) goes to CsumStart+CsumOffset. A UDP
// checksum (offset 6) that computes to 0 is sent as 0xffff. o must have
// passed check against pkt.
func completeChecksum(pkt []byte, o Offload) {
	if !o.NeedsCsum {
		return
	}
	at := int(o.CsumStart) + int(o.CsumOffset)
	sum := ^tcpipcsum.Checksum(pkt[o.CsumStart:], 0)
	if sum == 0 && o.CsumOffset == 6 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], sum)
}

// tcpv4Packet is a 20-byte IPv4 header and a 20-byte TCP header (data
// offset 5) followed by payload bytes; only the fields parseOffload reads
// are set.
func tcpv4Packet(payload int) []byte {
	p := make([]byte, 40+payload)
	p[0] = 0x45
	p[9] = 6
	p[20+12] = 5 << 4
	return p
}

func tcpv6Packet(payload int) []byte {
	p := make([]byte, 60+payload)
	p[0] = 0x60
	p[6] = 6
	p[40+12] = 8 << 4 // 12 bytes of options
	return p
}

func TestOffloadHeaderLayout(t *testing.T) {
	o := Offload{NeedsCsum: true, GSOType: GSOTCPv6, HdrLen: 0x0102, GSOSize: 0x0304, CsumStart: 0x0506, CsumOffset: 0x0708}
	var b [virtioNetHdrLen]byte
	putOffload(b[:], o)
	// struct virtio_net_hdr { u8 flags; u8 gso_type; le16 hdr_len;
	// le16 gso_size; le16 csum_start; le16 csum_offset; }
	want := [virtioNetHdrLen]byte{1, 4, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07}
	if b != want {
		t.Errorf("putOffload(%+v) = % x, want % x", o, b, want)
	}
	if got := getOffload(b[:]); got != o {
		t.Errorf("getOffload(% x) = %+v, want %+v", b, got, o)
	}
	putOffload(b[:], Offload{})
	if b != ([virtioNetHdrLen]byte{}) {
		t.Errorf("putOffload(Offload{}) = % x, want zeros", b)
	}
	// DATA_VALID (2) is not NEEDS_CSUM.
	if got := getOffload([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0}); got.NeedsCsum {
		t.Errorf("getOffload(flags 2) = %+v, want NeedsCsum false", got)
	}
}

func TestGSOTypeString(t *testing.T) {
	for _, tc := range []struct {
		t    GSOType
		want string
	}{
		{GSONone, "none"}, {GSOTCPv4, "tcpv4"}, {GSOTCPv6, "tcpv6"},
		{GSOTCPv4 | gsoECN, "tcpv4|ecn"}, {3, "GSOType(0x3)"}, {GSOUDPL4, "udp_l4"}, {0x85, "GSOType(0x85)"},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("GSOType(%#x).String() = %q, want %q", uint8(tc.t), got, tc.want)
		}
	}
}

func TestParseOffload(t *testing.T) {
	hdr := func(o Offload) []byte {
		b := make([]byte, virtioNetHdrLen)
		putOffload(b, o)
		return b
	}
	gso4 := Offload{NeedsCsum: true, GSOType: GSOTCPv4, HdrLen: 1234, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}
	uso4 := Offload{NeedsCsum: true, GSOType: GSOUDPL4, HdrLen: 1234, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}
	ipv4Bytes := func(n int) []byte { b := make([]byte, n); b[0] = 0x45; return b }
	with := func(o Offload, mod func(*Offload)) Offload { mod(&o); return o }
	for _, tc := range []struct {
		desc    string
		hdr     []byte
		pkt     []byte
		want    Offload // when wantErr is ""
		wantErr string
	}{
		{"plain packet", hdr(Offload{}), tcpv4Packet(10), Offload{}, ""},
		{"partial checksum", hdr(Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}), tcpv4Packet(0),
			Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, ""},
		{"UDP partial checksum", hdr(Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 6}), make([]byte, 28),
			Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 6}, ""},
		// hdr_len is recomputed: the kernel's is its linear buffer's length.
		{"TCPv4 super-packet", hdr(gso4), tcpv4Packet(3000), with(gso4, func(o *Offload) { o.HdrLen = 40 }), ""},
		{"TCPv6 super-packet with options", hdr(with(gso4, func(o *Offload) { o.GSOType, o.CsumStart = GSOTCPv6, 40 })), tcpv6Packet(3000),
			with(gso4, func(o *Offload) { o.GSOType, o.CsumStart, o.HdrLen = GSOTCPv6, 40, 72 }), ""},
		{"UDPv4 super-packet", hdr(uso4), ipv4Bytes(3028), with(uso4, func(o *Offload) { o.HdrLen = 28 }), ""},
		{"UDPv6 super-packet", hdr(with(uso4, func(o *Offload) { o.CsumStart = 40 })), append([]byte{0x60}, make([]byte, 3047)...),
			with(uso4, func(o *Offload) { o.CsumStart, o.HdrLen = 40, 48 }), ""},
		{"ECN is reported as-is", hdr(with(gso4, func(o *Offload) { o.GSOType |= gsoECN })), tcpv4Packet(3000),
			with(gso4, func(o *Offload) { o.GSOType, o.HdrLen = GSOTCPv4|gsoECN, 40 }), ""},

		{"short header", make([]byte, 9), tcpv4Packet(0), Offload{}, "9 bytes, want 10"},
		{"checksum past the end", hdr(Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}), tcpv4Packet(0)[:37], Offload{}, "checksum at 20+16 is past the end of the 37-byte packet"},
		{"checksum offset overflow", hdr(Offload{NeedsCsum: true, CsumStart: 0xffff, CsumOffset: 0xffff}), tcpv4Packet(0), Offload{}, "past the end"},
		{"UDP GSO", hdr(with(gso4, func(o *Offload) { o.GSOType = 3 })), tcpv4Packet(3000), Offload{}, "unknown gso_type 0x3"},
		{"USO with a TCP checksum offset", hdr(with(gso4, func(o *Offload) { o.GSOType = GSOUDPL4 })), tcpv4Packet(3000), Offload{}, "without a UDP partial checksum"},
		{"USO with ECN", hdr(with(uso4, func(o *Offload) { o.GSOType |= gsoECN })), make([]byte, 3028), Offload{}, "ECN flag on a UDP super-packet"},
		{"USO UDP header cut", hdr(uso4), ipv4Bytes(24), Offload{}, "past the end of the 24-byte packet"},
		{"USO on IPv5", hdr(uso4), append([]byte{0x50}, make([]byte, 40)...), Offload{}, "neither IPv4 nor IPv6"},
		{"USO size 0", hdr(with(uso4, func(o *Offload) { o.GSOSize = 0 })), ipv4Bytes(3028), Offload{}, "gso_size 0"},
		{"ECN alone", hdr(Offload{GSOType: gsoECN}), tcpv4Packet(0), Offload{}, "ECN flag without a GSO type"},
		{"TCPv4 on IPv6", hdr(with(gso4, func(o *Offload) { o.CsumStart = 40 })), tcpv6Packet(3000), Offload{}, "not IPv4"},
		{"TCPv6 on IPv4", hdr(with(gso4, func(o *Offload) { o.GSOType = GSOTCPv6 })), tcpv4Packet(3000), Offload{}, "not IPv6"},
		{"empty packet", hdr(gso4), nil, Offload{}, "past the end of the 0-byte packet"},
		{"GSO without NEEDS_CSUM", hdr(with(gso4, func(o *Offload) { o.NeedsCsum = false })), tcpv4Packet(3000), Offload{}, "without a TCP partial checksum"},
		{"GSO with UDP checksum offset", hdr(with(gso4, func(o *Offload) { o.CsumOffset = 6 })), tcpv4Packet(3000), Offload{}, "csum_offset 6"},
		{"GSO size 0", hdr(with(gso4, func(o *Offload) { o.GSOSize = 0 })), tcpv4Packet(3000), Offload{}, "gso_size 0"},
		{"csum_start in IPv4 header", hdr(with(gso4, func(o *Offload) { o.CsumStart = 4 })), tcpv4Packet(3000), Offload{}, "csum_start 4 is inside the IPv4 header"},
		{"csum_start in IPv6 header", hdr(with(gso4, func(o *Offload) { o.GSOType, o.CsumStart = GSOTCPv6, 20 })), tcpv6Packet(3000), Offload{}, "inside the IPv6 header"},
		{"TCP header cut", hdr(gso4), tcpv4Packet(0)[:38], Offload{}, "TCP header at 20 is past the end of the 38-byte packet"},
		{"TCP data offset too small", hdr(gso4), func() []byte { p := tcpv4Packet(100); p[32] = 4 << 4; return p }(), Offload{}, "TCP data offset 16"},
		{"TCP options past the end", hdr(gso4), func() []byte { p := tcpv4Packet(0); p[32] = 15 << 4; return p }(), Offload{}, "TCP data offset 60"},
	} {
		got, err := parseOffload(tc.hdr, tc.pkt)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: parseOffload = %v, want %+v", tc.desc, err, tc.want)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("%s: parseOffload = %+v, want %+v", tc.desc, got, tc.want)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, ErrBadOffload) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: parseOffload = %+v, %v; want an error wrapping ErrBadOffload containing %q", tc.desc, got, err, tc.wantErr)
		}
	}
}

func TestCompleteChecksum(t *testing.T) {
	// A UDP datagram 10.0.0.1:1 > 10.0.0.2:2 whose checksum field holds
	// the pseudo-header sum, as the kernel leaves it.
	for _, payload := range [][]byte{[]byte("hello, offload"), []byte("odd"), nil} {
		p := make([]byte, 28+len(payload))
		p[0], p[9] = 0x45, 17
		copy(p[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(p[20:], 1)
		binary.BigEndian.PutUint16(p[22:], 2)
		binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
		copy(p[28:], payload)
		pseudo := pseudoSum(p[12:16], p[16:20], 17, 8+len(payload))
		binary.BigEndian.PutUint16(p[26:], ^inetChecksum(nil, pseudo))
		completeChecksum(p, Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 6})
		if got := inetChecksum(p[20:], pseudo); got != 0 {
			t.Errorf("completeChecksum(UDP %q): checksum %#04x does not verify (sum %#04x)", payload, binary.BigEndian.Uint16(p[26:]), got)
		}
		before := append([]byte(nil), p...)
		completeChecksum(p, Offload{CsumStart: 20, CsumOffset: 6})
		if string(before) != string(p) {
			t.Errorf("completeChecksum without NeedsCsum changed the packet")
		}
	}
	// A UDP checksum that computes to 0 goes out as 0xffff: a payload
	// that makes the segment's sum 0xffff.
	p := make([]byte, 30)
	copy(p[20:], []byte{0, 0, 0, 0, 0, 10, 0, 0})
	binary.BigEndian.PutUint16(p[28:], 0xffff-10)
	completeChecksum(p, Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 6})
	if got := binary.BigEndian.Uint16(p[26:]); got != 0xffff {
		t.Errorf("completeChecksum of a UDP sum of 0xffff stored %#04x, want 0xffff", got)
	}
}

// inetChecksum is the Internet checksum of b starting from the unfolded
// sum initial; over data that includes a correct checksum it is 0.
func inetChecksum(b []byte, initial uint32) uint16 {
	sum := initial
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoSum is the unfolded sum of the pseudo-header for a transport
// segment of n bytes between addresses src and dst (4 or 16 bytes).
func pseudoSum(src, dst []byte, proto uint8, n int) uint32 {
	var sum uint32
	for i := 0; i+1 < len(src); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return sum + uint32(proto) + uint32(n)
}

// FuzzParseOffload: whatever header and packet the kernel hands over,
// parseOffload does not panic, and when it accepts them the offsets it
// returns lie inside the packet, so that completeChecksum cannot panic.
func FuzzParseOffload(f *testing.F) {
	add := func(o Offload, pkt []byte) {
		b := make([]byte, virtioNetHdrLen)
		putOffload(b, o)
		f.Add(append(b, pkt...))
	}
	add(Offload{}, tcpv4Packet(10))
	add(Offload{NeedsCsum: true, GSOType: GSOTCPv4, HdrLen: 40, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, tcpv4Packet(3000))
	add(Offload{NeedsCsum: true, GSOType: GSOTCPv6, HdrLen: 72, GSOSize: 1000, CsumStart: 40, CsumOffset: 16}, tcpv6Packet(3000))
	add(Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 6}, make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		hdr, pkt := b[:min(len(b), virtioNetHdrLen)], b[min(len(b), virtioNetHdrLen):]
		o, err := parseOffload(hdr, pkt)
		if err != nil {
			if !errors.Is(err, ErrBadOffload) {
				t.Fatalf("parseOffload error %v does not wrap ErrBadOffload", err)
			}
			return
		}
		if o.NeedsCsum && int(o.CsumStart)+int(o.CsumOffset)+2 > len(pkt) {
			t.Fatalf("parseOffload accepted %+v for a %d-byte packet", o, len(pkt))
		}
		if o.GSOType != GSONone && (int(o.HdrLen) > len(pkt) || o.HdrLen < o.CsumStart+20) {
			t.Fatalf("parseOffload returned HdrLen %d for a %d-byte packet (%+v)", o.HdrLen, len(pkt), o)
		}
		completeChecksum(pkt, o)
	})
}
