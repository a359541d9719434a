package dataplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// Desired is a node's desired data path: what the router routes and what
// the load balancer serves. It is a whole state, never a delta. The
// DataPlane keeps the slices it is given: do not modify them afterwards.
type Desired struct {
	// PodCIDRs are this node's pod subnets.
	PodCIDRs []netip.Prefix
	// NodeAddresses are the node's own addresses (its underlay address):
	// a Service endpoint there is local, reached by hairpin SNAT.
	NodeAddresses []netip.Addr
	// TUNAddresses are the node kernel's addresses on the TUN, which it
	// picks as the source of its own connections into the TUN: with the
	// pod CIDRs and NodeAddresses, the only sources the router takes from
	// the TUN (router.Config.NodeAddresses).
	TUNAddresses []netip.Addr
	// RouterAddresses are the router's own addresses inside the stack:
	// the source of its ICMP errors and the hairpin SNAT address.
	RouterAddresses []netip.Addr
	// ClusterCIDRs hold every pod CIDR; ServiceCIDRs every ClusterIP.
	// The node kernel routes both to the TUN (Options.Link).
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// Peers are the other nodes' routers.
	Peers []router.Peer
	// Services are the Service table.
	Services []lb.Service
	// NodePortAddresses select the node's addresses node ports are
	// served on: those inside any of the prefixes; nil means the node's
	// primary addresses (NodeAddresses), as kube-proxy's
	// --nodeport-addresses default. LocalhostNodePorts serves them on
	// 127.0.0.1 too.
	NodePortAddresses  []netip.Prefix
	LocalhostNodePorts bool
	// NonMasqueradeCIDRs are the destinations this node's pods reach
	// with their own address when egress masquerading is on
	// (configs.Egress); nil means ClusterCIDRs and ServiceCIDRs.
	NonMasqueradeCIDRs []netip.Prefix
}

// FromConfig is the desired state a config file describes.
func FromConfig(cfg *configs.Config) Desired {
	d := Desired{
		PodCIDRs:        slices.Clone(cfg.Node.PodCIDRs),
		RouterAddresses: slices.Clone(cfg.RouterAddresses),
		ClusterCIDRs:    slices.Clone(cfg.ClusterCIDRs),
		ServiceCIDRs:    slices.Clone(cfg.ServiceCIDRs),
		Services:        cfg.Services,

		NodePortAddresses:  slices.Clone(cfg.LB.NodePortAddresses),
		LocalhostNodePorts: cfg.LB.LocalhostNodePorts,
		NonMasqueradeCIDRs: slices.Clone(cfg.Egress.NonMasqueradeCIDRs),
	}
	if cfg.Node.Underlay.IsValid() {
		d.NodeAddresses = []netip.Addr{cfg.Node.Underlay.Unmap()}
	}
	for _, p := range cfg.TUN.Addresses {
		d.TUNAddresses = append(d.TUNAddresses, p.Addr().Unmap())
	}
	for _, p := range cfg.Peers {
		d.Peers = append(d.Peers, router.Peer{Name: p.Name, Endpoint: p.Underlay, PodCIDRs: slices.Clone(p.PodCIDRs), PublicKey: p.PublicKey})
	}
	return d
}

// Link is the node kernel's side of the TUN device.
type Link interface {
	// SetRoutes makes the kernel's routes into the TUN exactly routes,
	// adding the missing ones before it removes the others. It is called
	// from one goroutine at a time; a failed call is repeated with the
	// next update.
	SetRoutes(routes []netip.Prefix) error
}

// KernelLink is the Link of the TUN device name in the current network
// namespace (tun.SyncRoutes: it needs CAP_NET_ADMIN).
func KernelLink(name string) Link { return kernelLink(name) }

type kernelLink string

func (l kernelLink) SetRoutes(routes []netip.Prefix) error { return tun.SyncRoutes(string(l), routes) }

func (l kernelLink) SetEgress(r tun.EgressRules) error { return tun.SyncEgress(string(l), r) }

// EgressLink is a Link that also programs the node kernel's egress policy
// routing: the rules that steer pods' traffic to outside destinations
// into the TUN (tun.EgressRules). The DataPlane sets them after every
// update when egress masquerading is on, removes them (those of an
// earlier run too) on its first update when it is off, and removes them
// when Run returns.
type EgressLink interface {
	Link
	SetEgress(r tun.EgressRules) error
}

