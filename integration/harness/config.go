package harness

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/router/wireguard"
)

// OverlayPort is the overlay port every generated config uses.
const OverlayPort = 8285

// ConfigOptions shape the generated config files.
type ConfigOptions struct {
	// ClusterCIDR defaults to 10.244.0.0/16; ServiceCIDR to 10.96.0.0/12.
	ClusterCIDR, ServiceCIDR netip.Prefix
	// Services are added to every node's file.
	Services []configs.ServiceSpec
	// UnderlayMTU, if set, is written as overlay.underlayMTU.
	UnderlayMTU int
	// TunnelMTU, if set, is written as overlay.mtu.
	TunnelMTU int
	// Exclude names nodes left out of every other node's peers.
	Exclude []string
	// Egress is written as the egress section.
	Egress configs.EgressSpec
	// LB is written as the lb section.
	LB configs.LBSpec
	// WireGuard, when set, encrypts the overlay: each node's private key
	// by node name. WriteConfig writes a node's key into its directory
	// (overlay.privateKeyFile) and each peer's public key into its file;
	// a peer without a key here gets none.
	WireGuard map[string]wireguard.Key
	// BusyPoll, if set, is written as router.busyPoll.
	BusyPoll string
}

func (o ConfigOptions) clusterCIDR() netip.Prefix {
	if o.ClusterCIDR.IsValid() {
		return o.ClusterCIDR
	}
	return netip.MustParsePrefix("10.244.0.0/16")
}

func (o ConfigOptions) serviceCIDR() netip.Prefix {
	if o.ServiceCIDR.IsValid() {
		return o.ServiceCIDR
	}
	return netip.MustParsePrefix("10.96.0.0/12")
}

func podCIDRs(n topology.NodeSpec) []string {
	out := []string{n.PodCIDR.String()}
	if n.PodCIDR6.IsValid() {
		out = append(out, n.PodCIDR6.String())
	}
	return out
}

// NodeFile is the config file of one node of spec: every other node is a
// peer (except those in opts.Exclude).
func NodeFile(spec topology.Spec, node string, opts ConfigOptions) (*configs.File, error) {
	self, ok := spec.Node(node)
	if !ok {
		return nil, fmt.Errorf("node %q is not in the spec", node)
	}
	f := &configs.File{
		APIVersion: configs.APIVersion,
		Kind:       configs.Kind,
		Node: configs.NodeSpec{
			Name:            self.Name,
			PodCIDRs:        podCIDRs(self),
			UnderlayAddress: self.Underlay.String(),
		},
		Overlay:      configs.OverlaySpec{Port: OverlayPort, UnderlayMTU: opts.UnderlayMTU, MTU: opts.TunnelMTU},
		ClusterCIDRs: []string{opts.clusterCIDR().String()},
		ServiceCIDRs: []string{opts.serviceCIDR().String()},
		Services:     opts.Services,
		Egress:       opts.Egress,
		LB:           opts.LB,
		Router:       configs.RouterSpec{BusyPoll: opts.BusyPoll},
	}
	if self.PodCIDR6.IsValid() {
		f.ClusterCIDRs = append(f.ClusterCIDRs, "fd00:10:244::/48")
		f.ServiceCIDRs = append(f.ServiceCIDRs, "fd00:10:96::/108")
	}
	for _, n := range spec.Nodes {
		if n.Name == node || contains(opts.Exclude, n.Name) {
			continue
		}
		ps := configs.PeerSpec{
			Name:            n.Name,
			UnderlayAddress: n.Underlay.String(),
			PodCIDRs:        podCIDRs(n),
		}
		if k, ok := opts.WireGuard[n.Name]; ok {
			ps.PublicKey = k.Public().String()
		}
		f.Peers = append(f.Peers, ps)
	}
	if opts.WireGuard != nil {
		f.Overlay.Encryption = configs.EncryptionWireGuard
	}
	return f, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// WriteConfig writes node's config file into dir and returns its path. The
// file is validated with configs.Load before it is returned.
func WriteConfig(dir string, spec topology.Spec, node string, opts ConfigOptions) (string, error) {
	f, err := NodeFile(spec, node, opts)
	if err != nil {
		return "", err
	}
	if k, ok := opts.WireGuard[node]; ok {
		f.Overlay.PrivateKeyFile = filepath.Join(dir, node+".wireguard.key")
		if err := os.WriteFile(f.Overlay.PrivateKeyFile, []byte(k.String()+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("marshal config of %s: %w", node, err)
	}
	path := filepath.Join(dir, node+".yaml")
	header := fmt.Sprintf("# vrouter config for node %s, generated from the cluster spec.\n", node)
	if err := writeFileAtomic(path, append([]byte(header), b...)); err != nil {
		return "", err
	}
	if _, err := configs.Load(path); err != nil {
		return "", fmt.Errorf("generated config of %s is invalid: %w", node, err)
	}
	return path, nil
}

// writeFileAtomic replaces path in one rename, as editors and ConfigMap
// updates do, so a watching router never reads half a file.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
