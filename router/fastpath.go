package router

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// fastPath forwards the common packet without handing it to gVisor: a
// unicast packet between two global addresses, with TTL to spare and no
// IPv4 options or IPv6 hop-by-hop header, that fits the outgoing link.
// Fragments are forwarded as they are, as gVisor forwards them (a router
// does not reassemble). The
// forwarding decision stays the stack's: the first packet to a destination
// asks gVisor's route table (stack.FindRoute, the call gVisor's own IP
// forwarding makes) where it goes, and the answer is kept per destination
// until the route table, the router's addresses or the peers change
// (Router.routeGen). The fast path then does what gVisor's forwarding does
// to such a packet — check the IPv4 header checksum, lower the TTL or hop
// limit, update the checksum — and writes it to the outgoing link.
//
// Everything else goes through the stack as before: packets to the router
// or a proxied Service, TTL or hop limit 1 (time exceeded), no route (net
// unreachable), too big for the outgoing link (fragmentation needed),
// IPv4 options, link-local or multicast addresses.
//
// Each reader goroutine owns one fastPath; it is not safe for concurrent
// use.
type fastPath struct {
	r       *Router
	gen     uint64
	cache   map[netip.Addr]hop
	scratch []byte // segments of a super-packet (offload.go)
	// run, when not nil, gathers the plain packets of a burst that go
	// to one peer (see sendRun); the reader flushes it after each burst.
	run *sendRun
	// udp, when not nil (a TUN with UDP segmentation offload), gathers
	// the datagrams of one UDP flow that go to the TUN, to leave as one
	// UDP super-packet (gso.UDPRun); flushed with run.
	udp *gso.UDPRun
	// tq, when not nil (a TUN that writes bursts in one system call),
	// gathers the burst's other packets to the TUN; flushed with run,
	// and before anything else goes to the TUN.
	tq *tunQueue
}

// tunQueue is a burst's small packets to the TUN, copied back to back
// into buf (a copy of a small packet costs tens of nanoseconds, the
// system call it saves about a microsecond), to leave in one
// tun.Device.Write: one io_uring_enter for the burst where the device
// has batched I/O (tun.BatchIO), instead of one writev each. A packet
// larger than maxQueuedPacket, a super-packet above all, leaves at once,
// after the queue.
type tunQueue struct {
	buf  []byte
	bufs [][]byte
}

// maxQueuedPacket and maxQueuedPackets bound what a tunQueue holds:
// packets up to a 1500-byte link's, and a ring's worth of them
// (tun.uringEntries).
const (
	maxQueuedPacket  = 2048
	maxQueuedPackets = 16
)

func newTUNQueue() *tunQueue {
	return &tunQueue{buf: make([]byte, 0, maxQueuedPacket*maxQueuedPackets)}
}

// queueTUN queues plain packet b for the TUN, writing the queue first if
// b does not fit in it; b itself is written at once, after the queue,
// when it is too large to queue or there is no queue.
func (f *fastPath) queueTUN(b []byte) {
	q := f.tq
	if q == nil || len(b) > maxQueuedPacket {
		f.flushTUN()
		f.r.tun.send(b, tun.Offload{})
		return
	}
	if len(q.bufs) == maxQueuedPackets || len(q.buf)+len(b) > cap(q.buf) {
		f.flushTUN()
	}
	start := len(q.buf)
	q.buf = append(q.buf, b...)
	q.bufs = append(q.bufs, q.buf[start:len(q.buf):len(q.buf)])
}

// flushTUN writes the queued packets to the TUN, if any.
func (f *fastPath) flushTUN() {
	if f == nil {
		return
	}
	q := f.tq
	if q == nil || len(q.bufs) == 0 {
		return
	}
	f.r.tun.sendBatch(q.bufs)
	clear(q.bufs)
	q.bufs, q.buf = q.bufs[:0], q.buf[:0]
}

// sendRun is a run of packets of one size (the last may be shorter) to
// one peer, back to back in buf: the TUN reader gathers a burst's packets
// here and sends them in one WriteBatch — one sendmmsg of UDP_SEGMENT
// messages, one pass through the node kernel's UDP stack — instead of a
// system call and a pass each. Small packets gain most: each costs the
// sender the whole stack, the peer's delivery included, whatever its size.
type sendRun struct {
	peer  *peer
	seg   int
	buf   []byte
	short bool // the last packet was shorter than seg: the run is closed
}

// maxRunBytes and maxRunPackets bound a run to one UDP_SEGMENT message,
// which the peer's kernel hands on as one GRO batch.
const (
	maxRunBytes   = 65000
	maxRunPackets = 64
)

