package lb

import (
	"net/netip"
	"time"

	"github.com/vrouter/vrouter/router/packet"
)

// closedLinger keeps a TCP flow that saw FIN both ways or RST for a
// moment, so the last ACK and retransmitted FINs still translate.
const closedLinger = 10 * time.Second

// Ingress implements router.Hook: it translates packets of tracked flows,
// starts flows for new connections from local clients to VIPs, and refuses
// those to Services without endpoints with ICMP port unreachable. It reads
// the 5-tuple from p, as the router decoded b, and keeps p current as it
// translates. Fragments of a translated datagram get its translation
// (natfrag.go). What has no ports (other protocols, IPv6 extension
// headers other than a leading Fragment header) passes untouched, but for
// ICMP errors about a tracked flow.
func (n *NAT) Ingress(fromTUN bool, p *packet.Parsed, b []byte) (bool, []byte) {
	switch {
	case p.IsFragment():
		return n.ipv4Fragment(fromTUN, p, b)
	case !p.HasPorts:
		switch {
		case p.Version == 6 && p.Proto == ipv6FragmentHeader:
			return n.ipv6Fragment(fromTUN, p, b)
		case p.Version == 4 && p.Proto == packet.ICMPv4 || p.Version == 6 && p.Proto == packet.ICMPv6:
			n.translateICMPError(p, b)
		}
		return true, nil
	}
	return n.ingress(fromTUN, p, b)
}

// ingress is Ingress for a packet whose ports p holds: a whole one, or a
// datagram's first fragment.
func (n *NAT) ingress(fromTUN bool, p *packet.Parsed, b []byte) (bool, []byte) {
	key := flowKey{src: p.SrcAddrPort(), dst: p.DstAddrPort(), proto: Protocol(p.Proto)}
	if f := n.lookup(key); f != nil {
		now := n.clock.Now().UnixNano()
		switch {
		case key != f.fwd || !fromTUN:
			n.reverse(f, b, p, now)
			return true, nil
		case !newConnection(f, p):
			return n.forward(f, b, p, now)
		}
		// A new connection on the 5-tuple of one that closed: as the
		// kernel's conntrack does, the old flow ends and the SYN starts
		// a flow of its own (a new pick, the SYN_SENT timeout), rather
		// than inheriting a flow about to be reaped.
		n.end(f)
	}
	if !fromTUN {
		return true, nil
	}
	e := n.table.Lookup(ServiceKey{VIP: p.Dst, Port: p.DstPort, Proto: Protocol(p.Proto)})
	if e == nil || (e.Mode() == ModeProxy && Protocol(p.Proto) == TCP) {
		// Proxy mode applies to TCP, which the stack terminates
		// (Proxy); UDP ports of a proxy-mode Service are translated
		// here as in nat mode.
		return true, nil
	}
	if Protocol(p.Proto) == TCP && p.TCPFlags&(tcpSYN|tcpACK|tcpRST) != tcpSYN {
		// A segment of a connection no flow knows (this router
		// restarted, or the Service left proxy mode). A backend picked
		// now would not know it either: reset it, so the client fails
		// at once instead of retransmitting until it times out.
		n.stats.midStream.Add(1)
		if p.TCPFlags&tcpRST != 0 || !n.rejectLimit.Allow() {
			return false, nil
		}
		return false, tcpReset(n.replyBuf[:cap(n.replyBuf)], b, p)
	}
	return n.start(e, b, p)
}

// newConnection reports whether p, a client's packet of flow f, opens a
// new connection: a SYN (without ACK or RST) on a TCP flow that closed.
func newConnection(f *flow, p *packet.Parsed) bool {
	return f.fwd.proto == TCP && p.TCPFlags&(tcpSYN|tcpACK|tcpRST) == tcpSYN && closed(f.state.Load())
}

