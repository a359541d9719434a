package lb

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// Fragments. Only a datagram's first fragment carries the ports a flow is
// found by; the later ones carry the IP header alone. The NAT translates
// the first fragment as any packet of its flow (its transport checksum
// covers the whole datagram, so the incremental update stays right) and
// remembers, per datagram, the addresses it gave it; each later fragment
// of the same datagram — same source, destination, protocol and IP
// identification, as the kernel's reassembly keys it — gets the same
// addresses. Nothing is buffered or reassembled: a fragment costs one
// table lookup and leaves as it came, so the backend (or the client)
// reassembles the datagram itself, with the path MTU untouched.
//
//	client ─▶ first fragment (ports) ─▶ flow: dst VIP → backend ─▶ frags[client, VIP, UDP, ID] = (client, backend)
//	client ─▶ later fragment ─────────▶ frags[client, VIP, UDP, ID] ─▶ dst VIP → backend
//	backend ─▶ first fragment ─▶ flow (reverse): src backend → VIP ─▶ frags[backend, client, UDP, ID] = (VIP, client)
//	backend ─▶ later fragment ─▶ frags[backend, client, UDP, ID] ─▶ src backend → VIP
//
// This is what the kernel's conntrack does for the flow and nf_defrag
// for the datagram, without holding the fragments. What it does not do:
// a later fragment that arrives before its first (links between pods
// and the router keep order) passes untranslated and is lost.

const (
	// fragTimeout is how long a datagram's translation waits for its
	// later fragments: Linux's ipfrag_time.
	fragTimeout = 30 * time.Second
	// maxFragDatagrams caps the datagrams whose later fragments are
	// awaited; the oldest gives way to a new one (counted in
	// NATStats.Fragments when it had not ended).
	maxFragDatagrams = 4096
	// ipv6FragmentHeader is the IPv6 Fragment extension header's number.
	ipv6FragmentHeader = 44
)

// fragKey identifies a fragmented datagram as its fragments carry it.
type fragKey struct {
	src, dst netip.Addr
	id       uint32 // IPv4's 16-bit identification, or IPv6's 32-bit one
	proto    uint8
}

// fragEntry is the addresses a datagram's later fragments are given.
type fragEntry struct {
	src, dst netip.Addr
	expires  int64 // unix nanoseconds
	seq      uint64
}

// fragTable is the NAT's per-datagram translations: bounded in entries
// (maxFragDatagrams, oldest first out) and in time (fragTimeout). Any
// reader goroutine may use it; only fragments do.
type fragTable struct {
	// size is len(m), read without mu so that unrelated fragments skip
	// the lock while no datagram is awaited.
	size atomic.Int64

	// mu guards m, order, head, n and seq.
	mu sync.Mutex
	m  map[fragKey]fragEntry
	// order holds the entries' keys oldest first, a ring of n from head
	// (allocated with the first fragmented datagram). A slot whose seq
	// is not its key's entry's any more is stale: the entry ended.
	order []fragSlot
	head  int
	n     int
	seq   uint64
}

type fragSlot struct {
	key fragKey
	seq uint64
}

// add records that the later fragments of datagram k get src and dst. It
// reports the number of datagrams it pushed out unfinished (0 or 1).
func (t *fragTable) add(k fragKey, src, dst netip.Addr, now int64) (evicted int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[fragKey]fragEntry)
		t.order = make([]fragSlot, maxFragDatagrams)
	}
	// Drop stale and expired slots from the front, then make room.
	for t.n > 0 {
		s := t.order[t.head]
		e, ok := t.m[s.key]
		live := ok && e.seq == s.seq
		if live && e.expires > now && t.n < len(t.order) {
			break
		}
		if live {
			delete(t.m, s.key)
			if e.expires > now {
				evicted++
			}
		}
		t.head = (t.head + 1) % len(t.order)
		t.n--
	}
	t.seq++
	t.m[k] = fragEntry{src: src, dst: dst, expires: now + int64(fragTimeout), seq: t.seq}
	t.order[(t.head+t.n)%len(t.order)] = fragSlot{key: k, seq: t.seq}
	t.n++
	t.size.Store(int64(len(t.m)))
	return evicted
}

