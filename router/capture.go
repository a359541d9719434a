package router

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/vrouter/vrouter/router/packet"
)

// Packet capture: each NIC's link endpoint has a tap slot, an atomic
// pointer to at most one running Capture. The packet path checks it once
// per packet in each direction:
//
//	TUN read ──tap(in)──▶ receive ──▶ stack ──▶ WritePackets ──tap(out)──▶ TUN write
//	overlay datagram ──tap(in)──▶ receive        WritePackets ──tap(out)──▶ UDP send
//
// With no capture running that is one atomic load and a nil check: no
// lock, no allocation. With one running, each packet is copied into a
// bounded queue; when the reader falls behind, packets are dropped from
// the capture (counted by Capture.Dropped), never from the data path, and
// the packet path never waits for the reader.
//
// A capture's filter (CaptureOptions.Filter) is applied on the packet path
// before the copy: what it leaves out costs a header decode, not a copy
// or a place in the queue.
//
// What a capture sees is raw IP packets, one per record: on the TUN NIC
// the packets exchanged with the node kernel (before the Service NAT
// rewrites them on the way in), on the overlay NIC the inner packets of
// the overlay datagrams, including those the router then refuses (unknown
// peer, spoofed source), as tcpdump on a device sees what arrives.

// Direction says which way a captured packet crossed its NIC.
type Direction uint8

const (
	// DirIn is a packet the router received from the NIC's device: read
	// from the TUN, or carried by an overlay datagram.
	DirIn Direction = iota + 1
	// DirOut is a packet the router sent through the NIC's device.
	DirOut
)

func (d Direction) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// DefaultCaptureQueue is CaptureOptions.QueueLen when left zero.
const DefaultCaptureQueue = 4096

// ErrCaptureBusy is returned by StartCapture when the NIC already has a
// capture running.
var ErrCaptureBusy = errors.New("a capture is already running on this NIC")

// CaptureOptions configure a Capture. Zero values are the documented
// defaults.
type CaptureOptions struct {
	// QueueLen is how many packets wait for the reader before further
	// ones are dropped from the capture. Default DefaultCaptureQueue.
	QueueLen int
	// SnapLen is the most bytes of each packet kept; the rest is cut
	// off. Default: whole packets.
	SnapLen int
	// Filter selects the packets captured; the rest are not copied.
	// Default: every packet.
	Filter CaptureFilter
}

// CaptureFilter selects packets by their IP header and ports, as
// tcpdump's "host H and port P and tcp" does. Zero fields select every
// packet.
type CaptureFilter struct {
	// Host selects packets from or to this address.
	Host netip.Addr
	// Port selects TCP, UDP and SCTP packets from or to this port (an IP
	// fragment but the first has none, and is left out).
	Port uint16
	// Proto selects packets of this IP protocol (packet.TCP, packet.UDP,
	// ...); packet.ICMPv4 selects ICMPv6 too.
	Proto uint8
}

// IsZero reports whether f selects every packet.
func (f CaptureFilter) IsZero() bool { return f == CaptureFilter{} }

// match reports whether f selects packet b. It decodes b's headers only
// when f has something to check.
func (f *CaptureFilter) match(b []byte) bool {
	if f.IsZero() {
		return true
	}
	var p packet.Parsed
	if p.Decode(b) != packet.FaultNone {
		return false
	}
	switch {
	case f.Host.IsValid() && p.Src != f.Host && p.Dst != f.Host:
		return false
	case f.Port != 0 && (!p.HasPorts || p.SrcPort != f.Port && p.DstPort != f.Port):
		return false
	case f.Proto != 0 && p.Proto != f.Proto && !(f.Proto == packet.ICMPv4 && p.Proto == packet.ICMPv6):
		return false
	}
	return true
}

// CapturedPacket is one packet a Capture saw.
type CapturedPacket struct {
	// Time is when the router saw the packet.
	Time time.Time
	Dir  Direction
	// Data is the packet (at most SnapLen bytes of it); it belongs to
	// the receiver.
	Data []byte
	// Len is the packet's whole length.
	Len int
}

// Capture is a running packet capture on one NIC, made by StartCapture.
// Packets is read by one goroutine; Close may be called from any and is
// idempotent.
type Capture struct {
	slot    *tapSlot
	nic     string
	snapLen int
	filter  CaptureFilter
	ch      chan CapturedPacket
	dropped atomic.Uint64
}

// StartCapture taps the NIC nic (TUNNIC or OverlayNIC) until the returned
// Capture is closed. A NIC has at most one capture at a time: a second
// one fails with an error wrapping ErrCaptureBusy. Safe while the router
// runs; the capture sees nothing once the router is closed.
func (r *Router) StartCapture(nic tcpip.NICID, opts CaptureOptions) (*Capture, error) {
	var slot *tapSlot
	switch nic {
	case TUNNIC:
		slot = &r.tun.tap
	case OverlayNIC:
		slot = &r.overlay.tap
	default:
		return nil, fmt.Errorf("start capture: no NIC %d (want %d for the TUN or %d for the overlay)", nic, TUNNIC, OverlayNIC)
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultCaptureQueue
	}
	if opts.SnapLen <= 0 || opts.SnapLen > maxDatagram {
		opts.SnapLen = maxDatagram
	}
	opts.Filter.Host = opts.Filter.Host.Unmap()
	c := &Capture{
		slot:    slot,
		nic:     r.nicName(nic),
		snapLen: opts.SnapLen,
		filter:  opts.Filter,
		ch:      make(chan CapturedPacket, opts.QueueLen),
	}
	if !slot.p.CompareAndSwap(nil, c) {
		return nil, fmt.Errorf("start capture on %s: %w", c.nic, ErrCaptureBusy)
	}
	return c, nil
}

// NIC is the name of the captured NIC ("vr0", "overlay0").
func (c *Capture) NIC() string { return c.nic }

// Packets delivers the captured packets in the order the router saw them
// per direction. It is never closed: after Close, what was queued can
// still be read, and nothing more arrives.
func (c *Capture) Packets() <-chan CapturedPacket { return c.ch }

// Dropped counts packets left out of the capture because the reader fell
// behind.
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Close removes the tap. It is idempotent.
func (c *Capture) Close() { c.slot.p.CompareAndSwap(c, nil) }

// packet is called on the packet path with a packet the caller still
// owns: it copies it, and never blocks.
func (c *Capture) packet(dir Direction, b []byte) {
	if !c.filter.match(b) {
		return
	}
	n := min(len(b), c.snapLen)
	p := CapturedPacket{Time: time.Now(), Dir: dir, Data: append([]byte(nil), b[:n]...), Len: len(b)}
	select {
	case c.ch <- p:
	default:
		c.dropped.Add(1)
	}
}

// tapSlot holds a link endpoint's running Capture, if any. Its zero value
// is an empty slot.
type tapSlot struct {
	p atomic.Pointer[Capture]
}

// see hands b to the running capture, if there is one. With none it is one
// atomic load.
func (s *tapSlot) see(dir Direction, b []byte) {
	if c := s.p.Load(); c != nil {
		c.packet(dir, b)
	}
}
