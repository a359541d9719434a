package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/vrouter/vrouter/router/packet"
)

// Egress masquerades pods' traffic to destinations outside the cluster:
// what flannel's MASQUERADE rule (`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -j
// MASQUERADE`) does in the node kernel, done by re-originating each flow
// from the node's own sockets, as slirp4netns and pasta do for rootless
// containers. The outside world sees the node's address.
//
//	pod ─▶ node kernel ─(rule: from pod CIDR lookup vrouter's table: default dev vr0)─▶ TUN
//	  ─▶ router hook: Egress.Ingress ── not egress ──▶ the NAT, then routed as usual
//	        │ source a local pod, destination outside the non-masquerade
//	        │ CIDRs, not a Service, not the router
//	        ├─ TCP, UDP, ICMP errors ─▶ the egress stack (gVisor, promiscuous):
//	        │    TCP: terminated; dial the destination from the kernel, splice
//	        │    UDP: one flow per (pod, port, destination): a connected kernel socket
//	        └─ ICMP echo ─▶ a ping socket (SOCK_DGRAM, IPPROTO_ICMP) per (pod, id, destination)
//	  ◀─ replies: the egress stack's packets (source the destination) ─▶ Send ─▶ TUN ─▶ pod
//
// The egress stack is a gVisor stack of its own, not the router's: it
// must terminate every address (promiscuous mode), which would stop the
// router's forwarding. It has one NIC whose packets come from Ingress
// and leave through Options.Send.
//
// A flow is refused, and counted by reason, when a cap is reached (TCP:
// RST; UDP and ICMP: dropped), and when the destination cannot be
// reached from the node: a dial refused becomes a RST, one that finds no
// route or host an ICMP destination unreachable (net or host) to the
// pod, with the SYN quoted as the kernel would quote it. A UDP flow whose
// socket reports an ICMP error (port unreachable, say) sends the pod the
// same error and ends. Path MTU is each leg's: the pod's TCP segments
// are cut to the TUN's MTU by the node kernel, and the node's own
// connection discovers the path's.
//
// Concurrency: Ingress is for the router's reader goroutines; SetLocal
// for any goroutine. Run owns the TCP handlers, splices, UDP flows and
// ping flows, and returns after they exited.
type Egress struct {
	log   *zap.Logger
	opts  EgressOptions
	table *Table
	stack *stack.Stack
	link  *egressLink
	fwd   *tcp.Forwarder

	limits [numEgressProtos]*Limiter

	local atomic.Pointer[egressLocal]

	ran  atomic.Bool
	open atomic.Bool

	// wg counts the goroutines Run owns; Add happens under mu while
	// !stopping.
	wg sync.WaitGroup

	// mu guards ctx, stopping, the flow registries and syns.
	mu       sync.Mutex
	ctx      context.Context
	stopping bool
	tcpConns map[*egressConn]struct{}
	udpFlows map[*egressUDP]struct{}
	pings    map[pingKey]*egressPing
	// peaks are the flow registries' (tcpConns, udpFlows, pings), for
	// shrinking them after a flood (shrink.go).
	peaks [numEgressProtos]mapPeak
	// syns holds the sequence number of each TCP SYN the forwarder is
	// setting up, for the ICMP error that quotes it (see unreachable).
	syns map[stack.TransportEndpointID]uint32

	pingWarn  sync.Once
	closeOnce sync.Once
	stats     egressCounters
	bufs      spliceBufCounts
}

