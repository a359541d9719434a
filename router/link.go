package router

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/packet"
)

// dispatcherSlot holds the stack's dispatcher for a link endpoint. The
// packet path reads it with one atomic load.
type dispatcherSlot struct {
	p atomic.Pointer[stack.NetworkDispatcher]
}

func (s *dispatcherSlot) set(d stack.NetworkDispatcher) {
	if d == nil {
		s.p.Store(nil)
		return
	}
	s.p.Store(&d)
}

func (s *dispatcherSlot) get() stack.NetworkDispatcher {
	if p := s.p.Load(); p != nil {
		return *p
	}
	return nil
}

// deliver copies b into a packet buffer and hands it to the stack. It is a
// no-op while the endpoint is detached.
//
// Deliveries are one at a time in the process: see deliverMu.
func (s *dispatcherSlot) deliver(proto tcpip.NetworkProtocolNumber, b []byte) {
	d := s.get()
	if d == nil {
		return
	}
	deliverMu.Lock()
	defer deliverMu.Unlock()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// deliverMu serializes the packets the routers of this process hand to
// gVisor — building each packet buffer included — working around a
// use-after-free in gVisor's IPv4 forwarding: forwardPacketWithRoute reads
// the TTL through a slice of the packet's buffer chunk taken before
// DeepCopyForForwarding, which moves the packet's header to a new chunk
// and releases the old one to the process-wide pool. The TTL is read from
// a freed chunk, and a packet another goroutine builds there meanwhile
// becomes the forwarded packet's TTL (two readers forwarding at once
// produced TTL 61 for 62). Serialized, no router reader can take the chunk
// in that window; gVisor's own goroutines (proxy mode's TCP) still can.
// The fast path forwards nearly every packet without gVisor, so the lock
// is seldom contended. IPv6 forwarding reads the hop limit before the copy.
var deliverMu sync.Mutex

// ipLink is what the TUN and overlay endpoints share of
// stack.LinkEndpoint: both carry bare IP packets on a point-to-point link,
// with no link header, no link address and no neighbor resolution (so the
// stack hands the overlay the route's next hop directly), and both let
// gVisor skip forwarded packets' checksums (txChecksumOffload).
type ipLink struct {
	mtu        atomic.Uint32
	dispatcher dispatcherSlot
	tap        tapSlot
	counters   linkCounters
	// fast is the reader goroutine's fast path; nil when disabled.
	fast *fastPath
	// scratch is the reader goroutine's buffer for cutting super-packets
	// into segments (offload.go).
	scratch []byte

	// Shared with the Router, set once by New.
	drops     *drops
	hook      *hookSlot
	isLocal   func(netip.Addr) bool
	hasFamily func(tcpip.NetworkProtocolNumber) bool
}

// decode fills p from b, a packet just received, as far as the router
// checks it before anything else looks at it: a well-formed IP header
// (packet.Parsed.Decode), within the MTU unless it is a super-packet. It
// counts a refusal.
func (l *ipLink) decode(p *packet.Parsed, b []byte, super bool) bool {
	if f := p.Decode(b); f != packet.FaultNone {
		l.drops.add(faultDrops[f])
		return false
	}
	if !super && p.Length > int(l.mtu.Load()) {
		l.drops.add(DropOversize)
		return false
	}
	return true
}

// faultDrops counts each of Decode's refusals as its drop reason.
var faultDrops = [...]DropReason{
	packet.FaultNotIP:     DropNotIP,
	packet.FaultShort:     DropShort,
	packet.FaultTruncated: DropTruncated,
	packet.FaultMalformed: DropMalformed,
}

// admitFamily refuses, and counts, a packet of a family the router has no
// address for.
func (l *ipLink) admitFamily(p *packet.Parsed) bool {
	if !l.hasFamily(netProto(p)) {
		l.drops.add(DropFamily)
		return false
	}
	return true
}

// netProto is the network protocol of a decoded packet.
func netProto(p *packet.Parsed) tcpip.NetworkProtocolNumber {
	if p.Version == 4 {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// inject forwards an admitted packet, decoded in p, on the fast path or
// hands it to the stack. With mss > 0, b is a TCP super-packet (see
// fastPath.forward); one the fast path cannot take is cut into its
// segments, with complete checksums, and each is injected as a packet of
// its own: the stack forwards one segment at a time. An IPv4 packet to be
// forwarded with TTL 1 is expired first (see expireTTL).
func (l *ipLink) inject(p *packet.Parsed, b []byte, mss int, partial bool) {
	if l.fast.forward(p, b, mss, partial) {
		return
	}
	if mss > 0 {
		out, n, segSize, total, ok := segment(&l.scratch, p, b, mss)
		if !ok {
			l.drops.add(DropMalformed)
			return
		}
		sp := *p
		for i := range n {
			seg := out[i*segSize : min((i+1)*segSize, total)]
			sp.Length = len(seg)
			l.inject(&sp, seg, 0, false)
		}
		return
	}
	if p.Version == 4 {
		if r, ok := checkIPv4Header(b[:p.L4]); !ok {
			l.drops.add(r)
			if r == DropBadChecksum {
				return
			}
			// Bad options: the stack answers with parameter problem
			// (RFC 1812 4.3.2.7), then drops it.
		}
		if !l.isLocal(p.Dst) {
			expireTTL(b)
		}
	}
	l.dispatcher.deliver(netProto(p), b)
}

// checkIPv4Header checks what gVisor's IPv4 layer drops without a counter
// of ours — the header checksum, and each option's length — in hdr, an IPv4 header
// of a packet about to be handed to the stack (the fast path checked the
// checksum of the ones it took, which carry no options), and reports the
// drop reason when it fails.
func checkIPv4Header(hdr []byte) (DropReason, bool) {
	if !header.IPv4(hdr).IsChecksumValid() {
		return DropBadChecksum, false
	}
	opts := hdr[header.IPv4MinimumSize:]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0: // end of option list
			return 0, true
		case 1: // no operation
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return DropBadOptions, false
		}
		i += int(opts[i+1])
	}
	return 0, true
}

// unicastDst reports whether a decoded packet's destination is neither
// IPv4's limited broadcast nor multicast.
func unicastDst(p *packet.Parsed) bool {
	return !p.Dst.IsMulticast() && p.Dst != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// expireTTL makes gVisor treat an IPv4 packet with TTL 1 as expired. gVisor's
// IPv4 forwarder only refuses TTL 0 and would forward a TTL 1 packet with
// TTL 0 (IPv6 refuses hop limit <= 1 correctly). A router must send "time
// exceeded" for it instead (RFC 1812 5.3.1), so the TTL is lowered to 0 here
// and the stack's own TTL check answers with the ICMP error. Only packets
// that are to be forwarded are touched.
func expireTTL(b []byte) {
	h := header.IPv4(b)
	if h.TTL() != 1 {
		return
	}
	h.SetTTL(0)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
}

func (l *ipLink) MTU() uint32                                  { return l.mtu.Load() }
func (l *ipLink) SetMTU(mtu uint32)                            { l.mtu.Store(mtu) }
func (l *ipLink) MaxHeaderLength() uint16                      { return 0 }
func (l *ipLink) LinkAddress() tcpip.LinkAddress               { return "" }
func (l *ipLink) SetLinkAddress(tcpip.LinkAddress)             {}
func (l *ipLink) Capabilities() stack.LinkEndpointCapabilities { return txChecksumOffload }
func (l *ipLink) Wait()                                        {}
func (l *ipLink) ARPHardwareType() header.ARPHardwareType      { return header.ARPHardwareNone }
func (l *ipLink) AddHeader(*stack.PacketBuffer)                {}
func (l *ipLink) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (l *ipLink) Close()                                       {}
func (l *ipLink) SetOnCloseAction(func())                      {}
func (l *ipLink) Attach(d stack.NetworkDispatcher)             { l.dispatcher.set(d) }
func (l *ipLink) IsAttached() bool                             { return l.dispatcher.get() != nil }
