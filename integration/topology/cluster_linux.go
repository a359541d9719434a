package topology

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Cluster methods called after Close.
var ErrClosed = errors.New("topology: cluster closed")

// Cluster is a built Spec: its namespaces and the helpers that act inside
// them. Namespaces are named by their short names (UnderlayNS, node and
// pod names); the prefix is added internally. All methods are safe for
// concurrent use.
type Cluster struct {
	spec Spec   // validated, with Prefix, NetnsDir and MTU filled in
	dir  string // where namespaces are bind-mounted; "" when unnamed

	// byName and order are written only by Build.
	byName map[string]*netNS
	order  []*netNS // creation order; Close releases them in reverse

	// mu guards closed and servers, and is held across every use of the
	// rtnetlink handles so that Close cannot close one mid-request.
	mu      sync.Mutex
	closed  bool
	servers map[*Server]struct{}
}

// Build creates every namespace and link that spec declares (see the
// package documentation for the layout) and returns once every link is
// up and passes traffic. On any failure it removes whatever it made and
// returns the error; a spec that fails Validate creates nothing. The
// caller must Close the cluster; tests use BuildT, which does.
func Build(spec Spec) (_ *Cluster, err error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = cloneSpec(spec)
	if spec.Prefix == "" {
		spec.Prefix = randomPrefix()
	}
	if spec.MTU == 0 {
		spec.MTU = DefaultMTU
	}
	if spec.NetnsDir == "" {
		spec.NetnsDir = DefaultNetnsDir
	}
	dir, err := prepareNetnsDir(spec.NetnsDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		spec:    spec,
		dir:     dir,
		byName:  make(map[string]*netNS),
		servers: make(map[*Server]struct{}),
	}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("build topology %s: %w", spec.Prefix, err), c.Close())
		}
	}()

	ul, err := c.newNS(UnderlayNS, nil)
	if err != nil {
		return nil, err
	}
	if err := addBridge(ul.nl, UnderlayBridge, spec.MTU); err != nil {
		return nil, err
	}
	for i, node := range spec.Nodes {
		if err := c.buildNode(ul, i, node); err != nil {
			return nil, err
		}
	}
	if err := c.waitUp(linkUpTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// linkUpTimeout bounds how long Build waits for links to become
// operational. It normally takes milliseconds; seconds happen only when
// the kernel is busy destroying many namespaces at once.
const linkUpTimeout = 10 * time.Second

// waitUp waits until every link Build made is operationally up. The
// kernel attaches a link's transmit queue only when its link watcher
// (shared by all namespaces, and slowed down by other namespaces being
// destroyed) gets to the carrier change; until then everything sent on the
// link, an ARP request say, is dropped, and the first ping after Build
// would fail for a second. Bridges without ports stay down and are not
// waited for.
func (c *Cluster) waitUp(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, n := range c.order {
		for {
			down, err := downLinks(n.nl)
			if err != nil {
				return fmt.Errorf("list links in %s: %w", n.name, err)
			}
			if len(down) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("links %v in %s not up after %v", down, n.name, timeout)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// downLinks lists the links in h's namespace that should carry traffic
// but are not operationally up.
func downLinks(h *netlink.Handle) ([]string, error) {
	links, err := h.LinkList()
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return []string{"(dump interrupted)"}, nil // try again
	}
	if err != nil {
		return nil, err
	}
	ports := map[int]bool{}
	for _, l := range links {
		ports[l.Attrs().MasterIndex] = true
	}
	var down []string
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" || (l.Type() == "bridge" && !ports[a.Index]) {
			continue
		}
		if a.OperState != netlink.OperUp {
			down = append(down, fmt.Sprintf("%s(%s)", a.Name, a.OperState))
		}
	}
	return down, nil
}

// buildNode makes node i, wires it to the underlay bridge and builds its
// pods.
func (c *Cluster) buildNode(ul *netNS, i int, node NodeSpec) error {
	mtu := c.spec.MTU
	n, err := c.newNS(node.Name, func(*netlink.Handle) error {
		for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := writeSysctl(s, "1"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	port := fmt.Sprintf("veth%d", i)
	if err := addVeth(n, NodeUplink, ul, port, node.Name, UnderlayBridge, mtu); err != nil {
		return fmt.Errorf("node %s: %w", node.Name, err)
	}
	addrs := []netip.Prefix{netip.PrefixFrom(node.Underlay, c.spec.Underlay.Bits())}
	if node.Underlay6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(node.Underlay6, c.spec.Underlay6.Bits()))
	}
	if err := configureLink(n.nl, NodeUplink, addrs...); err != nil {
		return fmt.Errorf("node %s: %w", node.Name, err)
	}

	if !node.PodCIDR.IsValid() {
		return nil // no cni0: see NodeSpec.PodCIDR
	}
	if err := addBridge(n.nl, PodBridge, mtu); err != nil {
		return fmt.Errorf("node %s: %w", node.Name, err)
	}
	addrs = []netip.Prefix{netip.PrefixFrom(node.Gateway(), node.PodCIDR.Bits())}
	if node.PodCIDR6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(node.Gateway6(), node.PodCIDR6.Bits()))
	}
	if err := configureLink(n.nl, PodBridge, addrs...); err != nil {
		return fmt.Errorf("node %s: %w", node.Name, err)
	}

	for j, pod := range node.Pods {
		if err := c.buildPod(n, j, node, pod); err != nil {
			return fmt.Errorf("node %s pod %s: %w", node.Name, pod.Name, err)
		}
	}
	return nil
}

