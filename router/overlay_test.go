package router

import (
	"net/netip"
	"testing"
	"time"
)

// TestOverlayRefusesOtherSourcePort: a datagram from a peer's address but
// not from its overlay port (another socket on the peer's node) is refused
// and counted as from an unknown peer; the same datagram from the peer's
// endpoint goes through.
func TestOverlayRefusesOtherSourcePort(t *testing.T) {
	nw, a, _ := seedPair(t, Options{})
	peer := netip.MustParseAddrPort("192.168.31.202:8285")
	good := udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("x"))

	for _, port := range []uint16{8286, 40000, 53, 0} {
		from := netip.AddrPortFrom(peer.Addr(), port)
		before := a.r.Stats()
		nw.Send(from, a.underlay, good)
		waitFor(t, "datagram from "+from.String()+" counted as unknown_peer", func() bool {
			return a.r.Stats().Drops[DropUnknownPeer] == before.Drops[DropUnknownPeer]+1
		})
		if got := a.r.Stats().Peers["hostgw-node"]; got.RxPackets != before.Peers["hostgw-node"].RxPackets || got.LastSeenUnixNano != before.Peers["hostgw-node"].LastSeenUnixNano {
			t.Errorf("after a datagram from %v: peer hostgw-node rx %d, last seen %d; want %d, %d (not the peer)", from, got.RxPackets, got.LastSeenUnixNano, before.Peers["hostgw-node"].RxPackets, before.Peers["hostgw-node"].LastSeenUnixNano)
		}
	}
	a.tun.expectNone(t, 50*time.Millisecond)

	nw.Send(peer, a.underlay, good)
	a.tun.recv(t)
}
