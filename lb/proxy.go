package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/vrouter/vrouter/router/packet"
)

// Proxy is the proxy mode data path: it terminates a local client's TCP
// connection to a Service VIP inside the router's stack and splices it to
// a connection it dials to the picked backend from the node's kernel.
//
//	client ─▶ TUN ─▶ stack (VIP is a stack address) ─▶ SYN ─▶ Proxy.handle
//	                                                          │ Table.Lookup, Limiter, Entry.Pick
//	                                                          │ dial backend from the node kernel
//	                                                          │ (another backend if it fails)
//	                                                          │ [PROXY v2 header]
//	                                                          ▼
//	client ◀── gonet.TCPConn (SYN-ACK only now) ◀── splice ──▶ net.TCPConn ──▶ backend
//
// The backend is dialed first and the client's handshake is completed only
// once a backend answered, so a dead backend costs the client a retry
// inside the router, never a failed connection; when no backend answers,
// the client gets a RST ("connection refused").
//
// The backend connection is dialed with a plain net.Dialer, from the node
// kernel: the kernel picks a source address the backend can answer (the
// node's TUN address for backends on other nodes, its bridge address for
// local ones). Backends see that address, not the client's; a Service
// with ProxyProtocol sends them a PROXY protocol v2 header with the
// client's address and the VIP first. Dialing from the stack instead is
// wrong twice over: with the client's address it would hijack the
// client's own forwarded traffic (see DESIGN.md), and the router address
// is the same on every node, so a remote backend's replies would go to
// its own router.
//
// Proxy mode applies to TCP only: UDP ports of a proxy-mode Service are
// translated by the NAT as in nat mode.
//
// The Proxy also relays TCP connections that host sockets accepted for
// External keys (node ports, external and load-balancer IPs answered from
// outside; see ServeHost and HostPorts), in every mode: the same picking,
// limits, dial, splice, idle timeout and draining, with a kernel socket on
// both sides.
//
// Connections are spliced both ways with half-close (a FIN one way is
// passed on as a FIN, and the other way keeps flowing), closed after
// ProxyOptions.IdleTimeout without data either way, and drained when their
// backend leaves its Service: Sync (called after every Table update, and
// by Run every tick) marks them, and they are reset DrainTimeout later
// unless the backend came back, while new connections go to the backends
// that remain. A client connection the stack closed first skips TIME_WAIT
// (see noTimeWait), so the client can reuse its port at once, as it can
// with a kernel server. A splice goroutine takes a copy buffer only when
// its side has data to read and gives it back before it waits again, so
// an idle connection holds none (see spliceBuf).
type Proxy struct {
	log   *zap.Logger
	stack *stack.Stack
	table *Table
	opts  ProxyOptions
	fwd   *tcp.Forwarder
	limit *Limiter
	// setups counts the connections being set up, per client
	// (MaxInFlightPerClient).
	setups *Limiter
	// tick is how often Run syncs with the Table and looks for idle
	// and drained connections.
	tick time.Duration

	ran  atomic.Bool
	open atomic.Bool // Run is taking connections

	// wg counts the handler goroutines that got past begin and every
	// splice goroutine. Add happens under mu while !stopping, so Run's
	// Wait never races an Add from zero.
	wg sync.WaitGroup

	// mu guards ctx, stopping, conns and the drain state of every
	// proxyConn.
	mu       sync.Mutex
	ctx      context.Context // Run's; nil before Run
	stopping bool
	conns    map[backendKey]*backendConns

	stats proxyCounters

	// bufs counts the copy buffers of the splice goroutines (see
	// spliceBuf).
	bufs spliceBufCounts
}

// ProxyOptions configure a Proxy. Zero values are the documented defaults.
type ProxyOptions struct {
	// DialTimeout bounds one dial to a backend. Default
	// DefaultProxyDialTimeout.
	DialTimeout time.Duration
	// IdleTimeout closes a connection that carried no data either way
	// for this long. Default DefaultProxyIdleTimeout.
	IdleTimeout time.Duration
	// DrainTimeout is how long a connection whose backend left its
	// Service keeps working before it is reset. Default
	// DefaultProxyDrainTimeout.
	DrainTimeout time.Duration
	// MaxInFlight bounds the connections being set up at once (dial and
	// handshake); SYNs beyond it are dropped, and the clients
	// retransmit. Default DefaultProxyMaxInFlight.
	MaxInFlight int
	// MaxInFlightPerClient bounds those of one client address, so that
	// one client (a SYN flood) cannot take every slot; its SYNs beyond
	// are dropped and counted. Default DefaultProxyMaxInFlightPerClient.
	MaxInFlightPerClient int
	// HandshakeFirstAt is the number of connections being set up, in
	// all (this one included), from which the proxy completes a client's
	// handshake before it dials a backend, so that a SYN whose source
	// never answers (a spoofed one) costs no backend connection. A
	// client with HandshakeFirstPerClient setups of its own in flight
	// gets the same.
	// Defaults DefaultProxyHandshakeFirstAt and
	// DefaultProxyHandshakeFirstPerClient.
	HandshakeFirstAt, HandshakeFirstPerClient int
	// MaxConns caps the open connections, MaxPerClient those of one
	// client address; connections beyond are refused with RST and
	// counted. Defaults DefaultProxyMaxConns and DefaultProxyMaxPerClient.
	MaxConns, MaxPerClient int64
	// ReceiveWindow is the stack's receive window of client
	// connections. Default: gVisor's default receive buffer size.
	ReceiveWindow int
}