// buildPod does what the CNI bridge plugin does for pod j of node: a veth
// from the pod's eth0 to the node's cni0, the pod address and a default
// route via cni0's address.
func (c *Cluster) buildPod(n *netNS, j int, node NodeSpec, pod PodSpec) error {
	p, err := c.newNS(pod.Name, nil)
	if err != nil {
		return err
	}
	if err := addVeth(p, PodLink, n, fmt.Sprintf("veth%d", j), pod.Name, PodBridge, c.spec.MTU); err != nil {
		return err
	}
	addrs := []netip.Prefix{netip.PrefixFrom(pod.Addr, node.PodCIDR.Bits())}
	if pod.Addr6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(pod.Addr6, node.PodCIDR6.Bits()))
	}
	if err := configureLink(p.nl, PodLink, addrs...); err != nil {
		return err
	}
	link, err := p.nl.LinkByName(PodLink)
	if err != nil {
		return fmt.Errorf("find %s: %w", PodLink, err)
	}
	gws := []netip.Addr{node.Gateway()}
	if pod.Addr6.IsValid() {
		gws = append(gws, node.Gateway6())
	}
	for _, gw := range gws {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}
		if err := p.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("add route default via %v dev %s: %w", gw, PodLink, err)
		}
	}
	return nil
}

// newNS creates and records the namespace with the given short name, with
// loopback up and then setup run inside it.
func (c *Cluster) newNS(short string, setup func(*netlink.Handle) error) (*netNS, error) {
	n, err := newNetNS(c.dir, short, c.spec.Prefix+short, func(h *netlink.Handle) error {
		// No duplicate address detection on links made from now on: their
		// link-local addresses would stay tentative for a second or two,
		// and until then neighbour discovery across the bridges fails.
		// /proc/sys/net resolves against the calling thread's namespace.
		for _, s := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad"} {
			if err := writeSysctl(s, "0"); err != nil {
				return err
			}
		}
		if err := configureLink(h, "lo"); err != nil {
			return err
		}
		if setup != nil {
			return setup(h)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.byName[short] = n
	c.order = append(c.order, n)
	return n, nil
}

// writeSysctl sets /proc/sys/<name> in the calling thread's network
// namespace: /proc/sys/net resolves against the thread that opens it.
func writeSysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value+"\n"), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// addBridge creates an up bridge without addresses.
func addBridge(h *netlink.Handle, name string, mtu int) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up: %w", name, err)
	}
	return nil
}

// addVeth creates a veth pair with end name in namespace in and end port
// in namespace up, attaches port to bridge in up, labels port with alias
// (the name of what is behind it, shown by `ip link`) and sets port up.
// The in end stays down for configureLink.
func addVeth(in *netNS, name string, up *netNS, port, alias, bridge string, mtu int) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, MTU: mtu},
		PeerName:      port,
		PeerNamespace: netlink.NsFd(int(up.file.Fd())),
	}
	err := in.nl.LinkAdd(veth)
	runtime.KeepAlive(up.file)
	if err != nil {
		return fmt.Errorf("add veth %s (in %s) peer %s (in %s): %w", name, in.name, port, up.name, err)
	}
	l, err := up.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find veth %s in %s: %w", port, up.name, err)
	}
	br, err := up.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s in %s: %w", bridge, up.name, err)
	}
	if err := up.nl.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set alias of %s in %s: %w", port, up.name, err)
	}
	if err := up.nl.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("attach %s to %s in %s: %w", port, bridge, up.name, err)
	}
	if err := up.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", port, up.name, err)
	}
	return nil
}

