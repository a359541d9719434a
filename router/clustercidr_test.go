package router

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/router/packet"
)

var clusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

// clusterPair is seedPair with Config.ClusterCIDRs: one route for the
// whole cluster CIDR to the overlay.
func clusterPair(t testing.TB, extraPeers int) (*node, *node) {
	return pair(t, extraPeers, true)
}

// pair builds hostgw-master with hostgw-node and extraPeers more peers,
// with cluster CIDR routes or, without, a route per peer.
func pair(t testing.TB, extraPeers int, clusterRoutes bool) (*node, *node) {
	t.Helper()
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "hostgw-master", "192.168.31.201:8285", "10.244.0.0/24", Options{})
	b := startNode(t, nw, "hostgw-node", "192.168.31.202:8285", "10.244.1.0/24", Options{}, a.asPeer())
	peers := []Peer{b.asPeer()}
	for i := range extraPeers {
		// More peers, on underlay addresses nobody listens on.
		peers = append(peers, Peer{
			Name:     fmt.Sprintf("node-%d", i),
			Endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, 32 + byte(i/250), byte(1 + i%250)}), 8285),
			PodCIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 248 + byte(i/256), byte(i % 256), 0}), 24)},
		})
	}
	cfg := a.config(peers...)
	if clusterRoutes {
		cfg.ClusterCIDRs = []netip.Prefix{clusterCIDR, netip.MustParsePrefix("10.248.0.0/14")}
	}
	if err := a.r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	return a, b
}

func TestClusterCIDRRoute(t *testing.T) {
	a, b := clusterPair(t, 0)
	var got []string
	for _, rt := range a.r.Routes() {
		got = append(got, rt.String())
	}
	want := "10.244.0.0/24 dev vr0|10.244.1.0/24 via 192.168.31.202 dev overlay0|unreachable 10.244.0.0/16|unreachable 10.248.0.0/14"
	if strings.Join(got, "|") != want {
		t.Errorf("Routes() = %q, want %q", got, strings.Split(want, "|"))
	}
	if n := len(a.r.stack.GetRouteTable()); n != 3 {
		t.Errorf("stack route table has %d routes, want 3 (local pods, two cluster CIDRs)", n)
	}

	// Forwarding to the peer works through the cluster route.
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("x")))
	if got := header.IPv4(b.tun.recv(t)); got.TTL() != 62 {
		t.Errorf("TTL = %d, want 62", got.TTL())
	}

	// A cluster address no peer owns: "net unreachable" from the router.
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.9.9"), 64, true, nil))
	ip, ic := icmpFrom(t, a.tun)
	if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4NetUnreachable {
		t.Errorf("got ICMP type %d code %d, want net unreachable", ic.Type(), ic.Code())
	}
	if ip.SourceAddress() != packet.TCPIPAddr(routerAddr4) || !ip.IsChecksumValid() {
		t.Errorf("ICMP error from %s (checksum ok: %v), want %s", ip.SourceAddress(), ip.IsChecksumValid(), routerAddr4)
	}
	if q := header.IPv4(ic.Payload()); q.DestinationAddress() != packet.TCPIPAddr(addr("10.244.9.9")) {
		t.Errorf("quoted packet to %s, want 10.244.9.9", q.DestinationAddress())
	}
	// The counter moves once the write returned, maybe after the read.
	waitFor(t, "no route, ICMP sent and no-peer drops = 1 each", func() bool {
		st := a.r.Stats()
		return st.NoRoute == 1 && st.ICMPErrorsSent == 1 && st.Drops[DropNoPeer] == 1
	})
	// An ICMP error to such an address gets no error back.
	icmpErr := udp4(addr("10.244.0.4"), addr("10.244.9.9"), 64, true, nil)
	icmpErr[9] = uint8(header.ICMPv4ProtocolNumber)
	icmpErr[header.IPv4MinimumSize] = uint8(header.ICMPv4DstUnreachable)
	header.IPv4(icmpErr).SetChecksum(0)
	header.IPv4(icmpErr).SetChecksum(^header.IPv4(icmpErr).CalculateChecksum())
	a.tun.send(icmpErr)
	a.tun.expectNone(t, 50_000_000)
}

// BenchmarkForward measures one packet through a router to its peer and
// out of the peer's TUN, with 2 and 1,000 peers, with cluster CIDR routes
// (the cost must not grow with the number of peers) and, as the baseline
// in the same run, with a route per peer (gVisor scans those linearly).
func BenchmarkForward(b *testing.B) {
	for _, routes := range []string{"cluster", "per-peer"} {
		for _, peers := range []int{1, 999} {
			b.Run(fmt.Sprintf("routes=%s/peers=%d", routes, peers+1), func(b *testing.B) {
				benchForward(b, peers, routes == "cluster")
			})
		}
	}
}

func benchForward(b *testing.B, peers int, clusterRoutes bool) {
	a, nb := pair(b, peers, clusterRoutes)
	pkt := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, make([]byte, 64))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.tun.send(pkt)
		<-nb.tun.toK
	}
}
