package lb

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// NAT is the nat mode data path: per-connection DNAT of packets from local
// clients to Service VIPs, with the reverse translation of replies, done on
// raw packets as they enter the router (it implements router.Hook).
//
//	client ─▶ TUN ─▶ NAT.Ingress: dst VIP:port → backend:port (new flow: Pick)
//	                         [+ src → router address, when the backend is
//	                          local too: hairpin]
//	backend reply ─▶ TUN or overlay ─▶ NAT.Ingress: src backend → VIP
//	                                   [dst router address → client]
//
// NAT keeps its own flow table rather than gVisor's conntrack: that one
// cannot delete an entry, so a UDP flow to a removed endpoint could not be
// moved (the stale-conntrack problem), and it keeps idle flows for days.
// Here a flow lives until its protocol's timeout, moves (UDP) or stays
// (TCP, as kube-proxy keeps established connections) when its endpoint
// leaves, and releases its backend's active count and its Limiter slot
// when it ends.
//
// Only packets from the TUN start flows: a flow must begin where its
// replies return, and replies to a local client come back through this
// router. Packets from peers to a VIP pass untouched.
type NAT struct {
	log   *zap.Logger
	table *Table
	clock Clock
	opts  NATOptions

	tcpLimit, udpLimit *Limiter
	rejectLimit        *rate.Limiter

	local atomic.Pointer[natLocal]

	shards [flowShards]flowShard

	// pending lists the unconfirmed flows, TCP and UDP, for early drop
	// (natdrop.go).
	pending [2]unconfirmedList

	// frags translates fragments after a datagram's first (natfrag.go).
	frags fragTable

	// shrinkNext is the reaper's: the shard Reap next looks at to
	// rebuild (see shrink.go). mem returns what the rebuilds drop.
	shrinkNext int
	mem        osReturn

	// file is the flow file (Persist), nil without one; persisted is set
	// by the first Persist. growFailed is the reaper's (Run): whether
	// the file's last grow failed.
	file       atomic.Pointer[flowFile]
	persisted  atomic.Bool
	growFailed bool

	// replyBuf backs the reply Ingress returns; only TUN ingress, a single
	// goroutine, produces replies.
	replyBuf []byte

	stats natCounters
}

// NATOptions configure a NAT. Zero values are the documented defaults.
type NATOptions struct {
	// TCPEstablishedTimeout ends an idle established TCP flow: one whose
	// handshake completed (client SYN, backend SYN-ACK, client ACK).
	// Default DefaultNATTCPEstablishedTimeout.
	TCPEstablishedTimeout time.Duration
	// TCPSynSentTimeout ends an idle TCP flow that has seen the client's
	// SYN and no SYN-ACK from the backend (conntrack's SYN_SENT). Default
	// DefaultNATTCPSynSentTimeout.
	TCPSynSentTimeout time.Duration
	// TCPSynRecvTimeout ends an idle TCP flow whose backend answered with
	// a SYN-ACK that the client has not acknowledged (conntrack's
	// SYN_RECV). Default DefaultNATTCPSynRecvTimeout.
	TCPSynRecvTimeout time.Duration
	// UDPTimeout ends an idle UDP flow. Default DefaultNATUDPTimeout.
	UDPTimeout time.Duration
	// MaxTCP and MaxUDP cap the tracked flows; MaxPerClient caps one
	// client's flows of each protocol. A new flow that meets a cap ends
	// an unconfirmed flow in its place when there is one (early drop,
	// natdrop.go), and is refused otherwise. Defaults DefaultNATMaxFlows
	// (each) and DefaultNATMaxPerClient.
	MaxTCP, MaxUDP, MaxPerClient int64
	// RejectsPerSecond bounds the ICMP port unreachable messages sent for
	// Services without endpoints, burst the same. Default
	// DefaultNATRejectsPerSecond.
	RejectsPerSecond int
	// Clock defaults to the system clock.
	Clock Clock
}

// Default NATOptions.
const (
	// DefaultNATTCPEstablishedTimeout is kube-proxy's conntrack setting.
	DefaultNATTCPEstablishedTimeout = 24 * time.Hour
	// DefaultNATTCPSynSentTimeout is a quarter of nf_conntrack's 120 s:
	// a flow that expires in SYN_SENT costs its client nothing (the next
	// retransmitted SYN starts a new flow), while each one a SYN flood
	// leaves holds a flow slot until it does.
	DefaultNATTCPSynSentTimeout = 30 * time.Second
	// DefaultNATTCPSynRecvTimeout is nf_conntrack's; the backend's SYN-ACK
	// retransmissions (about 63 s with Linux's defaults) keep the flow
	// alive while the client's ACK may still come.
	DefaultNATTCPSynRecvTimeout = 60 * time.Second
	// DefaultNATUDPTimeout is nf_conntrack's.
	DefaultNATUDPTimeout = 30 * time.Second
	// DefaultNATMaxFlows, per protocol, is the least of kube-proxy's
	// conntrack maximum; with both protocols full the flows take about
	// a quarter of the DaemonSet's memory limit (docs/operations.md,
	// "Memory").
	DefaultNATMaxFlows         = 1 << 17
	DefaultNATMaxPerClient     = 1 << 14
	DefaultNATRejectsPerSecond = 1000
)