// Default ProxyOptions.
const (
	DefaultProxyDialTimeout  = time.Second
	DefaultProxyIdleTimeout  = time.Hour
	DefaultProxyDrainTimeout = 30 * time.Second
	DefaultProxyMaxInFlight  = 2048
	// DefaultProxyMaxInFlightPerClient is small enough that the 254
	// addresses of a /24 pod CIDR, all a pod can send from (see the
	// router's source admission), cannot fill DefaultProxyMaxInFlight
	// together: SYNs from unanswering spoofed sources hold their slots
	// for the stack's SYN-ACK retransmissions (about a minute).
	DefaultProxyMaxInFlightPerClient    = 8
	DefaultProxyHandshakeFirstAt        = 64
	DefaultProxyHandshakeFirstPerClient = 2
	// DefaultProxyMaxConns is also Egress's default per protocol. A
	// proxied or egress TCP connection holds a stack endpoint, a node
	// socket and two goroutines: with this many of each the router stays
	// inside the DaemonSet's memory limit (docs/operations.md, "Memory").
	DefaultProxyMaxConns     = 1 << 12
	DefaultProxyMaxPerClient = 1 << 14
)

func (o *ProxyOptions) setDefaults() error {
	var d defaults
	d.duration("dial timeout", &o.DialTimeout, DefaultProxyDialTimeout)
	d.duration("idle timeout", &o.IdleTimeout, DefaultProxyIdleTimeout)
	d.duration("drain timeout", &o.DrainTimeout, DefaultProxyDrainTimeout)
	d.countInt("max in flight", &o.MaxInFlight, DefaultProxyMaxInFlight)
	d.countInt("max in flight per client", &o.MaxInFlightPerClient, DefaultProxyMaxInFlightPerClient)
	d.countInt("handshake first at", &o.HandshakeFirstAt, DefaultProxyHandshakeFirstAt)
	d.countInt("handshake first per client", &o.HandshakeFirstPerClient, DefaultProxyHandshakeFirstPerClient)
	d.count("max conns", &o.MaxConns, DefaultProxyMaxConns)
	d.count("max per client", &o.MaxPerClient, DefaultProxyMaxPerClient)
	if o.ReceiveWindow < 0 {
		d.errs = append(d.errs, fmt.Errorf("receive window %d: want ≥ 1, or 0 for gVisor's default", o.ReceiveWindow))
	}
	return d.err()
}

// ProxyStats are the Proxy's counters.
type ProxyStats struct {
	// Conns counts connections spliced to a backend; Active those open
	// now, Draining those of them whose backend left its Service.
	Conns            uint64
	Active, Draining int64
	// HostConns counts the connections among Conns that came from a
	// host socket (ServeHost).
	HostConns uint64
	// RefusedNoEndpoints counts connections refused with RST because
	// their Service had no usable endpoint.
	RefusedNoEndpoints uint64
	// RefusedNoLocalEndpoints counts host connections reset because
	// their External key's policy is Local and this node has no usable
	// endpoint (see ServeHost).
	RefusedNoLocalEndpoints uint64
	// RefusedCap counts connections refused by MaxConns or MaxPerClient.
	RefusedCap uint64
	// RefusedNotProxy counts SYNs to a stack address and port that is no
	// proxy-mode Service (answered with RST by the stack).
	RefusedNotProxy uint64
	// RefusedUnreachable counts connections refused because no backend
	// answered the dial.
	RefusedUnreachable uint64
	// DialFailures counts failed dials to backends; Retries counts dials
	// to another backend after one failed.
	DialFailures, Retries uint64
	// HandshakeFailures counts clients that went away after the backend
	// answered and before their handshake completed.
	HandshakeFailures uint64
	// IdleClosed counts connections closed by IdleTimeout; Drained those
	// reset DrainTimeout after their backend left.
	IdleClosed, Drained uint64
	// InFlightDrops counts SYNs dropped because MaxInFlight connections
	// were being set up (gVisor's counter: the whole stack's).
	InFlightDrops uint64
	// InFlightClientDrops counts SYNs dropped because their client had
	// MaxInFlightPerClient connections being set up.
	InFlightClientDrops uint64
	// HandshakeFirst counts connections whose client handshake was
	// completed before the backend was dialed (see HandshakeFirstAt).
	HandshakeFirst uint64
	// Unproven counts the clients among them that did not complete
	// their handshake (no backend was dialed for them).
	Unproven uint64
	// InFlight is the number of connections being set up now.
	InFlight int64
}

type proxyCounters struct {
	conns, hostConns, refusedNoEP, refusedNoLocalEP, refusedCap, refusedNotProxy, refusedUnreachable,
	dialFailures, retries, handshakeFailures, idleClosed, drained,
	inFlightClient, handshakeFirst, unproven atomic.Uint64
	active, draining atomic.Int64
}

// backendKey is the registry key of open connections: one backend of one
// Service key.
type backendKey struct {
	svc     ServiceKey
	backend netip.AddrPort
}

// backendConns are the open connections to one backend of one Service
// key, with the Entry they were last checked against (Sync skips the
// group while the Table still has that Entry).
type backendConns struct {
	entry   *Entry
	checked bool
	conns   map[*proxyConn]struct{}
	peak    mapPeak // of conns (shrink.go)
}

// NewProxy returns a Proxy for the Service table's proxy-mode entries and
// installs its connection handler as s's TCP protocol handler. Call it
// before s carries traffic: the handler slot is not synchronized with the
// packet path. It starts nothing: until Run, and after it returns, SYNs
// to VIPs are refused with RST by the stack. log may be nil.
func NewProxy(s *stack.Stack, table *Table, log *zap.Logger, opts ProxyOptions) (*Proxy, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	limit, err := NewLimiter(LimiterOptions{Max: opts.MaxConns, MaxPerClient: opts.MaxPerClient})
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	setups, err := NewLimiter(LimiterOptions{MaxPerClient: int64(opts.MaxInFlightPerClient)})
	if err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	p := &Proxy{
		log:    log.Named("proxy"),
		stack:  s,
		table:  table,
		opts:   opts,
		limit:  limit,
		setups: setups,
		tick:   min(max(min(opts.IdleTimeout, opts.DrainTimeout)/4, 10*time.Millisecond), time.Second),
		conns:  make(map[backendKey]*backendConns),
	}
	if err := noTimeWait(s); err != nil {
		return nil, fmt.Errorf("new proxy: %w", err)
	}
	p.fwd = tcp.NewForwarder(s, opts.ReceiveWindow, opts.MaxInFlight, p.handle)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, p.handlePacket)
	return p, nil
}

