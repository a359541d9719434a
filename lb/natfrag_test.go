package lb

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// fragment4 cuts the IPv4 packet b into fragments of at most chunk payload
// bytes (a multiple of 8) with identification id, as a host would send
// them.
func fragment4(b []byte, chunk int, id uint16) [][]byte {
	hdr, payload := b[:header.IPv4MinimumSize], b[header.IPv4MinimumSize:]
	var out [][]byte
	for off := 0; off < len(payload); off += chunk {
		end := min(off+chunk, len(payload))
		f := append(append([]byte(nil), hdr...), payload[off:end]...)
		ip := header.IPv4(f)
		ip.SetTotalLength(uint16(len(f)))
		ip.SetID(id)
		flags := uint8(0)
		if end < len(payload) {
			flags = header.IPv4FlagMoreFragments
		}
		ip.SetFlagsFragmentOffset(flags, uint16(off))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		out = append(out, f)
	}
	return out
}

// reassemble4 joins translated IPv4 fragments back into one packet, as
// their receiver does, and fails the test if they disagree on the
// datagram they belong to or carry a bad header checksum.
func reassemble4(t *testing.T, frags [][]byte) []byte {
	t.Helper()
	first := header.IPv4(frags[0])
	var payload []byte
	for i, f := range frags {
		ip := header.IPv4(f)
		if !ip.IsChecksumValid() {
			t.Fatalf("fragment %d: IPv4 header checksum invalid after translation", i)
		}
		if ip.SourceAddress() != first.SourceAddress() || ip.DestinationAddress() != first.DestinationAddress() || ip.ID() != first.ID() {
			t.Fatalf("fragment %d: %s -> %s id %d, but the first went %s -> %s id %d: the receiver cannot reassemble them",
				i, ip.SourceAddress(), ip.DestinationAddress(), ip.ID(), first.SourceAddress(), first.DestinationAddress(), first.ID())
		}
		if int(ip.FragmentOffset()) != len(payload) {
			t.Fatalf("fragment %d at offset %d, want %d", i, ip.FragmentOffset(), len(payload))
		}
		payload = append(payload, ip.Payload()...)
	}
	b := append(append([]byte(nil), frags[0][:header.IPv4MinimumSize]...), payload...)
	ip := header.IPv4(b)
	ip.SetTotalLength(uint16(len(b)))
	ip.SetFlagsFragmentOffset(0, 0)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

// sendAll shows each fragment to n in order and returns how many passed.
func sendAll(t *testing.T, n *NAT, fromTUN bool, frags [][]byte) int {
	t.Helper()
	passed := 0
	for _, f := range frags {
		if pass, _ := ingress(t, n, fromTUN, f); pass {
			passed++
		}
	}
	return passed
}

func TestNATTranslatesFragmentsBothWays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend string
		local   bool
	}{
		{"local backend (hairpin)", "10.244.0.2", true},
		{"remote backend", "10.244.1.7", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS(func(s *Service) {
				s.Endpoints = []Endpoint{makeEndpoint(tc.backend)}
			}))
			// A 3,000-byte request from the client, cut for a 1,500-byte MTU.
			query := strings.Repeat("q", 3000)
			req := udp4(clientA, dnsVIP, query)
			frags := fragment4(req, 1480, 4242)
			if got := sendAll(t, n, true, frags); got != len(frags) {
				t.Fatalf("%d of %d request fragments passed", got, len(frags))
			}
			src, dst := tuple(t, reassemble4(t, frags))
			wantSrc := clientA
			if tc.local {
				wantSrc = netip.AddrPortFrom(routerAddr, clientA.Port())
			}
			if dst != netip.MustParseAddrPort(tc.backend+":53") || src != wantSrc {
				t.Errorf("reassembled request %s -> %s, want %s -> %s:53", src, dst, wantSrc, tc.backend)
			}
			if p := n.Stats().FragmentsPending; p != 0 {
				t.Errorf("FragmentsPending = %d after the last fragment, want 0", p)
			}

			// The backend's 3,000-byte answer comes back in fragments too.
			answer := strings.Repeat("a", 3000)
			resp := udp4(dst, src, answer)
			rfrags := fragment4(resp, 1480, 777)
			if got := sendAll(t, n, tc.local, rfrags); got != len(rfrags) {
				t.Fatalf("%d of %d answer fragments passed", got, len(rfrags))
			}
			whole := reassemble4(t, rfrags)
			rs, rd := tuple(t, whole)
			if rs != dnsVIP || rd != clientA {
				t.Errorf("reassembled answer %s -> %s, want %s -> %s", rs, rd, dnsVIP, clientA)
			}
			if got := string(header.UDP(header.IPv4(whole).Payload()).Payload()); got != answer {
				t.Errorf("answer payload changed by translation")
			}
			if st := n.Stats(); st.Fragments != 0 || st.Flows != 1 {
				t.Errorf("stats = %+v, want 1 flow and no fragment dropped", st)
			}
		})
	}
}