// Options configure a DataPlane. Zero values are the documented defaults.
type Options struct {
	// Logger is named and passed on to the router and lb. Default: no
	// logging.
	Logger *zap.Logger
	// Link programs the node kernel's routes into the TUN. Default nil:
	// they are not managed (tun.configure: false).
	Link Link
	// ProxyOnly serves every Service in proxy mode and only its TCP
	// ports; a Service without one is not served. It is a sidecar's data
	// path: inside a Pod's network namespace a backend's reply would
	// reach the Pod directly, so only terminated connections work. It
	// serves no host sockets (node ports, external addresses).
	ProxyOnly bool
	// Binder opens the host sockets of node ports, external addresses
	// and health-check node ports. Default lb.KernelBinder{}: sockets in
	// this network namespace.
	Binder lb.Binder
	// PublishAddresses, when set, are where node ports are served instead
	// of the node's addresses (Desired.NodePortAddresses and
	// LocalhostNodePorts do not apply), and external addresses are not
	// answered from outside: Binder opens its sockets in another
	// namespace (a rootless router's parent, vrouter publish), whose
	// addresses these are.
	PublishAddresses []netip.Addr
	// InterfaceAddrs lists the node's local addresses: node ports are
	// served on those NodePortAddresses select, and a Service's external
	// address is answered from outside where it is local. Default: the
	// addresses of this network namespace's interfaces.
	InterfaceAddrs func() ([]netip.Addr, error)
}

// DataPlane is a node's programmed data path: the router and the load
// balancer over it, kept equal to a Desired state.
type DataPlane struct {
	log       *zap.Logger
	r         *router.Router
	overlay   router.Conn // the router's; owned by it
	table     *lb.Table
	nat       *lb.NAT
	proxy     *lb.Proxy
	hp        *lb.HostPorts // nil with ProxyOnly
	egress    *lb.Egress    // nil unless egress masquerading is on
	link      Link
	proxyOnly bool
	// mode is the mode of a Service that names none, as the Table
	// resolves it.
	mode lb.Mode

	// afterStep, when set (by tests), is called after each step of an
	// update with the step's name, mu held.
	afterStep func(step string)

	// mu serializes updates and guards the fields below.
	mu sync.Mutex
	// node is the desired state last applied, without its Services
	// (the Table holds them); applied tells whether there was one.
	node    Desired
	applied bool
	// vips are the VIPs the stack terminates, per Service
	// (terminated); hosts are the Service endpoints outside the pod
	// network, which the router hands to the node kernel (outside);
	// exts are the Services' external and load-balancer IPs, which the
	// node kernel routes into the TUN (externals).
	vips, hosts, exts addrRefs
	// rc is the router's configuration as last set; set tells whether
	// it was.
	rc  router.Config
	set bool
	// routes are the kernel routes Link last took; routesSet tells
	// whether it did.
	routes    []netip.Prefix
	routesSet bool
	// egressRules are the egress rules the Link last took; egressSet
	// tells whether it did.
	egressRules tun.EgressRules
	egressSet   bool

	// publish and ifaddrs are Options.PublishAddresses and
	// InterfaceAddrs; hostAddrs are the node-port and local addresses
	// HostPorts last took.
	publish            []netip.Addr
	ifaddrs            func() ([]netip.Addr, error)
	hostAddrs          [2][]netip.Addr
	hostAddrsSet       bool
	ifaddrsErrReported bool
}

