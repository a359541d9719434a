package router

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// tcpBadOffset is an IPv4 TCP segment whose data offset (15 words) points
// past its 20-byte header: gVisor's checksum code slices by it.
func tcpBadOffset(src, dst netip.Addr) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	b[header.IPv4MinimumSize+12] = 0xf0
	return b
}

func TestMalformedTransportHeadersAreDropped(t *testing.T) {
	nw, a, b := seedPair(t, Options{})
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"tcp data offset past the segment", tcpBadOffset(addr("10.244.1.2"), addr("10.244.0.4"))},
		{"udp length past the datagram", func() []byte {
			p := udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("x"))
			binary.BigEndian.PutUint16(p[header.IPv4MinimumSize+4:], 200)
			return p
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name+" over the overlay", func(t *testing.T) {
			before := a.r.Stats().Drops[DropMalformed]
			nw.Send(b.underlay, a.underlay, tc.pkt)
			waitFor(t, "malformed drop", func() bool { return a.r.Stats().Drops[DropMalformed] == before+1 })
		})
		t.Run(tc.name+" from the TUN", func(t *testing.T) {
			p := append([]byte(nil), tc.pkt...)
			// Swap the addresses: a local pod sends it towards b.
			copy(p[12:16], []byte{10, 244, 0, 4})
			copy(p[16:20], []byte{10, 244, 1, 2})
			header.IPv4(p).SetChecksum(0)
			header.IPv4(p).SetChecksum(^header.IPv4(p).CalculateChecksum())
			before := a.r.Stats().Drops[DropMalformed]
			a.tun.send(p)
			waitFor(t, "malformed drop", func() bool { return a.r.Stats().Drops[DropMalformed] == before+1 })
		})
	}
	// The routers survived and still forward.
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("ok")))
	b.tun.recv(t)
}

func TestForwardingKeepsTransportChecksums(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	p := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("payload"))
	bad := binary.BigEndian.Uint16(p[header.IPv4MinimumSize+6:]) ^ 0x1234
	binary.BigEndian.PutUint16(p[header.IPv4MinimumSize+6:], bad)
	a.tun.send(p)
	got := b.tun.recv(t)
	if sum := binary.BigEndian.Uint16(got[header.IPv4MinimumSize+6:]); sum != bad {
		t.Errorf("forwarded UDP checksum = %#04x, want the sender's %#04x untouched (a router must not repair it)", sum, bad)
	}
}

func TestICMPErrorsToRemotePodsCarryTheNodeAddress(t *testing.T) {
	nw, a, b := seedPair(t, Options{})
	_ = nw
	// A packet from b's pod reaches a with TTL 1: a answers "time
	// exceeded" over the overlay. b must accept it (its source lies in a's
	// pod CIDR) and deliver it to its pod.
	b.tun.send(udp4(addr("10.244.1.2"), addr("10.244.0.4"), 2, true, nil))
	ip, ic := icmpFrom(t, b.tun)
	if ic.Type() != header.ICMPv4TimeExceeded {
		t.Fatalf("got ICMP type %d, want time exceeded", ic.Type())
	}
	if got, want := ip.SourceAddress(), packet.TCPIPAddr(addr("10.244.0.0")); got != want {
		t.Errorf("time exceeded from %s, want hostgw-master's overlay identity %s", got, want)
	}
	if !ip.IsChecksumValid() {
		t.Error("rewritten ICMP error has a bad IP header checksum")
	}
	if n := b.r.Stats().Drops[DropSpoofed]; n != 0 {
		t.Errorf("hostgw-node dropped %d packets as spoofed, want 0", n)
	}
	_ = a
}
