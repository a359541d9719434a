package router

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// Probing a peer through the overlay (vrouter ping). Each router has an
// overlay identity per family: the network address of its pod CIDR
// (10.244.1.0), the source of the ICMP errors it sends to remote pods
// (see identity), inside the pod CIDR its peers route to it and accept
// from it. A probe is an ICMP echo request from this router's identity,
// sent straight to the overlay peer that owns the destination:
//
//	Ping ── echo 10.244.0.0 → 10.244.1.0 ──▶ overlay datagram ──▶ peer's admit:
//	        addressed to its identity: answered by the peer router itself
//	   ◀── echo reply ◀── overlay datagram ◀──┘
//	admit: a reply to this identity that a running Ping awaits is taken
//	here; any other (the node kernel's own pings from that address) is
//	forwarded as before.
//
// To a pod IP the request is forwarded by the peer to the pod, whose
// reply the peer routes back. A peer router too old to answer forwards a
// request for its identity to its node kernel, which answers when it holds
// that address on its TUN (tun.addresses' default for IPv4). Both checks cost the
// packet path a compare of the protocol byte; the reply side an atomic
// load more, for ICMP only.

// ErrPingTimeout is returned by Ping when no reply came in time.
var ErrPingTimeout = errors.New("no reply")

// pingMagic starts every probe's payload, with a per-probe nonce after it.
const pingMagic = "vrouter\x00"

// pingMinPayload is the payload every probe carries: the magic and the
// nonce.
const pingMinPayload = len(pingMagic) + 8

// PingMinSize is the smallest probe of each family (IP header, ICMP
// header and pingMinPayload).
const (
	PingMinSize4 = header.IPv4MinimumSize + header.ICMPv4MinimumSize + pingMinPayload
	PingMinSize6 = header.IPv6MinimumSize + header.ICMPv6MinimumSize + pingMinPayload
)

// PingResult is the outcome of one probe.
type PingResult struct {
	// Peer is the peer the probe was sent to; Src and Dst the probe's
	// addresses.
	Peer     string
	Src, Dst netip.Addr
	// Size is the probe's IP packet size.
	Size int
	// RTT is the time from sending the request to reading its reply.
	RTT time.Duration
}

// pings are the probes awaiting replies, by ICMP identifier.
type pings struct {
	// active counts the waiting probes: the packet path looks no further
	// while it is zero.
	active atomic.Int32
	// mu guards m.
	mu sync.Mutex
	m  map[uint16]*pingProbe
	// answer limits the echo replies the router sends for its identity,
	// as gVisor limits its ICMP; set by New.
	answer *rate.Limiter
}

type pingProbe struct {
	src, dst netip.Addr
	seq      uint16
	nonce    [8]byte
	reply    chan time.Time // buffered 1
}

// Ping sends one echo request of size bytes (an IP packet of at least
// PingMinSize4 or PingMinSize6, at most the tunnel MTU) from this router's
// overlay identity to dst, through the overlay to the peer whose pod CIDRs
// hold dst, and waits for its reply until ctx ends (ErrPingTimeout). dst
// is a peer's identity (Identity of its pod CIDR) or any address in its pod
// CIDRs. Safe for concurrent use while the router runs.
func (r *Router) Ping(ctx context.Context, dst netip.Addr, size int) (PingResult, error) {
	dst = dst.Unmap()
	res := PingResult{Dst: dst, Size: size}
	p, ok := r.overlay.peers.Load().byDst.lookup(dst)
	if !ok {
		return res, fmt.Errorf("ping %s: no peer's pod CIDR holds it", dst)
	}
	res.Peer = p.name
	src := r.overlay.identity.Load().of(dst.Is4())
	if !src.IsValid() {
		return res, fmt.Errorf("ping %s: this router has no pod CIDR and router address of its family", dst)
	}
	res.Src = src
	minSize := PingMinSize6
	if dst.Is4() {
		minSize = PingMinSize4
	}
	if mtu := r.MTU(); size < minSize || size > mtu {
		return res, fmt.Errorf("ping %s: size %d out of range (want %d..%d, the tunnel MTU)", dst, size, minSize, mtu)
	}

	pr := &pingProbe{src: src, dst: dst, reply: make(chan time.Time, 1)}
	rand.Read(pr.nonce[:])
	id := r.overlay.pings.add(pr)
	defer r.overlay.pings.remove(id)
	pkt := echoRequest(src, dst, id, pr.seq, pr.nonce, size)
	start := time.Now()
	if !r.overlay.send(p, pkt, len(pkt)) {
		return res, fmt.Errorf("ping %s: the overlay socket refused the datagram to %s", dst, p.endpoint)
	}
	select {
	case t := <-pr.reply:
		res.RTT = t.Sub(start)
		return res, nil
	case <-ctx.Done():
		return res, ErrPingTimeout
	}
}

// Identity is this router's overlay identity of a family: the network
// address of its pod CIDR, which Ping sends from and peers answer for.
// The zero Addr if it has none.
func (r *Router) Identity(v4 bool) netip.Addr { return r.overlay.identity.Load().of(v4) }

