package harness

// A node of the seed's cluster, without a router: the test plays the
// router's start (vr0 up, then the overlay bind) itself.
//
//	netns hostgw-master  eth0 192.168.31.201/24, vr0 (a bridge standing in for the TUN, up)
//	                     UDP 192.168.31.201:8285 bound and closed in a loop

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vrouter/vrouter/integration/topology"
)

// Ready is polled while a router starts, and a router binds its overlay
// port right after it brings vr0 up. Ready must see the port bound or
// not, and never take it: the router's bind would then fail with
// "address already in use" (the rootless demo met that about once in 30
// runs). Here a "router" binds and closes the port in a loop while Ready
// polls: no bind may find the port in use.
func TestReadyNeverHoldsTheOverlayPort(t *testing.T) {
	c := topology.BuildT(t, topology.Seed())
	const node = "hostgw-master"
	n, _ := c.Spec().Node(node)
	addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.Underlay, OverlayPort))
	if err := c.Do(node, func() error {
		l := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "vr0"}}
		if err := netlink.LinkAdd(l); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}); err != nil {
		t.Fatalf("add vr0 in %s: %v", node, err)
	}

	if ready, err := Ready(c, node); err != nil || ready {
		t.Fatalf("Ready(%s) with nothing on %v = %v, %v; want false, nil", node, addr, ready, err)
	}
	var held *net.UDPConn
	if err := c.Do(node, func() (err error) {
		held, err = net.ListenUDP("udp4", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ready, err := Ready(c, node)
	held.Close()
	if err != nil || !ready {
		t.Fatalf("Ready(%s) with a socket on %v = %v, %v; want true, nil", node, addr, ready, err)
	}

	const binds = 3000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pollErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := Ready(c, node); err != nil {
				pollErr = err
				return
			}
		}
	})
	var inUse int
	err = c.Do(node, func() error {
		for range binds {
			conn, err := net.ListenUDP("udp4", addr)
			if errors.Is(err, syscall.EADDRINUSE) {
				inUse++
				continue
			}
			if err != nil {
				return err
			}
			conn.Close()
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("bind %v in %s: %v", addr, node, err)
	}
	if pollErr != nil {
		t.Fatalf("Ready(%s): %v", node, pollErr)
	}
	if inUse > 0 {
		t.Errorf("%d of %d binds of %v found it in use while Ready polled: Ready holds the port it checks", inUse, binds, addr)
	}
}