// Run takes connections until ctx is done, syncing with the Table and
// closing idle and drained connections every tick (a quarter of the
// shorter of IdleTimeout and DrainTimeout, within 10ms..1s). Then it
// closes every open connection and returns once every goroutine it owns
// (the handlers of connections being set up and the splice goroutines)
// has exited. A handler the stack started just as Run stopped only
// refuses its connection and returns. A handler blocked in the client's
// handshake waits for that to end (or for the stack to close). Run may be
// called once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return errors.New("proxy: Run called twice")
	}
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	p.open.Store(true)
	t := time.NewTicker(p.tick)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			p.Sync()
			p.sweep()
		}
	}
	p.open.Store(false)
	p.mu.Lock()
	p.stopping = true
	var all []*proxyConn
	for _, g := range p.conns {
		for c := range g.conns {
			all = append(all, c)
		}
	}
	p.mu.Unlock()
	for _, c := range all {
		c.shut(false, nil)
	}
	p.wg.Wait()
	return nil
}

// handlePacket is the stack's TCP handler for segments no endpoint
// claims. It passes SYNs to proxy-mode VIPs with endpoints to the
// forwarder, which starts handle for each; for everything else it returns
// false and the stack answers as it would without it (RST). It runs on the
// packet path: no lock, no allocation.
func (p *Proxy) handlePacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if !p.open.Load() {
		return false
	}
	e := p.table.Lookup(ServiceKey{VIP: packet.NetipAddr(id.LocalAddress), Port: id.LocalPort, Proto: TCP})
	switch {
	case e == nil || e.Mode() != ModeProxy:
		if isSYN(pkt) {
			p.stats.refusedNotProxy.Add(1)
		}
		return false
	case e.NoEndpoints():
		if isSYN(pkt) {
			p.stats.refusedNoEP.Add(1)
		}
		return false
	}
	return p.fwd.HandlePacket(id, pkt)
}

func isSYN(pkt *stack.PacketBuffer) bool {
	h := header.TCP(pkt.TransportHeader().Slice())
	if len(h) < header.TCPMinimumSize {
		return false
	}
	f := h.Flags()
	return f.Contains(header.TCPFlagSyn) && !f.Contains(header.TCPFlagAck)
}

// begin registers a handler goroutine with Run and returns Run's context,
// or reports false once Run has stopped (or before it started).
func (p *Proxy) begin() (context.Context, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping || p.ctx == nil {
		return nil, false
	}
	p.wg.Add(1)
	return p.ctx, true
}

// handle sets up one connection: it runs in the goroutine the forwarder
// started for the SYN and always completes the request (a request left
// incomplete holds an in-flight slot forever). Once the connection is
// set up, it becomes one of the connection's two splice goroutines.
func (p *Proxy) handle(r *tcp.ForwarderRequest) {
	completed := false
	complete := func(reset bool) {
		completed = true
		r.Complete(reset)
	}
	defer func() {
		if !completed {
			r.Complete(true)
		}
	}()
	ctx, ok := p.begin()
	if !ok {
		return
	}
	defer p.wg.Done()

	id := r.ID()
	client := netip.AddrPortFrom(packet.NetipAddr(id.RemoteAddress), id.RemotePort)
	vip := netip.AddrPortFrom(packet.NetipAddr(id.LocalAddress), id.LocalPort)
	// The setup counts against its client's in-flight cap until the
	// connection is spliced or refused.
	mine, ok := p.setups.acquire(client.Addr())
	if !ok {
		// Drop the SYN: a client with that many setups in flight is a
		// flood, or a burst that retransmits.
		p.stats.inFlightClient.Add(1)
		complete(false)
		return
	}
	setupDone := false
	endSetup := func() {
		if !setupDone {
			setupDone = true
			p.setups.Release(client.Addr())
		}
	}
	defer endSetup()
	key := ServiceKey{VIP: vip.Addr(), Port: vip.Port(), Proto: TCP}
	e := p.table.Lookup(key)
	switch {
	case e == nil || e.Mode() != ModeProxy:
		p.stats.refusedNotProxy.Add(1)
		return
	case e.NoEndpoints():
		p.stats.refusedNoEP.Add(1)
		return
	}
	if !p.limit.Acquire(client.Addr()) {
		p.stats.refusedCap.Add(1)
		return
	}
	var (
		wq waiter.Queue
		ep tcpip.Endpoint
		bc *net.TCPConn
		b  Backend
	)
	if mine >= int64(p.opts.HandshakeFirstPerClient) || p.setups.active.Load() >= int64(p.opts.HandshakeFirstAt) {
		// Under pressure: the client proves its address by completing
		// its handshake before a backend is dialed for it. If no
		// backend answers, it gets a RST after the handshake instead
		// of in answer to its SYN.
		p.stats.handshakeFirst.Add(1)
		var terr tcpip.Error
		if ep, terr = r.CreateEndpoint(&wq); terr != nil {
			p.stats.unproven.Add(1)
			complete(true)
			p.limit.Release(client.Addr())
			p.log.Debug("client handshake failed; no backend dialed", zap.Stringer("client", client), zap.String("error", terr.String()))
			return
		}
		complete(false)
		var err error
		if bc, b, err = p.connect(ctx, e, client, vip); err != nil {
			p.refuseUnreachable(ctx, e, client, err)
			ep.Abort()
			ep.Close()
			return
		}
	} else {
		var err error
		if bc, b, err = p.connect(ctx, e, client, vip); err != nil {
			p.refuseUnreachable(ctx, e, client, err)
			return
		}
		var terr tcpip.Error
		if ep, terr = r.CreateEndpoint(&wq); terr != nil {
			p.stats.handshakeFailures.Add(1)
			complete(true)
			bc.Close()
			p.limit.Release(client.Addr())
			p.log.Debug("client handshake failed", zap.Stringer("client", client), zap.String("error", terr.String()))
			return
		}
		complete(false)
	}
	endSetup()

	cc := gonet.NewTCPConn(&wq, ep)
	c := &proxyConn{
		p:       p,
		key:     backendKey{key, b.AddrPort()},
		backend: b,
		client:  client,
		vip:     vip,
		ep:      ep,
		cc:      cc,
		bc:      bc,
		started: time.Now(),
	}
	p.log.Debug("proxying", zap.Stringer("client", client), zap.Stringer("vip", vip), zap.Stringer("backend", b))
	p.splice(c, e, newStackReader(p.spliceBuf(), ep, &wq, cc))
}

