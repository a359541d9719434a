package router

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/router/wireguard"
	"github.com/vrouter/vrouter/tun"
)

// NIC IDs and names inside the stack.
const (
	TUNNIC     tcpip.NICID = 1
	OverlayNIC tcpip.NICID = 2

	// OverlayNICName is the overlay NIC's name in route listings.
	OverlayNICName = "overlay0"
)

// DefaultMTU is the tunnel MTU when Options leave it zero: a 1500-byte
// IPv4 underlay less the IPv4 and UDP headers.
const DefaultMTU = 1500 - 28

// Config is the router's desired state. Set applies it; the zero Config is a
// router with no addresses, no pod CIDRs and no peers.
type Config struct {
	// PodCIDRs are this node's pod subnets, routed to the TUN.
	PodCIDRs []netip.Prefix
	// KernelRoutes are destinations outside the pod network that the
	// router hands back to the node kernel (routed to the TUN), for the
	// kernel to reach by its own routes: Service endpoints that are not
	// pods, such as the API server behind the kubernetes Service or a
	// host-network pod, after the NAT translated a packet to them. A
	// prefix inside a pod CIDR or a cluster CIDR is refused: the kernel
	// would send it straight back.
	KernelRoutes []netip.Prefix
	// Addresses are the router's own addresses inside the stack: the
	// source of ICMP errors. A family without an address is not forwarded.
	Addresses []netip.Addr
	// NodeAddresses are the node kernel's own addresses that lie outside
	// PodCIDRs: its underlay address and its addresses on the TUN, the
	// sources it picks for its own connections into the TUN. Packets from
	// the TUN are accepted only from PodCIDRs and NodeAddresses, from
	// IPv6 link-local addresses, and ICMP errors from anywhere (routers
	// on the kernel's own paths send those; they start no flow); the rest
	// are dropped and counted (DropSourceNotLocal), so that a pod cannot
	// pass as another client.
	NodeAddresses []netip.Addr
	// Peers are the other nodes' routers.
	Peers []Peer
	// ServiceAddresses are Service VIPs the stack terminates itself (proxy
	// mode): packets to them are delivered to the stack's own transport
	// endpoints instead of being forwarded.
	ServiceAddresses []netip.Addr
	// ClusterCIDRs, when set, hold every pod CIDR: the stack then routes
	// each cluster CIDR to the overlay as one route, and the overlay finds
	// the peer by destination (one map probe per prefix length), so
	// forwarding costs the same at 1,000 peers as at 2. A destination no
	// peer owns is answered "net unreachable", as with a route per peer
	// (which is what the router installs when ClusterCIDRs is empty).
	ClusterCIDRs []netip.Prefix
}

// Peer is another node's router.
type Peer struct {
	// Name identifies the peer (the node name); counters follow it across
	// changes of address.
	Name string
	// Endpoint is the peer's overlay UDP address.
	Endpoint netip.AddrPort
	// PodCIDRs are the peer node's pod subnets: routed to it, and with
	// the Endpoint's address the only inner sources accepted from it.
	PodCIDRs []netip.Prefix
	// PublicKey is the peer's WireGuard key, for an encrypted overlay
	// (a KeyedConn); a plain overlay ignores it. Over an encrypted
	// overlay a peer without one is not routed to (Stats.PeersWithoutKey).
	PublicKey wireguard.Key
}

// KeyedConn is a Conn that authenticates and encrypts per peer, such as
// wireguard.Conn. Set gives it the peers that have a key (PublicKey),
// with their pod CIDRs and node address as their allowed IPs, before it
// routes to them; it routes to no peer without a key, so nothing is sent
// in clear.
type KeyedConn interface {
	Conn
	SetPeers([]wireguard.Peer) error
}