// configureLink adds addrs to link name and sets it up. IPv6 addresses
// skip duplicate address detection so they work at once, as nothing else
// on these links can hold them.
func configureLink(h *netlink.Handle, name string, addrs ...netip.Prefix) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	for _, a := range addrs {
		na := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, na); err != nil {
			return fmt.Errorf("add address %v to %s: %w", a, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func randomPrefix() string {
	var b [3]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return DefaultPrefixBase + hex.EncodeToString(b[:]) + "-"
}

// cloneSpec deep-copies the slices of s so that the caller may change its
// Spec after Build.
func cloneSpec(s Spec) Spec {
	s.Nodes = slices.Clone(s.Nodes)
	for i := range s.Nodes {
		s.Nodes[i].Pods = slices.Clone(s.Nodes[i].Pods)
	}
	return s
}

// Close stops the servers the cluster started and deletes every namespace
// it made. Processes started with Command are the caller's: Close does not
// kill them, and a namespace one of them is still in lives on, unnamed,
// until it exits. Close is idempotent; later calls return nil.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	servers := make([]*Server, 0, len(c.servers))
	for s := range c.servers {
		servers = append(servers, s)
	}
	c.mu.Unlock()

	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Close())
	}
	for _, n := range slices.Backward(c.order) {
		errs = append(errs, n.close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close topology %s: %w", c.spec.Prefix, err)
	}
	return nil
}

// Spec returns the spec the cluster was built from, with Prefix, NetnsDir
// and MTU filled in.
func (c *Cluster) Spec() Spec { return cloneSpec(c.spec) }

// Prefix is the prefix of every namespace name.
func (c *Cluster) Prefix() string { return c.spec.Prefix }

// NetnsDir is the directory holding the namespaces' bind mounts, or ""
// when they are unnamed (held open by this process only).
func (c *Cluster) NetnsDir() string { return c.dir }

// Namespaces returns the short names of every namespace, in creation
// order: UnderlayNS, then each node followed by its pods.
func (c *Cluster) Namespaces() []string {
	names := make([]string, len(c.order))
	for i, n := range c.order {
		names[i] = n.short
	}
	return names
}

// NetnsName returns the full name of namespace ns (Prefix+ns), the name
// `ip netns` shows when NetnsDir is DefaultNetnsDir.
func (c *Cluster) NetnsName(ns string) (string, error) {
	n, err := c.lookup(ns)
	if err != nil {
		return "", err
	}
	return n.name, nil
}

// Path returns a path that enters namespace ns with setns(2) or
// `nsenter --net=PATH`: the bind mount, or /proc/PID/fd/FD of this
// process when namespaces are unnamed.
func (c *Cluster) Path(ns string) (string, error) {
	n, err := c.lookup(ns)
	if err != nil {
		return "", err
	}
	return n.pathOrFD(), nil
}

func (c *Cluster) lookup(ns string) (*netNS, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	n, ok := c.byName[ns]
	if !ok {
		return nil, fmt.Errorf("unknown namespace %q, want one of %v", ns, c.Namespaces())
	}
	return n, nil
}

// Do runs fn on an OS thread that has entered namespace ns and waits for
// it to return. Sockets fn creates stay in ns after Do returns, so a test
// can net.Listen in one pod and net.Dial from another. Goroutines fn
// starts do not run in ns, and neither does anything the standard library
// does on other goroutines (http.Transport dials, DNS lookups): create
// sockets in fn itself. A panic in fn is re-raised in the caller; fn must
// not call t.FailNow (Do then returns an error).
func (c *Cluster) Do(ns string, fn func() error) error {
	n, err := c.lookup(ns)
	if err != nil {
		return err
	}
	return n.do(fn)
}

// Command returns a command that runs program name inside namespace ns,
// by way of `nsenter --net=PATH -- name args...` (nsenter is from
// util-linux). Only the network namespace changes; the mount namespace,
// and so /sys, stay the caller's. The caller owns the process; Close does
// not kill it. For an unknown namespace the command fails to start.
func (c *Cluster) Command(ns, name string, args ...string) *exec.Cmd {
	return c.CommandContext(context.Background(), ns, name, args...)
}

// CommandContext is Command with a context that kills the process, as
// exec.CommandContext.
func (c *Cluster) CommandContext(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	path, err := c.Path(ns)
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + path, "--", name}, args...)...)
	if err != nil {
		cmd.Err = fmt.Errorf("command %s in netns %s: %w", name, ns, err)
	}
	return cmd
}

// withHandle runs fn with the rtnetlink handle of namespace ns, holding
// c.mu so that Close waits for it.
func (c *Cluster) withHandle(ns string, fn func(h *netlink.Handle) error) error {
	n, ok := c.byName[ns]
	if !ok {
		return fmt.Errorf("unknown namespace %q", ns)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return fn(n.nl)
}