// add appends packet b for peer p, flushing the run first when b cannot
// join it.
func (f *fastPath) add(p *peer, b []byte) {
	r := f.run
	if len(r.buf) > 0 && (r.peer != p || r.short || len(b) > r.seg ||
		len(r.buf)+len(b) > maxRunBytes || len(r.buf)/r.seg >= maxRunPackets) {
		f.flushRun()
	}
	if len(r.buf) == 0 {
		r.peer, r.seg = p, len(b)
	}
	r.buf = append(r.buf, b...)
	r.short = len(b) < r.seg
}

// flush sends the runs and the TUN queue, if any. It is nil-safe and a
// no-op without them. Of the runs at most one holds packets: a packet
// that joins one sends the other first.
func (f *fastPath) flush() {
	if f == nil {
		return
	}
	f.flushUDP()
	f.flushRun()
	f.flushTUN()
}

// flushRun sends the run to a peer, if any.
func (f *fastPath) flushRun() {
	if f.run == nil || len(f.run.buf) == 0 {
		return
	}
	r := f.run
	f.r.overlay.send(r.peer, r.buf, r.seg)
	r.buf, r.peer, r.short = r.buf[:0], nil, false
}

// flushUDP writes the UDP run to the TUN, if any: one datagram as it
// came, more as one UDP super-packet.
func (f *fastPath) flushUDP() {
	if f.udp == nil || f.udp.Len() == 0 {
		return
	}
	b, gi := f.udp.Packet()
	if gi.Type == gso.None {
		// One datagram: it joins the TUN queue (copied), so that a
		// burst of datagrams of different flows — DNS queries — still
		// leaves in one write.
		f.queueTUN(b)
		f.udp.Reset()
		return
	}
	f.flushTUN()
	f.r.tun.send(b, tun.Offload{NeedsCsum: true, GSOType: tun.GSOUDPL4, HdrLen: uint16(gi.HdrLen), GSOSize: uint16(gi.SegSize),
		CsumStart: uint16(gi.CsumStart), CsumOffset: uint16(gi.CsumOffset)})
	f.udp.Reset()
}

// addUDP appends datagram b, decoded in p, to the UDP run, sending the run
// first when b cannot join it, and reports whether b is in a run now; on
// false b can join none and the caller sends it on its own.
func (f *fastPath) addUDP(p *packet.Parsed, b []byte) bool {
	if f.udp.Add(b, p) {
		return true
	}
	if f.udp.Len() == 0 {
		return false
	}
	f.flushUDP()
	return f.udp.Add(b, p)
}

// fastCacheMax bounds the per-reader destination cache; when full it is
// cleared and refilled from the route table.
const fastCacheMax = 8192

type hopKind uint8

const (
	hopStack   hopKind = iota // let gVisor forward it (or answer it)
	hopTUN                    // out through the TUN
	hopOverlay                // out through the overlay to peer
)

// hop is a cached forwarding decision for one destination.
type hop struct {
	kind hopKind
	peer *peer
}

func newFastPath(r *Router) *fastPath {
	return &fastPath{r: r, cache: make(map[netip.Addr]hop)}
}

// forward sends b (an IP packet that passed the link's checks and the
// hook, decoded in p) towards its destination if it can take the fast path, and reports
// whether it did. On false the packet is untouched.
//
// With mss > 0, b is a TCP super-packet whose segments carry mss payload
// bytes, and partial says its checksum holds only the pseudo-header sum:
// it leaves whole for a TUN that takes super-packets, or cut into
// segments in one WriteBatch for a peer, if each segment fits the link.
//
// With a run (the TUN reader's), a plain packet to a peer joins the run and
// leaves at the next flush; every other packet flushes the run first, so a
// packet never overtakes one read before it.
func (f *fastPath) forward(p *packet.Parsed, b []byte, mss int, partial bool) bool {
	if f == nil {
		return false
	}
	if !fastEligible(p, b) || f.r.isLocal(p.Dst) {
		f.flush()
		return false
	}
	segLen, hdr := len(b), 0
	if mss > 0 {
		var ok bool
		if hdr, ok = tcpHeaderEnd(p); !ok {
			f.flush()
			return false
		}
		segLen = hdr + mss
	}
	h := f.lookup(netProto(p), p.Dst)
	if h.kind == hopOverlay && mss == 0 && f.run != nil && segLen <= int(f.r.overlay.mtu.Load()) {
		f.flushUDP()
		decrementTTL(b)
		f.add(h.peer, b)
		return true
	}
	if h.kind == hopTUN && mss == 0 && f.udp != nil && p.Proto == packet.UDP && segLen <= int(f.r.tun.mtu.Load()) {
		f.flushRun()
		decrementTTL(b)
		if f.addUDP(p, b) {
			return true
		}
		f.queueTUN(b)
		return true
	}
	// Nothing overtakes a packet read before it on the same link: the
	// runs go first. The TUN queue is written in order with the packets
	// it is flushed before, so a packet to the TUN joins it.
	f.flushUDP()
	f.flushRun()
	switch h.kind {
	case hopTUN:
		t := f.r.tun
		if segLen > int(t.mtu.Load()) || mss > 0 && !t.offload {
			return false
		}
		var o tun.Offload
		if mss > 0 {
			if !partial {
				if _, _, err := gso.SetPartial(b); err != nil {
					return false
				}
			}
			o = superOffload(p, mss)
		}
		decrementTTL(b)
		if o.GSOType == tun.GSONone {
			f.queueTUN(b)
		} else {
			f.flushTUN()
			t.send(b, o)
		}
		return true
	case hopOverlay:
		if segLen > int(f.r.overlay.mtu.Load()) {
			return false
		}
		decrementTTL(b)
		segSize := len(b)
		if mss > 0 {
			var ok bool
			if b, _, segSize, _, ok = segment(&f.scratch, p, b, mss); !ok {
				return false
			}
		}
		f.r.overlay.send(h.peer, b, segSize)
		return true
	}
	return false
}

