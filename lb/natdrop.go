package lb

import (
	"net/netip"
	"sync"
	"time"
)

// Early drop: when a new flow meets a cap, the NAT ends a flow no backend
// has confirmed and admits the new one in its place, as the kernel's
// conntrack does when its table is full. A flow is confirmed when its
// connection is shown to work both ways: a TCP flow when its handshake
// completes (ESTABLISHED, conntrack's ASSURED), a UDP flow when it saw a
// followed by more traffic, either way, udpStreamAfter or more after
// it started (the kernel's rule since Linux 5.14: a lone query and its
// answer do not make a stream). Unconfirmed flows are what a flood from
// spoofed sources leaves — SYNs whose SYN-ACKs go to addresses no pod
// holds, datagrams nobody or only the Service answers — and a confirmed
// flow is never ended for a new one, so a full table costs the flooder
// its own flows, not other clients theirs.
//
// Each protocol keeps its unconfirmed flows on a list in the order they
// started: early drop takes the oldest, in O(1), for the global cap (MaxTCP,
// MaxUDP); for a client at MaxPerClient, the oldest of that client's among
// the first earlyDropDepth on the list, or none. A flow leaves the list when
// it is confirmed, closes (RST, FIN both ways) or ends.

// udpStreamAfter is how long after its start a UDP flow that was
// answered must still carry traffic to be confirmed.
const udpStreamAfter = 2 * time.Second

// earlyDropDepth bounds the walk that looks for a client's own unconfirmed
// flow when the client meets MaxPerClient.
const earlyDropDepth = 64

// earlyDropTries bounds the flows one new flow may end: a victim that a
// reply confirmed, or the reaper ended, first gives no room.
const earlyDropTries = 4

// unconfirmedList is one protocol's unconfirmed flows, oldest first.
type unconfirmedList struct {
	// mu guards head, tail and every flow's older, newer and listed.
	mu         sync.Mutex
	head, tail *flow
}

// unconfirmed is the list f belongs on while unconfirmed.
func (n *NAT) unconfirmed(f *flow) *unconfirmedList {
	if f.fwd.proto == TCP {
		return &n.pending[0]
	}
	return &n.pending[1]
}

// notEvictable are the state bits that keep a flow off its list: confirmed,
// closed (its limiter slot is already back), or gone.
const notEvictable = stEstablished | stReleased | stEnded | stEvicted

// push appends f, a flow just published, unless it is no longer
// unconfirmed: whoever sets a bit of notEvictable sets it before calling
// remove, so a flow is either never listed or removed.
func (l *unconfirmedList) push(f *flow) {
	l.mu.Lock()
	if f.state.Load()&notEvictable == 0 && !f.listed {
		f.listed = true
		f.older, f.newer = l.tail, nil
		if l.tail != nil {
			l.tail.newer = f
		} else {
			l.head = f
		}
		l.tail = f
	}
	l.mu.Unlock()
}

// remove takes f off the list, if it is on it.
func (l *unconfirmedList) remove(f *flow) {
	l.mu.Lock()
	if f.listed {
		l.unlinkLocked(f)
	}
	l.mu.Unlock()
}

func (l *unconfirmedList) unlinkLocked(f *flow) {
	if f.older != nil {
		f.older.newer = f.newer
	} else {
		l.head = f.newer
	}
	if f.newer != nil {
		f.newer.older = f.older
	} else {
		l.tail = f.older
	}
	f.older, f.newer, f.listed = nil, nil, false
}

// take removes and returns the oldest flow on the list — of client, if
// client is valid, among the first earlyDropDepth — or nil.
func (l *unconfirmedList) take(client netip.Addr) *flow {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.head
	if client.IsValid() {
		for i := 0; f != nil && f.client.Addr() != client; i++ {
			if i == earlyDropDepth {
				return nil
			}
			f = f.newer
		}
	}
	if f != nil {
		l.unlinkLocked(f)
	}
	return f
}

// admit takes a slot of limit for a new flow from client, ending
// unconfirmed flows to make room when a cap is met (early drop). It
// reports false, counting the refusal, when no unconfirmed flow gives room.
func (n *NAT) admit(limit *Limiter, list *unconfirmedList, client netip.Addr) bool {
	client = client.Unmap()
	_, over := limit.try(client)
	for range earlyDropTries {
		if over == underCaps {
			return true
		}
		var victim *flow
		if over == overMax {
			victim = list.take(netip.Addr{})
		} else {
			victim = list.take(client)
		}
		if victim == nil {
			break
		}
		if n.evict(victim, over) {
			_, over = limit.try(client)
		}
	}
	if over == underCaps {
		return true
	}
	limit.refuse(over)
	return false
}

// evict ends f, taken off its list, for a new flow, unless a reply
// confirmed it or it closed or ended meanwhile: it reports whether it did.
func (n *NAT) evict(f *flow, over capOver) bool {
	for {
		st := f.state.Load()
		if st&notEvictable != 0 {
			return false
		}
		if f.state.CompareAndSwap(st, st|stEvicted) {
			break
		}
	}
	n.end(f)
	if over == overMax {
		n.stats.evictedCap.Add(1)
	} else {
		n.stats.evictedClient.Add(1)
	}
	return true
}

// udpSeen notes a packet of UDP flow f at now, from the backend if reply:
// the first reply sets stSynAck (answered), and a packet of an answered
// flow udpStreamAfter or more after its start (or of one adopted from a
// flow file, whose start is unknown) confirms it.
func (n *NAT) udpSeen(f *flow, now int64, reply bool) {
	if f.fwd.proto != UDP {
		return
	}
	st := f.state.Load()
	if st&stEstablished != 0 {
		return
	}
	if st&stSynAck == 0 {
		if !reply {
			return
		}
		f.state.Or(stSynAck)
		if f.started != 0 {
			return // a reply in the same packet cannot be traffic after itself
		}
	}
	if f.started != 0 && time.Duration(now-f.started) < udpStreamAfter {
		return
	}
	if n.confirm(f) {
		n.save(f)
	}
}

// confirm marks f confirmed (stEstablished) and takes it off its list. It
// reports false if f already was.
func (n *NAT) confirm(f *flow) bool {
	if f.state.Or(stEstablished)&stEstablished != 0 {
		return false
	}
	n.unconfirmed(f).remove(f)
	return true
}
