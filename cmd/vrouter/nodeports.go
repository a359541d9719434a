package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/dataplane"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/publish"
	"github.com/vrouter/vrouter/configs"
)

// nodePortFlags choose where node ports are served: the node's addresses
// (--nodeport-addresses, kube-proxy's flag), or a parent namespace's
// through a publish helper (--publish-socket, --publish-address).
type nodePortFlags struct {
	addrs        string // --nodeport-addresses, as given; "" keeps the config's
	nodePortCIDR []netip.Prefix
	primary      bool

	socket  string // --publish-socket
	publish string // --publish-address, comma-separated
}

func (f *nodePortFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addrs, "nodeport-addresses", "",
		"serve node ports on the node's addresses inside these comma-separated CIDRs, or \"primary\" for the node's own address (kube-proxy's flag; overrides lb.nodePortAddresses; default: the config's, else primary)")
	fs.StringVar(&f.socket, "publish-socket", "",
		"ask the helper at this unix socket (vrouter publish, in the parent network namespace) for the node-port sockets, so a rootless router's node ports answer on the parent's addresses")
	fs.StringVar(&f.publish, "publish-address", "127.0.0.1",
		"with --publish-socket: the parent namespace's comma-separated addresses node ports are published on")
}

// check parses the flags.
func (f *nodePortFlags) check() error {
	switch strings.TrimSpace(f.addrs) {
	case "":
	case "primary":
		f.primary = true
	default:
		for _, s := range strings.Split(f.addrs, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return usageErrorf("--nodeport-addresses %q: %q is not a CIDR (want e.g. 192.168.31.0/24, or primary)", f.addrs, s)
			}
			f.nodePortCIDR = append(f.nodePortCIDR, p.Masked())
		}
	}
	if f.socket != "" {
		if _, err := f.publishAddrs(); err != nil {
			return err
		}
	}
	return nil
}

func (f *nodePortFlags) publishAddrs() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range strings.Split(f.publish, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || a.Zone() != "" {
			return nil, usageErrorf("--publish-address %q: %q is not an IP address (want e.g. 127.0.0.1 or 0.0.0.0)", f.publish, s)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// config applies --nodeport-addresses to cfg, as it is loaded and on
// every reload.
func (f *nodePortFlags) config(cfg *configs.Config) {
	switch {
	case f.primary:
		cfg.LB.NodePortAddresses = nil
	case f.nodePortCIDR != nil:
		cfg.LB.NodePortAddresses = f.nodePortCIDR
	}
}

// options sets the data path's Binder and publish addresses.
func (f *nodePortFlags) options(opts *dataplane.Options) error {
	if f.socket == "" {
		return nil
	}
	addrs, err := f.publishAddrs()
	if err != nil {
		return err
	}
	opts.Binder = &publish.Client{Socket: f.socket}
	opts.PublishAddresses = addrs
	return nil
}

func (f *nodePortFlags) String() string {
	if f.socket != "" {
		return fmt.Sprintf("published via %s on %s", f.socket, f.publish)
	}
	return "node addresses"
}