// TCP flags the NAT looks at.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// start creates the flow for the first packet of a connection to a VIP.
func (n *NAT) start(e *Entry, b []byte, p *packet.Parsed) (bool, []byte) {
	if e.NoEndpoints() {
		if e.Status() == StatusNoLocalEndpoints {
			// internalTrafficPolicy Local without a local endpoint:
			// kube-proxy drops rather than rejects.
			n.stats.refusedNoEP.Add(1)
			return false, nil
		}
		return n.reject(e, b, p)
	}
	limit, list := n.udpLimit, &n.pending[1]
	if Protocol(p.Proto) == TCP {
		limit, list = n.tcpLimit, &n.pending[0]
	}
	if !n.admit(limit, list, p.Src) {
		n.stats.refusedCap.Add(1)
		return false, nil
	}
	bk, ok := e.Pick(Flow{Src: p.SrcAddrPort(), Dst: p.DstAddrPort(), Proto: Protocol(p.Proto)})
	if !ok {
		limit.Release(p.Src)
		return n.reject(e, b, p)
	}
	now := n.clock.Now().UnixNano()
	f := &flow{
		fwd:     flowKey{src: p.SrcAddrPort(), dst: p.DstAddrPort(), proto: Protocol(p.Proto)},
		vip:     p.DstAddrPort(),
		client:  p.SrcAddrPort(),
		limit:   limit,
		backend: bk,
		entry:   e,
		started: now,
	}
	replyDst := p.SrcAddrPort()
	if snat := n.hairpinAddr(bk.Addr); snat.IsValid() {
		f.snat = netip.AddrPortFrom(snat, p.SrcPort)
		replyDst = f.snat
	}
	f.rev = flowKey{src: bk.AddrPort(), dst: replyDst, proto: Protocol(p.Proto)}
	// Before it is published: the reaper would take a flow last seen at
	// 0 for long expired.
	f.lastSeen.Store(now)
	f.slot = n.allocSlot()
	if !n.insertWithPort(f) {
		n.freeSlotLocked(f) // never published
		limit.Release(p.Src)
		n.stats.refusedPorts.Add(1)
		return false, nil
	}
	if f.snat.IsValid() && f.snat.Addr() != f.client.Addr() {
		n.stats.hairpin.Add(1)
	}
	bk.Acquire()
	n.stats.flows.Add(1)
	n.stats.flowsTotal.Add(1)
	list.push(f)
	f.count(0, len(b))
	n.note(f, p, true)
	n.save(f)
	rewrite(b, p, f.snat, bk.AddrPort())
	return true, nil
}

// insertWithPort inserts f. When its reply key is taken — the same client
// address and port already reach the same backend through another VIP —
// it translates the client's source port too, as Linux conntrack does, so
// the backend can tell the two connections apart.
func (n *NAT) insertWithPort(f *flow) bool {
	if n.insert(f) {
		return true
	}
	if !f.snat.IsValid() {
		f.snat = f.client
	}
	port := f.snat.Port()
	for range 64 {
		port = 1024 + uint16(hashKey(f.fwd)+uint64(port)*2654435761)%(65535-1024)
		f.snat = netip.AddrPortFrom(f.snat.Addr(), port)
		f.rev.dst = f.snat
		if n.insert(f) {
			return true
		}
	}
	return false
}

// hairpinAddr is the router address a flow to backend is translated from
// when the backend is on this node (the client is: flows start at the
// TUN), or the zero Addr when the backend is remote.
func (n *NAT) hairpinAddr(backend netip.Addr) netip.Addr {
	l := n.local.Load()
	for _, c := range l.local {
		if c.Contains(backend) {
			if backend.Is4() {
				return l.snat4
			}
			return l.snat6
		}
	}
	return netip.Addr{}
}

func (n *NAT) reject(e *Entry, b []byte, p *packet.Parsed) (bool, []byte) {
	n.stats.refusedNoEP.Add(1)
	if !n.rejectLimit.Allow() {
		return false, nil
	}
	return false, portUnreachable(n.replyBuf[:cap(n.replyBuf)], b, p)
}

// forward translates a client's packet of flow f.
func (n *NAT) forward(f *flow, b []byte, p *packet.Parsed, now int64) (bool, []byte) {
	f.mu.Lock()
	if f.fwd.proto == UDP {
		if !n.migrateLocked(f) {
			f.mu.Unlock()
			return n.reject(nil, b, p)
		}
	}
	bk := f.backend
	f.mu.Unlock()
	if p.TCPFlags&(tcpSYN|tcpACK|tcpRST) == tcpSYN && f.fwd.proto == TCP {
		n.synAgain(f, now)
	}
	n.udpSeen(f, now, false)
	f.lastSeen.Store(now)
	f.count(0, len(b))
	n.note(f, p, true)
	rewrite(b, p, f.snat, bk.AddrPort())
	return true, nil
}

