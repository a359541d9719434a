package lb

import "time"

// Queries of the flow table and the proxy's connections for status
// commands (vrouter conns): listed without building the whole table, and
// deleted as conntrack -D deletes. They walk the tables under the flow
// shards' and the proxy's locks, one at a time, so their callbacks must be
// quick and must not call into the NAT or the Proxy.

// describe describes f. The caller holds the lock of a shard f is in.
func (f *flow) describe() FlowInfo {
	i := FlowInfo{
		Proto: f.fwd.proto, Client: f.client, VIP: f.vip, Backend: f.backend.AddrPort(),
		SNAT: f.snat, LastSeen: time.Unix(0, f.lastSeen.Load()),
	}
	if f.started != 0 {
		i.Started = time.Unix(0, f.started)
	}
	if f.fwd.proto == TCP {
		i.State = tcpStateName(f.state.Load())
	}
	for d := range 2 {
		i.Packets[d], i.Bytes[d] = f.packets[d].Load(), f.bytes[d].Load()
	}
	return i
}

// tcpStateName names TCP state bits st as conntrack names its states.
func tcpStateName(st uint32) string {
	switch {
	case st&stRST != 0:
		return "CLOSE"
	case st&(stFinFwd|stFinRev) == stFinFwd|stFinRev:
		return "TIME_WAIT"
	case st&(stFinFwd|stFinRev) != 0:
		return "FIN_WAIT"
	case st&stEstablished != 0:
		return "ESTABLISHED"
	case st&stSynAck != 0:
		return "SYN_RECV"
	}
	return "SYN_SENT"
}

// EachFlow calls fn with each tracked flow, one flow shard at a time under
// its lock, until fn returns false. It keeps nothing: a query over a
// table of a quarter million flows holds only what fn keeps.
func (n *NAT) EachFlow(fn func(FlowInfo) bool) {
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			if k != f.fwd {
				continue
			}
			fi := f.describe()
			if !fn(fi) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
}

// DeleteFlows ends the tracked flows match selects, as the reaper ends
// those that expired (each gives back its backend's active count and its
// limiter slot, and counts as expired), and returns how many it ended.
// What comes next is what follows a restart without a flow file: a TCP
// segment of a deleted flow is answered with a reset, a UDP datagram
// starts a new flow, to a backend picked again.
func (n *NAT) DeleteFlows(match func(FlowInfo) bool) int {
	var dead []*flow
	for i := range n.shards {
		s := &n.shards[i]
		s.mu.Lock()
		for k, f := range s.m {
			if k != f.fwd {
				continue
			}
			fi := f.describe()
			if match(fi) {
				dead = append(dead, f)
			}
		}
		s.mu.Unlock()
	}
	ended := 0
	for _, f := range dead {
		if f.state.Load()&stEnded == 0 {
			n.end(f)
			ended++
		}
	}
	return ended
}

// ResetConns resets the proxied connections match selects, both sides
// with a RST, and returns how many it reset. Their splice goroutines then
// finish them as any other connection that ended.
func (p *Proxy) ResetConns(match func(ProxyConnInfo) bool) int {
	var hit []*proxyConn
	for _, c := range p.each() {
		if match(c.info) {
			hit = append(hit, c.conn)
		}
	}
	n := 0
	for _, c := range hit {
		if c.shut(true, nil) {
			n++
		}
	}
	return n
}

type connAndInfo struct {
	conn *proxyConn
	info ProxyConnInfo
}

// each lists the open connections with their descriptions.
func (p *Proxy) each() []connAndInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []connAndInfo
	for k, g := range p.conns {
		for c := range g.conns {
			out = append(out, connAndInfo{c, p.infoLocked(k, c)})
		}
	}
	return out
}