// Options configure a Router. Zero values are the documented defaults.
type Options struct {
	// Logger receives one line per state change. Default: no logging.
	Logger *zap.Logger
	// TUN is the device joining the node kernel. Required; the router
	// owns it and closes it.
	TUN tun.Device
	// Overlay is the underlay socket. Required; the router owns it and
	// closes it.
	Overlay Conn
	// MTU is the tunnel MTU: the largest inner packet an overlay datagram
	// carries. Default DefaultMTU.
	MTU int
	// TUNMTU is the TUN device's MTU. Default MTU. When it is larger than
	// MTU, the router answers packets that do not fit the tunnel with
	// ICMP "fragmentation needed" / "packet too big".
	TUNMTU int
	// BusyPoll, when positive, has the router keep reading its TUN and
	// its overlay socket without waiting for this long after each packet
	// (busypoll.go): fewer thread wakeups per round trip, for a core kept
	// busy while packets come at least this often. Zero (the default)
	// waits in Go's poller. Ignored, with a log line, where a device
	// cannot be read without waiting.
	BusyPoll time.Duration
	// NoFastPath sends every packet through gVisor's IP forwarding
	// instead of the fast path (see fastPath): slower, for comparison and
	// for ruling the fast path out when debugging.
	NoFastPath bool
}

// Router is one node's userspace router. New builds it; Run moves packets;
// Set changes its desired state at any time, concurrently with Run.
type Router struct {
	log *zap.Logger
	// busyPoll is Options.BusyPoll; polling the window Run busy-polls
	// with (ns), once it does.
	busyPoll time.Duration
	polling  atomic.Int64
	stack    *stack.Stack
	tun      *tunEndpoint
	overlay  *overlayEndpoint
	drops    drops
	hook     hookSlot
	tunName  string

	local atomic.Pointer[map[netip.Addr]struct{}]
	// sources are the addresses packets from the TUN may come from
	// (Config.NodeAddresses).
	sources atomic.Pointer[prefixMap[struct{}]]
	own     atomic.Pointer[[]netip.Addr] // the router's addresses (not Service VIPs)
	hasV4   atomic.Bool
	hasV6   atomic.Bool
	// routeGen changes after every Set: the fast path's cached
	// forwarding decisions are stale once it moves.
	routeGen  atomic.Uint64
	ran       atomic.Bool
	closeOnce sync.Once

	// mu serializes Set and guards the fields below.
	mu        sync.Mutex
	cfg       Config
	routes    map[routeKey]tcpip.Route
	peerStats map[string]*peerCounters
	// keyless counts the configured peers an encrypted overlay does not
	// route to for want of a key; keylessLogged names them.
	keyless       atomic.Int64
	keylessLogged map[string]bool
}

type routeKey struct {
	dst     netip.Prefix
	nic     tcpip.NICID
	gateway netip.Addr
}