// lookup returns the forwarding decision for dst, from the cache while the
// route generation is unchanged, else from the stack's route table.
func (f *fastPath) lookup(proto tcpip.NetworkProtocolNumber, dst netip.Addr) hop {
	if g := f.r.routeGen.Load(); g != f.gen {
		clear(f.cache)
		f.gen = g
	}
	if h, ok := f.cache[dst]; ok {
		return h
	}
	h := f.resolve(proto, dst)
	if len(f.cache) >= fastCacheMax {
		clear(f.cache)
	}
	f.cache[dst] = h
	return h
}

// resolve asks the stack where a packet to dst goes, exactly as gVisor's IP
// forwarding does, and maps the route to an outgoing link (and peer).
func (f *fastPath) resolve(proto tcpip.NetworkProtocolNumber, dst netip.Addr) hop {
	rt, err := f.r.stack.FindRoute(0, tcpip.Address{}, packet.TCPIPAddr(dst), proto, false)
	if err != nil {
		return hop{}
	}
	defer rt.Release()
	switch rt.NICID() {
	case TUNNIC:
		return hop{kind: hopTUN}
	case OverlayNIC:
		t := f.r.overlay.peers.Load()
		p := t.byNextHop[rt.NextHop()]
		if p == nil {
			p, _ = t.byDst.lookup(dst)
		}
		if p == nil {
			return hop{} // the stack's path answers "net unreachable"
		}
		return hop{kind: hopOverlay, peer: p}
	}
	return hop{}
}

// fastEligible checks packet b, decoded in p, for the fast path: unicast
// between global addresses, TTL to spare, no IPv4 options or IPv6
// hop-by-hop header, a valid IPv4 header checksum.
func fastEligible(p *packet.Parsed, b []byte) bool {
	if p.TTL <= 1 {
		return false // about to expire: the stack answers "time exceeded"
	}
	if p.Version == 4 {
		if p.L4 != header.IPv4MinimumSize || !header.IPv4(b).IsChecksumValid() {
			return false // options for the stack; a bad checksum it counts and drops
		}
		// gVisor forwards IPv4 from link-local sources (hairpin NAT's
		// 169.254.244.1), as the kernel does.
		return (p.Src.IsGlobalUnicast() || p.Src.IsLinkLocalUnicast()) && p.Dst.IsGlobalUnicast()
	}
	if p.Proto == uint8(header.IPv6HopByHopOptionsExtHdrIdentifier) {
		return false
	}
	return p.Src.IsGlobalUnicast() && p.Dst.IsGlobalUnicast()
}

// decrementTTL lowers a forwarded packet's TTL (IPv4, with the header
// checksum updated incrementally, RFC 1624) or hop limit (IPv6).
func decrementTTL(b []byte) {
	if b[0]>>4 == 6 {
		b[7]--
		return
	}
	m := uint32(binary.BigEndian.Uint16(b[8:10]))
	b[8]--
	m2 := uint32(binary.BigEndian.Uint16(b[8:10]))
	// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
	sum := uint32(^binary.BigEndian.Uint16(b[10:12])) + (^m & 0xffff) + m2
	sum = (sum & 0xffff) + (sum >> 16)
	sum = (sum & 0xffff) + (sum >> 16)
	binary.BigEndian.PutUint16(b[10:12], ^uint16(sum))
}