// New builds the data path of cfg's node over dev and conn: the router,
// the Service table, the NAT and the proxy, with the settings that take
// effect on restart (MTUs, the node's name and zone, lb's defaults and
// tuning). It programs nothing (see Apply) and starts nothing (see Run).
// The DataPlane owns dev and conn; New closes them if it fails.
func New(dev tun.Device, conn router.Conn, cfg *configs.Config, opts Options) (*DataPlane, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r, err := router.New(router.Options{
		Logger:   log.Named("router"),
		TUN:      dev,
		Overlay:  conn,
		MTU:      cfg.Overlay.MTU,
		TUNMTU:   cfg.TUN.MTU,
		BusyPoll: cfg.BusyPoll,
	})
	if err != nil {
		return nil, errors.Join(err, dev.Close(), conn.Close())
	}
	table, err := lb.NewTable(log.Named("lb"), lb.Options{
		NodeName: cfg.Node.Name,
		Zone:     cfg.Node.Zone,
		Mode:     cfg.LB.Mode,
		Picker:   cfg.LB.Picker,
		Outlier:  cfg.LB.Outlier,
	})
	if err != nil {
		return nil, errors.Join(err, r.Close())
	}
	nat, err := lb.NewNAT(table, log.Named("lb"), cfg.LB.NAT)
	if err != nil {
		return nil, errors.Join(err, r.Close())
	}
	var egress *lb.Egress
	if cfg.Egress.Masquerade && !opts.ProxyOnly {
		var sendSuper func([]byte, int) bool
		if r.TUNOffload() {
			sendSuper = r.WriteTUNSuper
		}
		egress, err = lb.NewEgress(table, log.Named("lb"), lb.EgressOptions{
			Send:           r.WriteTUN,
			SendSuper:      sendSuper,
			MTU:            cmp.Or(cfg.TUN.MTU, cfg.Overlay.MTU, router.DefaultMTU),
			UDPTimeout:     cfg.LB.NAT.UDPTimeout,
			MaxFlows:       cfg.Egress.MaxFlows,
			MaxFlowsPerPod: cfg.Egress.MaxFlowsPerPod,
		})
		if err != nil {
			return nil, errors.Join(err, r.Close())
		}
		r.SetHook(egressThenNAT{egress, nat})
	} else {
		r.SetHook(nat)
	}
	closeAll := func() error {
		if egress != nil {
			egress.Close()
		}
		return r.Close()
	}
	// The proxy installs its TCP handler in the stack: before the router
	// runs, as the handler slot is not synchronized with the packet path.
	proxy, err := lb.NewProxy(r.Stack(), table, log.Named("lb"), cfg.LB.Proxy)
	if err != nil {
		return nil, errors.Join(err, closeAll())
	}
	var hp *lb.HostPorts
	if !opts.ProxyOnly {
		hp, err = lb.NewHostPorts(table, proxy, log.Named("lb"), lb.HostPortsOptions{
			Binder:     opts.Binder,
			UDPTimeout: cfg.LB.NAT.UDPTimeout,
		})
		if err != nil {
			return nil, errors.Join(err, closeAll())
		}
	}
	ifaddrs := opts.InterfaceAddrs
	if ifaddrs == nil {
		ifaddrs = interfaceAddrs
	}
	return &DataPlane{
		overlay:   conn,
		log:       log.Named("dataplane"),
		r:         r,
		table:     table,
		nat:       nat,
		proxy:     proxy,
		hp:        hp,
		egress:    egress,
		link:      opts.Link,
		proxyOnly: opts.ProxyOnly,
		mode:      cmp.Or(cfg.LB.Mode, lb.DefaultMode),
		publish:   slices.Clone(opts.PublishAddresses),
		ifaddrs:   ifaddrs,
	}, nil
}

// Router, Table, NAT and Proxy are the data path's parts, for the
// metrics, health and admin endpoints. Change them only through the
// DataPlane.
func (dp *DataPlane) Router() *router.Router { return dp.r }

// Overlay is the router's overlay transport: a *wireguard.Conn when the
// overlay is encrypted. The router owns it.
func (dp *DataPlane) Overlay() router.Conn { return dp.overlay }
func (dp *DataPlane) Table() *lb.Table     { return dp.table }
func (dp *DataPlane) NAT() *lb.NAT         { return dp.nat }
func (dp *DataPlane) Proxy() *lb.Proxy     { return dp.proxy }

// HostPorts returns the host sockets' manager, nil for a sidecar
// (Options.ProxyOnly).
func (dp *DataPlane) HostPorts() *lb.HostPorts { return dp.hp }

// Egress returns the egress masquerade, nil unless it is on.
func (dp *DataPlane) Egress() *lb.Egress { return dp.egress }

// egressThenNAT is the router's hook with egress masquerading on: the
// egress takes pods' traffic to outside destinations (never a Service
// key's), and the NAT sees the rest.
type egressThenNAT struct {
	egress *lb.Egress
	nat    *lb.NAT
}