// New builds a router around a TUN device and an overlay socket. It starts
// no goroutines; call Run.
func New(opts Options) (*Router, error) {
	if opts.TUN == nil {
		return nil, errors.New("router: Options.TUN is required")
	}
	if opts.Overlay == nil {
		return nil, errors.New("router: Options.Overlay is required")
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	tunMTU := opts.TUNMTU
	if tunMTU == 0 {
		tunMTU = mtu
	}
	for _, m := range []struct {
		name string
		v    int
	}{{"MTU", mtu}, {"TUNMTU", tunMTU}} {
		if m.v < 576 || m.v > maxDatagram {
			return nil, fmt.Errorf("router: %s %d out of range (want 576..65535)", m.name, m.v)
		}
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Router{
		log:       log,
		tunName:   opts.TUN.Name(),
		routes:    make(map[routeKey]tcpip.Route),
		peerStats: make(map[string]*peerCounters),
	}
	empty := map[netip.Addr]struct{}{}
	r.local.Store(&empty)

	r.stack = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{
				// No DAD, no router solicitations: the stack is a
				// router on two point-to-point links.
				DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: 0},
				NDPConfigs: ipv6.NDPConfigurations{MaxRtrSolicitations: 0},
			}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
	})
	shared := func(l *ipLink) {
		l.drops, l.hook, l.isLocal, l.hasFamily = &r.drops, &r.hook, r.isLocal, r.hasFamily
	}
	r.sources.Store(newPrefixMap[struct{}](nil))
	r.tun = &tunEndpoint{dev: opts.TUN, sources: &r.sources}
	shared(&r.tun.ipLink)
	r.tun.mtu.Store(uint32(tunMTU))
	r.overlay = &overlayEndpoint{conn: opts.Overlay, log: r.log}
	shared(&r.overlay.ipLink)
	r.overlay.mtu.Store(uint32(mtu))
	r.overlay.peers.Store(emptyPeers)
	r.overlay.pings.answer = rate.NewLimiter(1000, 1000)
	r.tun.offload = opts.TUN.Offload()
	r.tun.uso = r.tun.offload && opts.TUN.UDPOffload()
	r.busyPoll = opts.BusyPoll
	if !opts.NoFastPath {
		r.tun.fast, r.overlay.fast = newFastPath(r), newFastPath(r)
		if opts.TUN.BatchSize() > 1 {
			// The TUN reads bursts: send each burst's packets to a
			// peer as one run.
			r.tun.fast.run = &sendRun{buf: make([]byte, 0, maxRunBytes)}
		}
		if on, _ := tun.BatchIO(opts.TUN); on {
			// The TUN writes a burst in one system call: queue each
			// reader's burst for it.
			r.tun.fast.tq, r.overlay.fast.tq = newTUNQueue(), newTUNQueue()
		}
		if r.tun.uso {
			// Runs of a UDP flow's datagrams leave for the TUN as one
			// UDP super-packet, the overlay reader's above all.
			r.tun.fast.udp, r.overlay.fast.udp = new(gso.UDPRun), new(gso.UDPRun)
		}
		// Coalescing only pays on the fast path, which writes
		// super-packets to the TUN: the stack forwards one segment at a
		// time (offload.go).
		r.overlay.coalesce = r.tun.offload
	}
	r.overlay.emit = r.overlay.emitCoalesced
	r.overlay.unreach = &unreachable{
		router: r.routerAddr,
		isLocal: func(src netip.Addr) bool {
			_, remote := r.overlay.peers.Load().byDst.lookup(src)
			return !remote
		},
		send: func(b []byte) bool { return r.tun.send(b, tun.Offload{}) },
		// As gVisor's own ICMP rate limit: a burst, then 1,000 a second.
		limit: rate.NewLimiter(1000, 1000),
	}

	if err := r.stack.CreateNICWithOptions(TUNNIC, r.tun, stack.NICOptions{Name: r.tunName}); err != nil {
		r.stack.Close()
		return nil, fmt.Errorf("create TUN NIC: %w", tcpipError(err))
	}
	if err := r.stack.CreateNICWithOptions(OverlayNIC, r.overlay, stack.NICOptions{Name: OverlayNICName}); err != nil {
		r.stack.Close()
		return nil, fmt.Errorf("create overlay NIC: %w", tcpipError(err))
	}
	for _, proto := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
		if err := r.stack.SetForwardingDefaultAndAllNICs(proto, true); err != nil {
			r.stack.Close()
			return nil, fmt.Errorf("enable forwarding: %w", tcpipError(err))
		}
	}
	return r, nil
}

// Stack is the router's gVisor stack, for packages that add to the data path
// (the Service load balancer installs its NAT rules here).
func (r *Router) Stack() *stack.Stack { return r.stack }

// routerAddr is the router's own address of a family, or the zero Addr.
func (r *Router) routerAddr(v4 bool) netip.Addr {
	if own := r.own.Load(); own != nil {
		for _, a := range *own {
			if a.Is4() == v4 {
				return a
			}
		}
	}
	return netip.Addr{}
}

func (r *Router) isLocal(a netip.Addr) bool {
	_, ok := (*r.local.Load())[a]
	return ok
}

func (r *Router) hasFamily(p tcpip.NetworkProtocolNumber) bool {
	if p == ipv4.ProtocolNumber {
		return r.hasV4.Load()
	}
	return r.hasV6.Load()
}