// EgressOptions configure an Egress. Zero values are the documented
// defaults.
type EgressOptions struct {
	// Send writes one IP packet to the node kernel (the router's TUN):
	// replies to pods. Required. It is called from many goroutines.
	Send func(b []byte) bool
	// SendSuper, when set, writes a TCP super-packet to the node kernel
	// as one TSO packet of mss-byte segments, its TCP checksum partial
	// (the pseudo-header sum): the egress stack then hands pods their
	// downloads up to 64 KiB at a time instead of a segment per write.
	// Default nil: segments only.
	SendSuper func(b []byte, mss int) bool
	// MTU is the egress stack's link MTU: the TUN's. Default 1500.
	MTU int
	// DialTimeout bounds a TCP dial to a destination. Default
	// DefaultEgressDialTimeout.
	DialTimeout time.Duration
	// IdleTimeout closes a TCP connection without data either way for
	// this long. Default DefaultProxyIdleTimeout.
	IdleTimeout time.Duration
	// UDPTimeout ends an idle UDP or ICMP echo flow. Default
	// DefaultNATUDPTimeout.
	UDPTimeout time.Duration
	// MaxFlows caps the flows of each protocol (TCP, UDP, ICMP echo),
	// MaxFlowsPerPod those of one pod address. Defaults
	// DefaultProxyMaxConns and DefaultProxyMaxPerClient.
	MaxFlows, MaxFlowsPerPod int64
	// MaxInFlight bounds the TCP connections being dialed at once; SYNs
	// beyond it are dropped and retransmitted. Default
	// DefaultProxyMaxInFlight.
	MaxInFlight int
	// ListenPing opens an unprivileged ping socket for family 4 or 6.
	// Default: a SOCK_DGRAM IPPROTO_ICMP(V6) socket.
	ListenPing func(v4 bool) (net.PacketConn, error)
	// Dial connects to a TCP destination from the node; it must return
	// a *net.TCPConn. Default: net.Dialer with DialTimeout (tests
	// redirect it).
	Dial func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
}

// DefaultEgressDialTimeout bounds a dial to an outside destination: as
// long as a client's own connect gives up after a few SYN retransmits.
const DefaultEgressDialTimeout = 30 * time.Second

func (o *EgressOptions) setDefaults() error {
	if o.Send == nil {
		return errors.New("new egress: Options.Send is required")
	}
	var d defaults
	if o.MTU == 0 {
		o.MTU = 1500
	} else if o.MTU < 576 || o.MTU > 65535 {
		d.errs = append(d.errs, fmt.Errorf("MTU %d: want 576..65535", o.MTU))
	}
	d.duration("dial timeout", &o.DialTimeout, DefaultEgressDialTimeout)
	d.duration("idle timeout", &o.IdleTimeout, DefaultProxyIdleTimeout)
	d.duration("udp timeout", &o.UDPTimeout, DefaultNATUDPTimeout)
	d.count("max flows", &o.MaxFlows, DefaultProxyMaxConns)
	d.count("max flows per pod", &o.MaxFlowsPerPod, DefaultProxyMaxPerClient)
	d.countInt("max in flight", &o.MaxInFlight, DefaultProxyMaxInFlight)
	if o.ListenPing == nil {
		o.ListenPing = listenPing
	}
	if o.Dial == nil {
		d := net.Dialer{Timeout: o.DialTimeout}
		o.Dial = func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", dst.String())
		}
	}
	if err := d.err(); err != nil {
		return fmt.Errorf("new egress: %w", err)
	}
	return nil
}

// EgressProto indexes Egress's per-protocol counters.
type EgressProto int

const (
	EgressTCP EgressProto = iota
	EgressUDP
	EgressICMP
	numEgressProtos
)

func (p EgressProto) String() string {
	switch p {
	case EgressTCP:
		return "tcp"
	case EgressUDP:
		return "udp"
	case EgressICMP:
		return "icmp"
	}
	return fmt.Sprintf("EgressProto(%d)", int(p))
}

// EgressStats are an Egress's counters, per protocol.
type EgressStats struct {
	Protos [numEgressProtos]EgressProtoStats
	// Unsupported counts packets of other protocols (and ICMP messages
	// other than echo requests and errors) dropped.
	Unsupported uint64
	// PingUnavailable counts echo requests dropped because the node
	// allows no ping socket (net.ipv4.ping_group_range).
	PingUnavailable uint64
}

// EgressProtoStats count one protocol's egress flows.
type EgressProtoStats struct {
	// Flows counts flows opened; Active those open now.
	Flows  uint64
	Active int64
	// RefusedCap counts flows refused by MaxFlows or MaxFlowsPerPod.
	RefusedCap uint64
	// RefusedConnRefused counts dials the destination refused (RST to
	// the pod); RefusedUnreachable those that found no route or host
	// (ICMP unreachable to the pod); DialFailures the other failed
	// dials (timeouts).
	RefusedConnRefused, RefusedUnreachable, DialFailures uint64
	// ICMPErrors counts ICMP errors sent to pods for this protocol's
	// flows (dial failures and errors a UDP socket reported).
	ICMPErrors uint64
	// IdleClosed counts flows ended by their idle timeout.
	IdleClosed uint64
}