// refuseUnreachable gives back client's connection slot when no backend
// of e answered (err), and counts it unless Run is stopping.
func (p *Proxy) refuseUnreachable(ctx context.Context, e *Entry, client netip.AddrPort, err error) {
	p.limit.Release(client.Addr())
	if ctx.Err() == nil {
		p.stats.refusedUnreachable.Add(1)
		p.log.Debug("no backend answered; refusing the connection",
			zap.Stringer("client", client), zap.Stringer("service", e.Name()), zap.Error(err))
	}
}

// splice counts and registers c, picked from e, and splices it until both
// directions end: fromClient in a goroutine it starts, the backend's side
// in the calling one, which then finishes c.
func (p *Proxy) splice(c *proxyConn, e *Entry, fromClient spliceReader) {
	c.touch()
	c.backend.Acquire()
	p.stats.conns.Add(1)
	p.stats.active.Add(1)
	if !p.register(c, e) {
		c.shut(false, nil)
	}
	fromBackend := newKernelReader(p.spliceBuf(), c.bc)
	done := make(chan struct{})
	p.wg.Go(func() {
		defer close(done)
		c.pipe(c.bc, fromClient, c.bc.CloseWrite, &c.copied[0])
	})
	c.pipe(c.cc, fromBackend, c.cc.CloseWrite, &c.copied[1])
	<-done
	c.finish()
}

// hostCounters count what one host binding (a node port or external
// address socket, see HostPorts) did: TCP connections relayed or UDP
// flows opened, and refusals by reason. Each count is also made in total,
// when it is not nil (HostPorts' totals).
type hostCounters struct {
	conns, refusedNoEP, refusedNoLocalEP, refusedCap, refusedUnreachable atomic.Uint64
	active                                                               atomic.Int64

	total *hostCounters
}

// count adds 1 to the counter field selects, in c and its totals; c may
// be nil.
func (c *hostCounters) count(field func(*hostCounters) *atomic.Uint64) {
	for ; c != nil; c = c.total {
		field(c).Add(1)
	}
}

// open counts a new connection or flow (conns and active) in c and its
// totals; c may be nil.
func (c *hostCounters) open() {
	for ; c != nil; c = c.total {
		c.conns.Add(1)
		c.active.Add(1)
	}
}

// closed ends a connection or flow counted by open.
func (c *hostCounters) closed() {
	for ; c != nil; c = c.total {
		c.active.Add(-1)
	}
}

// Fields of hostCounters for count.
func hcNoEP(c *hostCounters) *atomic.Uint64        { return &c.refusedNoEP }
func hcNoLocalEP(c *hostCounters) *atomic.Uint64   { return &c.refusedNoLocalEP }
func hcCap(c *hostCounters) *atomic.Uint64         { return &c.refusedCap }
func hcUnreachable(c *hostCounters) *atomic.Uint64 { return &c.refusedUnreachable }

// ServeHost relays conn, a TCP connection accepted on a host socket that
// serves the External key key (a node port's, or an external or
// load-balancer IP's as answered from outside), to a backend of key's
// Entry, with everything a connection to a VIP gets: the Limiter, Pick
// with affinity, a dial from the node kernel that tries the other
// backends when one fails, the PROXY v2 header when the Service asks for
// it (source: the client; destination: the address and port the client
// connected to), the half-close splice, the idle timeout, and draining
// when the backend leaves the Service (whatever the Service's mode). It
// takes ownership of conn and returns at once: the relay runs in a
// goroutine of the Proxy, which Run's shutdown ends. It reports false,
// and resets conn, when Run is not taking connections.
//
// A connection that cannot be served is reset (RST), and counted: when
// key has no Entry or no usable endpoint anywhere (kube-proxy REJECTs a
// node port without endpoints with a RST: RefusedNoEndpoints); when the
// key's externalTrafficPolicy is Local and this node has none
// (RefusedNoLocalEndpoints: kube-proxy DROPs the SYN, and the client
// times out, but the kernel has already completed the handshake of an
// accepted socket, so a reset is the honest equivalent); by the caps
// (RefusedCap); and when no backend answers (RefusedUnreachable).
func (p *Proxy) ServeHost(conn *net.TCPConn, key ServiceKey) bool {
	return p.serveHost(conn, key, nil)
}

// serveHost is ServeHost, counting also in hc (nil: nowhere else).
func (p *Proxy) serveHost(conn *net.TCPConn, key ServiceKey, hc *hostCounters) bool {
	ctx, ok := p.begin()
	if !ok {
		resetTCP(conn)
		return false
	}
	go func() {
		defer p.wg.Done()
		p.relayHost(ctx, conn, key, hc)
	}()
	return true
}