// Run moves packets until ctx is done or a device fails, then releases the
// TUN, the overlay socket and the stack. It owns the two reader goroutines it
// starts and returns only after both have exited. Run may be called once.
func (r *Router) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("router: Run called twice")
	}
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	if w := r.busyPoll; w > 0 {
		if err := r.busyPollable(); err != nil {
			r.log.Warn("busy polling is off", zap.Error(err))
		} else {
			r.log.Info("busy polling", zap.Duration("window", w))
			r.polling.Store(int64(w))
			wg.Add(1)
			go func() {
				defer wg.Done()
				errc <- r.pollLoop(w)
			}()
			return r.wait(ctx, errc, &wg)
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := r.tun.readLoop(); err != nil {
			errc <- fmt.Errorf("read TUN %s: %w", r.tunName, err)
			return
		}
		errc <- nil
	}()
	go func() {
		defer wg.Done()
		if err := r.overlay.readLoop(); err != nil {
			errc <- fmt.Errorf("read overlay: %w", err)
			return
		}
		errc <- nil
	}()
	return r.wait(ctx, errc, &wg)
}

// wait waits for ctx or the first reader to end, closes the router and
// waits for its readers.
func (r *Router) wait(ctx context.Context, errc <-chan error, wg *sync.WaitGroup) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if err == nil && ctx.Err() == nil {
			err = errors.New("router: a device closed while running")
		}
	}
	r.Close()
	wg.Wait()
	return err
}

// Close releases the TUN device, the overlay socket and the stack. It
// unblocks Run. Close is idempotent.
func (r *Router) Close() error {
	var err error
	r.closeOnce.Do(func() {
		err = errors.Join(r.tun.dev.Close(), r.overlay.conn.Close())
		r.stack.Close()
		r.stack.Wait()
	})
	return err
}

// Set makes cfg the router's state. It applies only the difference to the
// current state: unchanged peers and routes are not touched, so traffic to
// them is not disturbed. Set is idempotent and safe to call concurrently
// with Run. On error nothing is changed.
func (r *Router) Set(cfg Config) error {
	cfg = normalize(cfg)
	if err := validate(cfg); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.routeGen.Add(1)
	if err := r.setAddressesLocked(cfg.Addresses, cfg.ServiceAddresses); err != nil {
		return err
	}

	// An encrypted overlay learns the peers first, so that routed
	// packets find their session; peers without a key are left out.
	peers := cfg.Peers
	if kc, ok := r.overlay.conn.(KeyedConn); ok {
		peers = nil
		var wg []wireguard.Peer
		for _, p := range cfg.Peers {
			if !p.PublicKey.IsZero() {
				peers = append(peers, p)
				wg = append(wg, wireguard.Peer{Name: p.Name, PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: allowedIPs(p)})
			}
		}
		if err := kc.SetPeers(wg); err != nil {
			return err
		}
		r.logKeylessLocked(cfg.Peers)
	}
	r.keyless.Store(int64(len(cfg.Peers) - len(peers)))

	// Peers: publish the new table first, so added routes find their peer.
	table, stats := r.buildPeerTableLocked(peers)
	r.logPeerChangesLocked(r.cfg.Peers, cfg.Peers)
	r.overlay.peers.Store(table)
	r.overlay.identity.Store(newIdentity(cfg))
	r.sources.Store(localSources(cfg))
	r.peerStats = stats

	// Routes: add what is new, then remove what is stale. A route whose
	// gateway changed briefly exists twice; the old one stays first until
	// it is removed, and the overlay endpoint resolves either.
	want := desiredRoutes(cfg)
	for k, rt := range want {
		if _, ok := r.routes[k]; !ok {
			r.stack.AddRoute(rt)
		}
	}
	var stale []routeKey
	for k := range r.routes {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if len(stale) > 0 {
		r.stack.RemoveRoutes(func(rt tcpip.Route) bool {
			_, ok := want[keyOf(rt)]
			return !ok && slices.Contains(stale, keyOf(rt))
		})
	}
	r.routes = want
	r.cfg = cfg
	return nil
}

func (r *Router) setAddressesLocked(addrs, vips []netip.Addr) error {
	old := *r.local.Load()
	next := make(map[netip.Addr]struct{}, len(addrs)+len(vips))
	for _, a := range slices.Concat(addrs, vips) {
		if _, ok := next[a]; ok {
			continue
		}
		next[a] = struct{}{}
		if _, ok := old[a]; ok {
			continue
		}
		pa := tcpip.ProtocolAddress{
			Protocol:          protoOf(a),
			AddressWithPrefix: packet.TCPIPAddr(a).WithPrefix(),
		}
		for _, nic := range []tcpip.NICID{TUNNIC, OverlayNIC} {
			if err := r.stack.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
				return fmt.Errorf("add router address %s: %w", a, tcpipError(err))
			}
		}
		r.log.Debug("stack address added", zap.Stringer("address", a))
	}
	for a := range old {
		if _, ok := next[a]; ok {
			continue
		}
		for _, nic := range []tcpip.NICID{TUNNIC, OverlayNIC} {
			if err := r.stack.RemoveAddress(nic, packet.TCPIPAddr(a)); err != nil {
				return fmt.Errorf("remove router address %s: %w", a, tcpipError(err))
			}
		}
		r.log.Debug("stack address removed", zap.Stringer("address", a))
	}
	r.local.Store(&next)
	own := slices.Clone(addrs)
	r.own.Store(&own)
	var v4, v6 bool
	for _, a := range addrs {
		v4 = v4 || a.Is4()
		v6 = v6 || a.Is6()
	}
	r.hasV4.Store(v4)
	r.hasV6.Store(v6)
	return nil
}