type egressCounters struct {
	protos                       [numEgressProtos]egressProtoCounters
	unsupported, pingUnavailable atomic.Uint64
}

type egressProtoCounters struct {
	flows, refusedCap, refusedConnRefused, refusedUnreachable, dialFailures, icmpErrors, idleClosed atomic.Uint64
	active                                                                                          atomic.Int64
}

// egressLocal is what Ingress claims, published by SetLocal.
type egressLocal struct {
	pods     []netip.Prefix
	nonMasq  []netip.Prefix
	excluded []netip.Addr
}

// egressNIC is the egress stack's only NIC.
const egressNIC tcpip.NICID = 1

// NewEgress returns an Egress that claims nothing until SetLocal. It
// builds its stack and starts nothing; table tells Service traffic (left
// to the NAT) from egress. log may be nil.
func NewEgress(table *Table, log *zap.Logger, opts EgressOptions) (*Egress, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	e := &Egress{
		log:      log.Named("egress"),
		opts:     opts,
		table:    table,
		tcpConns: make(map[*egressConn]struct{}),
		udpFlows: make(map[*egressUDP]struct{}),
		pings:    make(map[pingKey]*egressPing),
		syns:     make(map[stack.TransportEndpointID]uint32),
	}
	for i := range e.limits {
		l, err := NewLimiter(LimiterOptions{Max: opts.MaxFlows, MaxPerClient: opts.MaxFlowsPerPod})
		if err != nil {
			return nil, fmt.Errorf("new egress: %w", err)
		}
		e.limits[i] = l
	}
	e.local.Store(&egressLocal{})
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// Buffers as large as a host's (net.ipv4.tcp_wmem/rmem maxima): a
	// download is written to the pod as fast as the node's connection
	// fills it, and moderated receive buffers grow with an upload.
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 4 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 6 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	e.link = &egressLink{mtu: uint32(opts.MTU), send: opts.Send, sendSuper: opts.SendSuper}
	fail := func(what string, err tcpip.Error) (*Egress, error) {
		s.Close()
		return nil, fmt.Errorf("new egress: %s: %s", what, err)
	}
	if err := noTimeWait(s); err != nil {
		s.Close()
		return nil, fmt.Errorf("new egress: %w", err)
	}
	if err := s.CreateNIC(egressNIC, e.link); err != nil {
		return fail("create NIC", err)
	}
	// Every destination is the stack's own (promiscuous), and it answers
	// from it (spoofing).
	if err := s.SetPromiscuousMode(egressNIC, true); err != nil {
		return fail("promiscuous mode", err)
	}
	if err := s.SetSpoofing(egressNIC, true); err != nil {
		return fail("spoofing", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: egressNIC},
		{Destination: header.IPv6EmptySubnet, NIC: egressNIC},
	})
	e.stack = s
	e.fwd = tcp.NewForwarder(s, 0, opts.MaxInFlight, e.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, e.handleTCPPacket)
	udpFwd := udp.NewForwarder(s, e.handleUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	return e, nil
}

// SetLocal sets what Ingress claims: packets from pods (inside pods, this
// node's pod CIDRs) to any destination outside nonMasq, but for the
// excluded addresses (the router's own) and Service keys of the Table.
func (e *Egress) SetLocal(pods, nonMasq []netip.Prefix, excluded []netip.Addr) {
	e.local.Store(&egressLocal{pods: pods, nonMasq: nonMasq, excluded: excluded})
}