// lookup returns the translation of a later fragment of datagram k, and
// ends it when last is set (the fragment at the datagram's end). expired
// reports a datagram whose translation timed out: its fragment is late.
func (t *fragTable) lookup(k fragKey, now int64, last bool) (e fragEntry, ok, expired bool) {
	if t.size.Load() == 0 {
		return fragEntry{}, false, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok = t.m[k]
	if !ok {
		return fragEntry{}, false, false
	}
	if e.expires <= now {
		delete(t.m, k)
		t.size.Store(int64(len(t.m)))
		return fragEntry{}, false, true
	}
	if last {
		delete(t.m, k)
		t.size.Store(int64(len(t.m)))
	}
	return e, true, false
}

// len is the number of datagrams awaited.
func (t *fragTable) len() int { return int(t.size.Load()) }

// firstFragment translates b, the first fragment of a datagram (its
// transport header decoded in p), as any packet of its flow, and records
// the translation for the datagram's later fragments under id.
func (n *NAT) firstFragment(fromTUN bool, p *packet.Parsed, b []byte, id uint32) (bool, []byte) {
	k := fragKey{src: p.Src, dst: p.Dst, id: id, proto: p.Proto}
	pass, reply := n.ingress(fromTUN, p, b)
	if pass && (p.Src != k.src || p.Dst != k.dst) {
		if n.frags.add(k, p.Src, p.Dst, n.clock.Now().UnixNano()) > 0 {
			n.stats.fragments.Add(1)
		}
	}
	return pass, reply
}

// laterFragment translates b, a fragment other than the first of datagram
// k, as its first fragment was, and reports whether it passes: one of a
// datagram whose translation expired does not (it would reach the VIP,
// which no host answers).
func (n *NAT) laterFragment(p *packet.Parsed, b []byte, k fragKey, last bool) bool {
	e, ok, expired := n.frags.lookup(k, n.clock.Now().UnixNano(), last)
	if expired {
		n.stats.fragments.Add(1)
		return false
	}
	if !ok {
		return true
	}
	if p.Version == 6 {
		ip := header.IPv6(b)
		ip.SetSourceAddress(packet.TCPIPAddr(e.src))
		ip.SetDestinationAddress(packet.TCPIPAddr(e.dst))
	} else {
		ip := header.IPv4(b)
		if e.src != p.Src {
			ip.SetSourceAddressWithChecksumUpdate(packet.TCPIPAddr(e.src))
		}
		if e.dst != p.Dst {
			ip.SetDestinationAddressWithChecksumUpdate(packet.TCPIPAddr(e.dst))
		}
	}
	p.Src, p.Dst = e.src, e.dst
	return true
}

// ipv4Fragment handles b, an IPv4 fragment decoded in p.
func (n *NAT) ipv4Fragment(fromTUN bool, p *packet.Parsed, b []byte) (bool, []byte) {
	id := uint32(binary.BigEndian.Uint16(b[4:6]))
	if p.FragOffset == 0 {
		if !p.HasPorts {
			return true, nil
		}
		return n.firstFragment(fromTUN, p, b, id)
	}
	if p.Proto != packet.TCP && p.Proto != packet.UDP {
		return true, nil
	}
	return n.laterFragment(p, b, fragKey{src: p.Src, dst: p.Dst, id: id, proto: p.Proto}, !p.MoreFragments), nil
}

// ipv6Fragment handles b, an IPv6 packet decoded in p whose first
// extension header is a Fragment header. A first fragment's transport
// header follows it; p reports that header's ports while it is
// translated, and is left with p.Src and p.Dst current.
func (n *NAT) ipv6Fragment(fromTUN bool, p *packet.Parsed, b []byte) (bool, []byte) {
	const fh = 40 // the Fragment header, right after the fixed header
	if len(b) < fh+8 {
		return true, nil
	}
	next := b[fh]
	offMore := binary.BigEndian.Uint16(b[fh+2 : fh+4])
	off, more := int(offMore&0xfff8), offMore&1 != 0
	id := binary.BigEndian.Uint32(b[fh+4 : fh+8])
	if next != packet.TCP && next != packet.UDP {
		return true, nil
	}
	k := fragKey{src: p.Src, dst: p.Dst, id: id, proto: next}
	if off != 0 {
		return n.laterFragment(p, b, k, !more), nil
	}
	q := *p
	q.Proto, q.L4 = next, fh+8
	min := q.L4 + 8
	if next == packet.TCP {
		min = q.L4 + 20
	}
	if len(b) < min {
		return true, nil
	}
	q.HasPorts = true
	q.SrcPort = binary.BigEndian.Uint16(b[q.L4:])
	q.DstPort = binary.BigEndian.Uint16(b[q.L4+2:])
	if next == packet.TCP {
		q.TCPFlags = b[q.L4+13]
	}
	var pass bool
	var reply []byte
	if more {
		pass, reply = n.firstFragment(fromTUN, &q, b, id)
	} else {
		// An atomic fragment (RFC 6946): a whole datagram.
		pass, reply = n.ingress(fromTUN, &q, b)
	}
	p.Src, p.Dst = q.Src, q.Dst
	return pass, reply
}