func (r *Router) buildPeerTableLocked(peers []Peer) (*peerTable, map[string]*peerCounters) {
	t := &peerTable{
		byUnderlay: make(map[netip.Addr]*peer, len(peers)),
		byNextHop:  make(map[tcpip.Address]*peer, len(peers)),
	}
	stats := make(map[string]*peerCounters, len(peers))
	dst := make(map[netip.Prefix]*peer)
	for _, pc := range peers {
		st := r.peerStats[pc.Name]
		if st == nil {
			st = &peerCounters{}
		}
		stats[pc.Name] = st
		p := &peer{name: pc.Name, endpoint: pc.Endpoint, podCIDRs: pc.PodCIDRs, stats: st}
		t.byUnderlay[pc.Endpoint.Addr()] = p
		t.byNextHop[packet.TCPIPAddr(pc.Endpoint.Addr())] = p
		for _, c := range pc.PodCIDRs {
			dst[c] = p
		}
	}
	t.byDst = newPrefixMap(dst)
	return t, stats
}

func (r *Router) logPeerChangesLocked(old, next []Peer) {
	byName := make(map[string]Peer, len(old))
	for _, p := range old {
		byName[p.Name] = p
	}
	for _, p := range next {
		o, ok := byName[p.Name]
		delete(byName, p.Name)
		switch {
		case !ok:
			r.log.Info("peer added", peerFields(p)...)
		case !o.Equal(p):
			r.log.Info("peer changed", peerFields(p)...)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		r.log.Info("peer removed", zap.String("peer", name))
	}
}

func peerFields(p Peer) []zap.Field {
	return []zap.Field{
		zap.String("peer", p.Name),
		zap.Stringer("endpoint", p.Endpoint),
		zap.Stringers("podCIDRs", p.PodCIDRs),
	}
}

// Equal reports whether p and o are the same peer in every field.
func (p Peer) Equal(o Peer) bool {
	return p.Name == o.Name && p.Endpoint == o.Endpoint && slices.Equal(p.PodCIDRs, o.PodCIDRs) && p.PublicKey == o.PublicKey
}

// allowedIPs are the inner addresses an encrypted overlay accepts from
// peer p and sends to it: what peer.owns admits.
func allowedIPs(p Peer) []netip.Prefix {
	out := slices.Clone(p.PodCIDRs)
	if a := p.Endpoint.Addr().Unmap(); a.IsValid() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// logKeylessLocked logs each peer that has no key, once until it gets
// one: over an encrypted overlay it is not routed to.
func (r *Router) logKeylessLocked(peers []Peer) {
	next := make(map[string]bool)
	for _, p := range peers {
		if !p.PublicKey.IsZero() {
			continue
		}
		next[p.Name] = true
		if !r.keylessLogged[p.Name] {
			r.log.Warn("peer has no WireGuard public key: not routed to until it has one (a Node publishes its key in the "+"annotation vrouter.io/wireguard-public-key; a config file's peer in publicKey)", zap.String("peer", p.Name))
		}
	}
	r.keylessLogged = next
}

// desiredRoutes is the stack's route table for cfg: local pod CIDRs to the
// TUN, each peer's pod CIDRs to the overlay via the peer's underlay address
// (when of the same family; otherwise the overlay resolves by destination).
func desiredRoutes(cfg Config) map[routeKey]tcpip.Route {
	want := make(map[routeKey]tcpip.Route)
	add := func(dst netip.Prefix, nic tcpip.NICID, gw netip.Addr) {
		rt := tcpip.Route{Destination: subnet(dst), NIC: nic}
		if gw.IsValid() {
			rt.Gateway = packet.TCPIPAddr(gw)
		}
		want[keyOf(rt)] = rt
	}
	for _, c := range slices.Concat(cfg.PodCIDRs, cfg.KernelRoutes) {
		add(c, TUNNIC, netip.Addr{})
	}
	for _, c := range cfg.ClusterCIDRs {
		add(c, OverlayNIC, netip.Addr{})
	}
	for _, p := range cfg.Peers {
		for _, c := range p.PodCIDRs {
			if inAny(cfg.ClusterCIDRs, c) {
				continue // the cluster CIDR's route carries it
			}
			gw := p.Endpoint.Addr()
			if gw.Is4() != c.Addr().Is4() {
				gw = netip.Addr{}
			}
			add(c, OverlayNIC, gw)
		}
	}
	return want
}

// inAny reports whether p lies inside one of ps.
func inAny(ps []netip.Prefix, p netip.Prefix) bool {
	for _, c := range ps {
		if c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func keyOf(rt tcpip.Route) routeKey {
	k := routeKey{dst: prefixFromSubnet(rt.Destination), nic: rt.NIC}
	if rt.Gateway.Len() > 0 {
		k.gateway = packet.NetipAddr(rt.Gateway)
	}
	return k
}

// normalize canonicalizes addresses and prefixes so equal configs compare
// equal.
func normalize(cfg Config) Config {
	out := Config{}
	for _, p := range cfg.PodCIDRs {
		out.PodCIDRs = append(out.PodCIDRs, p.Masked())
	}
	for _, p := range cfg.KernelRoutes {
		out.KernelRoutes = append(out.KernelRoutes, p.Masked())
	}
	for _, a := range cfg.Addresses {
		out.Addresses = append(out.Addresses, a.Unmap())
	}
	for _, a := range cfg.NodeAddresses {
		out.NodeAddresses = append(out.NodeAddresses, a.Unmap())
	}
	for _, a := range cfg.ServiceAddresses {
		out.ServiceAddresses = append(out.ServiceAddresses, a.Unmap())
	}
	for _, c := range cfg.ClusterCIDRs {
		out.ClusterCIDRs = append(out.ClusterCIDRs, c.Masked())
	}
	for _, p := range cfg.Peers {
		np := Peer{Name: p.Name, Endpoint: netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port()), PublicKey: p.PublicKey}
		for _, c := range p.PodCIDRs {
			np.PodCIDRs = append(np.PodCIDRs, c.Masked())
		}
		out.Peers = append(out.Peers, np)
	}
	return out
}

// localSources are the sources packets from the TUN may come from (see
// Config.NodeAddresses).
func localSources(cfg Config) *prefixMap[struct{}] {
	m := make(map[netip.Prefix]struct{})
	for _, p := range cfg.PodCIDRs {
		m[p] = struct{}{}
	}
	for _, a := range cfg.NodeAddresses {
		m[netip.PrefixFrom(a, a.BitLen())] = struct{}{}
	}
	m[netip.MustParsePrefix("fe80::/10")] = struct{}{}
	return newPrefixMap(m)
}

// validate refuses configs that would make a wrong table: overlapping pod
// CIDRs, duplicate peers, invalid addresses.
func validate(cfg Config) error {
	var errs []error
	type owner struct {
		prefix netip.Prefix
		who    string
	}
	var owners []owner
	claim := func(p netip.Prefix, who string) {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("%s: invalid pod CIDR", who))
			return
		}
		for _, o := range owners {
			if o.prefix.Overlaps(p) {
				errs = append(errs, fmt.Errorf("%s: pod CIDR %s overlaps %s of %s", who, p, o.prefix, o.who))
			}
		}
		owners = append(owners, owner{p, who})
	}
	for _, p := range cfg.PodCIDRs {
		claim(p, "this node")
	}
	for _, c := range cfg.ClusterCIDRs {
		if !c.IsValid() {
			errs = append(errs, errors.New("cluster CIDR: invalid prefix"))
		}
	}
	for _, k := range cfg.KernelRoutes {
		switch {
		case !k.IsValid():
			errs = append(errs, errors.New("kernel route: invalid prefix"))
		case slices.ContainsFunc(slices.Concat(cfg.PodCIDRs, cfg.ClusterCIDRs), k.Overlaps):
			errs = append(errs, fmt.Errorf("kernel route %s: inside the pod network, which the node kernel routes back to the router", k))
		}
	}
	for _, a := range slices.Concat(cfg.Addresses, cfg.ServiceAddresses) {
		if !a.IsValid() {
			errs = append(errs, errors.New("router or Service address: invalid address"))
		}
	}
	for _, a := range cfg.NodeAddresses {
		if !a.IsValid() {
			errs = append(errs, errors.New("node address: invalid address"))
		}
	}
	names := map[string]bool{}
	endpoints := map[netip.Addr]string{}
	for i, p := range cfg.Peers {
		who := fmt.Sprintf("peer %q", p.Name)
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("peers[%d]: name is empty", i))
		case names[p.Name]:
			errs = append(errs, fmt.Errorf("%s: duplicate peer name", who))
		}
		names[p.Name] = true
		if !p.Endpoint.IsValid() || p.Endpoint.Port() == 0 {
			errs = append(errs, fmt.Errorf("%s: endpoint %q is not a valid address:port", who, p.Endpoint))
		} else if o, ok := endpoints[p.Endpoint.Addr()]; ok {
			errs = append(errs, fmt.Errorf("%s: underlay address %s is already peer %q's", who, p.Endpoint.Addr(), o))
		} else {
			endpoints[p.Endpoint.Addr()] = p.Name
		}
		for _, c := range p.PodCIDRs {
			claim(c, who)
		}
	}
	return errors.Join(errs...)
}

