package lb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// HostPorts owns the host sockets through which traffic from outside the
// cluster enters the node's Services, and serves them:
//
//	node address:nodePort/TCP ─┐                       ┌─ Proxy.ServeHost: pick, dial from the
//	local external IP:port/TCP ─┴─ accept (one per socket) ┘  node kernel, splice, drain
//	node address:nodePort/UDP ─┐
//	local external IP:port/UDP ─┴─ udpRelay: a flow per client, a socket per flow to the backend
//	node address:healthCheckNodePort ── HTTP: local ready endpoints, 200 / 503
//
// Node ports (and health-check node ports) are served on the addresses
// SetAddresses names for them, each node port on the addresses of the
// families of its Service's ClusterIPs; an external or load-balancer IP
// is served from outside only where it is one of the node's local
// addresses, on its Service port. TCP and UDP sockets serve External
// keys, which pick endpoints with externalTrafficPolicy.
//
// Set, Upsert and Delete mirror the Table's desired state (call them
// after the Table's update, with the same Services): HostPorts works out
// the sockets they want and, while Run runs, opens those not open and
// closes those no longer wanted; the rest stay as they are. Closing a TCP
// socket does not cut the connections it accepted: they belong to the
// Proxy, and drain as any other. Closing a UDP socket ends its flows, as
// their replies have no socket to leave from.
//
// A socket that cannot be opened (the port is taken, or privileged
// without the capability) is logged once, counted once in
// HostPortsStats.BindFailures, shown as failed by Bindings, and retried
// every RetryInterval; the others work meanwhile.
//
// When two Services want the same socket (a node port on a node address
// that is also another Service's external IP, say), the first to claim it
// is served and the other waits for it to leave.
//
// HostPorts does not choose addresses (the caller does, from
// --nodeport-addresses and the node's addresses), nor route: traffic to
// external IPs from pods and nodes goes through the router as to a
// ClusterIP.
type HostPorts struct {
	log   *zap.Logger
	table *Table
	proxy *Proxy
	opts  HostPortsOptions
	node  string
	// udpLimit caps the UDP flows of all relays, in all and per client.
	udpLimit *Limiter
	tick     time.Duration

	ran atomic.Bool
	// wg counts the goroutines serving sockets: accept loops, UDP
	// relays, health servers. Add happens under mu while running and
	// !stopping.
	wg sync.WaitGroup

	// mu guards everything below, and every binding's fields but its
	// counters.
	mu        sync.Mutex
	running   bool
	stopping  bool
	nodePorts []netip.Addr
	local     map[netip.Addr]bool
	services  map[ServiceName]*hostService
	bindings  map[bindingKey]*binding
	// failed are the bindings waiting to retry.
	failed map[*binding]struct{}

	bindFailures                    atomic.Uint64
	udpIdleClosed                   atomic.Uint64
	acceptErrors                    atomic.Uint64
	tcpTotal, udpTotal, healthTotal hostCounters
}

// HostPortsOptions configure HostPorts. Zero values are the documented
// defaults.
type HostPortsOptions struct {
	// Binder opens the sockets. Default KernelBinder{}.
	Binder Binder
	// UDPTimeout ends a UDP flow without a datagram either way for this
	// long. Default DefaultNATUDPTimeout (as the nat mode's flows).
	UDPTimeout time.Duration
	// MaxUDPFlows caps the UDP flows of all sockets at once,
	// MaxUDPFlowsPerClient those of one client address; datagrams
	// beyond are dropped and counted. Defaults DefaultHostMaxUDPFlows
	// and DefaultHostMaxUDPFlowsPerClient.
	MaxUDPFlows, MaxUDPFlowsPerClient int64
	// RetryInterval is how long a socket that could not be opened waits
	// before the next attempt. Default DefaultHostRetryInterval.
	RetryInterval time.Duration
}

// Default HostPortsOptions. A UDP flow holds a socket (a file descriptor)
// and a goroutine, about 12 KiB: the default keeps them inside the
// DaemonSet's memory limit (docs/operations.md, "Memory").
const (
	DefaultHostMaxUDPFlows          = 1 << 13
	DefaultHostMaxUDPFlowsPerClient = 1 << 12
	DefaultHostRetryInterval        = 10 * time.Second
)