func (o *NATOptions) setDefaults() {
	if o.TCPEstablishedTimeout <= 0 {
		o.TCPEstablishedTimeout = DefaultNATTCPEstablishedTimeout
	}
	if o.TCPSynSentTimeout <= 0 {
		o.TCPSynSentTimeout = DefaultNATTCPSynSentTimeout
	}
	if o.TCPSynRecvTimeout <= 0 {
		o.TCPSynRecvTimeout = DefaultNATTCPSynRecvTimeout
	}
	if o.UDPTimeout <= 0 {
		o.UDPTimeout = DefaultNATUDPTimeout
	}
	if o.MaxTCP <= 0 {
		o.MaxTCP = DefaultNATMaxFlows
	}
	if o.MaxUDP <= 0 {
		o.MaxUDP = DefaultNATMaxFlows
	}
	if o.MaxPerClient <= 0 {
		o.MaxPerClient = DefaultNATMaxPerClient
	}
	if o.RejectsPerSecond <= 0 {
		o.RejectsPerSecond = DefaultNATRejectsPerSecond
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
}

// natLocal is what NAT knows of this node: where local backends live and
// which address hairpin flows are translated to.
type natLocal struct {
	local []netip.Prefix
	snat4 netip.Addr
	snat6 netip.Addr
}

// NATStats are the NAT's counters.
type NATStats struct {
	// Flows is the number of tracked flows; FlowsTotal counts every flow
	// created.
	Flows, FlowsTotal uint64
	// RefusedNoEndpoints counts new flows refused because their Service
	// had no usable endpoint (answered with ICMP port unreachable).
	RefusedNoEndpoints uint64
	// RefusedCap counts new flows refused by MaxTCP, MaxUDP or
	// MaxPerClient: the cap was met and no unconfirmed flow could give
	// way.
	RefusedCap uint64
	// EvictedCap counts unconfirmed flows ended to admit a new flow when
	// MaxTCP or MaxUDP was met (early drop); EvictedPerClient those
	// ended, of the same client, when its MaxPerClient was.
	EvictedCap, EvictedPerClient uint64
	// RefusedPorts counts new flows refused because no source port was
	// free for their translation: every port tried of the router address
	// (hairpin) or of the client's address already reaches that backend
	// port.
	RefusedPorts uint64
	// Migrated counts UDP flows moved off an endpoint that left.
	Migrated uint64
	// Fragments counts fragmented datagrams of translated flows whose
	// later fragments could not be translated, and were lost: the
	// datagram's translation was pushed out of the full fragment table
	// (maxFragDatagrams) or had expired (fragTimeout) when a fragment
	// came.
	Fragments uint64
	// FragmentsPending is the number of fragmented datagrams whose later
	// fragments are awaited.
	FragmentsPending int
	// Expired counts flows ended by timeout or close (not by early
	// drop).
	Expired uint64
	// ExpiredHalfOpen counts the TCP flows among Expired that timed out
	// before their handshake completed (SYN_SENT or SYN_RECV): a SYN
	// flood, often from spoofed sources, or backends that do not answer.
	ExpiredHalfOpen uint64
	// Unrecorded counts flows the flow file had no free record for
	// (Persist): they do not survive a restart.
	Unrecorded uint64
	// FileRestored, FileDropped, FileCorrupt and FileForeign count the
	// flow file's records Persist adopted and skipped (FlowRestore);
	// FileRefused is 1 if it refused the whole file.
	FileRestored, FileDropped, FileCorrupt, FileForeign, FileRefused uint64
	// HairpinSNAT counts flows whose source was translated to the router
	// address because client and backend are both local.
	HairpinSNAT uint64
	// MidStream counts TCP segments to a VIP that belong to no flow and
	// do not open one (answered with RST).
	MidStream uint64
}

type natCounters struct {
	flows, flowsTotal, refusedNoEP, refusedCap, refusedPorts, migrated, fragments, expired, expiredHalfOpen, hairpin, midStream atomic.Uint64
	evictedCap, evictedClient                                                                                                   atomic.Uint64

	fileRestored, fileDropped, fileCorrupt, fileForeign, fileRefused atomic.Uint64
}

const flowShards = 64

// flowKey identifies one direction of a flow as its packets carry it.
type flowKey struct {
	src, dst netip.AddrPort
	proto    Protocol
}

// flow is one translated connection. Its keys and addresses are fixed once
// published, except backend and rev, which change under the shard locks
// when a UDP flow migrates.
type flow struct {
	fwd    flowKey        // client → VIP, as the client sends
	rev    flowKey        // backend → client or SNAT address, as replies arrive (guarded by mu)
	vip    netip.AddrPort // the Service address the client dialed
	client netip.AddrPort
	snat   netip.AddrPort // zero unless hairpin
	limit  *Limiter       // the Limiter that admitted the flow

	// mu guards backend, entry and rev, which change when a UDP flow
	// migrates. The forward path holds it per packet (uncontended: only
	// the TUN reader goroutine forwards); the reaper when it ends a flow.
	mu      sync.Mutex
	backend Backend
	entry   *Entry // the Entry the backend was picked from

	// slot is the flow's record in the flow file, from 1; 0: none. It
	// is set before the flow is published and cleared, under mu, when
	// the flow ends.
	slot uint32

	lastSeen atomic.Int64 // unix nanoseconds
	// state bits: synAck, established, finFwd, finRev, rst, released
	state atomic.Uint32

	// older and newer link the flow on its protocol's unconfirmed list
	// while listed (natdrop.go); the list's mu guards all three.
	older, newer *flow
	listed       bool

	// started is when the flow began (unix nanoseconds; 0: adopted from
	// a flow file, which does not say). Set before the flow is published.
	started int64
	// packets and bytes count what the flow translated, [0] from the
	// client, [1] from the backend: for status commands. Each direction
	// is counted by the goroutine translating it, next to lastSeen.
	packets, bytes [2]atomic.Uint64
}

// count counts one packet of len bytes of f, dir 0 from the client, 1
// from the backend.
func (f *flow) count(dir, len int) {
	f.packets[dir].Add(1)
	f.bytes[dir].Add(uint64(len))
}

// A TCP flow's state bits follow conntrack's states: no bit is SYN_SENT
// (the client's SYN started the flow); stSynAck is SYN_RECV (the backend
// answered with a SYN-ACK); stEstablished is ESTABLISHED (the client
// acknowledged it). A reply that is not a SYN-ACK — a challenge ACK, data
// from a backend that still holds an old connection — moves nothing:
// only a completed handshake earns the established timeout. A UDP flow
// sets stSynAck at its first reply and stEstablished when it is
// confirmed. A flow with stEstablished is confirmed: early drop never
// ends it (natdrop.go).
const (
	stSynAck uint32 = 1 << iota
	stEstablished
	stFinFwd
	stFinRev
	stRST
	// stReleased: the flow's backend count and limiter slot were given
	// back when it closed; it lingers only to translate the last packets.
	stReleased
	// stEnded: the flow left the table (end), by the reaper or for a
	// new connection on its 5-tuple.
	stEnded
	// stFailed: the flow was reported to outlier detection as a failed
	// connection (once per flow; see NAT.connectFailed).
	stFailed
	// stEvicted: early drop ended the flow for a new one.
	stEvicted
)

type flowShard struct {
	// mu guards m and peak.
	mu   sync.Mutex
	m    map[flowKey]*flow
	peak mapPeak
}

// NewNAT returns a NAT over table. It starts nothing; Run reaps flows.
func NewNAT(table *Table, log *zap.Logger, opts NATOptions) (*NAT, error) {
	opts.setDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	tcpLimit, err := NewLimiter(LimiterOptions{Max: opts.MaxTCP, MaxPerClient: opts.MaxPerClient})
	if err != nil {
		return nil, err
	}
	udpLimit, err := NewLimiter(LimiterOptions{Max: opts.MaxUDP, MaxPerClient: opts.MaxPerClient})
	if err != nil {
		return nil, err
	}
	n := &NAT{
		log:         log.Named("nat"),
		table:       table,
		clock:       opts.Clock,
		opts:        opts,
		tcpLimit:    tcpLimit,
		udpLimit:    udpLimit,
		rejectLimit: rate.NewLimiter(rate.Limit(opts.RejectsPerSecond), opts.RejectsPerSecond),
		replyBuf:    make([]byte, 0, 1280),
	}
	for i := range n.shards {
		n.shards[i].m = make(map[flowKey]*flow)
	}
	n.local.Store(&natLocal{})
	return n, nil
}

// SetLocal tells the NAT where this node's own backends live — its pod
// CIDRs and its own addresses (as /32 and /128 prefixes: host-network
// endpoints such as the API server), whose replies would reach a local
// client without passing the router, so a local client reaching one is
// translated to the router address too — and the router's own addresses
// (one per family), which those hairpin flows use.
func (n *NAT) SetLocal(local []netip.Prefix, routerAddrs []netip.Addr) {
	l := &natLocal{local: append([]netip.Prefix(nil), local...)}
	for _, a := range routerAddrs {
		if a.Is4() {
			l.snat4 = a
		} else {
			l.snat6 = a
		}
	}
	n.local.Store(l)
}

// Run reaps ended flows once a second until ctx is done. It starts no
// other goroutine.
func (n *NAT) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n.Reap()
			n.growFile()
		}
	}
}