// Routes returns the stack's route table in lookup order.
//
// A cluster CIDR's route (Config.ClusterCIDRs) is shown as what it does:
// each peer's pod CIDR inside it via that peer's underlay address, then the
// cluster CIDR itself as unreachable, as the same table with a route per
// peer would be written.
func (r *Router) Routes() []Route {
	r.mu.Lock()
	cfg := r.cfg
	r.mu.Unlock()
	var out []Route
	for _, rt := range r.stack.GetRouteTable() {
		k := keyOf(rt)
		if rt.NIC == OverlayNIC && slices.Contains(cfg.ClusterCIDRs, k.dst) {
			for _, p := range cfg.Peers {
				for _, c := range p.PodCIDRs {
					if !inAny([]netip.Prefix{k.dst}, c) {
						continue
					}
					out = append(out, Route{Dst: c, Gateway: p.Endpoint.Addr(), Dev: OverlayNICName})
				}
			}
			out = append(out, Route{Dst: k.dst, Unreachable: true})
			continue
		}
		gw := k.gateway
		if rt.NIC == OverlayNIC && !gw.IsValid() {
			// A pod CIDR of the other family than its peer's underlay
			// (IPv6 pods over IPv4): the stack's route has no gateway,
			// and the overlay finds the peer by destination.
			gw = peerOf(cfg.Peers, k.dst)
		}
		out = append(out, Route{Dst: k.dst, Gateway: gw, Dev: r.nicName(rt.NIC)})
	}
	return out
}

