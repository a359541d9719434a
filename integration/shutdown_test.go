package integration

// TestCleanShutdown sends SIGTERM (and, in a second cluster, SIGINT) to
// hostgw-master's router and checks that it leaves the node as it found it:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 192.168.31.201   vrouter ── SIGTERM/SIGINT ──▶ exit 0
//	 │     vr0 and its routes (proto 118) gone; 192.168.31.201:8285/udp free
//	 │     nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 192.168.31.202   vrouter (keeps running)
//	       nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestCleanShutdown(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			e := newEnv(t, "stop"+strconv.Itoa(int(sig)), topology.Seed(), harness.ConfigOptions{})
			e.startAll()
			e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
			e.checkCleanExit(t, masterNode, sig)
			if e.router(workerNode).Exited() {
				t.Errorf("router on %s exited too", workerNode)
			}
			// Nothing routes the cluster CIDR on hostgw-master any more.
			if err := e.lost(nginxTh5pz.name, nginx4k7xw.addr); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkCleanExit sends sig to node's router and checks that it exits with
// status 0 within five seconds, taking vr0, its routes and its hold on the
// overlay port with it.
func (e *env) checkCleanExit(t *testing.T, nodeName string, sig syscall.Signal) {
	t.Helper()
	r := e.router(nodeName)
	if err := r.Signal(sig); err != nil {
		t.Fatalf("%v to router on %s: %v", sig, nodeName, err)
	}
	took := eventually(t, 5*time.Second, fmt.Sprintf("router exits after %v", sig), func() error {
		if !r.Exited() {
			return fmt.Errorf("router on %s (pid %d) still running", nodeName, r.PID())
		}
		return nil
	})
	t.Logf("router exited %v after %s", took.Round(time.Millisecond), unix.SignalName(sig))
	if err := r.Stop(); err != nil { // returns the exit status
		t.Errorf("router on %s after %v: %v, want exit status 0", nodeName, sig, err)
	}

	err := e.c.Do(nodeName, func() error {
		var errs []error
		if l, err := netlink.LinkByName("vr0"); err == nil {
			errs = append(errs, fmt.Errorf("vr0 still exists (index %d)", l.Attrs().Index))
		} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
			errs = append(errs, fmt.Errorf("look up vr0: %w", err))
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: vrouterProto}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			errs = append(errs, fmt.Errorf("list routes: %w", err))
		}
		for _, rt := range routes {
			errs = append(errs, fmt.Errorf("route %v proto %d left behind", rt.Dst, vrouterProto))
		}
		addr := netip.AddrPortFrom(underlay(nodeName), harness.OverlayPort)
		conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			errs = append(errs, fmt.Errorf("overlay port not free: listen udp %v: %w", addr, err))
		} else {
			conn.Close()
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("%s after the router exited: %v", nodeName, err)
	}
}