// Ingress is a router Hook: it takes the packets it claims (see
// SetLocal) into the egress stack or a ping flow and reports false for
// them; every other packet passes, untouched.
func (e *Egress) Ingress(fromTUN bool, p *packet.Parsed, b []byte) (pass bool, reply []byte) {
	if !fromTUN || !e.claims(p) {
		return true, nil
	}
	switch {
	case p.Proto == packet.TCP || p.Proto == packet.UDP:
		if p.HasPorts {
			proto := TCP
			if p.Proto == packet.UDP {
				proto = UDP
			}
			if e.table.Lookup(ServiceKey{VIP: p.Dst, Port: p.DstPort, Proto: proto}) != nil {
				return true, nil // the NAT's
			}
		}
		e.link.deliver(p, b)
	case p.Version == 4 && p.Proto == packet.ICMPv4 && !p.IsFragment() && len(b) > p.L4:
		switch header.ICMPv4Type(b[p.L4]) {
		case header.ICMPv4Echo:
			e.ping(p, b)
		case header.ICMPv4DstUnreachable, header.ICMPv4TimeExceeded, header.ICMPv4ParamProblem:
			e.link.deliver(p, b)
		default:
			e.stats.unsupported.Add(1)
		}
	case p.Version == 6 && p.Proto == packet.ICMPv6 && len(b) > p.L4:
		switch b[p.L4] {
		case 1, 2, 3, 4: // errors
			e.link.deliver(p, b)
		default:
			e.stats.unsupported.Add(1)
		}
	default:
		e.stats.unsupported.Add(1)
	}
	return false, nil
}

// claims reports whether p is egress traffic.
func (e *Egress) claims(p *packet.Parsed) bool {
	l := e.local.Load()
	if len(l.pods) == 0 || !inPrefixes(l.pods, p.Src) || inPrefixes(l.nonMasq, p.Dst) {
		return false
	}
	// Unicast only; IPv4 link-local too (a cloud's metadata service at
	// 169.254.169.254, which flannel's rule masquerades as well), but not
	// the router's own addresses (excluded).
	d := p.Dst
	if !d.IsGlobalUnicast() && !(d.Is4() && d.IsLinkLocalUnicast()) {
		return false
	}
	for _, a := range l.excluded {
		if a == d {
			return false
		}
	}
	return true
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Run serves egress flows until ctx is done, closing idle ones every
// second; then it closes them all and the stack, and returns once every
// goroutine it owns has exited. Run may be called once.
func (e *Egress) Run(ctx context.Context) error {
	if !e.ran.CompareAndSwap(false, true) {
		return errors.New("egress: Run called twice")
	}
	e.mu.Lock()
	e.ctx = ctx
	e.mu.Unlock()
	e.open.Store(true)
	tick := min(max(e.opts.UDPTimeout/4, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			e.sweep()
		}
	}
	e.open.Store(false)
	e.mu.Lock()
	e.stopping = true
	var conns []*egressConn
	for c := range e.tcpConns {
		conns = append(conns, c)
	}
	var flows []*egressUDP
	for f := range e.udpFlows {
		flows = append(flows, f)
	}
	var pings []*egressPing
	for _, f := range e.pings {
		pings = append(pings, f)
	}
	e.mu.Unlock()
	for _, c := range conns {
		c.shut(false)
	}
	for _, f := range flows {
		f.close()
	}
	for _, f := range pings {
		e.closePing(f)
	}
	e.wg.Wait()
	e.Close()
	return nil
}

// Close releases the egress stack of an Egress that will not Run (Run
// releases it when it returns). It is idempotent.
func (e *Egress) Close() {
	e.closeOnce.Do(func() {
		e.stack.Close()
		e.stack.Wait()
	})
}

// begin registers a goroutine with Run and returns Run's context, or
// reports false once Run has stopped (or before it started).
func (e *Egress) begin() (context.Context, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopping || e.ctx == nil {
		return nil, false
	}
	e.wg.Add(1)
	return e.ctx, true
}

// sweep ends idle flows.
func (e *Egress) sweep() {
	now := time.Now().UnixNano()
	var conns []*egressConn
	var flows []*egressUDP
	var pings []*egressPing
	e.mu.Lock()
	for c := range e.tcpConns {
		if now-c.last.Load() >= int64(e.opts.IdleTimeout) {
			conns = append(conns, c)
		}
	}
	for f := range e.udpFlows {
		if now-f.last.Load() >= int64(e.opts.UDPTimeout) {
			flows = append(flows, f)
		}
	}
	for _, f := range e.pings {
		if now-f.last.Load() >= int64(e.opts.UDPTimeout) {
			pings = append(pings, f)
		}
	}
	e.mu.Unlock()
	for _, c := range conns {
		if c.shut(false) {
			e.stats.protos[EgressTCP].idleClosed.Add(1)
		}
	}
	for _, f := range flows {
		if f.close() {
			e.stats.protos[EgressUDP].idleClosed.Add(1)
		}
	}
	for _, f := range pings {
		if e.closePing(f) {
			e.stats.protos[EgressICMP].idleClosed.Add(1)
		}
	}
}

// Stats returns a snapshot of the counters.
func (e *Egress) Stats() EgressStats {
	var s EgressStats
	for i := range s.Protos {
		c := &e.stats.protos[i]
		s.Protos[i] = EgressProtoStats{
			Flows: c.flows.Load(), Active: c.active.Load(), RefusedCap: c.refusedCap.Load(),
			RefusedConnRefused: c.refusedConnRefused.Load(), RefusedUnreachable: c.refusedUnreachable.Load(),
			DialFailures: c.dialFailures.Load(), ICMPErrors: c.icmpErrors.Load(), IdleClosed: c.idleClosed.Load(),
		}
	}
	s.Unsupported = e.stats.unsupported.Load()
	s.PingUnavailable = e.stats.pingUnavailable.Load()
	return s
}

// EgressFlowInfo describes one open egress flow.
type EgressFlowInfo struct {
	Proto EgressProto
	// Pod is the pod's address and port (ICMP: the echo identifier);
	// Dst the destination it reached.
	Pod, Dst netip.AddrPort
	// Local is the node's address and port the flow leaves from.
	Local netip.AddrPort
}

// Flows lists the open egress flows (for status commands and tests).
func (e *Egress) Flows() []EgressFlowInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []EgressFlowInfo
	for c := range e.tcpConns {
		out = append(out, EgressFlowInfo{Proto: EgressTCP, Pod: c.pod, Dst: c.dst, Local: unmapAddrPort(c.hc.LocalAddr())})
	}
	for f := range e.udpFlows {
		out = append(out, EgressFlowInfo{Proto: EgressUDP, Pod: f.pod, Dst: f.dst, Local: udpAddrPort(f.hc.LocalAddr())})
	}
	for k, f := range e.pings {
		out = append(out, EgressFlowInfo{Proto: EgressICMP, Pod: netip.AddrPortFrom(k.pod, k.id), Dst: netip.AddrPortFrom(k.dst, 0), Local: udpAddrPort(f.conn.LocalAddr())})
	}
	return out
}