// peerOf is the underlay address of the peer whose pod CIDRs hold dst, or
// the zero Addr.
func peerOf(peers []Peer, dst netip.Prefix) netip.Addr {
	for _, p := range peers {
		if slices.Contains(p.PodCIDRs, dst) {
			return p.Endpoint.Addr()
		}
	}
	return netip.Addr{}
}

func (r *Router) nicName(id tcpip.NICID) string {
	if id == TUNNIC {
		return r.tunName
	}
	return OverlayNICName
}

// Route is one entry of the router's table, as `ip route` shows it.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Dev     string
	// Unreachable marks the rest of a cluster CIDR: no peer owns it, and
	// the router answers "net unreachable".
	Unreachable bool
}

// String formats the route like `ip route`:
// "10.244.1.0/24 via 192.168.31.202 dev overlay0", "unreachable 10.244.0.0/16",
// and a next hop of the other family as iproute2 writes one (RTA_VIA):
// "fd00:10:244:1::/64 via inet 192.168.31.202 dev overlay0".
func (rt Route) String() string {
	if rt.Unreachable {
		return "unreachable " + rt.Dst.String()
	}
	if rt.Gateway.IsValid() {
		via := rt.Gateway.String()
		if rt.Gateway.Is4() != rt.Dst.Addr().Is4() {
			fam := "inet6 "
			if rt.Gateway.Is4() {
				fam = "inet "
			}
			via = fam + via
		}
		return fmt.Sprintf("%s via %s dev %s", rt.Dst, via, rt.Dev)
	}
	return fmt.Sprintf("%s dev %s", rt.Dst, rt.Dev)
}

