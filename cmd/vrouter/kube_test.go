package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
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

// TestKubeConfigEncryption: --overlay-encryption and --wireguard-key-file,
// when given, win over the tuning file before the config is computed, so
// the tunnel MTU leaves WireGuard's 32 bytes; not given, the file's
// overlay section holds.
func TestKubeConfigEncryption(t *testing.T) {
	tuning := func(overlay string) *configs.File {
		f, err := configs.ParseTuning([]byte(head + "clusterCIDRs: [10.244.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\n" + overlay))
		if err != nil {
			t.Fatalf("ParseTuning(%q) = %v", overlay, err)
		}
		return f
	}
	flags := func(args ...string) *kubeFlags {
		k := &kubeFlags{clusterCIDR: "10.244.0.0/16", serviceCIDR: "10.96.0.0/12"}
		k.encryption.def, k.keyFile.def = configs.EncryptionNone, configs.DefaultWireGuardKeyFile
		for i := 0; i < len(args); i += 2 {
			var err error
			switch args[i] {
			case "--overlay-encryption":
				err = k.encryption.Set(args[i+1])
			case "--wireguard-key-file":
				err = k.keyFile.Set(args[i+1])
			}
			if err != nil {
				t.Fatalf("%s %s: %v", args[i], args[i+1], err)
			}
		}
		return k
	}
	for _, tc := range []struct {
		name       string
		k          *kubeFlags
		file       *configs.File
		encryption string
		keyFile    string
		mtu        int
	}{
		{"defaults", flags(), nil, configs.EncryptionNone, configs.DefaultWireGuardKeyFile, 1472},
		{"flag", flags("--overlay-encryption", "wireguard"), nil, configs.EncryptionWireGuard, configs.DefaultWireGuardKeyFile, 1440},
		{"flag and key file", flags("--overlay-encryption", "wireguard", "--wireguard-key-file", "/k"), nil, configs.EncryptionWireGuard, "/k", 1440},
		{"tuning file", flags(), tuning("overlay: {encryption: wireguard, privateKeyFile: /f}\n"), configs.EncryptionWireGuard, "/f", 1440},
		{"flags win over the tuning file", flags("--overlay-encryption", "none", "--wireguard-key-file", "/k"),
			tuning("overlay: {encryption: wireguard, privateKeyFile: /f}\n"), configs.EncryptionNone, "/k", 1472},
		{"flag on a tuning file without encryption", flags("--overlay-encryption", "wireguard"), tuning("overlay: {underlayMTU: 9000}\n"),
			configs.EncryptionWireGuard, configs.DefaultWireGuardKeyFile, 9000 - 28 - 32},
	} {
		var before configs.File
		if tc.file != nil {
			before = *tc.file
		}
		cfg, err := tc.k.kubeConfig(tc.file, hostgwNode)
		if err != nil {
			t.Errorf("%s: kubeConfig = %v", tc.name, err)
			continue
		}
		if cfg.Overlay.Encryption != tc.encryption || cfg.Overlay.PrivateKeyFile != tc.keyFile || cfg.Overlay.MTU != tc.mtu || cfg.TUN.MTU != tc.mtu {
			t.Errorf("%s: kubeConfig = overlay %+v, TUN MTU %d; want encryption %s, key file %s, MTU %d", tc.name, cfg.Overlay, cfg.TUN.MTU, tc.encryption, tc.keyFile, tc.mtu)
		}
		if tc.file != nil && tc.file.Overlay != before.Overlay {
			t.Errorf("%s: kubeConfig changed the tuning file's overlay to %+v", tc.name, tc.file.Overlay)
		}
	}
}

