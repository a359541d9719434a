package main

// The checks of a demo on a --topology file's cluster: the seed's
// checks (demo_linux.go) generalized to any nodes, pods and Services.

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/lb"
)

// topologyChecks checks pod-to-pod ping, TCP and UDP between the nodes'
// pods, HTTP once, a node reaching a pod on another node, and an
// address of the cluster CIDR that no node owns.
func (d *demo) topologyChecks(ctx context.Context, spec topology.Spec) {
	var withPods []topology.NodeSpec
	for _, n := range spec.Nodes {
		if len(n.Pods) > 0 {
			withPods = append(withPods, n)
		}
	}
	pairs, all := nodePairs(len(withPods))
	if len(pairs) < all {
		d.printf("  (pods of %d of the %d pairs of nodes with pods: each node and the next)\n", len(pairs), all)
	}
	for k, pr := range pairs {
		a, b := withPods[pr[0]], withPods[pr[1]]
		from, to := a.Pods[0], b.Pods[len(b.Pods)-1]
		if k%2 == 1 { // both directions across the pairs
			from, to = b.Pods[0], a.Pods[len(a.Pods)-1]
		}
		d.pingCheck(from.Name, from.Addr.String(), to)
		for _, proto := range []string{"tcp", "udp"} {
			name := fmt.Sprintf("%s  %s -> %s:7", proto, from.Name, to.Addr)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			exchange := d.c.TCPExchange
			if proto == "udp" {
				exchange = d.c.UDPExchange
			}
			rep, err := exchange(cctx, from.Name, netip.AddrPortFrom(to.Addr, 7), []byte("hello over "+proto))
			cancel()
			d.check(name, replyDetail(rep, to.Name, from.Addr, &err), err)
		}
		if k == 0 {
			name := fmt.Sprintf("http %s -> http://%s/", to.Name, from.Addr)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep, err := d.c.HTTPGet(cctx, to.Name, fmt.Sprintf("http://%s/", from.Addr))
			cancel()
			d.check(name, replyDetail(rep, from.Name, to.Addr, &err), err)
		}
	}
	// A node reaches a pod on another node through its router.
	for _, n := range spec.Nodes {
		if to, ok := firstPod(n); ok && n.Name != spec.Nodes[0].Name {
			d.pingCheck("node "+spec.Nodes[0].Name, "", to)
			break
		}
	}
	if unrouted, ok := unroutedAddr(d.top.ClusterCIDR, spec); ok && len(withPods) > 0 {
		d.unroutedCheck(withPods[0].Pods[0].Name, unrouted)
	}
}

// pingCheck pings to from the namespace of from ("node X" for a node);
// fromAddr is printed after it when set.
func (d *demo) pingCheck(from, fromAddr string, to topology.PodSpec) {
	ns := strings.TrimPrefix(from, "node ")
	name := strings.TrimSpace(fmt.Sprintf("ping %s %s", from, fromAddr)) + fmt.Sprintf(" -> %s %s", to.Name, to.Addr)
	res, err := d.c.Ping(ns, to.Addr, 3, 2*time.Second)
	if err == nil && res.Received != res.Sent {
		err = fmt.Errorf("%s", res)
	}
	d.check(name, res.String(), err)
}

// topologyServiceChecks sends each port of each Service requests from a
// client on every node (its first pod, or the node without pods). Every
// backend must answer, and see the client address the mode gives it, as
// the seed's Service checks require.
func (d *demo) topologyServiceChecks(ctx context.Context, spec topology.Spec) {
	for _, s := range d.top.Services {
		vip := netip.MustParseAddr(s.ClusterIPs[0])
		for _, pt := range s.Ports {
			targets := d.top.targets(s, pt)
			backends := slices.Sorted(maps.Keys(targets))
			udp := pt.Protocol == "UDP"
			mode, proto := d.mode, "tcp "
			if udp {
				mode, proto = lb.ModeNAT.String(), "udp "
			}
			echo := !udp && slices.Contains(slices.Collect(maps.Values(targets)), demoPort{7, false})
			target := netip.AddrPortFrom(vip, uint16(pt.Port))
			what := target.String()
			if !udp && !echo {
				proto = "curl "
				what = httpURL(target)
			}
			requests := min(12*len(backends), 150)
			for _, n := range spec.Nodes {
				from := clientOf(n)
				err := d.serviceCheck(ctx, spec, from, target, udp, echo, mode, backends, requests)
				d.check(fmt.Sprintf("%s%s x%d from %s", proto, what, requests, from), err.detail, err.err)
			}
		}
	}
}

type checkResult struct {
	detail string
	err    error
}

// serviceCheck sends requests to target from the namespace from: UDP
// datagrams, TCP echo exchanges or HTTP GETs. Each backend must answer
// at least once and see the client address wantClient says, in mode.
func (d *demo) serviceCheck(ctx context.Context, spec topology.Spec, from string, target netip.AddrPort, udp, echo bool, mode string, backends []string, requests int) checkResult {
	counts := map[string]int{}
	seen := map[string]map[netip.Addr]bool{}
	var err error
	for range requests {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var rep topology.Reply
		var rerr error
		switch {
		case udp:
			rep, rerr = d.c.UDPExchange(cctx, from, target, []byte("query"))
		case echo:
			rep, rerr = d.c.TCPExchange(cctx, from, target, []byte("hello"))
		default:
			rep, rerr = d.c.HTTPGet(cctx, from, httpURL(target))
		}
		cancel()
		if rerr != nil {
			err = rerr
			break
		}
		counts[rep.Server]++
		if seen[rep.Server] == nil {
			seen[rep.Server] = map[netip.Addr]bool{}
		}
		seen[rep.Server][rep.Client.Addr()] = true
	}
	for b := range counts {
		if !slices.Contains(backends, b) && err == nil {
			err = fmt.Errorf("answered by %q, which is not a backend of the Service (%s)", b, strings.Join(backends, ", "))
		}
	}
	detail, err := d.judgeBackends(spec, from, backends, counts, seen, mode, err)
	return checkResult{detail, err}
}