// Stats returns a snapshot of the counters.
func (n *NAT) Stats() NATStats {
	c := &n.stats
	return NATStats{
		Flows: c.flows.Load(), FlowsTotal: c.flowsTotal.Load(),
		RefusedNoEndpoints: c.refusedNoEP.Load(), RefusedCap: c.refusedCap.Load(), RefusedPorts: c.refusedPorts.Load(),
		EvictedCap: c.evictedCap.Load(), EvictedPerClient: c.evictedClient.Load(),
		Migrated: c.migrated.Load(), Fragments: c.fragments.Load(), FragmentsPending: n.frags.len(),
		Expired: c.expired.Load(), ExpiredHalfOpen: c.expiredHalfOpen.Load(), HairpinSNAT: c.hairpin.Load(), MidStream: c.midStream.Load(),
		Unrecorded:   n.unrecorded(),
		FileRestored: c.fileRestored.Load(), FileDropped: c.fileDropped.Load(), FileCorrupt: c.fileCorrupt.Load(),
		FileForeign: c.fileForeign.Load(), FileRefused: c.fileRefused.Load(),
	}
}

// FlowInfo describes one tracked flow.
type FlowInfo struct {
	Proto   Protocol
	Client  netip.AddrPort
	VIP     netip.AddrPort
	Backend netip.AddrPort
	// SNAT is the router address the backend sees, for hairpin flows.
	SNAT     netip.AddrPort
	LastSeen time.Time
	// Started is when the flow began (zero: adopted from a flow file).
	Started time.Time
	// State is a TCP flow's state as conntrack names it: SYN_SENT,
	// SYN_RECV, ESTABLISHED, FIN_WAIT (one side closed), TIME_WAIT (both
	// did) or CLOSE (reset); "" for UDP.
	State string
	// Packets and Bytes count what was translated, [0] from the client,
	// [1] from the backend.
	Packets, Bytes [2]uint64
}