// relayHost sets up and splices one host connection (see ServeHost). It
// runs in a goroutine counted in p.wg and becomes one of the connection's
// two splice goroutines.
func (p *Proxy) relayHost(ctx context.Context, conn *net.TCPConn, key ServiceKey, hc *hostCounters) {
	client := unmapAddrPort(conn.RemoteAddr())
	local := unmapAddrPort(conn.LocalAddr())
	e := p.table.Lookup(key)
	switch {
	case e != nil && e.NoEndpoints() && e.Status() == StatusNoLocalEndpoints:
		p.stats.refusedNoLocalEP.Add(1)
		hc.count(hcNoLocalEP)
		resetTCP(conn)
		return
	case e == nil || e.NoEndpoints():
		p.stats.refusedNoEP.Add(1)
		hc.count(hcNoEP)
		resetTCP(conn)
		return
	}
	if !p.limit.Acquire(client.Addr()) {
		p.stats.refusedCap.Add(1)
		hc.count(hcCap)
		resetTCP(conn)
		return
	}
	bc, b, err := p.connect(ctx, e, client, local)
	if err != nil {
		p.limit.Release(client.Addr())
		if ctx.Err() == nil {
			p.stats.refusedUnreachable.Add(1)
			hc.count(hcUnreachable)
			p.log.Debug("no backend answered; resetting the host connection",
				zap.Stringer("client", client), zap.Stringer("service", e.Name()), zap.Error(err))
		}
		resetTCP(conn)
		return
	}
	c := &proxyConn{
		p:       p,
		key:     backendKey{key, b.AddrPort()},
		backend: b,
		client:  client,
		vip:     local,
		cc:      conn,
		hc:      conn,
		bc:      bc,
		hcnt:    hc,
		started: time.Now(),
	}
	p.stats.hostConns.Add(1)
	hc.open()
	p.log.Debug("relaying host connection", zap.Stringer("client", client), zap.Stringer("to", local), zap.Stringer("backend", b))
	p.splice(c, e, newKernelReader(p.spliceBuf(), conn))
}

