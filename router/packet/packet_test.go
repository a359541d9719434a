package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	src4 = netip.MustParseAddr("10.244.0.4")
	dst4 = netip.MustParseAddr("10.244.1.2")
	src6 = netip.MustParseAddr("fd00:10:244::4")
	dst6 = netip.MustParseAddr("fd00:10:244:1::2")
)

// ipv4 builds an IPv4 packet of proto around l4, with header options of
// opts bytes.
func ipv4(proto uint8, opts int, l4 []byte) []byte {
	ihl := ipv4MinLen + opts
	b := make([]byte, ihl+len(l4))
	header.IPv4(b).Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: proto,
		SrcAddr: TCPIPAddr(src4), DstAddr: TCPIPAddr(dst4)})
	b[0] = 0x40 | byte(ihl/4)
	copy(b[ihl:], l4)
	return b
}

// ipv6 builds an IPv6 packet whose next header is next around rest.
func ipv6(next uint8, rest []byte) []byte {
	b := make([]byte, ipv6Len+len(rest))
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(rest)), TransportProtocol: tcpip.TransportProtocolNumber(next),
		HopLimit: 9, SrcAddr: TCPIPAddr(src6), DstAddr: TCPIPAddr(dst6)})
	copy(b[ipv6Len:], rest)
	return b
}

// tcpHdr is a TCP header with data offset off bytes and flags, ports
// 40000 → 80, followed by payload bytes.
func tcpHdr(off int, flags uint8, payload int) []byte {
	b := make([]byte, max(off, tcpMinLen)+payload)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], 80)
	b[12], b[13] = byte(off/4)<<4, flags
	return b
}

// udpHdr is a UDP header with length field n, ports 5353 → 53, followed
// by payload bytes.
func udpHdr(n, payload int) []byte {
	b := make([]byte, udpLen+payload)
	binary.BigEndian.PutUint16(b[0:], 5353)
	binary.BigEndian.PutUint16(b[2:], 53)
	binary.BigEndian.PutUint16(b[4:], uint16(n))
	return b
}

func TestDecode(t *testing.T) {
	frag := func(fo uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], fo); return b }
	}
	pad := func(b []byte) []byte { return append(b, 0, 0, 0, 0) }
	tests := []struct {
		name  string
		b     []byte
		fault Fault
		want  Parsed // checked when fault is FaultNone
	}{
		{"empty", nil, FaultShort, Parsed{}},
		{"not IP", []byte{0x55, 0, 0, 0}, FaultNotIP, Parsed{}},
		{"IPv4 short", append([]byte{0x45}, make([]byte, 18)...), FaultShort, Parsed{}},
		{"IPv4 header length 16", func() []byte { b := ipv4(TCP, 0, tcpHdr(20, 0x02, 0)); b[0] = 0x44; return b }(), FaultMalformed, Parsed{}},
		{"IPv4 total length past the bytes", ipv4(TCP, 0, tcpHdr(20, 0x02, 0))[:39], FaultTruncated, Parsed{}},
		{"TCP data offset past the segment", ipv4(TCP, 0, tcpHdr(20, 0x02, 0)[:20:20]), FaultNone,
			Parsed{Version: 4, Length: 40, Proto: TCP, L4: 20, TTL: 64, Src: src4, Dst: dst4, HasPorts: true, SrcPort: 40000, DstPort: 80, TCPFlags: 0x02, TransportEnd: 40}},
		{"TCP data offset 60 in 40 bytes", ipv4(TCP, 0, tcpHdr(60, 0x02, 0)[:40]), FaultMalformed, Parsed{}},
		{"UDP length past the datagram", ipv4(UDP, 0, udpHdr(20, 4)), FaultMalformed, Parsed{}},
		{"UDP, padded", pad(ipv4(UDP, 0, udpHdr(12, 4))), FaultNone,
			Parsed{Version: 4, Length: 32, Proto: UDP, L4: 20, TTL: 64, Src: src4, Dst: dst4, HasPorts: true, SrcPort: 5353, DstPort: 53}},
		{"IPv4 options", ipv4(TCP, 4, tcpHdr(24, 0x10, 10)), FaultNone,
			Parsed{Version: 4, Length: 58, Proto: TCP, L4: 24, TTL: 64, Src: src4, Dst: dst4, HasPorts: true, SrcPort: 40000, DstPort: 80, TCPFlags: 0x10, TransportEnd: 48}},
		{"first fragment", frag(0x2000)(ipv4(UDP, 0, udpHdr(100, 4))), FaultNone,
			Parsed{Version: 4, Length: 32, Proto: UDP, L4: 20, TTL: 64, Src: src4, Dst: dst4, MoreFragments: true, HasPorts: true, SrcPort: 5353, DstPort: 53}},
		{"later fragment", frag(0x0003)(ipv4(UDP, 0, udpHdr(100, 4))), FaultNone,
			Parsed{Version: 4, Length: 32, Proto: UDP, L4: 20, TTL: 64, Src: src4, Dst: dst4, FragOffset: 24}},
		{"ICMP cut short", ipv4(ICMPv4, 0, make([]byte, 4)), FaultMalformed, Parsed{}},
		{"IPv6 short", append([]byte{0x60}, make([]byte, 38)...), FaultShort, Parsed{}},
		{"IPv6 payload past the bytes", ipv6(UDP, udpHdr(8, 0))[:47], FaultTruncated, Parsed{}},
		{"IPv6 TCP", ipv6(TCP, tcpHdr(32, 0x18, 3)), FaultNone,
			Parsed{Version: 6, Length: 75, Proto: TCP, L4: 40, TTL: 9, Src: src6, Dst: dst6, HasPorts: true, SrcPort: 40000, DstPort: 80, TCPFlags: 0x18, TransportEnd: 72}},
		{"IPv6 hop-by-hop then bad UDP", ipv6(0, append([]byte{UDP, 0, 0, 0, 0, 0, 0, 0}, udpHdr(99, 0)...)), FaultMalformed, Parsed{}},
		{"IPv6 hop-by-hop then UDP", ipv6(0, append([]byte{UDP, 0, 0, 0, 0, 0, 0, 0}, udpHdr(8, 0)...)), FaultNone,
			Parsed{Version: 6, Length: 56, Proto: 0, L4: 40, TTL: 9, Src: src6, Dst: dst6}},
	}
	for _, tt := range tests {
		var p Parsed
		got := p.Decode(tt.b)
		if got != tt.fault {
			t.Errorf("%s: Decode = fault %d, want %d", tt.name, got, tt.fault)
			continue
		}
		if got == FaultNone && p != tt.want {
			t.Errorf("%s: Decode = %+v, want %+v", tt.name, p, tt.want)
		}
	}
}