// Stats returns a snapshot of the router's counters.
func (r *Router) Stats() Stats {
	st := Stats{
		Drops:                make(map[DropReason]uint64, numDropReasons),
		TUN:                  r.tun.counters.snapshot(),
		TUNWriteBatches:      r.tun.batches.Load(),
		TUNWriteBatchPackets: r.tun.batchPackets.Load(),
		Overlay:              r.overlay.counters.snapshot(),
		Peers:                make(map[string]PeerStats),

		PeersWithoutKey: int(r.keyless.Load()),
	}
	for i := range r.drops {
		st.Drops[DropReason(i)] = r.drops[i].Load()
	}
	s := r.stack.Stats()
	fw := s.IP.Forwarding
	st.NoRoute = fw.Unrouteable.Value() + fw.HostUnreachable.Value() + r.drops[DropNoPeer].Load()
	st.TTLExceeded = fw.ExhaustedTTL.Value()
	st.TooBig = fw.PacketTooBig.Value()
	v4, v6 := s.ICMP.V4.PacketsSent, s.ICMP.V6.PacketsSent
	st.ICMPErrorsSent = r.overlay.icmpSent.Load() + v4.DstUnreachable.Value() + v4.TimeExceeded.Value() +
		v6.DstUnreachable.Value() + v6.PacketTooBig.Value() + v6.TimeExceeded.Value()
	r.mu.Lock()
	for name, c := range r.peerStats {
		st.Peers[name] = PeerStats{LinkStats: c.snapshot(), LastSeenUnixNano: c.lastSeen.Load()}
	}
	r.mu.Unlock()
	return st
}
