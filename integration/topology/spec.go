package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Names and defaults used by Build.
const (
	// DefaultNetnsDir is where Build bind-mounts named namespaces when
	// Spec.NetnsDir is empty; iproute2 ("ip netns") looks there too.
	DefaultNetnsDir = "/run/netns"
	// DefaultMTU is the MTU of every veth and bridge when Spec.MTU is 0.
	DefaultMTU = 1500
	// DefaultPrefixBase starts the random prefix Build picks when
	// Spec.Prefix is empty; Cleanup(DefaultPrefixBase) removes the
	// leftovers of every such run.
	DefaultPrefixBase = "vrt-"

	// UnderlayNS is the short name of the namespace holding the underlay
	// bridge. Node and pod names may not use it.
	UnderlayNS = "underlay"

	// Interface names Build uses; see the package documentation.
	UnderlayBridge = "br0"  // in the underlay namespace
	NodeUplink     = "eth0" // node side of the node's underlay veth
	PodBridge      = "cni0" // in each node namespace
	PodLink        = "eth0" // pod side of the pod's veth
)

const (
	maxNameLen = 64 // short names and prefixes; netns names are file names
	minMTU     = 1280
	maxMTU     = 65535
)

// Spec declares a cluster: nodes joined by one underlay L2 segment, each
// node with a cni0 bridge and pods behind it. The zero value of every
// optional field is a documented default. Build validates the Spec with
// Validate before it creates anything.
type Spec struct {
	// Prefix starts the name of every namespace Build makes, so parallel
	// runs never collide and Cleanup(Prefix) finds a crashed run's
	// leftovers. Empty means DefaultPrefixBase plus six random hex digits
	// and "-" (e.g. "vrt-3fa2c1-").
	Prefix string
	// NetnsDir is where namespaces are bind-mounted so that
	// `ip netns exec` (for DefaultNetnsDir) or `nsenter --net=DIR/NAME`
	// reach them. Empty means DefaultNetnsDir. The package documentation
	// says what Build does when the directory is not writable.
	NetnsDir string
	// Underlay is the node network, e.g. 192.168.31.0/24. Required, IPv4.
	Underlay netip.Prefix
	// Underlay6 optionally makes the underlay dual-stack. When it is
	// set, every node needs an Underlay6 address in it.
	Underlay6 netip.Prefix
	// Nodes in order. At least one.
	Nodes []NodeSpec
	// MTU of every veth and bridge. Zero means DefaultMTU.
	MTU int
}

// NodeSpec declares one node: a namespace with eth0 on the underlay and a
// cni0 bridge that holds the first address of each pod CIDR.
type NodeSpec struct {
	// Name is the short name; the namespace is Spec.Prefix+Name.
	Name string
	// Underlay is eth0's IPv4 address, inside Spec.Underlay.
	Underlay netip.Addr
	// Underlay6 is eth0's IPv6 address, inside Spec.Underlay6; required
	// exactly when Spec.Underlay6 is set.
	Underlay6 netip.Addr
	// PodCIDR is the node's IPv4 pod subnet, e.g. 10.244.0.0/24. A node
	// without one (and without pods) gets no cni0: that is a node whose
	// pods someone else makes, such as the kubelet and its CNI plugin in
	// integration/cluster, once kube-controller-manager allocated the
	// node's pod CIDR.
	PodCIDR netip.Prefix
	// PodCIDR6 is the node's optional IPv6 pod subnet.
	PodCIDR6 netip.Prefix
	// Pods on this node, in order.
	Pods []PodSpec
}

// PodSpec declares one pod: a namespace with eth0 on its node's cni0.
type PodSpec struct {
	// Name is the short name; the namespace is Spec.Prefix+Name. Names
	// are unique across the whole cluster.
	Name string
	// Addr is the pod's IPv4 address inside the node's PodCIDR.
	Addr netip.Addr
	// Addr6 is the optional IPv6 address inside the node's PodCIDR6.
	Addr6 netip.Addr
}

// Gateway is cni0's IPv4 address: the first host address of PodCIDR, as
// the CNI bridge plugin assigns it. Pods route everything through it.
func (n NodeSpec) Gateway() netip.Addr {
	return n.PodCIDR.Masked().Addr().Next()
}

// Gateway6 is cni0's IPv6 address (first address after the subnet
// address of PodCIDR6), or the zero Addr without PodCIDR6.
func (n NodeSpec) Gateway6() netip.Addr {
	if !n.PodCIDR6.IsValid() {
		return netip.Addr{}
	}
	return n.PodCIDR6.Masked().Addr().Next()
}

// Node returns the node with the given short name.
func (s Spec) Node(name string) (NodeSpec, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeSpec{}, false
}

// Pod returns the pod with the given short name and the node it is on.
func (s Spec) Pod(name string) (PodSpec, NodeSpec, bool) {
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if p.Name == name {
				return p, n, true
			}
		}
	}
	return PodSpec{}, NodeSpec{}, false
}