func udpAddrPort(a net.Addr) netip.AddrPort {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// --- TCP ---

// handleTCPPacket is the egress stack's TCP handler for segments no
// endpoint claims: it keeps a SYN's sequence number for an ICMP error
// that must quote it, and hands the segment to the forwarder.
func (e *Egress) handleTCPPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	if !e.open.Load() {
		return false
	}
	h := header.TCP(pkt.TransportHeader().Slice())
	if len(h) >= header.TCPMinimumSize {
		if f := h.Flags(); f.Contains(header.TCPFlagSyn) && !f.Contains(header.TCPFlagAck) {
			e.mu.Lock()
			if len(e.syns) >= 4*e.opts.MaxInFlight {
				clear(e.syns) // SYNs the forwarder dropped; bound the map
			}
			e.syns[id] = h.SequenceNumber()
			e.mu.Unlock()
		}
	}
	return e.fwd.HandlePacket(id, pkt)
}

// handleTCP sets up one egress connection in the goroutine the forwarder
// started for its SYN; it always completes the request. Once set up, it
// becomes one of the connection's two splice goroutines.
func (e *Egress) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	e.mu.Lock()
	seq, hasSeq := e.syns[id]
	delete(e.syns, id)
	e.mu.Unlock()
	completed := false
	defer func() {
		if !completed {
			r.Complete(true)
		}
	}()
	ctx, ok := e.begin()
	if !ok {
		return
	}
	defer e.wg.Done()
	st := &e.stats.protos[EgressTCP]
	pod := netip.AddrPortFrom(packet.NetipAddr(id.RemoteAddress), id.RemotePort)
	dst := netip.AddrPortFrom(packet.NetipAddr(id.LocalAddress), id.LocalPort)
	if !e.limits[EgressTCP].Acquire(pod.Addr()) {
		st.refusedCap.Add(1)
		return
	}
	conn, err := e.opts.Dial(ctx, dst)
	if err != nil {
		e.limits[EgressTCP].Release(pod.Addr())
		if ctx.Err() != nil {
			return
		}
		code, unreachable := unreachableCode(err)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			st.refusedConnRefused.Add(1) // RST, by the deferred Complete
		case unreachable && hasSeq:
			st.refusedUnreachable.Add(1)
			completed = true
			r.Complete(false)
			e.unreachable(EgressTCP, pod, dst, seq, code)
		default:
			st.dialFailures.Add(1)
			completed = true
			r.Complete(false) // no answer: the pod's connect times out, as through a kernel NAT
		}
		e.log.Debug("egress dial failed", zap.Stringer("pod", pod), zap.Stringer("dst", dst), zap.Error(err))
		return
	}
	hc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		e.limits[EgressTCP].Release(pod.Addr())
		st.dialFailures.Add(1)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	completed = true
	if terr != nil {
		r.Complete(true)
		hc.Close()
		e.limits[EgressTCP].Release(pod.Addr())
		return
	}
	r.Complete(false)
	cc := gonet.NewTCPConn(&wq, ep)
	c := &egressConn{e: e, pod: pod, dst: dst, ep: ep, cc: cc, hc: hc}
	c.touch()
	st.flows.Add(1)
	st.active.Add(1)
	e.mu.Lock()
	stopping := e.stopping
	if !stopping {
		e.tcpConns[c] = struct{}{}
		e.peaks[EgressTCP].grew(len(e.tcpConns))
	}
	e.mu.Unlock()
	if stopping {
		c.shut(false)
	}
	e.log.Debug("egress tcp", zap.Stringer("pod", pod), zap.Stringer("dst", dst), zap.Stringer("local", hc.LocalAddr()))
	fromPod := newStackReader(e.spliceBuf(), ep, &wq, cc)
	fromDst := newKernelReader(e.spliceBuf(), hc)
	done := make(chan struct{})
	e.wg.Go(func() {
		defer close(done)
		c.pipe(hc, fromPod, hc.CloseWrite)
	})
	c.pipe(cc, fromDst, cc.CloseWrite)
	<-done
	c.finish()
}

