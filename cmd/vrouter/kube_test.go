package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
)

// hostgwNode is the seed's second node as the API server describes it.
var hostgwNode = kube.Node{
	Name:     "hostgw-node",
	PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
	Address:  netip.MustParseAddr("192.168.31.202"),
	Zone:     "zone-b",
}

// TestKubeConfig: in Kubernetes mode the node's config is the flags' (or
// the tuning file's) with this Node filled in, and a tuning file gets the
// config file's checks.
func TestKubeConfig(t *testing.T) {
	k := &kubeFlags{clusterCIDR: "10.244.0.0/16", serviceCIDR: "10.96.0.0/12"}
	cfg, err := k.kubeConfig(nil, hostgwNode)
	if err != nil {
		t.Fatalf("kubeConfig(no file, %s) = %v", hostgwNode.Name, err)
	}
	want := mustParseFile(t, "node: {name: hostgw-node, podCIDRs: [10.244.1.0/24], underlayAddress: 192.168.31.202, zone: zone-b}\nclusterCIDRs: [10.244.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\n")
	if !cfg.Equal(want) {
		t.Errorf("kubeConfig(no file) =\n%+v\nwant the file with this node\n%+v", *cfg, *want)
	}

	dir := t.TempDir()
	tuning := filepath.Join(dir, "tuning.yaml")
	writeString(t, tuning, head+"clusterCIDRs: [10.244.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\nlb: {mode: proxy, picker: maglev, nat: {maxFlows: 1000}}\ntun: {offload: false}\n")
	f, err := configs.LoadTuning(tuning)
	if err != nil {
		t.Fatalf("LoadTuning(%s) = %v", tuning, err)
	}
	cfg, err = k.kubeConfig(f, hostgwNode)
	if err != nil {
		t.Fatalf("kubeConfig(%s) = %v", tuning, err)
	}
	if cfg.LB.Mode != lb.ModeProxy || cfg.LB.Picker != lb.PickMaglev || cfg.LB.NAT.MaxTCP != 1000 || cfg.TUN.Offload || cfg.Node.Name != "hostgw-node" {
		t.Errorf("kubeConfig(%s) = LB %+v, TUN %+v, node %q; want the file's tuning for hostgw-node", tuning, cfg.LB, cfg.TUN, cfg.Node.Name)
	}

	// The file's own problems, found before the API server is asked.
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"misspelt field", "lb: {nat: {maxFlow: 10}}\n", []string{tuning + ":4:12: lb.nat.maxFlow", `did you mean "maxFlows"?`}},
		{"peers", "peers: [{name: x, underlayAddress: 192.168.31.9, podCIDRs: [10.244.9.0/24]}]\n", []string{tuning + ":4:1: peers: not allowed in a tuning file"}},
	} {
		writeString(t, tuning, head+"clusterCIDRs: [10.244.0.0/16]\n"+tc.file)
		_, err := configs.LoadTuning(tuning)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("LoadTuning(%s) = %v, want an error containing %q", tc.name, err, w)
			}
		}
	}
	// The Node's, once it is known.
	f = &configs.File{ClusterCIDRs: []string{"10.244.0.0/16"}}
	if _, err := k.kubeConfig(f, kube.Node{Name: "n", PodCIDRs: hostgwNode.PodCIDRs}); err == nil ||
		!strings.Contains(err.Error(), "config for node n from the API server") || !strings.Contains(err.Error(), "node.underlayAddress: missing") {
		t.Errorf("kubeConfig(Node without an address) = %v, want an error naming the node and node.underlayAddress", err)
	}
}

// TestSidecarConfig: a sidecar routes only the Service CIDR, in proxy mode,
// with no encapsulation.
func TestSidecarConfig(t *testing.T) {
	k := &kubeFlags{nodeName: "pod-a", serviceCIDR: "10.96.0.0/12"}
	cfg, err := k.sidecarConfig()
	if err != nil {
		t.Fatalf("sidecarConfig() = %v", err)
	}
	if cfg.Node.Name != "pod-a" || !slices.Equal(cfg.ServiceCIDRs, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}) ||
		len(cfg.ClusterCIDRs) != 0 || len(cfg.TUN.Addresses) != 0 || cfg.TUN.MTU != 1500 || cfg.Overlay.MTU != 1500 ||
		cfg.LB.Mode != lb.ModeProxy || !cfg.TUN.Configure || cfg.Overlay.Listen.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("sidecarConfig() = %+v, want pod-a, Service CIDR 10.96.0.0/12 only, no TUN address, MTU 1500, proxy mode, overlay on loopback", *cfg)
	}
	for _, bad := range []string{"10.96.0.1/12", "services"} {
		k.serviceCIDR = bad
		if _, err := k.sidecarConfig(); err == nil || !strings.Contains(err.Error(), "--service-cidr "+`"`+bad+`"`) {
			t.Errorf("sidecarConfig(--service-cidr %s) = %v, want an error naming the flag and the value", bad, err)
		}
	}
}

const head = "apiVersion: " + configs.APIVersion + "\nkind: " + configs.Kind + "\n"

func mustParseFile(t *testing.T, body string) *configs.Config {
	t.Helper()
	c, err := configs.Parse([]byte(head + body))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func writeString(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