func (h egressThenNAT) Ingress(fromTUN bool, p *packet.Parsed, b []byte) (bool, []byte) {
	if pass, _ := h.egress.Ingress(fromTUN, p, b); !pass {
		return false, nil
	}
	return h.nat.Ingress(fromTUN, p, b)
}

// Run moves packets until ctx is done or the router fails, then releases
// the TUN, the overlay socket and the stack. It owns the router's, the
// NAT's and the proxy's goroutines and returns after they exited, with the
// router's error.
func (dp *DataPlane) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { _ = dp.nat.Run(ctx) })   // returns nil when ctx is done
	wg.Go(func() { _ = dp.proxy.Run(ctx) }) // returns nil when ctx is done, its connections closed
	if dp.hp != nil {
		wg.Go(func() { _ = dp.hp.Run(ctx) }) // returns nil when ctx is done, its sockets closed
		wg.Go(func() { dp.watchAddresses(ctx) })
	}
	if dp.egress != nil {
		wg.Go(func() { _ = dp.egress.Run(ctx) }) // returns nil when ctx is done, its flows closed
	}
	wg.Go(func() {
		err = dp.r.Run(ctx)
		cancel()
	})
	wg.Wait()
	if dp.egress != nil {
		if el, ok := dp.link.(EgressLink); ok {
			// Pods' outside traffic goes back to the main table.
			if rerr := el.SetEgress(tun.EgressRules{}); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove egress rules: %w", rerr))
			}
		}
	}
	return err
}

// Close releases the TUN, the overlay socket and the stacks of a
// DataPlane that will not Run. It is idempotent.
func (dp *DataPlane) Close() error {
	if dp.egress != nil {
		dp.egress.Close()
	}
	return dp.r.Close()
}

// Apply makes d the data path's state: its routing, its Services (a
// Service not listed is removed) and the kernel's routes, in the order the
// package documents. If the router or the Table refuses d, nothing changes
// and the error says why. An error after the Table took d (a stack address
// or a kernel route that could not be removed or added) leaves the rest in
// place; the next update tries again.
func (dp *DataPlane) Apply(d Desired) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return dp.applyLocked(d)
}

func (dp *DataPlane) applyLocked(d Desired) error {
	node := d
	node.Services = nil
	svcs := make([]lb.Service, 0, len(d.Services))
	var vips, hosts, exts addrRefs
	for _, svc := range d.Services {
		svc, ok := dp.adapt(svc)
		if !ok {
			continue
		}
		svcs = append(svcs, svc)
		vips.record(svc.Key(), dp.terminated(&svc))
		hosts.record(svc.Key(), outside(node, &svc))
		exts.record(svc.Key(), externals(&svc))
	}
	return dp.updateLocked(node, wants{vips.keys(), hosts.keys(), exts.keys()}, func() error {
		if err := dp.table.Set(svcs); err != nil {
			return fmt.Errorf("program Services: %w", err)
		}
		if dp.hp != nil {
			dp.hp.Set(svcs)
		}
		dp.vips, dp.hosts, dp.exts = vips, hosts, exts
		return nil
	})
}

// SetPeers sets the other nodes' routers, leaving the rest of the state
// as it is.
func (dp *DataPlane) SetPeers(peers []router.Peer) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	node := dp.node
	node.Peers = slices.Clone(peers)
	return dp.updateLocked(node, wants{dp.vips.keys(), dp.hosts.keys(), dp.exts.keys()}, nil)
}

// SetServices replaces the Service table, leaving the rest of the state
// as it is.
func (dp *DataPlane) SetServices(svcs []lb.Service) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	d := dp.node
	d.Services = svcs
	return dp.applyLocked(d)
}