// Seed is the cluster of the seed article (flannel host-gw, two nodes):
//
//	hostgw-master 192.168.31.201  10.244.0.0/24  nginx-th5pz 10.244.0.4,
//	                                             coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	hostgw-node   192.168.31.202  10.244.1.0/24  nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
// Prefix is empty, so Build picks a random one.
func Seed() Spec {
	return Spec{
		Underlay: netip.MustParsePrefix("192.168.31.0/24"),
		Nodes: []NodeSpec{
			{
				Name:     "hostgw-master",
				Underlay: netip.MustParseAddr("192.168.31.201"),
				PodCIDR:  netip.MustParsePrefix("10.244.0.0/24"),
				Pods: []PodSpec{
					{Name: "nginx-th5pz", Addr: netip.MustParseAddr("10.244.0.4")},
					{Name: "coredns-xx6mc", Addr: netip.MustParseAddr("10.244.0.2")},
					{Name: "coredns-8qxfv", Addr: netip.MustParseAddr("10.244.0.3")},
				},
			},
			{
				Name:     "hostgw-node",
				Underlay: netip.MustParseAddr("192.168.31.202"),
				PodCIDR:  netip.MustParsePrefix("10.244.1.0/24"),
				Pods: []PodSpec{
					{Name: "nginx-4k7xw", Addr: netip.MustParseAddr("10.244.1.2")},
					{Name: "nginx-j6zwk", Addr: netip.MustParseAddr("10.244.1.3")},
				},
			},
		},
	}
}

// ThreeNodes is Seed plus node hostgw-node2 (192.168.31.203,
// 10.244.2.0/24) with pod busybox at 10.244.2.2.
func ThreeNodes() Spec {
	s := Seed()
	s.Nodes = append(s.Nodes, NodeSpec{
		Name:     "hostgw-node2",
		Underlay: netip.MustParseAddr("192.168.31.203"),
		PodCIDR:  netip.MustParsePrefix("10.244.2.0/24"),
		Pods:     []PodSpec{{Name: "busybox", Addr: netip.MustParseAddr("10.244.2.2")}},
	})
	return s
}

// SeedDualStack is Seed with IPv6 added to every node and pod: underlay
// fd00:192:168:31::/64 (nodes ::201, ::202), pod CIDRs
// fd00:10:244:N::/64, and each pod's IPv6 address ending in the last
// byte of its IPv4 address (10.244.1.3 -> fd00:10:244:1::3).
func SeedDualStack() Spec {
	s := Seed()
	s.Underlay6 = netip.MustParsePrefix("fd00:192:168:31::/64")
	for i := range s.Nodes {
		n := &s.Nodes[i]
		n.Underlay6 = netip.MustParseAddr(fmt.Sprintf("fd00:192:168:31::%d", n.Underlay.As4()[3]))
		n.PodCIDR6 = netip.MustParsePrefix(fmt.Sprintf("fd00:10:244:%d::/64", n.PodCIDR.Addr().As4()[2]))
		n.Pods = slices.Clone(n.Pods)
		for j := range n.Pods {
			p := &n.Pods[j]
			a := p.Addr.As4()
			p.Addr6 = netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::%d", a[2], a[3]))
		}
	}
	return s
}

