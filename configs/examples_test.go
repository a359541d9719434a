package configs

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vrouter/vrouter/lb"
)

// TestExamples loads every file in examples/ and checks what a user of
// the reference cluster would expect from it.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		node     string
		peers    []string // "name underlay:port podCIDRs..."
		services []string // "ns/name VIPs ports -> endpoints"
	}{
		"hostgw-master.yaml": {
			node:  "hostgw-master 192.168.31.201 [10.244.0.0/24]",
			peers: []string{"hostgw-node 192.168.31.202:8285 [10.244.1.0/24]"},
			services: []string{
				"default/my-service [10.103.92.81] [80/TCP->80] -> [10.244.0.4@hostgw-master 10.244.1.2@hostgw-node 10.244.1.3@hostgw-node]",
				"kube-system/kube-dns [10.96.0.10] [53/UDP->53 53/TCP->53 9153/TCP->9153] -> [10.244.0.2@hostgw-master 10.244.0.3@hostgw-master]",
			},
		},
		"hostgw-node.yaml": {
			node:  "hostgw-node 192.168.31.202 [10.244.1.0/24]",
			peers: []string{"hostgw-master 192.168.31.201:8285 [10.244.0.0/24]"},
			services: []string{
				"default/my-service [10.103.92.81] [80/TCP->80] -> [10.244.0.4@hostgw-master 10.244.1.2@hostgw-node 10.244.1.3@hostgw-node]",
				"kube-system/kube-dns [10.96.0.10] [53/UDP->53 53/TCP->53 9153/TCP->9153] -> [10.244.0.2@hostgw-master 10.244.0.3@hostgw-master]",
			},
		},
		"dualstack.yaml": {
			node:  "hostgw-master 192.168.31.201 [10.244.0.0/24 fd00:10:244::/64]",
			peers: []string{"hostgw-node 192.168.31.202:8285 [10.244.1.0/24 fd00:10:244:1::/64]"},
			services: []string{
				"default/my-service [10.103.92.81 fd00:10:96::5c51] [80/TCP->http] -> [10.244.0.4@hostgw-master fd00:10:244::4@hostgw-master 10.244.1.2@hostgw-node fd00:10:244:1::2@hostgw-node 10.244.1.3@hostgw-node fd00:10:244:1::3@hostgw-node]",
			},
		},
	}
	var seen []string
	for _, path := range files {
		name := filepath.Base(path)
		seen = append(seen, name)
		t.Run(name, func(t *testing.T) {
			c, err := Load(path)
			if err != nil {
				t.Fatalf("Load(%s) = %v", path, err)
			}
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectations for %s: add them to TestExamples", name)
			}
			if got := fmt.Sprintf("%s %s %v", c.Node.Name, c.Node.Underlay, c.Node.PodCIDRs); got != w.node {
				t.Errorf("Load(%s).Node = %q, want %q", path, got, w.node)
			}
			if got := describePeers(c); !slices.Equal(got, w.peers) {
				t.Errorf("Load(%s).Peers = %q, want %q", path, got, w.peers)
			}
			if got := describeServices(c); !slices.Equal(got, w.services) {
				t.Errorf("Load(%s).Services =\n%q\nwant\n%q", path, got, w.services)
			}
			if !slices.Equal(c.ClusterCIDRs[:1], []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) ||
				!slices.Equal(c.ServiceCIDRs[:1], []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}) {
				t.Errorf("Load(%s) ClusterCIDRs, ServiceCIDRs = %v, %v, want 10.244.0.0/16, 10.96.0.0/12 first", path, c.ClusterCIDRs, c.ServiceCIDRs)
			}
			if c.Overlay.MTU != 1472 || c.TUN.Name != "vr0" || c.LB.Mode != lb.ModeNAT {
				t.Errorf("Load(%s): overlay MTU %d, TUN %s, LB mode %s; want 1472, vr0, nat", path, c.Overlay.MTU, c.TUN.Name, c.LB.Mode)
			}
		})
	}
	for name := range want {
		if !slices.Contains(seen, name) {
			t.Errorf("examples/%s is missing", name)
		}
	}
}

// TestExamplesAreMirrors checks that the two nodes' files describe the same
// cluster: each is the other's peer and the Service tables match.
func TestExamplesAreMirrors(t *testing.T) {
	m, err := Load("examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := Load("examples/hostgw-node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(m.Services, n.Services, func(a, b lb.Service) bool { return a.Equal(&b) }) {
		t.Errorf("Services differ between hostgw-master.yaml and hostgw-node.yaml:\n%v\n%v", describeServices(m), describeServices(n))
	}
	if p := m.Peers[0]; p.Name != n.Node.Name || p.Underlay.Addr() != n.Node.Underlay || p.Underlay.Port() != uint16(n.Overlay.Port) || !slices.Equal(p.PodCIDRs, n.Node.PodCIDRs) {
		t.Errorf("hostgw-master's peer %+v does not match hostgw-node's node %+v", p, n.Node)
	}
	if p := n.Peers[0]; p.Name != m.Node.Name || p.Underlay.Addr() != m.Node.Underlay || p.Underlay.Port() != uint16(m.Overlay.Port) || !slices.Equal(p.PodCIDRs, m.Node.PodCIDRs) {
		t.Errorf("hostgw-node's peer %+v does not match hostgw-master's node %+v", p, m.Node)
	}
}

func describePeers(c *Config) []string {
	var out []string
	for _, p := range c.Peers {
		out = append(out, fmt.Sprintf("%s %s %v", p.Name, p.Underlay, p.PodCIDRs))
	}
	return out
}

func describeServices(c *Config) []string {
	var out []string
	for _, s := range c.Services {
		var ports, eps []string
		for _, p := range s.Ports {
			target := fmt.Sprint(p.TargetPort)
			if p.TargetPortName != "" {
				target = p.TargetPortName
			}
			ports = append(ports, fmt.Sprintf("%d/%s->%s", p.Port, p.Proto, target))
		}
		for _, e := range s.Endpoints {
			eps = append(eps, e.Addr.String()+"@"+e.NodeName)
		}
		out = append(out, fmt.Sprintf("%s/%s %v %v -> %v", s.Namespace, s.Name, s.ClusterIPs, ports, eps))
	}
	return out
}