// Decode reuses the Parsed: nothing of an earlier packet stays.
func TestDecodeResets(t *testing.T) {
	var p Parsed
	p.Decode(ipv4(TCP, 0, tcpHdr(20, 0x02, 0)))
	if f := p.Decode(ipv6(44, make([]byte, 8))); f != FaultNone || p.HasPorts || p.TransportEnd != 0 || p.TCPFlags != 0 {
		t.Errorf("Decode(IPv6 fragment header) after a TCP packet = %d, %+v; want no ports, flags or transport end", f, p)
	}
}

func TestDecodeAllocs(t *testing.T) {
	b := ipv4(TCP, 0, tcpHdr(20, 0x02, 100))
	var p Parsed
	if n := testing.AllocsPerRun(100, func() { p.Decode(b) }); n != 0 {
		t.Errorf("Decode allocated %v times, want 0", n)
	}
}

func TestDecodeQuoted(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"IPv4 UDP, 8 bytes quoted", ipv4(UDP, 0, udpHdr(100, 0)), true},
		{"IPv4 TCP, ports only", ipv4(TCP, 0, tcpHdr(20, 0, 0))[:24], true},
		{"IPv4 TCP, 3 bytes", ipv4(TCP, 0, tcpHdr(20, 0, 0))[:23], false},
		{"IPv4 ICMP", ipv4(ICMPv4, 0, make([]byte, 8)), false},
		{"IPv6 UDP", ipv6(UDP, udpHdr(8, 0)), true},
		{"IPv6 short", ipv6(UDP, udpHdr(8, 0))[:39], false},
		{"not IP", []byte{0x00, 1, 2, 3}, false},
	}
	for _, tt := range tests {
		var p Parsed
		if got := p.DecodeQuoted(tt.b); got != tt.ok {
			t.Errorf("%s: DecodeQuoted = %v, want %v", tt.name, got, tt.ok)
			continue
		}
		if tt.ok && (!p.HasPorts || p.SrcPort == 0 || p.DstPort == 0 || !p.Src.IsValid() || !p.Dst.IsValid()) {
			t.Errorf("%s: DecodeQuoted = %+v, want addresses and ports", tt.name, p)
		}
	}
}

func TestAddrConverters(t *testing.T) {
	for _, s := range []string{"10.244.0.4", "fd00::1", "::ffff:10.1.2.3"} {
		a := netip.MustParseAddr(s)
		if got := NetipAddr(TCPIPAddr(a)); got != a {
			t.Errorf("NetipAddr(TCPIPAddr(%s)) = %s, want it back", a, got)
		}
	}
	if got := TCPIPAddr(netip.Addr{}); got.Len() != 0 {
		t.Errorf("TCPIPAddr(zero Addr) = %v, want the empty Address", got)
	}
	if got := NetipAddr(tcpip.Address{}); got.IsValid() {
		t.Errorf("NetipAddr(empty Address) = %s, want the zero Addr", got)
	}
}
