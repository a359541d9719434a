package router

import (
	"sync/atomic"

	"github.com/vrouter/vrouter/router/packet"
)

// Hook sees every packet entering the router before the stack routes it.
// The Service load balancer's NAT engine is one: it rewrites packets to and
// from Service VIPs.
//
// Ingress is called from the router's two reader goroutines (TUN and
// overlay) concurrently, once per packet that passed the router's own
// checks, with b holding exactly one IP packet (IPv4 or IPv6) and p its
// headers as the router decoded them (packet.Parsed.Decode accepted b,
// and p.Length == len(b)): the hook reads p instead of parsing b again.
// It may rewrite b in place without changing its length, and then updates
// the fields of p it changed (addresses, ports), which the router reads
// next. It returns false to drop the packet; the hook counts its own
// drops. reply, when non-nil, is one IP packet sent back to the node
// kernel; it is honoured only for packets from the TUN (the hook answers
// local clients, e.g. with ICMP port unreachable). Ingress must not block
// and must keep neither b nor p. The router writes reply before it calls
// Ingress again for the TUN, so one buffer reused for TUN replies is safe.
type Hook interface {
	Ingress(fromTUN bool, p *packet.Parsed, b []byte) (pass bool, reply []byte)
}

// hookSlot holds the installed Hook for the packet path.
type hookSlot struct {
	p atomic.Pointer[Hook]
}

func (s *hookSlot) get() Hook {
	if p := s.p.Load(); p != nil {
		return *p
	}
	return nil
}

// SetHook installs h (nil removes it). Safe while the router runs.
func (r *Router) SetHook(h Hook) {
	if h == nil {
		r.hook.p.Store(nil)
		return
	}
	r.hook.p.Store(&h)
}
