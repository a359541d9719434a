package router

import (
	"errors"
	"net/netip"
	"os"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/tun"
)

// tunEndpoint is the stack.LinkEndpoint of the TUN NIC: packets from the
// node kernel come in through readLoop; packets routed to a local pod CIDR
// (or back to the node) leave through WritePackets.
type tunEndpoint struct {
	ipLink
	dev       tun.Device
	drops     *drops
	hook      *hookSlot
	counters  linkCounters
	isLocal   func(netip.Addr) bool
	hasFamily func(tcpip.NetworkProtocolNumber) bool
	tap       tapSlot
}

var _ stack.LinkEndpoint = (*tunEndpoint)(nil)

// WritePackets writes each packet to the node kernel through the TUN.
func (e *tunEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		size := v.Size()
		if !pkt.NetworkPacketInfo.IsForwardedPacket {
			finishChecksum(v.AsSlice())
		}
		e.tap.see(DirOut, v.AsSlice())
		_, err := e.dev.Write(v.AsSlice())
		v.Release()
		if err != nil {
			e.drops.add(DropTxError)
			continue
		}
		e.counters.txPackets.Add(1)
		e.counters.txBytes.Add(uint64(size))
		n++
	}
	return n, nil
}

// readLoop reads packets from the node kernel until the device is closed.
// It is run by Router.Run, which owns it.
func (e *tunEndpoint) readLoop() error {
	// One byte past the MTU so an oversize packet is seen as such.
	buf := make([]byte, maxDatagram)
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
	info, reason, ok := parseIP(b)
	if !ok {
		e.drops.add(reason)
		return
	}
	if info.length > int(e.mtu.Load()) {
		e.drops.add(DropOversize)
		return
	}
	if !e.hasFamily(info.proto) {
		e.drops.add(DropFamily)
		return
	}
	b = b[:info.length]
	e.counters.rxPackets.Add(1)
	e.counters.rxBytes.Add(uint64(len(b)))
	if h := e.hook.get(); h != nil {
		pass, reply := h.Ingress(true, b)
		if reply != nil {
			e.tap.see(DirOut, reply)
			if _, err := e.dev.Write(reply); err != nil {
				e.drops.add(DropTxError)
			}
		}
		if !pass {
			return
		}
		info.dst = ipDst(b)
	}
	if info.proto == ipv4.ProtocolNumber && !e.isLocal(info.dst) {
		expireTTL(b)
	}
	e.dispatcher.deliver(info.proto, b)
}