func TestNATFragmentsOfOtherTrafficPassUntouched(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS())
	pod := netip.MustParseAddrPort("10.244.1.5:53")
	frags := fragment4(udp4(clientA, pod, strings.Repeat("x", 2000)), 1480, 9)
	orig := make([][]byte, len(frags))
	for i, f := range frags {
		orig[i] = slices.Clone(f)
	}
	if got := sendAll(t, n, true, frags); got != len(frags) {
		t.Fatalf("%d of %d fragments to a pod passed", got, len(frags))
	}
	for i := range frags {
		if !bytes.Equal(frags[i], orig[i]) {
			t.Errorf("fragment %d to a pod was changed", i)
		}
	}
	// A later fragment whose first was never seen passes as it came.
	lone := fragment4(udp4(clientA, dnsVIP, strings.Repeat("x", 2000)), 1480, 10)[1]
	if pass, _ := ingress(t, n, true, lone); !pass || header.IPv4(lone).DestinationAddress() != packet.TCPIPAddr(dnsVIP.Addr()) {
		t.Errorf("a later fragment without its first: pass %v, dst %s; want it passed untouched", pass, header.IPv4(lone).DestinationAddress())
	}
}

func TestNATFragmentTimeout(t *testing.T) {
	n, _, clk := newTestNAT(t, NATOptions{}, makeKubeDNS())
	frags := fragment4(udp4(clientA, dnsVIP, strings.Repeat("x", 3000)), 1480, 5)
	if pass, _ := ingress(t, n, true, frags[0]); !pass {
		t.Fatal("first fragment dropped")
	}
	clk.Advance(fragTimeout - time.Second)
	if pass, _ := ingress(t, n, true, frags[1]); !pass || header.IPv4(frags[1]).DestinationAddress() == packet.TCPIPAddr(dnsVIP.Addr()) {
		t.Fatalf("middle fragment within %v: pass %v, dst %s; want it translated", fragTimeout, pass, header.IPv4(frags[1]).DestinationAddress())
	}
	clk.Advance(2 * time.Second)
	if pass, _ := ingress(t, n, true, frags[2]); pass {
		t.Errorf("last fragment %v after the first passed, want it dropped (its datagram timed out)", fragTimeout+time.Second)
	}
	if st := n.Stats(); st.Fragments != 1 || st.FragmentsPending != 0 {
		t.Errorf("stats: Fragments %d, FragmentsPending %d; want 1, 0", st.Fragments, st.FragmentsPending)
	}
}

func TestNATFragmentTableBounded(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS())
	// maxFragDatagrams+1 datagrams whose later fragments never come: the
	// oldest gives way, and is counted.
	var oldest [][]byte
	for i := range maxFragDatagrams + 1 {
		frags := fragment4(udp4(clientA, dnsVIP, strings.Repeat("x", 2000)), 1480, uint16(i))
		if i == 0 {
			oldest = frags
		}
		if pass, _ := ingress(t, n, true, frags[0]); !pass {
			t.Fatalf("first fragment %d dropped", i)
		}
	}
	st := n.Stats()
	if st.FragmentsPending != maxFragDatagrams || st.Fragments != 1 {
		t.Fatalf("after %d datagrams: FragmentsPending %d, Fragments %d; want %d, 1", maxFragDatagrams+1, st.FragmentsPending, st.Fragments, maxFragDatagrams)
	}
	if _, ok, _ := n.frags.lookup(fragKey{src: clientA.Addr(), dst: dnsVIP.Addr(), id: 0, proto: packet.UDP}, n.clock.Now().UnixNano(), false); ok {
		t.Errorf("the oldest datagram is still awaited in a full table")
	}
	// Its last fragment now passes untranslated (lost at the VIP).
	ingress(t, n, true, oldest[1])
	if header.IPv4(oldest[1]).DestinationAddress() != packet.TCPIPAddr(dnsVIP.Addr()) {
		t.Errorf("evicted datagram's fragment translated to %s", header.IPv4(oldest[1]).DestinationAddress())
	}
}

// udp6Fragments builds a UDP datagram over IPv6 and cuts it into
// fragments of at most chunk payload bytes (a multiple of 8).
func udp6Fragments(src, dst netip.AddrPort, payload string, chunk int, id uint32) [][]byte {
	ulen := header.UDPMinimumSize + len(payload)
	u := header.UDP(make([]byte, ulen))
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(ulen)})
	copy(u.Payload(), payload)
	s, d := packet.TCPIPAddr(src.Addr()), packet.TCPIPAddr(dst.Addr())
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, d, uint16(ulen))
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum([]byte(payload), xsum)))
	var out [][]byte
	for off := 0; off < ulen; off += chunk {
		end := min(off+chunk, ulen)
		b := make([]byte, header.IPv6MinimumSize+8+end-off)
		header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(8 + end - off), TransportProtocol: ipv6FragmentHeader,
			HopLimit: 64, SrcAddr: s, DstAddr: d})
		fh := b[header.IPv6MinimumSize:]
		fh[0] = uint8(header.UDPProtocolNumber)
		om := uint16(off)
		if end < ulen {
			om |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], om)
		binary.BigEndian.PutUint32(fh[4:], id)
		copy(fh[8:], u[off:end])
		out = append(out, b)
	}
	return out
}