// TestEncryptionFlags: the flags' mistakes are usage errors that say what
// to do.
func TestEncryptionFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		inStderr string
	}{
		{[]string{"run", "--in-cluster", "--overlay-encryption=ipsec"}, `"ipsec" is not an encryption (want none or wireguard)`},
		{[]string{"run", "--config", "x.yaml", "--overlay-encryption=wireguard"}, "from a config file, set overlay.encryption"},
		{[]string{"run", "--in-cluster", "--sidecar", "--wireguard-key-file=/k"}, "not with --sidecar"},
	} {
		code, _, stderr := run(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("vrouter %q = exit %d, stderr %q; want exit 2 with %q", tc.args, code, stderr, tc.inStderr)
		}
	}
	_, stdout, _ := run("run", "-h")
	for _, want := range []string{"-overlay-encryption value", "(default none)", "-wireguard-key-file value", "(default " + configs.DefaultWireGuardKeyFile + ")"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("vrouter run -h lacks %q", want)
		}
	}
}

// TestKubeSinkPeerKeys: peers reach the router with their keys, and a peer
// without one is passed on (the router counts it and, over an encrypted
// overlay, does not route to it) rather than dropped here.
func TestKubeSinkPeerKeys(t *testing.T) {
	key := wireguard.Key{1, 2, 3}
	master := kube.Node{Name: "hostgw-master", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, Address: netip.MustParseAddr("192.168.31.201")}
	withKey := hostgwNode
	withKey.PublicKey = key
	s := &kubeSink{log: zap.NewNop(), first: make(chan struct{}), port: 8285}
	s.peers = []kube.Node{master, withKey}
	got := s.routerPeersLocked()
	want := []router.Peer{
		{Name: "hostgw-master", Endpoint: netip.MustParseAddrPort("192.168.31.201:8285"), PodCIDRs: master.PodCIDRs},
		{Name: "hostgw-node", Endpoint: netip.MustParseAddrPort("192.168.31.202:8285"), PodCIDRs: hostgwNode.PodCIDRs, PublicKey: key},
	}
	if !slices.EqualFunc(got, want, func(a, b router.Peer) bool {
		return a.Name == b.Name && a.Endpoint == b.Endpoint && slices.Equal(a.PodCIDRs, b.PodCIDRs) && a.PublicKey == b.PublicKey
	}) {
		t.Errorf("routerPeersLocked() = %+v, want %+v", got, want)
	}
	// This Node's own key is published, not read: a change to it is no
	// change that needs a restart.
	if !sameNodeState(withKey, hostgwNode) {
		t.Errorf("sameNodeState(key added) = false, want true")
	}
	moved := withKey
	moved.Address = netip.MustParseAddr("192.168.31.9")
	if sameNodeState(moved, hostgwNode) {
		t.Errorf("sameNodeState(address changed) = true, want false")
	}
}

// TestKubeConfigBusyPoll: --busy-poll, when given, wins over the tuning
// file's router.busyPoll; a window out of range is refused as the flag is
// parsed.
func TestKubeConfigBusyPoll(t *testing.T) {
	tuning, err := configs.ParseTuning([]byte(head + "clusterCIDRs: [10.244.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\nrouter: {busyPoll: 2ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		flag string // "" not given
		file *configs.File
		want time.Duration
	}{
		{"default", "", nil, 0},
		{"flag", "10ms", nil, 10 * time.Millisecond},
		{"tuning file", "", tuning, 2 * time.Millisecond},
		{"flag wins", "0", tuning, 0},
	} {
		k := &kubeFlags{clusterCIDR: "10.244.0.0/16", serviceCIDR: "10.96.0.0/12"}
		if tc.flag != "" {
			if err := k.busyPoll.Set(tc.flag); err != nil {
				t.Fatalf("%s: --busy-poll %s: %v", tc.name, tc.flag, err)
			}
		}
		cfg, err := k.kubeConfig(tc.file, hostgwNode)
		if err != nil {
			t.Errorf("%s: kubeConfig = %v", tc.name, err)
			continue
		}
		if cfg.BusyPoll != tc.want {
			t.Errorf("%s: kubeConfig = BusyPoll %v; want %v", tc.name, cfg.BusyPoll, tc.want)
		}
	}
	for _, bad := range []string{"fast", "-1ms", "2s", "100ns"} {
		var f busyPollFlag
		if err := f.Set(bad); err == nil || !strings.Contains(err.Error(), "1µs..1s") {
			t.Errorf("--busy-poll %s: %v, want an error giving the range", bad, err)
		}
	}
}