func (o *HostPortsOptions) setDefaults() error {
	if o.Binder == nil {
		o.Binder = KernelBinder{}
	}
	var d defaults
	d.duration("udp timeout", &o.UDPTimeout, DefaultNATUDPTimeout)
	d.duration("retry interval", &o.RetryInterval, DefaultHostRetryInterval)
	d.count("max udp flows", &o.MaxUDPFlows, DefaultHostMaxUDPFlows)
	d.count("max udp flows per client", &o.MaxUDPFlowsPerClient, DefaultHostMaxUDPFlowsPerClient)
	return d.err()
}

// HostProto is what a host socket serves.
type HostProto uint8

const (
	// HostTCP: a TCP socket relaying connections (Proxy.ServeHost).
	HostTCP HostProto = iota
	// HostUDP: a UDP socket relaying flows.
	HostUDP
	// HostHealth: a health-check node port's HTTP server (TCP).
	HostHealth
)

func (p HostProto) String() string {
	switch p {
	case HostTCP:
		return "TCP"
	case HostUDP:
		return "UDP"
	case HostHealth:
		return "health"
	}
	return fmt.Sprintf("HostProto(%d)", uint8(p))
}

// BindState is the state of a host socket.
type BindState uint8

const (
	// BindPending: wanted, not opened yet (Run has not started, or has
	// returned).
	BindPending BindState = iota
	// BindListening: open and served.
	BindListening
	// BindFailed: the last attempt to open it failed; it is retried at
	// RetryAt.
	BindFailed
)

func (s BindState) String() string {
	switch s {
	case BindPending:
		return "pending"
	case BindListening:
		return "listening"
	case BindFailed:
		return "failed"
	}
	return fmt.Sprintf("BindState(%d)", uint8(s))
}

// HostBinding describes one host socket (for status commands and
// metrics).
type HostBinding struct {
	// Service is the Service port served (the port name is empty for a
	// health check).
	Service ServicePortName
	// Key is the External key served (zero for a health check).
	Key   ServiceKey
	Addr  netip.AddrPort
	Proto HostProto
	State BindState
	// Err is the error of the last attempt to open the socket, and
	// RetryAt when the next one is due, while State is BindFailed.
	Err     string
	RetryAt time.Time
	// Conns counts the TCP connections relayed, the UDP flows opened or
	// the health requests answered; Active the connections or flows open
	// now.
	Conns  uint64
	Active int64
	// Refused* count the connections (TCP: reset) or datagrams (UDP:
	// dropped) that could not be served, by reason: no endpoints, no
	// local endpoints with externalTrafficPolicy Local, a cap, no backend
	// answering.
	RefusedNoEndpoints, RefusedNoLocalEndpoints, RefusedCap, RefusedUnreachable uint64
}

// HostPortsStats are HostPorts' totals.
type HostPortsStats struct {
	// Listening and Failed count the sockets open and those that could
	// not be opened, now.
	Listening, Failed int
	// BindFailures counts sockets that could not be opened, once each
	// until it opens.
	BindFailures uint64
	// TCPConns counts TCP connections relayed, TCPActive those open now.
	TCPConns  uint64
	TCPActive int64
	// UDPFlows counts UDP flows opened, UDPActive those open now,
	// UDPIdleClosed those ended by UDPTimeout.
	UDPFlows      uint64
	UDPActive     int64
	UDPIdleClosed uint64
	// Refused* count, over TCP and UDP, what could not be served (see
	// HostBinding).
	RefusedNoEndpoints, RefusedNoLocalEndpoints, RefusedCap, RefusedUnreachable uint64
	// HealthRequests counts health-check requests answered.
	HealthRequests uint64
	// AcceptErrors counts failed accepts on TCP sockets (out of file
	// descriptors, say).
	AcceptErrors uint64
}

// bindingKey names a host socket.
type bindingKey struct {
	addr  netip.AddrPort
	proto HostProto
}

// claim is what one Service wants of a host socket.
type claim struct {
	svc    ServicePortName
	key    ServiceKey   // TCP and UDP
	health *healthState // health checks
}

