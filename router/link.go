package router

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
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
func (s *dispatcherSlot) deliver(proto tcpip.NetworkProtocolNumber, b []byte) {
	d := s.get()
	if d == nil {
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}
