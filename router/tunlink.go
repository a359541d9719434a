package router

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// tunEndpoint is the stack.LinkEndpoint of the TUN NIC: packets from the
// node kernel come in through readLoop; packets routed to a local pod CIDR
// (or back to the node) leave through WritePackets.
type tunEndpoint struct {
	ipLink
	dev tun.Device
	// offload is dev.Offload(), fixed by New: whether the node kernel
	// hands the router TCP super-packets and takes them back
	// (offload.go).
	offload bool
	// uso is dev.UDPOffload() on a device with offload, fixed by New:
	// UDP super-packets cross too.
	uso bool
	// udpScratch is the reader's: a UDP super-packet's datagrams.
	udpScratch []byte
	// batches and batchPackets count sendBatch's writes of more than one
	// packet, and their packets.
	batches, batchPackets atomic.Uint64
	// parsed is the reader goroutine's: the packet being received.
	parsed packet.Parsed
	// sources is the Router's: where packets from the node kernel may
	// come from.
	sources *atomic.Pointer[prefixMap[struct{}]]
}

var _ stack.LinkEndpoint = (*tunEndpoint)(nil)

// maxTUNBatch bounds the packets one TUN Read returns, whatever the
// device's BatchSize.
const maxTUNBatch = 8

// WritePackets writes each packet to the node kernel through the TUN.
func (e *tunEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		if !pkt.NetworkPacketInfo.IsForwardedPacket {
			finishChecksum(v.AsSlice())
		}
		if e.send(v.AsSlice(), tun.Offload{}) {
			n++
		}
		v.Release()
	}
	return n, nil
}

// tunWrite is the batch of one that write hands the device; pooled, so
// that a write allocates nothing.
type tunWrite struct {
	bufs [1][]byte
	offs [1]tun.Offload
}

var tunWrites = sync.Pool{New: func() any { return new(tunWrite) }}

// write writes packet b with metadata o to the node kernel.
func (e *tunEndpoint) write(b []byte, o tun.Offload) error {
	e.tap.see(DirOut, b)
	w := tunWrites.Get().(*tunWrite)
	w.bufs[0], w.offs[0] = b, o
	_, err := e.dev.Write(w.bufs[:], w.offs[:])
	w.bufs[0] = nil // let b go
	tunWrites.Put(w)
	return err
}

// send writes one packet to the node kernel — a TCP super-packet when o
// says so — and counts it: a super-packet as the segments it carries.
func (e *tunEndpoint) send(b []byte, o tun.Offload) bool {
	if err := e.write(b, o); err != nil {
		e.drops.add(DropTxError)
		return false
	}
	nseg, wire := 1, len(b)
	if o.GSOType != tun.GSONone {
		hdr := int(o.HdrLen)
		nseg = segmentCount(len(b)-hdr, int(o.GSOSize))
		wire = len(b) + (nseg-1)*hdr
	}
	e.counters.txPackets.Add(uint64(nseg))
	e.counters.txBytes.Add(uint64(wire))
	return true
}

// sendBatch writes plain packets bufs to the node kernel, in order, in
// as few system calls as the device manages (one where it has batched
// I/O), and counts them; a packet the kernel refuses is counted as a
// drop and the ones after it are written on.
func (e *tunEndpoint) sendBatch(bufs [][]byte) {
	for _, b := range bufs {
		e.tap.see(DirOut, b)
	}
	if len(bufs) > 1 {
		e.batches.Add(1)
		e.batchPackets.Add(uint64(len(bufs)))
	}
	for len(bufs) > 0 {
		n, err := e.dev.Write(bufs, nil)
		bytes := 0
		for _, b := range bufs[:n] {
			bytes += len(b)
		}
		e.counters.txPackets.Add(uint64(n))
		e.counters.txBytes.Add(uint64(bytes))
		if err == nil {
			return
		}
		// tun.Device.Write writes nothing after the packet that failed.
		e.drops.add(DropTxError)
		bufs = bufs[min(n+1, len(bufs)):]
	}
}

// readLoop reads packets from the node kernel until the device is closed:
// one Read at a time, whatever the device moves per system call. It is
// run by Router.Run, which owns it.
func (e *tunEndpoint) readLoop() error {
	k := min(max(1, e.dev.BatchSize()), maxTUNBatch)
	bufs := make([][]byte, k)
	for i := range bufs {
		// Room for any IP packet, so an oversize one is seen whole and
		// counted, and for a 64 KiB super-packet.
		bufs[i] = make([]byte, maxDatagram)
	}
	sizes, offs := make([]int, k), make([]tun.Offload, k)
	for {
		n, err := e.dev.Read(bufs, sizes, offs)
		switch {
		case errors.Is(err, os.ErrClosed):
			return nil
		case errors.Is(err, tun.ErrBadOffload):
			e.drops.add(DropMalformed)
		case err != nil:
			return err
		}
		for i := range n {
			e.receive(bufs[i][:sizes[i]], offs[i])
		}
		e.fast.flush() // the burst's run to a peer, if any
	}
}

