package router

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/router/wireguard"
)

// maxDatagram is the read buffer size for overlay datagrams: the largest UDP
// payload, so oversize datagrams are seen whole and counted, not truncated.
const maxDatagram = 65535

// peer is one peer router as the packet path sees it. Immutable once
// published in a peerTable, except for its counters.
type peer struct {
	name     string
	endpoint netip.AddrPort
	podCIDRs []netip.Prefix
	stats    *peerCounters
}

type peerCounters struct {
	linkCounters
	lastSeen atomic.Int64
}

// owns reports whether a packet from p may have source src: an address
// of its pod CIDRs, or its node's own underlay address (the node kernel
// answering for a Service endpoint on the node, such as the API server,
// to a client pod here; see Config.KernelRoutes).
func (p *peer) owns(src netip.Addr) bool {
	if src == p.endpoint.Addr() {
		return true
	}
	for _, c := range p.podCIDRs {
		if c.Contains(src) {
			return true
		}
	}
	return false
}

// peerTable is an immutable snapshot of the peers, published through an
// atomic pointer so the packet path reads it without a lock.
type peerTable struct {
	byUnderlay map[netip.Addr]*peer    // datagram source → peer
	byNextHop  map[tcpip.Address]*peer // route gateway → peer
	byDst      *prefixMap[*peer]       // inner destination → peer
}

var emptyPeers = &peerTable{
	byUnderlay: map[netip.Addr]*peer{},
	byNextHop:  map[tcpip.Address]*peer{},
	byDst:      newPrefixMap[*peer](nil),
}

// overlayEndpoint is the stack.LinkEndpoint of the overlay NIC. Outbound it
// sends each packet as one UDP datagram to the peer that owns the route's
// next hop; inbound (readLoop) it admits datagrams from known peers whose
// inner source lies in that peer's pod CIDRs.
type overlayEndpoint struct {
	ipLink
	unreach  *unreachable // nil: no route-per-cluster-CIDR, nothing to answer
	icmpSent atomic.Uint64
	conn     Conn
	peers    atomic.Pointer[peerTable]
	identity atomic.Pointer[identity]
	// pings are the probes Router.Ping awaits replies for (ping.go).
	pings pings
	// log and encryptedLogged (UnixNano) rate-limit refuseEncrypted's line.
	log             *zap.Logger
	encryptedLogged atomic.Int64

	// The fields below belong to the reader goroutine. batch holds the
	// datagrams of one ReadBatch that passed admit, and parsed their
	// headers. coalesce, fixed by
	// New, is whether they are coalesced into TCP super-packets first:
	// when the TUN takes super-packets and the fast path is on
	// (offload.go).
	coalesce  bool
	coalescer gso.Coalescer
	batch     [][]byte
	parsed    []packet.Parsed             // batch[i] decoded
	emit      func(int, []byte, gso.Info) // emitCoalesced, bound once
}

var _ stack.LinkEndpoint = (*overlayEndpoint)(nil)

// WritePackets sends each packet to its next hop's peer. The stack calls it
// from whichever goroutine is forwarding; concurrent calls are fine.
func (e *overlayEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	t := e.peers.Load()
	n := 0
	for _, pkt := range pkts.AsSlice() {
		p := t.byNextHop[pkt.EgressRoute.NextHop]
		if p == nil {
			p, _ = t.byDst.lookup(packet.NetipAddr(pkt.EgressRoute.RemoteAddress))
		}
		if p == nil {
			e.drops.add(DropNoPeer)
			if e.unreach != nil {
				v := pkt.ToView()
				if e.unreach.answer(v.AsSlice()) {
					e.icmpSent.Add(1)
				}
				v.Release()
			}
			continue
		}
		v := pkt.ToView()
		if !pkt.NetworkPacketInfo.IsForwardedPacket {
			finishChecksum(v.AsSlice())
			e.identity.Load().rewriteSource(v.AsSlice())
		}
		if b := v.AsSlice(); e.send(p, b, len(b)) {
			n++
		}
		v.Release()
	}
	return n, nil
}

// send sends b to peer p as consecutive datagrams of segSize bytes (one,
// when segSize >= len(b)) in one WriteBatch, and counts them.
func (e *overlayEndpoint) send(p *peer, b []byte, segSize int) bool {
	segSize = max(segSize, 1)
	if e.tap.p.Load() != nil {
		for off := 0; off < len(b); off += segSize {
			e.tap.see(DirOut, b[off:min(off+segSize, len(b))])
		}
	}
	if err := e.conn.WriteBatch(b, segSize, p.endpoint); err != nil {
		e.drops.add(DropTxError)
		return false
	}
	n := uint64(max(1, (len(b)+segSize-1)/segSize))
	e.counters.txPackets.Add(n)
	e.counters.txBytes.Add(uint64(len(b)))
	p.stats.txPackets.Add(n)
	p.stats.txBytes.Add(uint64(len(b)))
	return true
}

// readLoop receives overlay datagrams until the Conn is closed: one
// ReadBatch at a time, whatever the Conn moves per system call. It is run
// by Router.Run, which owns it.
func (e *overlayEndpoint) readLoop() error {
	bufs := make([][]byte, MaxReadBatch)
	for i := range bufs {
		bufs[i] = make([]byte, MaxSegmentsRead)
	}
	sizes, segSizes := make([]int, MaxReadBatch), make([]int, MaxReadBatch)
	from := make([]netip.AddrPort, MaxReadBatch)
	return readUntilClosed(func() error {
		n, err := e.conn.ReadBatch(bufs, sizes, segSizes, from)
		if err == nil {
			e.receive(bufs[:n], sizes, segSizes, from)
		}
		return err
	})
}