func (e *Egress) spliceBuf() spliceBuf {
	return newSpliceBuf(&e.bufs)
}

// unreachableCode maps a dial or socket error to an ICMP destination
// unreachable code (IPv4's: the ICMPv6 one is derived), and reports
// whether it is one that the pod should get as an ICMP error.
func unreachableCode(err error) (header.ICMPv4Code, bool) {
	switch {
	case errors.Is(err, syscall.ENETUNREACH):
		return header.ICMPv4NetUnreachable, true
	case errors.Is(err, syscall.EHOSTUNREACH):
		return header.ICMPv4HostUnreachable, true
	case errors.Is(err, syscall.ECONNREFUSED):
		return header.ICMPv4PortUnreachable, true
	}
	return 0, false
}

// egressConn is one spliced egress TCP connection: the pod's,
// terminated in the egress stack (ep, cc), and the node's own (hc).
type egressConn struct {
	e        *Egress
	pod, dst netip.AddrPort
	ep       tcpip.Endpoint
	cc       *gonet.TCPConn
	hc       *net.TCPConn
	last     atomic.Int64
	closed   atomic.Bool
}

func (c *egressConn) touch() { c.last.Store(time.Now().UnixNano()) }

// pipe copies src to dst until src ends: at EOF it passes the half-close
// on; on an error it resets both sides.
func (c *egressConn) pipe(dst io.Writer, src spliceReader, closeWrite func() error) {
	defer src.close()
	for {
		b, err := src.read()
		if len(b) > 0 {
			c.touch()
			if _, werr := dst.Write(b); werr != nil {
				c.shut(true)
				return
			}
		}
		if err == io.EOF {
			if closeWrite() != nil {
				c.shut(true)
			}
			return
		}
		if err != nil {
			c.shut(true)
			return
		}
	}
}

// shut closes both sides once, with FIN or RST, and reports whether this
// call did it.
func (c *egressConn) shut(reset bool) bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	if reset {
		c.ep.Abort()
		c.hc.SetLinger(0)
	}
	c.cc.Close()
	c.hc.Close()
	return true
}

// finish ends a connection whose splice goroutines are done.
func (c *egressConn) finish() {
	c.shut(false)
	e := c.e
	e.mu.Lock()
	delete(e.tcpConns, c)
	if e.peaks[EgressTCP].shrink(len(e.tcpConns)) {
		e.tcpConns = rebuilt(e.tcpConns)
	}
	e.mu.Unlock()
	e.limits[EgressTCP].Release(c.pod.Addr())
	e.stats.protos[EgressTCP].active.Add(-1)
}

