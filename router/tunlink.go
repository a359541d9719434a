package router

import (
	"errors"
	"os"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/tun"
)

// tunEndpoint is the stack.LinkEndpoint of the TUN NIC: packets from the
// node kernel come in through readLoop; packets routed to a local pod CIDR
// (or back to the node) leave through WritePackets.
type tunEndpoint struct {
	ipLink
	dev tun.Device
	// offload is dev's offload interface, nil when it has none
	// (offload.go).
	offload tun.OffloadDevice
}

var _ stack.LinkEndpoint = (*tunEndpoint)(nil)

// WritePackets writes each packet to the node kernel through the TUN.
func (e *tunEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		if !pkt.NetworkPacketInfo.IsForwardedPacket {
			finishChecksum(v.AsSlice())
		}
		if e.send(v.AsSlice()) {
			n++
		}
		v.Release()
	}
	return n, nil
}

// send writes one packet to the node kernel, and counts it.
func (e *tunEndpoint) send(b []byte) bool {
	e.tap.see(DirOut, b)
	if _, err := e.dev.Write(b); err != nil {
		e.drops.add(DropTxError)
		return false
	}
	e.counters.txPackets.Add(1)
	e.counters.txBytes.Add(uint64(len(b)))
	return true
}

// readLoop reads packets from the node kernel until the device is closed.
// It is run by Router.Run, which owns it.
func (e *tunEndpoint) readLoop() error {
	// Room for any IP packet, so an oversize one is seen whole and counted.
	buf := make([]byte, maxDatagram)
	if e.offload != nil {
		return e.readLoopOffload(e.offload, buf)
	}
	for {
		n, err := e.dev.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
		e.receive(buf[:n])
	}
}

func (e *tunEndpoint) receive(b []byte) {
	e.tap.see(DirIn, b)
	info, ok := e.parse(b)
	if !ok || !e.admitFamily(info) {
		return
	}
	b = b[:info.length]
	e.counters.rxPackets.Add(1)
	e.counters.rxBytes.Add(uint64(len(b)))
	if h := e.hook.get(); h != nil {
		if !e.runHook(h, b) {
			return
		}
		info.dst = ipDst(b)
	}
	e.inject(info, b)
}

// runHook shows packet b from the node kernel to h, writes h's reply back
// to the kernel, and reports whether b passes.
func (e *tunEndpoint) runHook(h Hook, b []byte) bool {
	pass, reply := h.Ingress(true, b)
	if reply != nil {
		e.tap.see(DirOut, reply)
		if _, err := e.dev.Write(reply); err != nil {
			e.drops.add(DropTxError)
		}
	}
	return pass
}