// migrateLocked moves a UDP flow off a backend that left its Service, to a
// live one (or reports false when none is left). Checking costs one
// lookup per packet; the backend set is scanned only when the Entry
// changed since the flow last looked.
func (n *NAT) migrateLocked(f *flow) bool {
	cur := n.table.Lookup(ServiceKey{VIP: f.vip.Addr(), Port: f.vip.Port(), Proto: UDP})
	if cur == f.entry {
		return true
	}
	if cur == nil || cur.NoEndpoints() {
		return false
	}
	for _, b := range cur.Backends() {
		if b.AddrPort() == f.backend.AddrPort() {
			f.entry = cur
			return true
		}
	}
	nb, ok := cur.Pick(Flow{Src: f.client, Dst: f.vip, Proto: UDP})
	if !ok {
		return false
	}
	replyDst := f.client
	if f.snat.IsValid() {
		replyDst = f.snat
	}
	newRev := flowKey{src: nb.AddrPort(), dst: replyDst, proto: UDP}
	old := n.shard(f.rev)
	old.mu.Lock()
	delete(old.m, f.rev)
	old.mu.Unlock()
	s := n.shard(newRev)
	s.mu.Lock()
	s.m[newRev] = f
	s.peak.grew(len(s.m))
	s.mu.Unlock()
	f.backend.Release()
	nb.Acquire()
	f.backend, f.entry, f.rev = nb, cur, newRev
	n.saveLocked(f)
	n.stats.migrated.Add(1)
	return true
}

// reverse translates a backend's reply of flow f back to the VIP.
func (n *NAT) reverse(f *flow, b []byte, p *packet.Parsed, now int64) {
	f.lastSeen.Store(now)
	f.count(1, len(b))
	n.udpSeen(f, now, true)
	n.note(f, p, false)
	var dst netip.AddrPort
	if f.snat.IsValid() {
		dst = f.client
	}
	rewrite(b, p, f.vip, dst)
}

// note records TCP state from a packet's flags: the handshake's progress
// (see stSynAck) and FIN and RST.
func (n *NAT) note(f *flow, p *packet.Parsed, fwd bool) {
	if Protocol(p.Proto) != TCP {
		return
	}
	var set uint32
	flags := p.TCPFlags
	if flags&tcpRST != 0 {
		set |= stRST
	}
	if flags&tcpFIN != 0 {
		if fwd {
			set |= stFinFwd
		} else {
			set |= stFinRev
		}
	}
	old := f.state.Load()
	switch {
	case !fwd && flags&(tcpSYN|tcpACK|tcpRST) == tcpSYN|tcpACK:
		set |= stSynAck
	case fwd && old&stSynAck != 0 && flags&(tcpSYN|tcpACK|tcpRST) == tcpACK:
		// The SYN-ACK was translated before the client could see it,
		// so its bit is set by the time the client's ACK arrives,
		// whichever reader goroutine carried the SYN-ACK.
		set |= stEstablished
	}
	if !fwd && flags&tcpRST != 0 && old&(stSynAck|stEstablished) == 0 {
		// The backend refused the connection.
		n.connectFailed(f)
	}
	if set == 0 || old&set == set {
		return
	}
	prev := f.state.Or(set)
	st := prev | set
	if set&stSynAck != 0 && prev&stSynAck == 0 {
		connected(f.backend)
	}
	if set&stEstablished != 0 && prev&stEstablished == 0 {
		n.unconfirmed(f).remove(f)
	}
	n.save(f)
	if closed(st) && st&stReleased == 0 && f.state.Or(stReleased)&stReleased == 0 {
		// A closed connection no longer counts against its client's cap
		// or its backend's load while it lingers.
		n.release(f)
	}
}