// resetTCP closes c with a RST.
func resetTCP(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// unmapAddrPort returns a's address and port with an IPv4-mapped
// address unmapped.
func unmapAddrPort(a net.Addr) netip.AddrPort {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// spliceBuf returns an empty copy buffer slot counted in p's counters.
func (p *Proxy) spliceBuf() spliceBuf {
	return newSpliceBuf(&p.bufs)
}

// connect dials the picked backend and, when the dial fails, the others
// in random order, each at most once. It sends the PROXY v2 header first
// if the Service asks for one.
func (p *Proxy) connect(ctx context.Context, e *Entry, client, vip netip.AddrPort) (*net.TCPConn, Backend, error) {
	f := Flow{Src: client, Dst: vip, Proto: TCP}
	b, ok := e.Pick(f)
	if !ok {
		return nil, Backend{}, errors.New("no backends")
	}
	var hdr []byte
	if e.ProxyProtocol() {
		hdr = appendProxyV2(nil, client, vip)
	}
	backends := e.Backends()
	tried := make([]netip.AddrPort, 0, 4)
	var errs []error
	for {
		conn, err := p.dial(ctx, b.AddrPort(), hdr)
		if err == nil {
			connected(b)
			if len(tried) > 0 && e.aff != nil {
				// Keep the client on the backend that answered,
				// not on the one its affinity named.
				e.aff.put(client.Addr(), b.AddrPort(), e.clock.Now(), e.affTimeout)
			}
			return conn, b, nil
		}
		if ctx.Err() != nil {
			return nil, Backend{}, ctx.Err()
		}
		p.stats.dialFailures.Add(1)
		e.connectFailed(b)
		p.log.Debug("backend dial failed", zap.Stringer("service", e.Name()), zap.Stringer("backend", b), zap.Error(err))
		errs = append(errs, err)
		tried = append(tried, b.AddrPort())
		next, ok := pickUntried(backends, tried)
		if !ok {
			return nil, Backend{}, errors.Join(errs...)
		}
		p.stats.retries.Add(1)
		b = next
	}
}

// pickUntried returns one of backends not in tried, at random: one that
// is not ejected (OutlierOptions) if there is one.
func pickUntried(backends []Backend, tried []netip.AddrPort) (Backend, bool) {
	isTried := func(b Backend) bool {
		for _, t := range tried {
			if b.AddrPort() == t {
				return true
			}
		}
		return false
	}
	for _, usable := range []bool{true, false} {
		ok := func(b Backend) bool { return !isTried(b) && (!usable || b.c.usable()) }
		n := 0
		for _, b := range backends {
			if ok(b) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		k := rand.IntN(n)
		for _, b := range backends {
			if !ok(b) {
				continue
			}
			if k == 0 {
				return b, true
			}
			k--
		}
	}
	return Backend{}, false
}

// dial connects to a backend from the node kernel and writes hdr.
func (p *Proxy) dial(ctx context.Context, to netip.AddrPort, hdr []byte) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: p.opts.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", to.String())
	if err != nil {
		return nil, err
	}
	tc := conn.(*net.TCPConn)
	if len(hdr) > 0 {
		tc.SetWriteDeadline(time.Now().Add(p.opts.DialTimeout))
		if _, err := tc.Write(hdr); err != nil {
			tc.Close()
			return nil, fmt.Errorf("write PROXY header to %v: %w", to, err)
		}
		tc.SetWriteDeadline(time.Time{})
	}
	return tc, nil
}

// proxyV2Sig is the PROXY protocol v2 signature.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// appendProxyV2 appends a PROXY protocol v2 header (version 2, command
// PROXY, TCP over IPv4 or IPv6) for a connection from src to dst, as the
// client addressed it, to b.
func appendProxyV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, proxyV2Sig[:]...)
	b = append(b, 0x21) // version 2, command PROXY
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() && da.Is4() {
		b = append(b, 0x11, 0, 12) // AF_INET, STREAM; 4+4+2+2 bytes
		s, d := sa.As4(), da.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	} else {
		b = append(b, 0x21, 0, 36) // AF_INET6, STREAM; 16+16+2+2 bytes
		s, d := sa.As16(), da.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = append(b, byte(src.Port()>>8), byte(src.Port()), byte(dst.Port()>>8), byte(dst.Port()))
	return b
}

// proxyConn is one spliced connection: the client's, terminated in the
// stack, and the backend's, dialed from the kernel. Its two splice
// goroutines are the handler goroutine and one it starts; the last of
// them to finish calls finish.
type proxyConn struct {
	p       *Proxy
	key     backendKey
	backend Backend
	client  netip.AddrPort
	// vip is the address and port the client connected to.
	vip netip.AddrPort
	// The client's connection: terminated in the stack (ep, and cc a
	// *gonet.TCPConn on it), or accepted on a host socket (hc, and cc
	// is hc; ep is nil).
	ep tcpip.Endpoint
	cc clientConn
	hc *net.TCPConn
	bc *net.TCPConn
	// hcnt are the counters of the host binding that accepted a host
	// client, or nil.
	hcnt *hostCounters

	last atomic.Int64 // unix nanoseconds of the last data read either way
	// copied counts the bytes spliced, [0] from the client, [1] from the
	// backend: one add per read, by the goroutine splicing that way.
	copied [2]atomic.Uint64
	// started is when the proxy took the connection.
	started time.Time

	// drainAt is when a draining connection is reset (unix
	// nanoseconds), or 0. Guarded by p.mu.
	drainAt int64

	closed atomic.Bool
}

// clientConn is what the splice writes and closes of the client's
// connection: a *gonet.TCPConn or a *net.TCPConn.
type clientConn interface {
	io.Writer
	CloseWrite() error
	Close() error
}

func (c *proxyConn) touch() { c.last.Store(time.Now().UnixNano()) }

// Copy buffers come in spliceBufSizes. A direction of a connection
// starts with the smallest, big enough for a request or a response; a
// bulk transfer, whose reads keep filling the buffer, takes the next size
// up for each read that fills one, to the largest. Larger reads are
// larger writes: into the stack, one write of up to the largest size
// goes out as few super-packets of up to 64 KiB where the smallest
// buffer makes one of at most 32 KiB per write (two 32 KiB writes do not
// fit in one); into a kernel socket, fewer system calls. A read that
// fills less than a quarter of its buffer steps back down one size, and a
// direction that waits for data gives its buffer back and starts again
// from the smallest.
var spliceBufSizes = [...]int{32 << 10, 64 << 10, 128 << 10, 256 << 10}

// spliceGrowBudget bounds the bytes that one Proxy's or Egress's copy
// buffers larger than the smallest hold at once: a direction that would
// pass it takes a smaller one. It is what bulk transfers may add to the
// smallest buffers' 32 KiB per direction with data ready (see
// docs/operations.md, "Memory").
const spliceGrowBudget = 16 << 20

var spliceBufPools [len(spliceBufSizes)]sync.Pool

func init() {
	for i, size := range spliceBufSizes {
		spliceBufPools[i].New = func() any {
			b := make([]byte, size)
			return &b
		}
	}
}

// spliceBufCounts counts one owner's (a Proxy's, an Egress's) copy
// buffers.
type spliceBufCounts struct {
	held  atomic.Int64  // buffers held now
	taken atomic.Uint64 // buffers taken from the pools
	grown atomic.Int64  // bytes held now in buffers above the smallest size
}

// spliceBuf is the copy buffer of one direction of a connection. It is
// taken from a pool only while there is data to copy and given back
// before the direction waits for more, so an idle connection holds none
// (two held buffers, 64 KiB, were most of an idle connection's memory),
// while a bulk transfer keeps one, of a size that follows its reads (see
// spliceBufSizes), for as long as data keeps coming. It is used by one
// goroutine.
type spliceBuf struct {
	counts *spliceBufCounts
	b      *[]byte // held, or nil
	held   int     // index in spliceBufSizes of b
	want   int     // index in spliceBufSizes of the buffer the next get returns
}

func newSpliceBuf(c *spliceBufCounts) spliceBuf { return spliceBuf{counts: c} }

// get returns the buffer to read into: the one held, or, if none is held
// or the last read asked for another size (used), one taken from a pool.
// A buffer returned before is then no longer valid.
func (s *spliceBuf) get() []byte {
	if s.b != nil && s.held == s.want {
		return *s.b
	}
	size := s.want
	s.put()
	for ; size > 0; size-- {
		if s.counts.grown.Add(int64(spliceBufSizes[size])) <= spliceGrowBudget {
			break
		}
		s.counts.grown.Add(-int64(spliceBufSizes[size]))
	}
	s.b = spliceBufPools[size].Get().(*[]byte)
	s.held, s.want = size, size
	s.counts.held.Add(1)
	s.counts.taken.Add(1)
	return *s.b
}

// used records a read of n bytes into the buffer get returned, choosing
// the size of the next: one up if it filled the buffer, one down if it
// filled less than a quarter of it.
func (s *spliceBuf) used(n int) {
	if s.b == nil {
		return
	}
	switch size := len(*s.b); {
	case n >= size && s.held < len(spliceBufSizes)-1:
		s.want = s.held + 1
	case n < size/4 && s.held > 0:
		s.want = s.held - 1
	}
}

// put gives the buffer, if one is held, back to its pool; the next get
// takes one of the smallest size.
func (s *spliceBuf) put() {
	if s.b != nil {
		spliceBufPools[s.held].Put(s.b)
		s.b = nil
		s.counts.held.Add(-1)
		if s.held > 0 {
			s.counts.grown.Add(-int64(spliceBufSizes[s.held]))
		}
	}
	s.held, s.want = 0, 0
}

// spliceReader is one side of a connection as pipe reads it. It is used
// by one goroutine.
type spliceReader interface {
	// read waits until data, EOF or an error is ready, reads what is
	// there into the reader's buffer and returns it (valid until the
	// next call), or returns what the connection's Read would. It
	// holds a buffer only from when data is ready on: it gives the
	// buffer back before it waits.
	read() ([]byte, error)
	// close gives back the buffer and whatever else read holds (not
	// the connection).
	close()
}

var (
	_ spliceReader = (*stackReader)(nil)
	_ spliceReader = (*kernelReader)(nil)
)

// stackReader reads the client connection, terminated in the stack. It
// waits on the endpoint's waiter.Queue for readability with no buffer,
// then reads through cc (which tunes the receive window as it reads).
type stackReader struct {
	buf   spliceBuf
	ep    tcpip.Endpoint
	cc    *gonet.TCPConn
	wq    *waiter.Queue
	entry waiter.Entry // registered on wq until close
	ready chan struct{}
}

func newStackReader(buf spliceBuf, ep tcpip.Endpoint, wq *waiter.Queue, cc *gonet.TCPConn) *stackReader {
	r := &stackReader{buf: buf, ep: ep, cc: cc, wq: wq}
	r.entry, r.ready = waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&r.entry)
	return r
}

