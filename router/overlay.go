package router

import (
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/internal/gso"
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

	// coalesce: the Conn returns runs of datagrams and the TUN takes
	// super-packets, so the reader coalesces TCP segments (offload.go).
	// The fields below belong to the reader goroutine.
	coalesce  bool
	coalescer gso.Coalescer
	batch     [][]byte
	emit      func([]byte, gso.Info)
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
			p, _ = t.byDst.lookup(netipAddr(pkt.EgressRoute.RemoteAddress))
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
		if e.sendTo(p, v.AsSlice()) {
			n++
		}
		v.Release()
	}
	return n, nil
}

// sendTo sends one packet to peer p as one datagram, and counts it.
func (e *overlayEndpoint) sendTo(p *peer, b []byte) bool {
	e.tap.see(DirOut, b)
	if err := e.conn.WriteTo(b, p.endpoint); err != nil {
		e.drops.add(DropTxError)
		return false
	}
	e.counters.txPackets.Add(1)
	e.counters.txBytes.Add(uint64(len(b)))
	p.stats.txPackets.Add(1)
	p.stats.txBytes.Add(uint64(len(b)))
	return true
}

// readLoop receives overlay datagrams until the Conn is closed. It is run
// by Router.Run, which owns it.
func (e *overlayEndpoint) readLoop() error {
	buf := make([]byte, maxDatagram)
	if bc, ok := e.conn.(BatchConn); ok && e.coalesce {
		return e.readLoopBatch(bc)
	}
	if sc, ok := e.conn.(SegmentConn); ok && e.coalesce {
		return e.readLoopSegments(sc, buf)
	}
	return readUntilClosed(func() error {
		n, from, err := e.conn.ReadFrom(buf)
		if err == nil {
			e.receive(buf[:n], from)
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

// receive admits one datagram into the stack, or counts why not.
func (e *overlayEndpoint) receive(b []byte, from netip.AddrPort) {
	e.tap.see(DirIn, b)
	p := e.peers.Load().byUnderlay[from.Addr().Unmap()]
	if p == nil {
		e.drops.add(DropUnknownPeer)
		return
	}
	if info, ok := e.admit(p, b, time.Now().UnixNano()); ok {
		e.inject(info, b[:info.length])
	}
}

// admit runs the checks and the hook on one datagram from peer p, and
// counts it; a datagram that passes the checks marks p seen at now. On
// true, b[:info.length] is the packet to forward.
func (e *overlayEndpoint) admit(p *peer, b []byte, now int64) (ipInfo, bool) {
	info, ok := e.parse(b)
	if !ok {
		return info, false
	}
	if !p.owns(info.src) {
		e.drops.add(DropSpoofed)
		return info, false
	}
	if !e.admitFamily(info) {
		return info, false
	}
	b = b[:info.length]
	p.stats.rxPackets.Add(1)
	p.stats.rxBytes.Add(uint64(len(b)))
	p.stats.lastSeen.Store(now)
	e.counters.rxPackets.Add(1)
	e.counters.rxBytes.Add(uint64(len(b)))
	if h := e.hook.get(); h != nil {
		if pass, _ := h.Ingress(false, b); !pass {
			return info, false
		}
		info.dst = ipDst(b)
	}
	return info, true
}