// hostService is what HostPorts keeps of one Service.
type hostService struct {
	spec   *svcSpec
	wants  map[bindingKey]claim
	health *healthState
}

// binding is one host socket with the Services that want it.
type binding struct {
	bk bindingKey
	// claims[0] is served; the others wait for it to leave.
	claims []claim

	state    BindState
	err      string
	retryAt  time.Time
	reported bool // this failure was logged and counted

	ln  *net.TCPListener
	udp *udpRelay
	hs  *healthServer

	cnt *hostCounters
}

// NewHostPorts returns HostPorts for table's External keys, relaying TCP
// connections through proxy (whose Run must run while they are served).
// It starts nothing and opens no socket: Run does. log may be nil.
func NewHostPorts(table *Table, proxy *Proxy, log *zap.Logger, opts HostPortsOptions) (*HostPorts, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("new host ports: %w", err)
	}
	if table == nil || proxy == nil {
		return nil, errors.New("new host ports: want a Table and a Proxy")
	}
	if log == nil {
		log = zap.NewNop()
	}
	limit, err := NewLimiter(LimiterOptions{Max: opts.MaxUDPFlows, MaxPerClient: opts.MaxUDPFlowsPerClient})
	if err != nil {
		return nil, fmt.Errorf("new host ports: %w", err)
	}
	return &HostPorts{
		log:      log.Named("hostports"),
		table:    table,
		proxy:    proxy,
		opts:     opts,
		node:     table.opts.NodeName,
		udpLimit: limit,
		tick:     min(max(min(opts.RetryInterval, opts.UDPTimeout)/4, 10*time.Millisecond), time.Second),
		local:    make(map[netip.Addr]bool),
		services: make(map[ServiceName]*hostService),
		bindings: make(map[bindingKey]*binding),
		failed:   make(map[*binding]struct{}),
	}, nil
}

// SetAddresses sets the addresses node ports and health-check node ports
// are served on (selected by the caller: --nodeport-addresses, and
// 127.0.0.1 for localhost node ports), and the node's local addresses (an
// external or load-balancer IP is served from outside where it is one of
// them). Every Service's sockets are worked out again.
//
// Name specific addresses, not 0.0.0.0 or ::: a UDP reply leaves from
// the socket it came to, and only a socket bound to the address the
// client sent to answers from that address.
func (h *HostPorts) SetAddresses(nodePort, local []netip.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodePorts = h.nodePorts[:0]
	for _, a := range nodePort {
		a = a.Unmap()
		if a.IsValid() && !slices.Contains(h.nodePorts, a) {
			h.nodePorts = append(h.nodePorts, a)
		}
	}
	clear(h.local)
	for _, a := range local {
		if a.IsValid() {
			h.local[a.Unmap()] = true
		}
	}
	for name, hs := range h.services {
		h.applyLocked(name, hs, h.wantsLocked(hs))
	}
}

// Set makes svcs the whole desired state: it works out the sockets of
// each Service and drops those of Services not listed. It is idempotent.
func (h *HostPorts) Set(svcs []Service) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := make(map[ServiceName]bool, len(svcs))
	for i := range svcs {
		seen[svcs[i].Key()] = true
		h.upsertLocked(&svcs[i])
	}
	for name := range h.services {
		if !seen[name] {
			h.deleteLocked(name)
		}
	}
}

// Upsert adds svc or replaces the Service of the same name. Its cost
// grows with svc's ports and addresses, not with the other Services.
func (h *HostPorts) Upsert(svc Service) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.upsertLocked(&svc)
}

// Delete drops the sockets of the Service name.
func (h *HostPorts) Delete(name ServiceName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deleteLocked(name)
}

func (h *HostPorts) upsertLocked(s *Service) {
	name := s.Key()
	hs := h.services[name]
	if hs == nil {
		hs = &hostService{health: &healthState{name: name}}
		h.services[name] = hs
	}
	hs.spec = hostServiceSpec(s)
	hs.health.local.Store(int64(localEndpoints(s, h.node)))
	h.applyLocked(name, hs, h.wantsLocked(hs))
	// UDP flows whose backend left end now, not at the next tick.
	for bk := range hs.wants {
		if b := h.bindings[bk]; b != nil && b.udp != nil && b.claims[0].svc.ServiceName == name {
			b.udp.sync()
		}
	}
}