func (r *stackReader) read() ([]byte, error) {
	// The entry is registered before the first check, so data that
	// comes after a check finds it; a closed endpoint (shut) is
	// readable and notifies.
	for r.ep.Readiness(waiter.ReadableEvents) == 0 {
		r.buf.put()
		<-r.ready
	}
	b := r.buf.get()
	n, err := r.cc.Read(b)
	r.buf.used(n)
	return b[:n], err
}

func (r *stackReader) close() {
	r.wq.EventUnregister(&r.entry)
	r.buf.put()
}

// pipe copies src to dst until src ends. At EOF it passes the half-close
// on (closeWrite); on any error it resets both connections.
func (c *proxyConn) pipe(dst io.Writer, src spliceReader, closeWrite func() error, copied *atomic.Uint64) {
	defer src.close()
	for {
		b, err := src.read()
		if len(b) > 0 {
			c.touch()
			copied.Add(uint64(len(b)))
			if _, werr := dst.Write(b); werr != nil {
				c.shut(true, nil)
				return
			}
		}
		if err == io.EOF {
			if closeWrite() != nil {
				c.shut(true, nil)
			}
			return
		}
		if err != nil {
			c.shut(true, nil)
			return
		}
	}
}

// shut closes both connections, with FIN (graceful) or RST (reset),
// once, and reports whether this call did it; then, and before closing, it
// counts the close in why (if not nil). The splice goroutines then see
// their reads fail and finish.
func (c *proxyConn) shut(reset bool, why *atomic.Uint64) bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	if why != nil {
		why.Add(1)
	}
	if reset {
		if c.ep != nil {
			c.ep.Abort()
		} else {
			c.hc.SetLinger(0)
		}
		c.bc.SetLinger(0)
	}
	c.cc.Close()
	c.bc.Close()
	return true
}

// finish ends a connection whose splice goroutines are done.
func (c *proxyConn) finish() {
	c.shut(false, nil)
	p := c.p
	p.mu.Lock()
	if g := p.conns[c.key]; g != nil {
		if _, ok := g.conns[c]; ok {
			delete(g.conns, c)
			if c.drainAt != 0 {
				p.stats.draining.Add(-1)
			}
			if len(g.conns) == 0 {
				delete(p.conns, c.key)
			} else if g.peak.shrink(len(g.conns)) {
				g.conns = rebuilt(g.conns)
			}
		}
	}
	p.mu.Unlock()
	c.backend.Release()
	p.limit.Release(c.client.Addr())
	p.stats.active.Add(-1)
	c.hcnt.closed()
}

// noTimeWait sets the TIME_WAIT of s's TCP to zero: a connection the
// stack closed first (its peer, a backend or an outside server,
// answered "Connection: close", say) is released as soon as it enters
// TIME_WAIT, with no segment sent. The stack's TCP terminates only
// client connections (the proxy's and the egress's take every SYN
// through a forwarder), and a client's kernel reuses a port whenever it
// picks it again: the client closed second, so it holds no TIME_WAIT of
// its own. With gVisor's default of 60 s the stack would instead hold
// the connection and drop a new SYN from the same client address and
// port, silently and uncounted (it hands a SYN that hits a TIME_WAIT
// connection only to a listening endpoint, never to a forwarder), and
// resetting it instead sends the client a stray RST per connection, a
// packet through the TUN and the pod's TCP for nothing. What TIME_WAIT
// guards against, an old duplicate of the connection arriving late,
// does not happen on a point-to-point link to the node; a late
// retransmission of the client's FIN (our last ACK lost) is answered
// with a RST, which closes the client's socket as that ACK would have.
func noTimeWait(s *stack.Stack) error {
	tw := tcpip.TCPTimeWaitTimeoutOption(0)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &tw); err != nil {
		return fmt.Errorf("TCP TIME_WAIT timeout: %s", err)
	}
	return nil
}

// register adds c, picked from e, to the registry, checking its backend
// against the current Table at once. It reports false once Run stops.
func (p *Proxy) register(c *proxyConn, e *Entry) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	g := p.conns[c.key]
	if g == nil {
		g = &backendConns{conns: make(map[*proxyConn]struct{})}
		p.conns[c.key] = g
	}
	g.conns[c] = struct{}{}
	g.peak.grew(len(g.conns))
	cur := p.table.Lookup(c.key.svc)
	if !g.checked || g.entry != cur {
		// The group's members were checked against another Entry:
		// the next Sync checks them all again.
		g.checked = false
	}
	if cur != e && !serves(cur, c.key.backend) {
		p.drainLocked(c, time.Now().UnixNano())
	}
	return true
}