// UpsertService adds svc or replaces the Service of the same namespace and
// name. Its cost follows svc, not the table.
func (dp *DataPlane) UpsertService(svc lb.Service) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	svc, ok := dp.adapt(svc)
	if !ok {
		// Nothing a sidecar serves is left of it.
		return dp.deleteLocked(svc.Key())
	}
	name, v, h, x := svc.Key(), dp.terminated(&svc), outside(dp.node, &svc), externals(&svc)
	return dp.updateLocked(dp.node, wants{dp.vips.after(name, v), dp.hosts.after(name, h), dp.exts.after(name, x)}, func() error {
		if err := dp.table.Upsert(svc); err != nil {
			return fmt.Errorf("program Service %s: %w", name, err)
		}
		if dp.hp != nil {
			dp.hp.Upsert(svc)
		}
		dp.vips.record(name, v)
		dp.hosts.record(name, h)
		dp.exts.record(name, x)
		return nil
	})
}

// DeleteService removes the Service namespace/name, if it is there.
func (dp *DataPlane) DeleteService(namespace, name string) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	return dp.deleteLocked(lb.ServiceName{Namespace: namespace, Name: name})
}

func (dp *DataPlane) deleteLocked(name lb.ServiceName) error {
	return dp.updateLocked(dp.node, wants{dp.vips.after(name, nil), dp.hosts.after(name, nil), dp.exts.after(name, nil)}, func() error {
		dp.table.Delete(name.Namespace, name.Name)
		if dp.hp != nil {
			dp.hp.Delete(name)
		}
		dp.vips.record(name, nil)
		dp.hosts.record(name, nil)
		dp.exts.record(name, nil)
		return nil
	})
}

// wants are the addresses the Services want of the router after an
// update: the proxy VIPs the stack terminates, the endpoints outside the
// pod network it routes to the node kernel, and the external and
// load-balancer IPs the node kernel routes into the TUN.
type wants struct {
	vips, hosts, exts []netip.Addr
}

// updateLocked moves the data path to node and to the Services that
// change (nil: none) makes, with want what they want afterwards. change
// applies the Table's part and records what it wants; when it fails, the
// earlier steps are undone.
func (dp *DataPlane) updateLocked(node Desired, want wants, change func() error) error {
	prevRC, prevNode, first := dp.rc, dp.node, !dp.applied
	rc := routerConfig(node)
	// 1. The stack holds the VIPs wanted before and after: the Table
	// may call any of them proxy mode while it changes. Likewise the
	// routes to endpoints outside the pod network.
	rc.ServiceAddresses = union(want.vips, prevRC.ServiceAddresses)
	rc.KernelRoutes = hostRoutes(node, union(want.hosts, addrsOf(prevRC.KernelRoutes)))
	if err := dp.setRouterLocked(rc); err != nil {
		return fmt.Errorf("program router: %w", err)
	}
	dp.step("router")
	// 2. Hairpin SNAT and local backends follow this node's pod CIDRs,
	// its own addresses and the router addresses.
	setLocal := first || !slices.Equal(node.PodCIDRs, prevNode.PodCIDRs) ||
		!slices.Equal(node.NodeAddresses, prevNode.NodeAddresses) ||
		!slices.Equal(node.RouterAddresses, prevNode.RouterAddresses)
	if setLocal {
		dp.nat.SetLocal(localPrefixes(node), node.RouterAddresses)
	}
	if dp.egress != nil {
		dp.egress.SetLocal(node.PodCIDRs, nonMasquerade(node), node.RouterAddresses)
	}
	// 3. The Table.
	if change != nil {
		if err := change(); err != nil {
			if setLocal {
				dp.nat.SetLocal(localPrefixes(prevNode), prevNode.RouterAddresses)
			}
			if rerr := dp.setRouterLocked(prevRC); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore router: %w", rerr))
			}
			return err
		}
		dp.step("services")
		// 4. Connections to endpoints that left start draining now.
		dp.proxy.Sync()
	}
	dp.node, dp.applied = node, true
	// 4b. The host sockets serve the node's addresses as they are now.
	dp.setHostAddrsLocked()
	// 5. The stack lets go of the VIPs no longer wanted, but for those
	// whose proxied connections still drain, and of the routes to
	// endpoints no Service has.
	rc.ServiceAddresses = union(want.vips, dp.proxy.VIPs())
	rc.KernelRoutes = hostRoutes(node, want.hosts)
	if err := dp.setRouterLocked(rc); err != nil {
		return fmt.Errorf("remove Service addresses: %w", err)
	}
	dp.step("addresses")
	// 6. The node kernel sends the stack what it is now ready for.
	if err := dp.setRoutesLocked(kernelRoutes(node, want.exts)); err != nil {
		return err
	}
	dp.step("routes")
	// 7. Then the rules that send pods' outside traffic into the TUN.
	if err := dp.setEgressLocked(node); err != nil {
		return err
	}
	return nil
}

