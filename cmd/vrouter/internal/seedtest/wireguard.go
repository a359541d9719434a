package seedtest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// WireGuard is hostgw-master's router over an encrypted overlay on
// loopback, with two peers: hostgw-node, a WireGuard device of its own (no
// router behind it: the handshake is the device's business), and
// hostgw-spare, whose key is not known yet. hostgw-node's overlay has no
// router behind it: a reader of the fixture's own answers its handshakes
// and drops what it reads.
type WireGuard struct {
	Router *router.Router
	// Master is the router's overlay, at MasterAt; Node the peer's
	// device, at NodeAt.
	Master, Node     *wireguard.Conn
	MasterAt, NodeAt netip.AddrPort
}

var loopback = netip.MustParseAddr("127.0.0.1")

// StartWireGuard starts a WireGuard fixture, stopped when the test ends.
// The session between the two comes up on its own (a keepalive).
func StartWireGuard(t *testing.T) *WireGuard {
	t.Helper()
	listen := func() (*wireguard.Conn, wireguard.Key, netip.AddrPort) {
		k, err := wireguard.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		sock, err := router.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
		if err != nil {
			t.Fatal(err)
		}
		c, err := wireguard.Listen(wireguard.Options{PrivateKey: k, MTU: 1420, Socket: sock})
		if err != nil {
			t.Fatalf("wireguard.Listen: %v", err)
		}
		return c, k, netip.AddrPortFrom(loopback, c.LocalAddr().Port())
	}
	master, masterKey, masterAt := listen()
	node, nodeKey, nodeAt := listen()
	drained := make(chan struct{})
	go drain(node, drained)
	t.Cleanup(func() {
		node.Close()
		<-drained
	})

	dev, _ := tuntest.NewPair(tuntest.Options{})
	r, err := router.New(router.Options{TUN: dev, Overlay: master, MTU: 1420})
	if err != nil {
		master.Close()
		t.Fatalf("router.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }() // closes master when it returns
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: Run: %v", err)
		}
	})
	// The router learns its peers first, so that whichever side starts
	// the handshake finds the other knowing its key.
	if err := r.Set(router.Config{
		PodCIDRs:  []netip.Prefix{MasterPods},
		Addresses: []netip.Addr{netip.MustParseAddr("169.254.244.1")},
		Peers: []router.Peer{
			{Name: "hostgw-node", Endpoint: nodeAt, PodCIDRs: []netip.Prefix{NodePods}, PublicKey: nodeKey.Public()},
			{Name: "hostgw-spare", Endpoint: netip.MustParseAddrPort("127.0.0.9:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}},
		},
	}); err != nil {
		t.Fatalf("router Set: %v", err)
	}
	if err := node.SetPeers([]wireguard.Peer{{
		Name: "hostgw-master", PublicKey: masterKey.Public(), Endpoint: masterAt,
		AllowedIPs: []netip.Prefix{MasterPods, netip.PrefixFrom(loopback, 32)},
	}}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	return &WireGuard{Router: r, Master: master, Node: node, MasterAt: masterAt, NodeAt: nodeAt}
}

// WaitSession waits for the router's session with hostgw-node: the side
// with the lower key starts it at once, the other a second later.
func (w *WireGuard) WaitSession(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps, err := w.Master.Peers()
		if err != nil {
			t.Fatalf("Peers: %v", err)
		}
		if len(ps) == 1 && ps[0].Up(time.Now()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no WireGuard session with hostgw-node within 15 s: %+v", ps)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain reads c until it is closed, as a router's overlay reader would
// (which is what answers handshakes), and drops what it reads. It closes
// done as it returns.
func drain(c *wireguard.Conn, done chan<- struct{}) {
	defer close(done)
	bufs := make([][]byte, router.MaxReadBatch)
	for i := range bufs {
		bufs[i] = make([]byte, router.MaxSegmentsRead)
	}
	sizes, segs, from := make([]int, len(bufs)), make([]int, len(bufs)), make([]netip.AddrPort, len(bufs))
	for {
		if _, err := c.ReadBatch(bufs, sizes, segs, from); err != nil {
			return
		}
	}
}