// Sync checks every open connection's backend against the current Table:
// connections whose backend left its Service (or whose Service is gone,
// or, for a VIP, no longer in proxy mode) start draining, and are reset
// DrainTimeout later; those whose backend came back stop draining. Call
// it after every Table update; Run also calls it every tick. Its cost is one
// Lookup per backend with open connections, plus one check per
// connection of a backend whose Entry changed. Safe for concurrent use.
func (p *Proxy) Sync() {
	now := time.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, g := range p.conns {
		cur := p.table.Lookup(k.svc)
		if g.checked && g.entry == cur {
			continue
		}
		g.entry, g.checked = cur, true
		keep := serves(cur, k.backend)
		for c := range g.conns {
			if keep {
				p.undrainLocked(c)
			} else {
				p.drainLocked(c, now)
			}
		}
	}
}

// serves reports whether e is an Entry the Proxy serves (proxy mode, or
// an External key, whose host relay the Proxy runs whatever the mode)
// with backend ap.
func serves(e *Entry, ap netip.AddrPort) bool {
	if e == nil || (e.Mode() != ModeProxy && !e.Key().External) {
		return false
	}
	_, ok := e.index(ap)
	return ok
}

func (p *Proxy) drainLocked(c *proxyConn, now int64) {
	if c.drainAt != 0 {
		return
	}
	c.drainAt = now + int64(p.opts.DrainTimeout)
	p.stats.draining.Add(1)
	p.log.Debug("draining connection: its backend left the Service",
		zap.Stringer("client", c.client), zap.Stringer("key", c.key.svc), zap.Stringer("backend", c.key.backend),
		zap.Duration("timeout", p.opts.DrainTimeout))
}

func (p *Proxy) undrainLocked(c *proxyConn) {
	if c.drainAt == 0 {
		return
	}
	c.drainAt = 0
	p.stats.draining.Add(-1)
}

// sweep resets drained connections past their deadline and closes idle
// ones.
func (p *Proxy) sweep() {
	now := time.Now().UnixNano()
	idle := int64(p.opts.IdleTimeout)
	var drained, idled []*proxyConn
	p.mu.Lock()
	for _, g := range p.conns {
		for c := range g.conns {
			switch {
			case c.drainAt != 0 && now >= c.drainAt:
				drained = append(drained, c)
			case now-c.last.Load() >= idle:
				idled = append(idled, c)
			}
		}
	}
	p.mu.Unlock()
	for _, c := range drained {
		if c.shut(true, &p.stats.drained) {
			p.log.Debug("drained connection reset", zap.Stringer("client", c.client), zap.Stringer("backend", c.key.backend))
		}
	}
	for _, c := range idled {
		if c.shut(false, &p.stats.idleClosed) {
			p.log.Debug("idle connection closed", zap.Stringer("client", c.client), zap.Stringer("backend", c.key.backend))
		}
	}
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() ProxyStats {
	c := &p.stats
	return ProxyStats{
		Conns: c.conns.Load(), HostConns: c.hostConns.Load(), Active: c.active.Load(), Draining: c.draining.Load(),
		RefusedNoEndpoints: c.refusedNoEP.Load(), RefusedNoLocalEndpoints: c.refusedNoLocalEP.Load(),
		RefusedCap:      c.refusedCap.Load(),
		RefusedNotProxy: c.refusedNotProxy.Load(), RefusedUnreachable: c.refusedUnreachable.Load(),
		DialFailures: c.dialFailures.Load(), Retries: c.retries.Load(),
		HandshakeFailures: c.handshakeFailures.Load(),
		IdleClosed:        c.idleClosed.Load(), Drained: c.drained.Load(),
		InFlightDrops:       p.stack.Stats().TCP.ForwardMaxInFlightDrop.Value(),
		InFlightClientDrops: c.inFlightClient.Load(), HandshakeFirst: c.handshakeFirst.Load(), Unproven: c.unproven.Load(),
		InFlight: p.setups.active.Load(),
	}
}

// ProxyConnInfo describes one open proxied connection.
type ProxyConnInfo struct {
	Client netip.AddrPort
	// VIP is the address and port the client connected to: a VIP, or
	// for a host relay the node's (or external) address and port.
	VIP     netip.AddrPort
	Backend netip.AddrPort
	// Host: the client connected to a host socket (a node port or an
	// external address; see ServeHost), not to a VIP in the stack.
	Host bool
	// Draining: the backend left its Service; the connection is reset
	// at DrainAt.
	Draining bool
	DrainAt  time.Time
	// Started is when the proxy took the connection; LastSeen when data
	// last crossed it either way (zero: none yet).
	Started, LastSeen time.Time
	// Bytes counts the bytes spliced, [0] from the client, [1] from the
	// backend.
	Bytes [2]uint64
}

// Conns lists the open connections (for status commands and tests).
func (p *Proxy) Conns() []ProxyConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ProxyConnInfo
	for k, g := range p.conns {
		for c := range g.conns {
			out = append(out, p.infoLocked(k, c))
		}
	}
	return out
}

// infoLocked describes c, a connection of group k.
func (p *Proxy) infoLocked(k backendKey, c *proxyConn) ProxyConnInfo {
	ci := ProxyConnInfo{
		Client:  c.client,
		VIP:     c.vip,
		Backend: k.backend,
		Host:    c.ep == nil,
		Started: c.started,
		Bytes:   [2]uint64{c.copied[0].Load(), c.copied[1].Load()},
	}
	if l := c.last.Load(); l != 0 {
		ci.LastSeen = time.Unix(0, l)
	}
	if c.drainAt != 0 {
		ci.Draining, ci.DrainAt = true, time.Unix(0, c.drainAt)
	}
	return ci
}

// VIPs lists the VIPs of open connections from the stack (host relays
// have none). A VIP must stay a stack
// address while connections to it are open, even after its Service left
// (they drain), or their packets would be forwarded instead.
func (p *Proxy) VIPs() []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := make(map[netip.Addr]bool)
	var out []netip.Addr
	for k := range p.conns {
		if k.svc.External {
			continue // a host relay's: not a stack address
		}
		if !seen[k.svc.VIP] {
			seen[k.svc.VIP] = true
			out = append(out, k.svc.VIP)
		}
	}
	return out
}