// nonMasquerade are the destinations node's pods reach with their own
// address.
func nonMasquerade(node Desired) []netip.Prefix {
	if node.NonMasqueradeCIDRs != nil {
		return node.NonMasqueradeCIDRs
	}
	return slices.Concat(node.ClusterCIDRs, node.ServiceCIDRs)
}

// setEgressLocked hands the Link the egress rules node wants, if they
// changed: none unless egress masquerading is on (which removes an
// earlier run's).
func (dp *DataPlane) setEgressLocked(node Desired) error {
	el, ok := dp.link.(EgressLink)
	if !ok {
		return nil
	}
	var r tun.EgressRules
	if dp.egress != nil {
		r = tun.EgressRules{PodCIDRs: node.PodCIDRs, NonMasquerade: nonMasquerade(node)}
	}
	if dp.egressSet && slices.Equal(r.PodCIDRs, dp.egressRules.PodCIDRs) && slices.Equal(r.NonMasquerade, dp.egressRules.NonMasquerade) {
		return nil
	}
	if err := el.SetEgress(r); err != nil {
		return fmt.Errorf("sync the kernel's egress rules: %w", err)
	}
	dp.egressRules, dp.egressSet = r, true
	return nil
}

// setHostAddrsLocked hands HostPorts the addresses node ports are served
// on and the node's local addresses, if they changed.
func (dp *DataPlane) setHostAddrsLocked() {
	if dp.hp == nil || !dp.applied {
		return
	}
	var nodePort, local []netip.Addr
	if dp.publish != nil {
		nodePort = dp.publish
	} else {
		ifaddrs, err := dp.ifaddrs()
		if err != nil {
			if !dp.ifaddrsErrReported {
				dp.log.Warn("cannot list the node's addresses; node ports are served on its primary addresses only", zap.Error(err))
				dp.ifaddrsErrReported = true
			}
			ifaddrs = nil
		} else {
			dp.ifaddrsErrReported = false
		}
		nodePort = nodePortAddrs(dp.node, ifaddrs)
		local = union(ifaddrs, dp.node.NodeAddresses)
	}
	if dp.hostAddrsSet && slices.Equal(nodePort, dp.hostAddrs[0]) && slices.Equal(local, dp.hostAddrs[1]) {
		return
	}
	dp.hp.SetAddresses(nodePort, local)
	dp.hostAddrs, dp.hostAddrsSet = [2][]netip.Addr{nodePort, local}, true
	dp.log.Info("host sockets serve node ports", zap.Stringers("addresses", nodePort))
}

// addressRefresh is how often Run looks for node addresses that came or
// went (an address added to an interface after start, say).
const addressRefresh = 10 * time.Second

// watchAddresses refreshes the host sockets' addresses every
// addressRefresh until ctx is done.
func (dp *DataPlane) watchAddresses(ctx context.Context) {
	t := time.NewTicker(addressRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			dp.mu.Lock()
			dp.setHostAddrsLocked()
			dp.mu.Unlock()
		}
	}
}

// nodePortAddrs are the addresses node ports are served on, sorted: the
// node's primary addresses, or with d.NodePortAddresses the interface
// addresses inside one of them (never a link-local one: it needs a zone);
// and 127.0.0.1 with d.LocalhostNodePorts.
func nodePortAddrs(d Desired, ifaddrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	if d.NodePortAddresses == nil {
		out = slices.Clone(d.NodeAddresses)
	} else {
		for _, a := range ifaddrs {
			if !a.IsLinkLocalUnicast() && inAny(d.NodePortAddresses, a) {
				out = append(out, a)
			}
		}
	}
	if d.LocalhostNodePorts {
		out = append(out, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	}
	return union(out, nil)
}

// interfaceAddrs lists the addresses of this network namespace's
// interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Zone() == "" {
			out = append(out, p.Addr().Unmap())
		}
	}
	return union(out, nil), nil
}

