package router

import (
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
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

// ipLink is what the TUN and overlay endpoints share of
// stack.LinkEndpoint: both carry bare IP packets on a point-to-point link,
// with no link header, no link address and no neighbor resolution (so the
// stack hands the overlay the route's next hop directly), and both let
// gVisor skip forwarded packets' checksums (txChecksumOffload).
type ipLink struct {
	mtu        atomic.Uint32
	dispatcher dispatcherSlot
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