// of is the identity of a family, or the zero Addr.
func (id *identity) of(v4 bool) netip.Addr {
	if id == nil {
		return netip.Addr{}
	}
	for _, a := range id.router {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// add registers pr under a free identifier and returns it.
func (ps *pings) add(pr *pingProbe) uint16 {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = map[uint16]*pingProbe{}
	}
	var b [2]byte
	for {
		rand.Read(b[:])
		id := binary.BigEndian.Uint16(b[:])
		if _, taken := ps.m[id]; !taken {
			ps.m[id] = pr
			ps.active.Add(1)
			return id
		}
	}
}

func (ps *pings) remove(id uint16) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.m, id)
	ps.active.Add(-1)
}

// icmp looks at an ICMP packet b (decoded in pp) that peer p sent: an echo
// request for this router's identity is answered and an awaited echo
// reply delivered. It reports whether it took b (which is then not
// forwarded).
func (e *overlayEndpoint) icmp(p *peer, pp *packet.Parsed, b []byte) bool {
	ps := &e.pings
	if (pp.Version == 4) != (pp.Proto == packet.ICMPv4) || len(b) < pp.L4+header.ICMPv4MinimumSize {
		return false
	}
	typ := b[pp.L4]
	v4 := pp.Version == 4
	switch {
	case v4 && typ == uint8(header.ICMPv4Echo), !v4 && typ == uint8(header.ICMPv6EchoRequest):
		if pp.Dst != e.identity.Load().of(v4) || pp.IsFragment() {
			return false
		}
		if ps.answer.Allow() {
			reply := echoReply(pp, b)
			e.send(p, reply, len(reply))
		}
		return true
	case v4 && typ == uint8(header.ICMPv4EchoReply), !v4 && typ == uint8(header.ICMPv6EchoReply):
		if ps.active.Load() == 0 {
			return false
		}
		icmp := b[pp.L4:]
		id, seq := binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:])
		data := icmp[8:]
		ps.mu.Lock()
		pr := ps.m[id]
		ps.mu.Unlock()
		if pr == nil || pr.seq != seq || pp.Dst != pr.src || pp.Src != pr.dst ||
			len(data) < pingMinPayload || string(data[:len(pingMagic)]) != pingMagic || [8]byte(data[len(pingMagic):pingMinPayload]) != pr.nonce {
			return false
		}
		select {
		case pr.reply <- time.Now():
		default: // a duplicate
		}
		return true
	}
	return false
}

// echoRequest builds an ICMP echo request of size bytes, DF set, from src
// to dst, its payload the magic, the nonce and zeros.
func echoRequest(src, dst netip.Addr, id, seq uint16, nonce [8]byte, size int) []byte {
	b := make([]byte, size)
	var icmp []byte
	if dst.Is4() {
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(size), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber), Flags: header.IPv4FlagDontFragment,
			SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		icmp = b[header.IPv4MinimumSize:]
		icmp[0] = uint8(header.ICMPv4Echo)
	} else {
		ip := header.IPv6(b)
		ip.Encode(&header.IPv6Fields{
			PayloadLength: uint16(size - header.IPv6MinimumSize), TransportProtocol: header.ICMPv6ProtocolNumber, HopLimit: 64,
			SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst),
		})
		icmp = b[header.IPv6MinimumSize:]
		icmp[0] = uint8(header.ICMPv6EchoRequest)
	}
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], pingMagic)
	copy(icmp[8+len(pingMagic):], nonce[:])
	setICMPChecksum(b, src, dst, icmp)
	return b
}

// echoReply builds the reply to echo request b (decoded in pp): addresses
// swapped, the type changed, the rest as it came.
func echoReply(pp *packet.Parsed, b []byte) []byte {
	out := make([]byte, pp.Length)
	copy(out, b[:pp.Length])
	icmp := out[pp.L4:]
	if pp.Version == 4 {
		ip := header.IPv4(out)
		ip.SetSourceAddress(packet.TCPIPAddr(pp.Dst))
		ip.SetDestinationAddress(packet.TCPIPAddr(pp.Src))
		ip.SetTTL(64)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		icmp[0] = uint8(header.ICMPv4EchoReply)
	} else {
		ip := header.IPv6(out)
		ip.SetSourceAddress(packet.TCPIPAddr(pp.Dst))
		ip.SetDestinationAddress(packet.TCPIPAddr(pp.Src))
		ip.SetHopLimit(64)
		icmp[0] = uint8(header.ICMPv6EchoReply)
	}
	setICMPChecksum(out, pp.Dst, pp.Src, icmp)
	return out
}

// setICMPChecksum sets the checksum of ICMP message icmp of packet b.
func setICMPChecksum(b []byte, src, dst netip.Addr, icmp []byte) {
	icmp[2], icmp[3] = 0, 0
	if b[0]>>4 == 4 {
		binary.BigEndian.PutUint16(icmp[2:], ^checksum.Checksum(icmp, 0))
		return
	}
	binary.BigEndian.PutUint16(icmp[2:], header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: header.ICMPv6(icmp), Src: packet.TCPIPAddr(src), Dst: packet.TCPIPAddr(dst),
	}))
}