// readUntilClosed calls read until the Conn is closed, and then returns
// nil. A timeout is retried; any other error ends it.
func readUntilClosed(read func() error) error {
	for {
		err := read()
		switch {
		case err == nil:
		case errors.Is(err, net.ErrClosed):
			return nil
		default:
			if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
				return err
			}
		}
	}
}

// receive admits each datagram of the messages one ReadBatch read (message
// i: sizes[i] bytes in bufs[i], datagrams of segSizes[i] bytes from
// from[i]), then forwards those that passed: coalesced when e.coalesce, a
// super-packet the peer sent as two UDP_SEGMENT messages coming out whole;
// else one by one.
func (e *overlayEndpoint) receive(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) {
	e.batch, e.parsed = e.batch[:0], e.parsed[:0]
	now := time.Now().UnixNano()
	for i, buf := range bufs {
		e.collect(buf[:sizes[i]], segSizes[i], from[i], now)
	}
	if len(e.batch) == 0 {
		return
	}
	if e.coalesce {
		e.coalescer.Coalesce(e.batch, e.parsed, maxDatagram, e.emit)
	} else {
		for i, d := range e.batch {
			e.emit(i, d, gso.Info{})
		}
	}
	e.fast.flush() // the batch's UDP run to the TUN, if any
}

// collect admits each datagram of a run from one sender (segSize bytes
// each, the last possibly shorter) and appends those that passed to
// e.batch. An empty datagram is counted (as too short, or from an unknown
// peer) like any other.
//
// A sender is a peer only at the peer's endpoint, address and port: a
// datagram from the peer's address but another port comes from another
// socket on that node (any process there can send UDP, while the peer's
// router holds its overlay port), and is counted as from an unknown peer.
// This only narrows who can inject; it authenticates nothing (a node that
// can forge its source port still passes, which only encryption such as
// WireGuard's would stop).
func (e *overlayEndpoint) collect(b []byte, segSize int, from netip.AddrPort, now int64) {
	if segSize <= 0 || segSize > len(b) {
		segSize = max(len(b), 1)
	}
	p := e.peers.Load().byUnderlay[from.Addr().Unmap()]
	if p != nil && p.endpoint.Port() != from.Port() {
		p = nil
	}
	for off := 0; ; off += segSize {
		d := b[off:min(off+segSize, len(b))]
		e.tap.see(DirIn, d)
		if wireguard.IsMessage(d) {
			e.refuseEncrypted(from, now)
		} else if p == nil {
			e.drops.add(DropUnknownPeer)
		} else {
			e.parsed = append(e.parsed, packet.Parsed{})
			if pp := &e.parsed[len(e.parsed)-1]; e.admit(p, pp, d, now) {
				e.batch = append(e.batch, d[:pp.Length])
			} else {
				e.parsed = e.parsed[:len(e.parsed)-1]
			}
		}
		if off+segSize >= len(b) {
			return
		}
	}
}

// refuseEncrypted counts a WireGuard message that reached this plain
// overlay, and logs it at most once a minute: its sender's overlay is
// encrypted and this one is not, so neither understands the other.
func (e *overlayEndpoint) refuseEncrypted(from netip.AddrPort, now int64) {
	e.drops.add(DropEncrypted)
	last := e.encryptedLogged.Load()
	if (last == 0 || now-last >= int64(time.Minute)) && e.encryptedLogged.CompareAndSwap(last, now) {
		e.log.Warn("dropped a WireGuard datagram: its sender's overlay is encrypted, this router's is plain; set the same overlay.encryption on every node",
			zap.Stringer("from", from))
	}
}

// emitCoalesced forwards one output of the coalescer, or one admitted
// datagram: batch[first] as it arrived, or a super-packet of it and the
// datagrams after it.
func (e *overlayEndpoint) emitCoalesced(first int, pkt []byte, gi gso.Info) {
	p := &e.parsed[first]
	if gi.Type == gso.None {
		e.inject(p, pkt, 0, false)
		return
	}
	super := *p
	super.Length = len(pkt)
	e.inject(&super, pkt, gi.SegSize, true)
}

// admit decodes into pp, checks and shows to the hook one datagram b from
// peer p, and counts it; a datagram that passes the checks marks p seen at
// now. On true, b[:pp.Length] is the packet to forward.
func (e *overlayEndpoint) admit(p *peer, pp *packet.Parsed, b []byte, now int64) bool {
	if !e.decode(pp, b, false) {
		return false
	}
	if !p.owns(pp.Src) {
		e.drops.add(DropSpoofed)
		return false
	}
	if !e.admitFamily(pp) {
		return false
	}
	if !unicastDst(pp) {
		e.drops.add(DropBroadcast)
		return false
	}
	b = b[:pp.Length]
	p.stats.rxPackets.Add(1)
	p.stats.rxBytes.Add(uint64(len(b)))
	p.stats.lastSeen.Store(now)
	e.counters.rxPackets.Add(1)
	e.counters.rxBytes.Add(uint64(len(b)))
	if (pp.Proto == packet.ICMPv4 || pp.Proto == packet.ICMPv6) && e.icmp(p, pp, b) {
		return false // a probe's, answered or awaited (ping.go)
	}
	if h := e.hook.get(); h != nil {
		if pass, _ := h.Ingress(false, pp, b); !pass {
			return false
		}
	}
	return true
}