// --- ICMP errors to pods ---

// unreachable sends the pod an ICMP destination unreachable (code) for
// its flow from pod to dst, quoting the pod's packet as a router would:
// its IP header and the first 8 bytes of its transport header (for TCP
// the ports and the sequence number seq, which the pod's kernel checks).
func (e *Egress) unreachable(proto EgressProto, pod, dst netip.AddrPort, seq uint32, code header.ICMPv4Code) {
	var l4 [8]byte
	l4[0], l4[1] = byte(pod.Port()>>8), byte(pod.Port())
	l4[2], l4[3] = byte(dst.Port()>>8), byte(dst.Port())
	tp := uint8(packet.TCP)
	if proto == EgressUDP {
		tp = packet.UDP
		l4[4], l4[5] = 0, 8 // a UDP length; the checksum stays 0
	} else {
		l4[4], l4[5], l4[6], l4[7] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
	}
	if b := icmpUnreachable(pod.Addr(), dst.Addr(), tp, l4[:], code); b != nil && e.opts.Send(b) {
		e.stats.protos[proto].icmpErrors.Add(1)
	}
}

// icmpUnreachable builds an ICMP (ICMPv6) destination unreachable from
// dst to pod quoting a packet from pod to dst of transport protocol tp
// whose transport header starts with l4. (No "fragmentation needed":
// each TCP leg has its own path MTU, and the node fragments a pod's
// large UDP datagram as it would its own.)
func icmpUnreachable(pod, dst netip.Addr, tp uint8, l4 []byte, code header.ICMPv4Code) []byte {
	if pod.Is4() != dst.Is4() {
		return nil
	}
	if pod.Is4() {
		inner := make([]byte, header.IPv4MinimumSize+len(l4))
		ih := header.IPv4(inner)
		ih.Encode(&header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + 20), TTL: 64, Protocol: tp,
			SrcAddr: packet.TCPIPAddr(pod), DstAddr: packet.TCPIPAddr(dst),
		})
		ih.SetChecksum(^ih.CalculateChecksum())
		copy(inner[header.IPv4MinimumSize:], l4)
		b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(inner))
		h := header.IPv4(b)
		h.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
			SrcAddr: packet.TCPIPAddr(dst), DstAddr: packet.TCPIPAddr(pod),
		})
		h.SetChecksum(^h.CalculateChecksum())
		ic := header.ICMPv4(b[header.IPv4MinimumSize:])
		ic.SetType(header.ICMPv4DstUnreachable)
		ic.SetCode(code)
		copy(ic[header.ICMPv4MinimumSize:], inner)
		ic.SetChecksum(0)
		ic.SetChecksum(header.ICMPv4Checksum(ic, 0))
		return b
	}
	var code6 header.ICMPv6Code
	switch code {
	case header.ICMPv4NetUnreachable:
		code6 = header.ICMPv6NetworkUnreachable
	case header.ICMPv4PortUnreachable:
		code6 = header.ICMPv6PortUnreachable
	default:
		code6 = header.ICMPv6AddressUnreachable
	}
	inner := make([]byte, header.IPv6MinimumSize+len(l4))
	header.IPv6(inner).Encode(&header.IPv6Fields{
		PayloadLength: 20, TransportProtocol: tcpip.TransportProtocolNumber(tp), HopLimit: 64,
		SrcAddr: packet.TCPIPAddr(pod), DstAddr: packet.TCPIPAddr(dst),
	})
	copy(inner[header.IPv6MinimumSize:], l4)
	b := make([]byte, header.IPv6MinimumSize+header.ICMPv6MinimumSize+len(inner))
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(header.ICMPv6MinimumSize + len(inner)), TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit: 64, SrcAddr: packet.TCPIPAddr(dst), DstAddr: packet.TCPIPAddr(pod),
	})
	ic := header.ICMPv6(b[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6DstUnreachable)
	ic.SetCode(code6)
	copy(ic[header.ICMPv6MinimumSize:], inner)
	ic.SetChecksum(0)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: ic, Src: packet.TCPIPAddr(dst), Dst: packet.TCPIPAddr(pod),
	}))
	return b
}