func (dp *DataPlane) step(name string) {
	if dp.afterStep != nil {
		dp.afterStep(name)
	}
}

// setRouterLocked sets rc unless the router has it already.
func (dp *DataPlane) setRouterLocked(rc router.Config) error {
	if dp.set && routerConfigEqual(rc, dp.rc) {
		return nil
	}
	if err := dp.r.Set(rc); err != nil {
		return err
	}
	dp.rc, dp.set = rc, true
	return nil
}

// setRoutesLocked hands routes to the Link unless it has them already.
func (dp *DataPlane) setRoutesLocked(routes []netip.Prefix) error {
	if dp.link == nil || (dp.routesSet && slices.Equal(routes, dp.routes)) {
		return nil
	}
	if err := dp.link.SetRoutes(routes); err != nil {
		return fmt.Errorf("sync the kernel's routes into the TUN: %w", err)
	}
	dp.routes, dp.routesSet = routes, true
	return nil
}

// adapt returns svc as this data path serves it, and false if it serves
// none of it (ProxyOnly: no TCP port).
func (dp *DataPlane) adapt(svc lb.Service) (lb.Service, bool) {
	if !dp.proxyOnly {
		return svc, true
	}
	svc.Mode = lb.ModeProxy
	var ports []lb.ServicePort
	for _, p := range svc.Ports {
		if p.Proto == lb.TCP {
			ports = append(ports, p)
		}
	}
	if len(ports) < len(svc.Ports) {
		dp.log.Debug("proxy only: UDP ports not served", zap.Stringer("service", svc.Key()))
	}
	svc.Ports = ports
	return svc, len(ports) > 0
}

// terminated returns the VIPs of svc that the stack terminates: all of
// them (ClusterIPs, external and load-balancer IPs) if svc is in proxy
// mode (its own, else the default) and has a TCP port, else none. See the
// package comment for why.
func (dp *DataPlane) terminated(svc *lb.Service) []netip.Addr {
	if cmp.Or(svc.Mode, dp.mode) != lb.ModeProxy ||
		!slices.ContainsFunc(svc.Ports, func(p lb.ServicePort) bool { return p.Proto == lb.TCP }) {
		return nil
	}
	out := make([]netip.Addr, 0, len(svc.ClusterIPs)+len(svc.ExternalIPs)+len(svc.LoadBalancerIPs))
	for _, a := range slices.Concat(svc.ClusterIPs, svc.ExternalIPs, svc.LoadBalancerIPs) {
		out = append(out, a.Unmap())
	}
	return out
}