// receive takes one packet from the node kernel — plain, or a TSO
// super-packet when o says so — through the router's checks and the hook,
// and forwards it.
func (e *tunEndpoint) receive(b []byte, o tun.Offload) {
	if o.GSOType == tun.GSOUDPL4 {
		e.receiveUDPSuper(b, o)
		return
	}
	super := o.GSOType != tun.GSONone
	if !super && o.NeedsCsum && gso.Complete(b, int(o.CsumStart), int(o.CsumOffset)) != nil {
		e.drops.add(DropMalformed)
		return
	}
	e.tap.see(DirIn, b)
	p := &e.parsed
	if !e.decode(p, b, super) || !e.admitFamily(p) || !e.admitSource(p, b) {
		return
	}
	b = b[:p.Length]
	nseg, wire, mss := 1, len(b), 0
	if super {
		var ok bool
		mss = int(o.GSOSize)
		if nseg, wire, ok = superShape(p, mss, o.GSOType); !ok {
			e.drops.add(DropMalformed)
			return
		}
	}
	e.counters.rxPackets.Add(uint64(nseg))
	e.counters.rxBytes.Add(uint64(wire))
	partial := super && o.NeedsCsum
	if h := e.hook.get(); h != nil {
		// The hook rewrites addresses and ports with incremental checksum
		// updates, which need a complete checksum to start from.
		if partial {
			if gso.Complete(b, int(o.CsumStart), int(o.CsumOffset)) != nil {
				e.drops.add(DropMalformed)
				return
			}
			partial = false
		}
		if !e.runHook(h, p, b) {
			return
		}
	}
	e.inject(p, b, mss, partial)
}

// receiveUDPSuper takes a UDP super-packet from the node kernel (a pod's
// socket sent it with UDP_SEGMENT) as the datagrams it carries: each is cut
// out with complete checksums and received as a packet of its own, so
// that the checks, the hook and the counters see datagrams, and those to a
// peer leave as one run (fastPath.add) as the kernel's would.
func (e *tunEndpoint) receiveUDPSuper(b []byte, o tun.Offload) {
	need, err := gso.SegmentedUDPSize(b, int(o.GSOSize))
	if err != nil || need > maxSegmentScratch {
		e.drops.add(DropMalformed)
		return
	}
	if cap(e.udpScratch) < need {
		e.udpScratch = make([]byte, need)
	}
	out := e.udpScratch[:need]
	n, size, total, err := gso.SegmentUDP(b, int(o.GSOSize), out)
	if err != nil {
		e.drops.add(DropMalformed)
		return
	}
	for i := range n {
		e.receive(out[i*size:min((i+1)*size, total)], tun.Offload{})
	}
}

// admitSource refuses, and counts, a packet decoded in p whose source the
// node kernel could not have sent it from (see Config.NodeAddresses).
func (e *tunEndpoint) admitSource(p *packet.Parsed, b []byte) bool {
	if _, ok := e.sources.Load().lookup(p.Src); ok || isICMPError(p, b) {
		return true
	}
	e.drops.add(DropSourceNotLocal)
	return false
}

// isICMPError reports whether packet b, decoded in p, is an ICMP or ICMPv6
// error message (destination unreachable, time exceeded, parameter
// problem; for ICMPv6 packet too big too).
func isICMPError(p *packet.Parsed, b []byte) bool {
	if p.IsFragment() || len(b) <= p.L4 {
		return false
	}
	typ := b[p.L4]
	switch {
	case p.Version == 4 && p.Proto == packet.ICMPv4:
		return typ == 3 || typ == 11 || typ == 12
	case p.Version == 6 && p.Proto == packet.ICMPv6:
		return typ >= 1 && typ <= 4
	}
	return false
}

// runHook shows packet b from the node kernel, decoded in p, to h, writes
// h's reply back to the kernel, and reports whether b passes.
func (e *tunEndpoint) runHook(h Hook, p *packet.Parsed, b []byte) bool {
	pass, reply := h.Ingress(true, p, b)
	if reply != nil {
		e.fast.flushTUN() // the reply goes after what the burst queued
		if err := e.write(reply, tun.Offload{}); err != nil {
			e.drops.add(DropTxError)
		}
	}
	return pass
}

// WriteTUN writes one IP packet b to the node kernel through the TUN, as
// the stack's own packets go, and reports whether it was written. It is
// for data paths beside the router's stack (lb.Egress's replies to pods);
// safe for concurrent use. The router does not keep b.
func (r *Router) WriteTUN(b []byte) bool { return r.tun.send(b, tun.Offload{}) }

// TUNOffload reports whether the TUN takes TCP super-packets
// (WriteTUNSuper): it was opened with segmentation offload.
func (r *Router) TUNOffload() bool { return r.tun.offload }

// WriteTUNSuper writes the TCP super-packet b to the node kernel as one
// TSO packet whose segments carry mss payload bytes each, and reports
// whether it was written. b's TCP checksum holds the pseudo-header sum
// over the whole segment (Linux's CHECKSUM_PARTIAL, as gVisor's host GSO
// leaves it); the kernel completes and cuts it. Only with TUNOffload;
// safe for concurrent use. The router does not keep b.
func (r *Router) WriteTUNSuper(b []byte, mss int) bool {
	var p packet.Parsed
	if !r.tun.offload || p.Decode(b) != packet.FaultNone || p.Length != len(b) || p.Proto != packet.TCP || p.TransportEnd == 0 || mss < 1 {
		r.drops.add(DropTxError)
		return false
	}
	return r.tun.send(b, superOffload(&p, mss))
}