// --- the egress stack's link ---

// egressLink is the egress stack's NIC: Ingress delivers pods' packets
// into it, and the stack's packets leave through send.
type egressLink struct {
	mtu        uint32
	send       func([]byte) bool
	sendSuper  func([]byte, int) bool // nil: no segmentation offload
	dispatcher atomic.Pointer[stack.NetworkDispatcher]
}

var (
	_ stack.LinkEndpoint = (*egressLink)(nil)
	_ stack.GSOEndpoint  = (*egressLink)(nil)
)

// egressGSOMaxSize bounds a super-packet's size, well inside an IPv4
// total length.
const egressGSOMaxSize = 60000

func (l *egressLink) GSOMaxSize() uint32 { return egressGSOMaxSize }

// SupportedGSO is host GSO (gVisor builds TCP super-packets with partial
// checksums and leaves the cutting to the node kernel) with SendSuper.
func (l *egressLink) SupportedGSO() stack.SupportedGSO {
	if l.sendSuper != nil {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// deliver copies packet b, decoded in p, into the stack.
func (l *egressLink) deliver(p *packet.Parsed, b []byte) {
	dp := l.dispatcher.Load()
	if dp == nil {
		return
	}
	proto := ipv4.ProtocolNumber
	if p.Version == 6 {
		proto = ipv6.ProtocolNumber
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b[:p.Length])})
	(*dp).DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

func (l *egressLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		b := v.AsSlice()
		var ok bool
		switch g := pkt.GSOOptions; {
		case g.Type == stack.GSONone || l.sendSuper == nil:
			ok = l.send(b)
		case len(b)-tcpPayloadOffset(b) > int(g.MSS):
			ok = l.sendSuper(b, int(g.MSS))
		default:
			// One segment: the node kernel drops a TSO packet that
			// holds a single full-size segment (seen as lost
			// retransmissions), so it goes as a plain packet, its
			// checksum completed here.
			completeTCPChecksum(b)
			ok = l.send(b)
		}
		if ok {
			n++
		}
		v.Release()
	}
	return n, nil
}

func (l *egressLink) MTU() uint32                                  { return l.mtu }
func (l *egressLink) SetMTU(mtu uint32)                            {}
func (l *egressLink) MaxHeaderLength() uint16                      { return 0 }
func (l *egressLink) LinkAddress() tcpip.LinkAddress               { return "" }
func (l *egressLink) SetLinkAddress(tcpip.LinkAddress)             {}
func (l *egressLink) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (l *egressLink) Wait()                                        {}
func (l *egressLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (l *egressLink) AddHeader(*stack.PacketBuffer)                {}
func (l *egressLink) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (l *egressLink) Close()                                       {}
func (l *egressLink) SetOnCloseAction(func())                      {}
func (l *egressLink) IsAttached() bool                             { return l.dispatcher.Load() != nil }
func (l *egressLink) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		l.dispatcher.Store(nil)
		return
	}
	l.dispatcher.Store(&d)
}

// tcpPayloadOffset is the offset of the payload of TCP packet b (IPv4 or
// IPv6 without extension headers, as the egress stack writes them).
func tcpPayloadOffset(b []byte) int {
	l4 := header.IPv6MinimumSize
	if header.IPVersion(b) == header.IPv4Version {
		l4 = int(header.IPv4(b).HeaderLength())
	}
	if len(b) < l4+header.TCPMinimumSize {
		return len(b)
	}
	return l4 + int(header.TCP(b[l4:]).DataOffset())
}

// completeTCPChecksum replaces the partial checksum (the pseudo-header
// sum) of TCP packet b with the full one.
func completeTCPChecksum(b []byte) {
	var src, dst tcpip.Address
	var l4 int
	if header.IPVersion(b) == header.IPv4Version {
		h := header.IPv4(b)
		src, dst, l4 = h.SourceAddress(), h.DestinationAddress(), int(h.HeaderLength())
	} else {
		h := header.IPv6(b)
		src, dst, l4 = h.SourceAddress(), h.DestinationAddress(), header.IPv6MinimumSize
	}
	t := header.TCP(b[l4:])
	t.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(t)))
	t.SetChecksum(^checksum.Checksum(t, xsum))
}
