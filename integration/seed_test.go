package integration

// TestSeedCluster runs the seed's two-node cluster with one vrouter per node
// and checks the traffic a flannel host-gw cluster carries:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter ─ vr0    cni0 10.244.0.1/24
//	 │     nginx-th5pz 10.244.0.4   coredns-xx6mc 10.244.0.2   coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 .202  vrouter ─ vr0    cni0 10.244.1.1/24
//	       nginx-4k7xw 10.244.1.2   nginx-j6zwk 10.244.1.3
//
//	pod ─ cni0 ─ node kernel ─ vr0 ─ router ═ UDP :8285 ═ router ─ vr0 ─ node kernel ─ cni0 ─ pod
//	 64          63                  62                   61               60
//
// Every pod serves TCP and UDP echo on :7 and HTTP on :80; each server
// reports the client address it saw, which must be the client pod's own.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestSeedCluster(t *testing.T) {
	e := newEnv(t, "seed", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	seedChecks(t, e)
}

// seedChecks are the seed cluster's checks on e, whose routers run: every
// pod serves, then traffic within and across the nodes.
func seedChecks(t *testing.T, e *env) {
	e.serve(nginxTh5pz, corednsXx6mc, coredns8qxfv, nginx4k7xw, nginxJ6zwk)

	across := []struct{ from, to pod }{
		{nginxTh5pz, nginx4k7xw},
		{nginx4k7xw, nginxTh5pz},
		{nginxJ6zwk, corednsXx6mc},
		{coredns8qxfv, nginxJ6zwk},
	}

	t.Run("ping pod to pod across nodes", func(t *testing.T) {
		for _, pr := range across {
			if err := e.pingOK(pr.from.name, pr.to.addr, ttlAcrossNodes); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("tcp echo across nodes", func(t *testing.T) {
		for _, pr := range across {
			if err := e.tcpEcho(pr.from, pr.to, 7); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("udp echo across nodes", func(t *testing.T) {
		for _, pr := range across {
			if err := e.udpEcho(pr.from, pr.to, 7); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("http across nodes", func(t *testing.T) {
		for _, pr := range across {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			url := fmt.Sprintf("http://%s/", pr.to.addr)
			rep, err := e.c.HTTPGet(ctx, pr.from.name, url)
			cancel()
			if err == nil {
				err = checkReply(rep, pr.to, pr.from)
			}
			if err != nil {
				t.Errorf("GET %s from %s: %v", url, pr.from.name, err)
			}
		}
	})

	t.Run("node to remote pod", func(t *testing.T) {
		e.mustPing(masterNode, nginx4k7xw.addr, ttlNodeToPod)
		e.mustPing(workerNode, nginxTh5pz.addr, ttlNodeToPod)
	})

	t.Run("same node pods are only bridged", func(t *testing.T) {
		// TTL 64: no router (kernel or vrouter) on the way.
		e.mustPing(nginxTh5pz.name, corednsXx6mc.addr, ttlSameNode)
		e.mustPing(nginxJ6zwk.name, nginx4k7xw.addr, ttlSameNode)
		if err := e.tcpEcho(coredns8qxfv, nginxTh5pz, 7); err != nil {
			t.Error(err)
		}
		if err := e.udpEcho(nginx4k7xw, nginxJ6zwk, 7); err != nil {
			t.Error(err)
		}
	})

	t.Run("closed port refused across nodes", func(t *testing.T) {
		// The remote pod's RST and ICMP port unreachable come back through
		// both routers: the client learns at once.
		for _, pr := range across[:2] {
			if err := e.refused(pr.from, netip.AddrPortFrom(pr.to.addr, 1)); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("traceroute hops", func(t *testing.T) {
		// A probe with TTL n expires at the nth hop, which answers "time
		// exceeded": the local node kernel (cni0's address), the local
		// router (its router address), the remote router, the remote node
		// kernel (vr0's address there, 10.244.1.0); TTL 5 reaches the pod.
		to := nginx4k7xw.addr
		hops := []struct {
			ttl  int
			from string
		}{
			{1, gateway(masterNode).String()},
			{2, stackAddr.String()},
			// The remote router signs errors it sends over the overlay
			// with its node's overlay identity (its pod CIDR's network
			// address), which the local router accepts.
			{3, "10.244.1.0"},
			{4, "10.244.1.0"},
		}
		for _, h := range hops {
			if err := e.timeExceeded(nginxTh5pz, to, h.ttl, h.from); err != nil {
				t.Error(err)
			}
		}
		if err := e.pingTTL(nginxTh5pz, to, 5); err != nil {
			t.Error(err)
		}
	})

	t.Run("unrouted cluster address", func(t *testing.T) {
		// No node owns 10.244.9.9: the node kernel hands it to vr0 (it is
		// inside 10.244.0.0/16) and the router, with no route for it,
		// answers at once with "net unreachable" from its own address,
		// well before the probe's one-second timeout.
		for _, from := range []pod{nginxTh5pz, nginxJ6zwk} {
			if err := e.unreachableWith(from.name, unrouted, netUnreachable); err != nil {
				t.Error(err)
			}
		}
	})
}

// refused checks that a TCP connection and a UDP datagram from pod from to
// addr, where nothing listens, are refused promptly (RST; ICMP port
// unreachable).
func (e *env) refused(from pod, addr netip.AddrPort) error {
	var tcpErr, udpErr error
	err := e.c.Do(from.name, func() error {
		conn, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
		if err == nil {
			conn.Close()
		}
		tcpErr = err
		uc, err := net.Dial("udp", addr.String())
		if err != nil {
			return err
		}
		defer uc.Close()
		if _, err := uc.Write([]byte("anyone?")); err != nil {
			return err
		}
		uc.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, udpErr = uc.Read(make([]byte, 64))
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s -> %v: %w", from.name, addr, err)
	}
	if !errors.Is(tcpErr, syscall.ECONNREFUSED) {
		return fmt.Errorf("tcp %s -> %v: dial error %v, want connection refused", from.name, addr, tcpErr)
	}
	if !errors.Is(udpErr, syscall.ECONNREFUSED) {
		return fmt.Errorf("udp %s -> %v: read error %v, want connection refused (ICMP port unreachable)", from.name, addr, udpErr)
	}
	return nil
}

// ttlExceededRE matches iputils ping's report of an ICMP "time exceeded":
// "From 169.254.244.1 icmp_seq=1 Time to live exceeded".
var ttlExceededRE = regexp.MustCompile(`From (\S+) icmp_seq=\d+ Time to live exceeded`)

// timeExceeded pings dst from pod from with TTL ttl and expects "time to
// live exceeded" from wantFrom (any source if wantFrom is empty).
func (e *env) timeExceeded(from pod, dst netip.Addr, ttl int, wantFrom string) error {
	args := []string{"-n", "-c", "1", "-W", "1", "-t", strconv.Itoa(ttl), dst.String()}
	out, _ := e.command(from.name, "ping", args...) // exits 1: no reply
	m := ttlExceededRE.FindStringSubmatch(out)
	switch {
	case m == nil:
		return fmt.Errorf("%s: ping %v: want \"Time to live exceeded\", got:\n%s", from.name, args, out)
	case wantFrom != "" && m[1] != wantFrom:
		return fmt.Errorf("%s: ping %v: time exceeded from %s, want from %s", from.name, args, m[1], wantFrom)
	}
	return nil
}

// pingTTL pings dst from pod from with TTL ttl and expects the reply.
func (e *env) pingTTL(from pod, dst netip.Addr, ttl int) error {
	args := []string{"-n", "-c", "1", "-W", "2", "-t", strconv.Itoa(ttl), dst.String()}
	out, err := e.command(from.name, "ping", args...)
	if err != nil || !regexp.MustCompile(`(?m)^1 packets transmitted, 1 received`).MatchString(out) {
		return fmt.Errorf("%s: ping %v: %v, want a reply:\n%s", from.name, args, err, out)
	}
	return nil
}