func (h *HostPorts) deleteLocked(name ServiceName) {
	hs := h.services[name]
	if hs == nil {
		return
	}
	h.applyLocked(name, hs, nil)
	delete(h.services, name)
}

// svcSpec is what HostPorts keeps of a Service to work out its sockets.
type svcSpec struct {
	name        ServiceName
	has4, has6  bool
	ports       []ServicePort
	external    []netip.Addr // external and load-balancer IPs
	healthCheck uint16       // 0 unless externalTrafficPolicy is Local
}

func hostServiceSpec(s *Service) *svcSpec {
	sp := &svcSpec{name: s.Key(), ports: slices.Clone(s.Ports)}
	for _, vip := range s.ClusterIPs {
		if vip.Unmap().Is4() {
			sp.has4 = true
		} else {
			sp.has6 = true
		}
	}
	for _, ips := range [][]netip.Addr{s.ExternalIPs, s.LoadBalancerIPs} {
		for _, a := range ips {
			sp.external = append(sp.external, a.Unmap())
		}
	}
	if s.ExternalTrafficPolicy == PolicyLocal {
		sp.healthCheck = s.HealthCheckNodePort
	}
	return sp
}

// wantsLocked works out the sockets of hs.
func (h *HostPorts) wantsLocked(hs *hostService) map[bindingKey]claim {
	sp := hs.spec
	w := make(map[bindingKey]claim)
	for _, p := range sp.ports {
		proto := HostTCP
		if p.Proto == UDP {
			proto = HostUDP
		}
		pn := ServicePortName{sp.name, p.Name}
		if p.NodePort != 0 {
			for _, a := range h.nodePorts {
				if (a.Is4() && !sp.has4) || (a.Is6() && !sp.has6) {
					continue
				}
				bk := bindingKey{netip.AddrPortFrom(a, p.NodePort), proto}
				w[bk] = claim{svc: pn, key: NodePortKey(p.NodePort, p.Proto, a.Is4())}
			}
		}
		for _, a := range sp.external {
			if !h.local[a] {
				continue
			}
			bk := bindingKey{netip.AddrPortFrom(a, p.Port), proto}
			w[bk] = claim{svc: pn, key: ServiceKey{VIP: a, Port: p.Port, Proto: p.Proto, External: true}}
		}
	}
	if sp.healthCheck != 0 {
		for _, a := range h.nodePorts {
			w[bindingKey{netip.AddrPortFrom(a, sp.healthCheck), HostHealth}] = claim{svc: ServicePortName{ServiceName: sp.name}, health: hs.health}
		}
	}
	return w
}

// applyLocked makes want the sockets Service name claims: it drops the
// claims it no longer makes and adds or changes the others.
func (h *HostPorts) applyLocked(name ServiceName, hs *hostService, want map[bindingKey]claim) {
	for bk := range hs.wants {
		if _, ok := want[bk]; !ok {
			h.unclaimLocked(bk, name)
		}
	}
	for bk, c := range want {
		if old, ok := hs.wants[bk]; ok && old == c {
			continue
		}
		h.claimLocked(bk, c)
	}
	hs.wants = want
}

// claimLocked adds or replaces c among bk's claims, opening bk when it
// is new and reopening it when its served claim changed.
func (h *HostPorts) claimLocked(bk bindingKey, c claim) {
	b := h.bindings[bk]
	if b == nil {
		b = &binding{bk: bk, claims: []claim{c}, cnt: &hostCounters{total: h.totalOf(bk.proto)}}
		h.bindings[bk] = b
		h.openLocked(b)
		return
	}
	i := slices.IndexFunc(b.claims, func(o claim) bool { return o.svc.ServiceName == c.svc.ServiceName })
	if i < 0 {
		b.claims = append(b.claims, c)
		h.log.Warn("host socket wanted by two Services; the first keeps it",
			zap.Stringer("addr", bk.addr), zap.Stringer("proto", bk.proto),
			zap.Stringer("service", b.claims[0].svc), zap.Stringer("waiting", c.svc))
		return
	}
	b.claims[i] = c
	if i == 0 {
		h.closeLocked(b)
		h.openLocked(b)
	}
}