// externals returns svc's external and load-balancer IPs: pods and the
// node reach them through the router, as ClusterIPs, so the node kernel
// routes each into the TUN (kernelRoutes).
func externals(svc *lb.Service) []netip.Addr {
	var out []netip.Addr
	for _, a := range slices.Concat(svc.ExternalIPs, svc.LoadBalancerIPs) {
		if a = a.Unmap(); a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// addrRefs are addresses wanted per Service, with a count of the Services
// wanting each. The zero value is empty.
type addrRefs struct {
	by   map[lb.ServiceName][]netip.Addr
	refs map[netip.Addr]int
}

// after returns the addresses wanted once Service name wants v.
func (r *addrRefs) after(name lb.ServiceName, v []netip.Addr) []netip.Addr {
	refs := maps.Clone(r.refs)
	if refs == nil {
		refs = make(map[netip.Addr]int)
	}
	for _, a := range r.by[name] {
		if refs[a]--; refs[a] == 0 {
			delete(refs, a)
		}
	}
	for _, a := range v {
		refs[a]++
	}
	return keys(refs)
}

// record records that Service name wants v.
func (r *addrRefs) record(name lb.ServiceName, v []netip.Addr) {
	if r.by == nil {
		r.by, r.refs = make(map[lb.ServiceName][]netip.Addr), make(map[netip.Addr]int)
	}
	for _, a := range r.by[name] {
		if r.refs[a]--; r.refs[a] == 0 {
			delete(r.refs, a)
		}
	}
	for _, a := range v {
		r.refs[a]++
	}
	if len(v) == 0 {
		delete(r.by, name)
	} else {
		r.by[name] = v
	}
}

// keys returns the addresses wanted, sorted.
func (r *addrRefs) keys() []netip.Addr { return keys(r.refs) }

// outside returns svc's endpoint addresses outside node's pod network
// (its pod CIDRs and cluster CIDRs) and Service CIDRs: host-network
// endpoints such as the API server, which the router reaches through the
// node kernel.
func outside(node Desired, svc *lb.Service) []netip.Addr {
	var out []netip.Addr
	for _, e := range svc.Endpoints {
		a := e.Addr.Unmap()
		if !a.IsValid() || slices.Contains(out, a) || inAny(slices.Concat(node.PodCIDRs, node.ClusterCIDRs, node.ServiceCIDRs), a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// hostRoutes are the router's KernelRoutes for endpoint addresses hosts:
// one host route each, but for those a peer's pod CIDR holds (a node
// without cluster CIDRs knows its pod network only from its peers).
func hostRoutes(node Desired, hosts []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range hosts {
		if slices.ContainsFunc(node.Peers, func(p router.Peer) bool { return inAny(p.PodCIDRs, a) }) {
			continue
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// localPrefixes are where node's own backends live, for the NAT's hairpin
// SNAT: its pod CIDRs and its own addresses.
func localPrefixes(node Desired) []netip.Prefix {
	out := slices.Clone(node.PodCIDRs)
	for _, a := range node.NodeAddresses {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// addrsOf returns the addresses of host prefixes ps.
func addrsOf(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Addr())
	}
	return out
}

// inAny reports whether a lies in one of ps.
func inAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// routerConfig is the router's part of d, without Service addresses.
func routerConfig(d Desired) router.Config {
	return router.Config{
		PodCIDRs:      d.PodCIDRs,
		Addresses:     d.RouterAddresses,
		NodeAddresses: nodeSources(d),
		ClusterCIDRs:  d.ClusterCIDRs,
		Peers:         d.Peers,
	}
}

// nodeSources are the node kernel's addresses outside its pod CIDRs, as
// the router admits them as sources from the TUN: its own addresses and
// its TUN addresses, each once, sorted.
func nodeSources(d Desired) []netip.Addr {
	var out []netip.Addr
	for _, a := range slices.Concat(d.NodeAddresses, d.TUNAddresses) {
		if a.IsValid() && !slices.Contains(out, a) && !inAny(d.PodCIDRs, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func routerConfigEqual(a, b router.Config) bool {
	return slices.Equal(a.PodCIDRs, b.PodCIDRs) &&
		slices.Equal(a.NodeAddresses, b.NodeAddresses) &&
		slices.Equal(a.KernelRoutes, b.KernelRoutes) &&
		slices.Equal(a.Addresses, b.Addresses) &&
		slices.Equal(a.ClusterCIDRs, b.ClusterCIDRs) &&
		slices.Equal(a.ServiceAddresses, b.ServiceAddresses) &&
		slices.EqualFunc(a.Peers, b.Peers, router.Peer.Equal)
}

// kernelRoutes are the node kernel's routes into the TUN: the cluster and
// Service CIDRs, the router's own addresses, and a host route for each of
// exts (the Services' external and load-balancer IPs) that those do not
// cover and that is not the node's own: the node's own addresses stay
// local, and a Service's external IP there is answered by a host socket
// (lb.HostPorts).
func kernelRoutes(d Desired, exts []netip.Addr) []netip.Prefix {
	rs := slices.Concat(d.ClusterCIDRs, d.ServiceCIDRs)
	for _, a := range d.RouterAddresses {
		rs = append(rs, netip.PrefixFrom(a, a.BitLen()))
	}
	covered := slices.Clone(rs)
	for _, a := range exts {
		if inAny(covered, a) || slices.Contains(d.NodeAddresses, a) || slices.Contains(d.TUNAddresses, a) {
			continue
		}
		rs = append(rs, netip.PrefixFrom(a, a.BitLen()))
	}
	return rs
}

// union returns the addresses of a and b, each once, sorted.
func union(a, b []netip.Addr) []netip.Addr {
	out := slices.Concat(a, b)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// keys returns the addresses of refs, sorted.
func keys(refs map[netip.Addr]int) []netip.Addr {
	out := make([]netip.Addr, 0, len(refs))
	for a := range refs {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