// Flows lists the tracked flows (for status commands and tests).
func (n *NAT) Flows() []FlowInfo {
	var out []FlowInfo
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			if k != f.fwd {
				continue
			}
			out = append(out, f.describe())
		}
		s.mu.Unlock()
	}
	return out
}

func (n *NAT) shard(k flowKey) *flowShard {
	return &n.shards[shardIndex(k)]
}

func shardIndex(k flowKey) int { return int(hashKey(k) % flowShards) }

func hashKey(k flowKey) uint64 {
	// FNV-1a over the fields that vary most.
	h := uint64(14695981039346656037)
	mix := func(b byte) { h ^= uint64(b); h *= 1099511628211 }
	for _, ap := range []netip.AddrPort{k.src, k.dst} {
		a := ap.Addr().As16()
		for _, b := range a[12:] {
			mix(b)
		}
		mix(byte(ap.Port()))
		mix(byte(ap.Port() >> 8))
	}
	mix(byte(k.proto))
	return h
}

func (n *NAT) lookup(k flowKey) *flow {
	s := n.shard(k)
	s.mu.Lock()
	f := s.m[k]
	s.mu.Unlock()
	return f
}

// insert publishes f under both keys. It fails if either key is taken.
func (n *NAT) insert(f *flow) bool {
	a, b := n.lockPair(f.fwd, f.rev)
	defer unlockPair(a, b)
	if _, ok := a.m[f.fwd]; ok {
		return false
	}
	if _, ok := b.m[f.rev]; ok {
		return false
	}
	a.m[f.fwd] = f
	b.m[f.rev] = f
	a.peak.grew(len(a.m))
	b.peak.grew(len(b.m))
	return true
}

// lockPair locks the shards of two keys in index order and returns them.
func (n *NAT) lockPair(k1, k2 flowKey) (*flowShard, *flowShard) {
	i, j := shardIndex(k1), shardIndex(k2)
	a, b := &n.shards[i], &n.shards[j]
	switch {
	case i == j:
		a.mu.Lock()
	case i < j:
		a.mu.Lock()
		b.mu.Lock()
	default:
		b.mu.Lock()
		a.mu.Lock()
	}
	return a, b
}

func unlockPair(a, b *flowShard) {
	a.mu.Unlock()
	if a != b {
		b.mu.Unlock()
	}
}