// unclaimLocked drops name's claim on bk, closing bk when no Service
// wants it and reopening it for the next when name's was served.
func (h *HostPorts) unclaimLocked(bk bindingKey, name ServiceName) {
	b := h.bindings[bk]
	if b == nil {
		return
	}
	i := slices.IndexFunc(b.claims, func(o claim) bool { return o.svc.ServiceName == name })
	if i < 0 {
		return
	}
	b.claims = slices.Delete(b.claims, i, i+1)
	if i != 0 {
		return
	}
	h.closeLocked(b)
	if len(b.claims) == 0 {
		delete(h.bindings, bk)
		delete(h.failed, b)
		return
	}
	h.openLocked(b)
}

func (h *HostPorts) totalOf(p HostProto) *hostCounters {
	switch p {
	case HostTCP:
		return &h.tcpTotal
	case HostUDP:
		return &h.udpTotal
	}
	return &h.healthTotal
}

// openLocked opens b's socket and starts serving it, while Run runs; a
// failure leaves b failed, to be retried.
func (h *HostPorts) openLocked(b *binding) {
	if !h.running || h.stopping {
		b.state = BindPending
		return
	}
	c := b.claims[0]
	var err error
	switch b.bk.proto {
	case HostTCP:
		var ln *net.TCPListener
		if ln, err = h.opts.Binder.ListenTCP(b.bk.addr); err == nil {
			b.ln = ln
			h.wg.Go(func() { h.accept(ln, c.key, b.cnt) })
		}
	case HostUDP:
		var conn *net.UDPConn
		if conn, err = h.opts.Binder.ListenUDP(b.bk.addr); err == nil {
			r := &udpRelay{
				key: c.key, conn: conn, local: b.bk.addr, table: h.table, limit: h.udpLimit,
				log: h.log, timeout: h.opts.UDPTimeout, cnt: b.cnt,
				idleClosed: new(atomic.Uint64), idleTotal: &h.udpIdleClosed,
				flows: make(map[netip.AddrPort]*udpFlow),
			}
			b.udp = r
			h.wg.Go(r.run)
		}
	case HostHealth:
		var ln *net.TCPListener
		if ln, err = h.opts.Binder.ListenTCP(b.bk.addr); err == nil {
			s := newHealthServer(ln, healthHandler{state: c.health, cnt: b.cnt}, zap.NewStdLog(h.log.Named("health")))
			b.hs = s
			h.wg.Go(s.serve)
		}
	}
	if err != nil {
		b.state, b.err = BindFailed, err.Error()
		b.retryAt = time.Now().Add(h.opts.RetryInterval)
		h.failed[b] = struct{}{}
		if !b.reported {
			b.reported = true
			h.bindFailures.Add(1)
			h.log.Warn("cannot open host socket; retrying",
				zap.Stringer("service", c.svc), zap.Stringer("addr", b.bk.addr), zap.Stringer("proto", b.bk.proto),
				zap.Duration("every", h.opts.RetryInterval), zap.Error(err))
		}
		return
	}
	if b.reported {
		h.log.Info("host socket open after earlier failures",
			zap.Stringer("service", c.svc), zap.Stringer("addr", b.bk.addr), zap.Stringer("proto", b.bk.proto))
	}
	b.state, b.err, b.retryAt, b.reported = BindListening, "", time.Time{}, false
	delete(h.failed, b)
	h.log.Debug("host socket open", zap.Stringer("service", c.svc), zap.Stringer("addr", b.bk.addr), zap.Stringer("proto", b.bk.proto))
}

// closeLocked closes b's socket; the goroutine serving it then returns.
// It does not wait for that.
func (h *HostPorts) closeLocked(b *binding) {
	switch {
	case b.ln != nil:
		b.ln.Close()
		b.ln = nil
	case b.udp != nil:
		b.udp.conn.Close()
		b.udp = nil
	case b.hs != nil:
		b.hs.close()
		b.hs = nil
	}
	b.state = BindPending
}

// acceptBackoff is how long an accept loop waits after an error other
// than its socket's closing (out of file descriptors, say).
const acceptBackoff = 50 * time.Millisecond