// Validate reports every problem in s, each naming the field, the value
// and what was expected. It checks names (charset, length, uniqueness),
// that every address lies in its prefix and is a usable host address,
// that no address is used twice, and that no two subnets overlap.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if s.Prefix != "" {
		if err := checkName(s.Prefix); err != nil {
			bad("Spec.Prefix %q: %w", s.Prefix, err)
		}
	}
	if s.MTU != 0 && (s.MTU < minMTU || s.MTU > maxMTU) {
		bad("Spec.MTU %d: want 0 (default %d) or %d..%d", s.MTU, DefaultMTU, minMTU, maxMTU)
	}
	if !s.Underlay.IsValid() || !s.Underlay.Addr().Is4() {
		bad("Spec.Underlay %v: want an IPv4 prefix such as 192.168.31.0/24", s.Underlay)
	}
	if s.Underlay6.IsValid() && !s.Underlay6.Addr().Is6() {
		bad("Spec.Underlay6 %v: want an IPv6 prefix or none", s.Underlay6)
	}
	if len(s.Nodes) == 0 {
		bad("Spec.Nodes: want at least one node")
	}

	names := map[string]string{UnderlayNS: "the underlay namespace"}
	addrs := map[netip.Addr]string{}
	useName := func(field, name string) {
		if err := checkName(name); err != nil {
			bad("%s %q: %w", field, name, err)
			return
		}
		if other, dup := names[name]; dup {
			bad("%s %q: name already used by %s", field, name, other)
			return
		}
		names[name] = field
	}
	useAddr := func(field string, a netip.Addr) {
		if other, dup := addrs[a]; dup {
			bad("%s %v: address already used by %s", field, a, other)
			return
		}
		addrs[a] = field
	}
	var subnets []netip.Prefix
	var subnetField []string
	useSubnet := func(field string, p netip.Prefix) {
		for i, q := range subnets {
			if p.Overlaps(q) {
				bad("%s %v: overlaps %s %v", field, p, subnetField[i], q)
				return
			}
		}
		subnets = append(subnets, p)
		subnetField = append(subnetField, field)
	}
	if s.Underlay.IsValid() {
		useSubnet("Spec.Underlay", s.Underlay.Masked())
	}
	if s.Underlay6.IsValid() {
		useSubnet("Spec.Underlay6", s.Underlay6.Masked())
	}

	for i, n := range s.Nodes {
		nf := fmt.Sprintf("Nodes[%d]", i)
		useName(nf+".Name", n.Name)
		if s.Underlay.IsValid() {
			if err := checkHost(s.Underlay, n.Underlay); err != nil {
				bad("%s.Underlay %v: %w", nf, n.Underlay, err)
			} else {
				useAddr(nf+".Underlay", n.Underlay)
			}
		}
		switch {
		case s.Underlay6.IsValid() && !n.Underlay6.IsValid():
			bad("%s.Underlay6: missing; Spec.Underlay6 %v is set, so every node needs an address in it", nf, s.Underlay6)
		case !s.Underlay6.IsValid() && n.Underlay6.IsValid():
			bad("%s.Underlay6 %v: Spec.Underlay6 is not set", nf, n.Underlay6)
		case n.Underlay6.IsValid():
			if err := checkHost(s.Underlay6, n.Underlay6); err != nil {
				bad("%s.Underlay6 %v: %w", nf, n.Underlay6, err)
			} else {
				useAddr(nf+".Underlay6", n.Underlay6)
			}
		}

		switch {
		case !n.PodCIDR.IsValid() && (n.PodCIDR6.IsValid() || len(n.Pods) > 0):
			bad("%s.PodCIDR: missing; a node with pods or a PodCIDR6 needs an IPv4 pod CIDR", nf)
		case !n.PodCIDR.IsValid():
			// A node without pods of Build's: no cni0 (see NodeSpec.PodCIDR).
		case !n.PodCIDR.Addr().Is4() || n.PodCIDR.Bits() > 30:
			bad("%s.PodCIDR %v: want an IPv4 prefix of /30 or shorter", nf, n.PodCIDR)
		default:
			useSubnet(nf+".PodCIDR", n.PodCIDR.Masked())
			useAddr(nf+" cni0 (PodCIDR gateway)", n.Gateway())
		}
		if n.PodCIDR6.IsValid() {
			if !n.PodCIDR6.Addr().Is6() || n.PodCIDR6.Bits() > 126 {
				bad("%s.PodCIDR6 %v: want an IPv6 prefix of /126 or shorter", nf, n.PodCIDR6)
			} else {
				useSubnet(nf+".PodCIDR6", n.PodCIDR6.Masked())
				useAddr(nf+" cni0 (PodCIDR6 gateway)", n.Gateway6())
			}
		}

		for j, p := range n.Pods {
			pf := fmt.Sprintf("%s.Pods[%d]", nf, j)
			useName(pf+".Name", p.Name)
			if n.PodCIDR.IsValid() {
				if err := checkHost(n.PodCIDR, p.Addr); err != nil {
					bad("%s.Addr %v: %w", pf, p.Addr, err)
				} else {
					useAddr(pf+".Addr", p.Addr)
				}
			}
			switch {
			case p.Addr6.IsValid() && !n.PodCIDR6.IsValid():
				bad("%s.Addr6 %v: node has no PodCIDR6", pf, p.Addr6)
			case p.Addr6.IsValid():
				if err := checkHost(n.PodCIDR6, p.Addr6); err != nil {
					bad("%s.Addr6 %v: %w", pf, p.Addr6, err)
				} else {
					useAddr(pf+".Addr6", p.Addr6)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid topology spec: %w", err)
	}
	return nil
}

// checkName accepts names that are safe as file names and in messages.
func checkName(name string) error {
	if name == "" {
		return errors.New("want a non-empty name")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%d bytes long, want at most %d", len(name), maxNameLen)
	}
	if name == "." || name == ".." {
		return errors.New("not a usable name")
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("character %q not allowed, want letters, digits, '-', '_' or '.'", r)
		}
	}
	return nil
}

// checkHost reports whether a is a usable host address inside p: not the
// subnet address and, for IPv4, not the broadcast address.
func checkHost(p netip.Prefix, a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("missing, want an address in %v", p)
	}
	if !p.Contains(a) {
		return fmt.Errorf("not inside %v", p)
	}
	if a == p.Masked().Addr() {
		return fmt.Errorf("is the subnet address of %v", p)
	}
	if a.Is4() && p.Bits() < 31 && a == lastAddr(p) {
		return fmt.Errorf("is the broadcast address of %v", p)
	}
	return nil
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