// reassemble6 returns the addresses and UDP datagram of IPv6 fragments,
// checking they agree and that the UDP checksum holds.
func reassemble6(t *testing.T, frags [][]byte) (src, dst netip.AddrPort, payload string) {
	t.Helper()
	first := header.IPv6(frags[0])
	var u []byte
	for i, f := range frags {
		ip := header.IPv6(f)
		if ip.SourceAddress() != first.SourceAddress() || ip.DestinationAddress() != first.DestinationAddress() {
			t.Fatalf("fragment %d: %s -> %s, but the first went %s -> %s", i, ip.SourceAddress(), ip.DestinationAddress(), first.SourceAddress(), first.DestinationAddress())
		}
		u = append(u, f[header.IPv6MinimumSize+8:]...)
	}
	ud := header.UDP(u)
	if !ud.IsChecksumValid(first.SourceAddress(), first.DestinationAddress(), checksum.Checksum(ud.Payload(), 0)) {
		t.Fatalf("UDP checksum invalid after translation")
	}
	sa, da := first.SourceAddress(), first.DestinationAddress()
	s, _ := netip.AddrFromSlice(sa.AsSlice())
	d, _ := netip.AddrFromSlice(da.AsSlice())
	return netip.AddrPortFrom(s, ud.SourcePort()), netip.AddrPortFrom(d, ud.DestinationPort()), string(ud.Payload())
}

func TestNATTranslatesIPv6Fragments(t *testing.T) {
	vip6 := netip.MustParseAddrPort("[fd00:10:96::a]:53")
	backend := netip.MustParseAddrPort("[fd00:10:244:1::7]:53")
	client := netip.MustParseAddrPort("[fd00:10:244::9]:40000")
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS(func(s *Service) {
		s.ClusterIPs = []netip.Addr{vip6.Addr()}
		s.Endpoints = []Endpoint{makeEndpoint(backend.Addr().String())}
	}))
	frags := udp6Fragments(client, vip6, strings.Repeat("q", 3000), 1232, 0xabcdef)
	if got := sendAll(t, n, true, frags); got != len(frags) {
		t.Fatalf("%d of %d request fragments passed", got, len(frags))
	}
	if s, d, _ := reassemble6(t, frags); s != client || d != backend {
		t.Errorf("reassembled request %s -> %s, want %s -> %s", s, d, client, backend)
	}
	answer := strings.Repeat("a", 3000)
	rfrags := udp6Fragments(backend, client, answer, 1232, 0x1234)
	if got := sendAll(t, n, false, rfrags); got != len(rfrags) {
		t.Fatalf("%d of %d answer fragments passed", got, len(rfrags))
	}
	if s, d, p := reassemble6(t, rfrags); s != vip6 || d != client || p != answer {
		t.Errorf("reassembled answer %s -> %s (payload intact %v), want %s -> %s", s, d, p == answer, vip6, client)
	}
}

// TestNATMalformedFragments shows the NAT fragments that contradict
// themselves: none may panic, and none may leave state behind.
func TestNATMalformedFragments(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS())
	whole := udp4(clientA, dnsVIP, strings.Repeat("x", 3000))
	frags := fragment4(whole, 1480, 1)
	ingress(t, n, true, frags[0])
	ingress(t, n, true, frags[0]) // duplicate first fragment
	// Overlapping and huge offsets: the receiver's reassembly judges
	// them; the NAT translates what matches the datagram.
	for _, off := range []uint16{8, 0x1fff * 8, 1480} {
		f := slices.Clone(frags[1])
		ip := header.IPv4(f)
		ip.SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, off)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		ingress(t, n, true, f)
	}
	// A first fragment too short to hold the UDP header: no ports.
	short := slices.Clone(frags[0][:header.IPv4MinimumSize+4])
	header.IPv4(short).SetTotalLength(uint16(len(short)))
	var p packet.Parsed
	if p.Decode(short) == packet.FaultNone {
		n.Ingress(true, &p, short)
	}
	// IPv6 fragment headers cut short or with other payloads.
	for _, b := range [][]byte{
		udp6Fragments(clientA6(), netip.MustParseAddrPort("[fd00::1]:53"), "x", 8, 1)[0][:44],
	} {
		var p packet.Parsed
		if p.Decode(b) == packet.FaultNone {
			n.Ingress(true, &p, b)
		}
	}
	ingress(t, n, true, frags[2]) // the real last fragment ends the datagram
	if st := n.Stats(); st.FragmentsPending != 0 {
		t.Errorf("FragmentsPending = %d after the last fragment, want 0", st.FragmentsPending)
	}
}

func clientA6() netip.AddrPort { return netip.MustParseAddrPort("[fd00:10:244::9]:40000") }