// accept hands each connection ln accepts to the Proxy, until ln is
// closed.
func (h *HostPorts) accept(ln *net.TCPListener, key ServiceKey, cnt *hostCounters) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			h.acceptErrors.Add(1)
			time.Sleep(acceptBackoff)
			continue
		}
		h.proxy.serveHost(c, key, cnt)
	}
}

// Run opens the wanted sockets and serves them until ctx is done,
// retrying those that could not be opened every RetryInterval, ending
// idle UDP flows and those whose backend left. Then it closes every
// socket and returns once every goroutine it started has exited. TCP
// connections already handed to the Proxy are the Proxy's: they end with
// its Run. Run may be called once.
func (h *HostPorts) Run(ctx context.Context) error {
	if !h.ran.CompareAndSwap(false, true) {
		return errors.New("host ports: Run called twice")
	}
	h.mu.Lock()
	h.running = true
	for _, b := range h.bindings {
		h.openLocked(b)
	}
	h.mu.Unlock()
	t := time.NewTicker(h.tick)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-t.C:
			h.maintain(now)
		}
	}
	h.mu.Lock()
	h.stopping = true
	for _, b := range h.bindings {
		h.closeLocked(b)
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// maintain retries the failed sockets whose time came and syncs and
// sweeps the UDP relays.
func (h *HostPorts) maintain(now time.Time) {
	var relays []*udpRelay
	h.mu.Lock()
	for b := range h.failed {
		if !now.Before(b.retryAt) {
			h.openLocked(b)
		}
	}
	for _, b := range h.bindings {
		if b.udp != nil {
			relays = append(relays, b.udp)
		}
	}
	h.mu.Unlock()
	for _, r := range relays {
		r.sync()
		r.sweep(now.UnixNano())
	}
}

// Bindings lists the host sockets wanted, sorted by Service, address and
// protocol.
func (h *HostPorts) Bindings() []HostBinding {
	h.mu.Lock()
	out := make([]HostBinding, 0, len(h.bindings))
	for _, b := range h.bindings {
		c := b.claims[0]
		out = append(out, HostBinding{
			Service: c.svc, Key: c.key, Addr: b.bk.addr, Proto: b.bk.proto,
			State: b.state, Err: b.err, RetryAt: b.retryAt,
			Conns: b.cnt.conns.Load(), Active: b.cnt.active.Load(),
			RefusedNoEndpoints: b.cnt.refusedNoEP.Load(), RefusedNoLocalEndpoints: b.cnt.refusedNoLocalEP.Load(),
			RefusedCap: b.cnt.refusedCap.Load(), RefusedUnreachable: b.cnt.refusedUnreachable.Load(),
		})
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b HostBinding) int {
		return cmp.Or(
			cmp.Compare(a.Service.Namespace, b.Service.Namespace),
			cmp.Compare(a.Service.Name, b.Service.Name),
			cmp.Compare(a.Service.Port, b.Service.Port),
			a.Addr.Compare(b.Addr),
			cmp.Compare(a.Proto, b.Proto))
	})
	return out
}

// Stats returns the totals.
func (h *HostPorts) Stats() HostPortsStats {
	s := HostPortsStats{
		BindFailures:   h.bindFailures.Load(),
		TCPConns:       h.tcpTotal.conns.Load(),
		TCPActive:      h.tcpTotal.active.Load(),
		UDPFlows:       h.udpTotal.conns.Load(),
		UDPActive:      h.udpTotal.active.Load(),
		UDPIdleClosed:  h.udpIdleClosed.Load(),
		HealthRequests: h.healthTotal.conns.Load(),
		AcceptErrors:   h.acceptErrors.Load(),
	}
	for _, c := range []*hostCounters{&h.tcpTotal, &h.udpTotal} {
		s.RefusedNoEndpoints += c.refusedNoEP.Load()
		s.RefusedNoLocalEndpoints += c.refusedNoLocalEP.Load()
		s.RefusedCap += c.refusedCap.Load()
		s.RefusedUnreachable += c.refusedUnreachable.Load()
	}
	h.mu.Lock()
	for _, b := range h.bindings {
		switch b.state {
		case BindListening:
			s.Listening++
		case BindFailed:
			s.Failed++
		}
	}
	h.mu.Unlock()
	return s
}