// closed reports whether TCP state st has ended: RST, or FIN both ways.
func closed(st uint32) bool {
	return st&stRST != 0 || st&(stFinFwd|stFinRev) == stFinFwd|stFinRev
}

// release gives back what a flow holds: its backend's active count and
// its limiter slot, and takes it off its unconfirmed list. It runs once
// per flow (stReleased).
func (n *NAT) release(f *flow) {
	n.unconfirmed(f).remove(f)
	f.mu.Lock()
	f.backend.Release()
	f.mu.Unlock()
	f.limit.Release(f.client.Addr())
}

// expired reports whether f has ended at now.
func (n *NAT) expired(f *flow, now int64) bool {
	idle := time.Duration(now - f.lastSeen.Load())
	if f.fwd.proto == UDP {
		return idle > n.opts.UDPTimeout
	}
	return idle > n.tcpTimeout(f.state.Load())
}

// tcpTimeout is how long a TCP flow in state st may stay idle.
func (n *NAT) tcpTimeout(st uint32) time.Duration {
	switch {
	case closed(st):
		return closedLinger
	case st&stEstablished != 0:
		return n.opts.TCPEstablishedTimeout
	case st&stSynAck != 0:
		return n.opts.TCPSynRecvTimeout
	default:
		return n.opts.TCPSynSentTimeout
	}
}

// halfOpen reports whether a TCP flow in state st never completed its
// handshake and did not close either.
func halfOpen(st uint32) bool {
	return st&stEstablished == 0 && !closed(st)
}

// Reap ends the flows that have timed out or closed, releasing their
// backends' active counts and their Limiter slots, and then gives back
// the memory of shards that a flood left oversized (shrink). Run calls it
// every second; tests call it after moving a fake clock.
func (n *NAT) Reap() {
	n.reap()
	n.shrink()
}

// shrinkPerReap bounds the shards one Reap rebuilds: a shard's lock is
// held for one copy of at most a quarter of its peak, and the 64 shards
// are looked at over 8 Reaps.
const shrinkPerReap = flowShards / 8

// shrink rebuilds the shards among the next shrinkPerReap whose live
// flows fell below a quarter of their peak, and returns the memory to the
// OS once enough was dropped (osReturn). Only the reaper calls it.
func (n *NAT) shrink() {
	for range shrinkPerReap {
		s := &n.shards[n.shrinkNext]
		n.shrinkNext = (n.shrinkNext + 1) % flowShards
		s.mu.Lock()
		peak := int(s.peak)
		if s.peak.shrink(len(s.m)) {
			s.m = rebuilt(s.m)
			n.mem.dropped(peak)
		}
		s.mu.Unlock()
	}
	n.mem.maybe(time.Now())
}

func (n *NAT) reap() {
	now := n.clock.Now().UnixNano()
	var dead []*flow
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			if k == f.fwd && n.expired(f, now) {
				dead = append(dead, f)
			}
		}
		s.mu.Unlock()
	}
	for _, f := range dead {
		n.end(f)
	}
}

// end removes f from the table and gives back what it holds, once:
// the reaper and a new connection on f's 5-tuple may both end it.
func (n *NAT) end(f *flow) {
	if f.state.Or(stEnded)&stEnded != 0 {
		return
	}
	f.mu.Lock()
	a, b := n.lockPair(f.fwd, f.rev)
	if a.m[f.fwd] == f {
		delete(a.m, f.fwd)
	}
	if b.m[f.rev] == f {
		delete(b.m, f.rev)
	}
	unlockPair(a, b)
	n.freeSlotLocked(f)
	f.mu.Unlock()
	st := f.state.Or(stReleased)
	if st&stReleased == 0 {
		n.release(f)
	}
	n.stats.flows.Add(^uint64(0))
	if st&stEvicted != 0 {
		// Early drop ended it (evict counts it); an unanswered SYN
		// it cut short says nothing of the backend.
		return
	}
	n.stats.expired.Add(1)
	if f.fwd.proto == TCP && halfOpen(st) {
		n.stats.expiredHalfOpen.Add(1)
		if st&stSynAck == 0 {
			// No SYN-ACK came before the flow expired.
			n.connectFailed(f)
		}
	}
}
