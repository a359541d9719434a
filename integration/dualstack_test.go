package integration

// TestDualStackDefaults runs the seed cluster dual-stack with every
// tun.addresses default, cni0 addressed as the bridge CNI plugin addresses a
// dual-stack node's (its gateway address in the pod /64) and IPv6
// forwarding on: the node kernel then owns each pod /64's network address
// as cni0's subnet-router anycast address, so vr0's IPv6 default must be
// another one (configs.DefaultTUNAddress: the pod CIDR's last address).
//
//	underlay br0 192.168.31.0/24, fd00:192:168:31::/64
//	 ├─ hostgw-master eth0 .201 ::201  vrouter ─ vr0 10.244.0.0/32, fd00:10:244:0:ffff:ffff:ffff:ffff/128
//	 │     cni0 10.244.0.1/24, fd00:10:244::1/64   (local route: anycast fd00:10:244::)
//	 │     nginx-th5pz 10.244.0.4, fd00:10:244::4   coredns-xx6mc 10.244.0.2, fd00:10:244::2
//	 └─ hostgw-node   eth0 .202 ::202  vrouter ─ vr0 10.244.1.0/32, fd00:10:244:1:ffff:ffff:ffff:ffff/128
//	       cni0 10.244.1.1/24, fd00:10:244:1::1/64 (local route: anycast fd00:10:244:1::)
//	       nginx-4k7xw 10.244.1.2, fd00:10:244:1::2 nginx-j6zwk 10.244.1.3, fd00:10:244:1::3
//
// net.ipv6.conf.all.forwarding=1 on both nodes. Pods reach each other
// across nodes over IPv6 and IPv4, and the node kernel reaches a remote pod
// from its vr0 IPv6 address, which the routers admit as the node's own.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestDualStackDefaults(t *testing.T) {
	spec := topology.SeedDualStack()
	e := newEnv(t, "dual", spec, harness.ConfigOptions{})

	// The node as the bridge plugin leaves it, before any router runs.
	for _, n := range spec.Nodes {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"sysctl", "-n", "net.ipv6.conf.all.forwarding"}, "1"},
			{[]string{"ip", "-6", "addr", "show", "dev", topology.PodBridge}, netip.PrefixFrom(n.Gateway6(), 64).String()},
			{[]string{"ip", "-6", "route", "show", "table", "local", "type", "anycast"}, "anycast " + n.PodCIDR6.Addr().String() + " dev " + topology.PodBridge},
		} {
			out, err := e.command(n.Name, c.args[0], c.args[1:]...)
			if err != nil || !strings.Contains(out, c.want) {
				t.Fatalf("%s on %s: %q, %v; want it to show %q", strings.Join(c.args, " "), n.Name, out, err, c.want)
			}
		}
	}

	e.startAll() // fails if a router exits: vr0's address never in use

	for _, n := range spec.Nodes {
		want := fmt.Sprintf("%s/128", lastAddr(n.PodCIDR6))
		if out, err := e.command(n.Name, "ip", "-6", "addr", "show", "dev", "vr0"); err != nil || !strings.Contains(out, want) {
			t.Errorf("ip -6 addr show dev vr0 on %s: %q, %v; want %s on it", n.Name, out, err, want)
		}
	}

	pod6 := func(p pod) pod {
		sp, _, ok := spec.Pod(p.name)
		if !ok || !sp.Addr6.IsValid() {
			t.Fatalf("spec has no IPv6 address for pod %s", p.name)
		}
		return pod{p.name, sp.Addr6, p.node}
	}
	for _, p := range []pod{nginxTh5pz, corednsXx6mc, nginx4k7xw, nginxJ6zwk} {
		e.serve(p, pod6(p)) // echo and HTTP on each address
	}
	across := []struct{ from, to pod }{
		{nginxTh5pz, nginx4k7xw},
		{nginx4k7xw, nginxTh5pz},
		{nginxJ6zwk, corednsXx6mc},
	}
	for _, pr := range across {
		from6, to6 := pod6(pr.from), pod6(pr.to)
		if err := e.pingOK(pr.from.name, to6.addr, ttlAcrossNodes); err != nil {
			t.Error(err)
		}
		if err := e.tcpEcho(from6, to6, 7); err != nil {
			t.Errorf("IPv6: %v", err)
		}
		if err := e.udpEcho(from6, to6, 7); err != nil {
			t.Errorf("IPv6: %v", err)
		}
		if err := e.pingOK(pr.from.name, pr.to.addr, ttlAcrossNodes); err != nil {
			t.Error(err)
		}
	}

	// The node kernel sources what it sends through vr0 from vr0's
	// address: the routers admit it and route the replies back.
	for _, c := range []struct{ from, to pod }{{pod{name: masterNode}, nginx4k7xw}, {pod{name: workerNode}, nginxTh5pz}} {
		if err := e.pingOK(c.from.name, pod6(c.to).addr, ttlNodeToPod); err != nil {
			t.Error(err)
		}
	}
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}
