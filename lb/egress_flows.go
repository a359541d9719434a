package lb

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/icmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/vrouter/vrouter/router/packet"
)

// --- UDP ---

// egressUDP is one egress UDP flow: the pod's side, an endpoint of the
// egress stack connected to the pod (ep), and a kernel socket connected
// to the destination (hc). Two goroutines relay it, one each way; the
// flow ends after the UDP timeout without a datagram, when either side
// fails (an ICMP error from the destination, passed on to the pod), and
// when Run stops.
type egressUDP struct {
	e        *Egress
	pod, dst netip.AddrPort
	ep       tcpip.Endpoint
	wq       *waiter.Queue
	hc       *net.UDPConn
	last     atomic.Int64
	closed   atomic.Bool
}

func (f *egressUDP) touch() { f.last.Store(time.Now().UnixNano()) }

// handleUDP is the egress stack's UDP forwarder handler, for a datagram
// no flow claims: it opens the flow, or counts why not and drops it. It
// runs on the packet path, so it only opens sockets and starts the
// flow's goroutines.
func (e *Egress) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	pod := netip.AddrPortFrom(packet.NetipAddr(id.RemoteAddress), id.RemotePort)
	dst := netip.AddrPortFrom(packet.NetipAddr(id.LocalAddress), id.LocalPort)
	st := &e.stats.protos[EgressUDP]
	if !e.open.Load() {
		return true
	}
	if !e.limits[EgressUDP].Acquire(pod.Addr()) {
		st.refusedCap.Add(1)
		return true
	}
	hc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		e.limits[EgressUDP].Release(pod.Addr())
		if code, ok := unreachableCode(err); ok {
			st.refusedUnreachable.Add(1)
			e.unreachable(EgressUDP, pod, dst, 0, code)
		} else {
			st.dialFailures.Add(1)
		}
		e.log.Debug("egress udp socket failed", zap.Stringer("pod", pod), zap.Stringer("dst", dst), zap.Error(err))
		return true
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq) // takes this first datagram
	if terr != nil {
		hc.Close()
		e.limits[EgressUDP].Release(pod.Addr())
		return true
	}
	f := &egressUDP{e: e, pod: pod, dst: dst, ep: ep, wq: &wq, hc: hc}
	f.touch()
	e.mu.Lock()
	if e.stopping || e.ctx == nil {
		e.mu.Unlock()
		ep.Close()
		hc.Close()
		e.limits[EgressUDP].Release(pod.Addr())
		return true
	}
	e.udpFlows[f] = struct{}{}
	e.peaks[EgressUDP].grew(len(e.udpFlows))
	e.wg.Add(2)
	e.mu.Unlock()
	st.flows.Add(1)
	st.active.Add(1)
	e.log.Debug("egress udp", zap.Stringer("pod", pod), zap.Stringer("dst", dst), zap.Stringer("local", hc.LocalAddr()))
	go func() {
		defer e.wg.Done()
		f.fromPod()
	}()
	go func() {
		defer e.wg.Done()
		f.fromDst()
	}()
	return true
}

// fromPod sends the pod's datagrams to the destination. A buffer is
// taken only while a datagram is ready.
func (f *egressUDP) fromPod() {
	defer f.close()
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	f.wq.EventRegister(&entry)
	defer f.wq.EventUnregister(&entry)
	for {
		b := datagramBufs.Get().(*[maxDatagram]byte)
		w := tcpip.SliceWriter(b[:])
		res, err := f.ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := err.(*tcpip.ErrWouldBlock); ok {
			datagramBufs.Put(b)
			<-ready
			continue
		}
		if err != nil {
			datagramBufs.Put(b)
			return
		}
		f.touch()
		_, werr := f.hc.Write(b[:res.Count])
		datagramBufs.Put(b)
		if werr != nil && !pathMTUError(werr) {
			f.failed(werr)
			return
		}
	}
}

// fromDst sends the destination's datagrams to the pod.
func (f *egressUDP) fromDst() {
	defer f.close()
	rd := newDatagramReader(f.hc)
	defer rd.close()
	for {
		b, err := rd.read()
		if pathMTUError(err) {
			continue
		}
		if err != nil {
			f.failed(err)
			return
		}
		f.touch()
		var r bytesReader
		r.b = b
		if _, werr := f.ep.Write(&r, tcpip.WriteOptions{}); werr != nil {
			return
		}
	}
}

// failed passes an ICMP error the kernel socket reported on to the pod.
func (f *egressUDP) failed(err error) {
	if f.closed.Load() {
		return
	}
	if code, ok := unreachableCode(err); ok {
		f.e.unreachable(EgressUDP, f.pod, f.dst, 0, code)
	}
}

// pathMTUError reports whether err is a connected UDP socket's report
// of a "fragmentation needed" from the path: the kernel has learned the
// path MTU and fragments the next datagrams to it, so the flow goes on
// (the datagram that met it is lost, as it would be through a NAT).
func pathMTUError(err error) bool { return errors.Is(err, syscall.EMSGSIZE) }

// close ends the flow once and reports whether this call did.
func (f *egressUDP) close() bool {
	if !f.closed.CompareAndSwap(false, true) {
		return false
	}
	f.ep.Close()
	f.hc.Close()
	e := f.e
	e.mu.Lock()
	delete(e.udpFlows, f)
	if e.peaks[EgressUDP].shrink(len(e.udpFlows)) {
		e.udpFlows = rebuilt(e.udpFlows)
	}
	e.mu.Unlock()
	e.limits[EgressUDP].Release(f.pod.Addr())
	e.stats.protos[EgressUDP].active.Add(-1)
	return true
}

// bytesReader is a tcpip.Payloader over a byte slice.
type bytesReader struct{ b []byte }

func (r *bytesReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *bytesReader) Len() int { return len(r.b) }

// --- ICMP echo ---

// pingKey names one ping flow: a pod's echo identifier towards one
// destination.
type pingKey struct {
	pod, dst netip.Addr
	id       uint16
}

// egressPing is one ping flow: the pod's echo requests are sent from a
// ping socket of the node's (which picks its own identifier), and the
// replies go back to the pod with the pod's identifier.
type egressPing struct {
	key    pingKey
	conn   net.PacketConn
	last   atomic.Int64
	closed atomic.Bool
}

func (f *egressPing) touch() { f.last.Store(time.Now().UnixNano()) }

// listenPing opens an unprivileged ping socket (SOCK_DGRAM,
// IPPROTO_ICMP), which the kernel allows to the groups in
// net.ipv4.ping_group_range.
func listenPing(v4 bool) (net.PacketConn, error) {
	if v4 {
		return icmp.ListenPacket("udp4", "0.0.0.0")
	}
	return icmp.ListenPacket("udp6", "::")
}

// ping sends the echo request b, decoded in p, from its flow's ping
// socket, opening the flow first if needed.
func (e *Egress) ping(p *packet.Parsed, b []byte) {
	msg := b[p.L4:p.Length]
	if len(msg) < header.ICMPv4MinimumSize {
		e.stats.unsupported.Add(1)
		return
	}
	k := pingKey{pod: p.Src, dst: p.Dst, id: binary.BigEndian.Uint16(msg[4:6])}
	e.mu.Lock()
	f := e.pings[k]
	e.mu.Unlock()
	if f == nil {
		if f = e.openPing(k); f == nil {
			return
		}
	}
	f.touch()
	if _, err := f.conn.WriteTo(msg, &net.UDPAddr{IP: k.dst.AsSlice()}); err != nil {
		e.log.Debug("egress ping send failed", zap.Stringer("pod", k.pod), zap.Stringer("dst", k.dst), zap.Error(err))
	}
}

// openPing opens k's flow, or counts why it cannot and returns nil.
func (e *Egress) openPing(k pingKey) *egressPing {
	st := &e.stats.protos[EgressICMP]
	if !e.open.Load() {
		return nil
	}
	if !e.limits[EgressICMP].Acquire(k.pod) {
		st.refusedCap.Add(1)
		return nil
	}
	conn, err := e.opts.ListenPing(true)
	if err != nil {
		e.limits[EgressICMP].Release(k.pod)
		e.stats.pingUnavailable.Add(1)
		e.pingWarn.Do(func() {
			e.log.Warn("pods' pings to outside addresses are dropped: this node allows no unprivileged ping socket (widen sysctl net.ipv4.ping_group_range to vrouter's group); counted in the egress metrics",
				zap.Error(err))
		})
		return nil
	}
	f := &egressPing{key: k, conn: conn}
	f.touch()
	e.mu.Lock()
	if e.stopping || e.ctx == nil {
		e.mu.Unlock()
		conn.Close()
		e.limits[EgressICMP].Release(k.pod)
		return nil
	}
	if g := e.pings[k]; g != nil {
		// Opened by another reader meanwhile.
		e.mu.Unlock()
		conn.Close()
		e.limits[EgressICMP].Release(k.pod)
		return g
	}
	e.pings[k] = f
	e.peaks[EgressICMP].grew(len(e.pings))
	e.wg.Add(1)
	e.mu.Unlock()
	st.flows.Add(1)
	st.active.Add(1)
	e.log.Debug("egress ping", zap.Stringer("pod", k.pod), zap.Stringer("dst", k.dst), zap.Uint16("id", k.id))
	go func() {
		defer e.wg.Done()
		e.pingReplies(f)
	}()
	return f
}

// pingReplies sends the pod the echo replies f's socket reads, until it
// is closed.
func (e *Egress) pingReplies(f *egressPing) {
	defer e.closePing(f)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := f.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || n < header.ICMPv4MinimumSize {
			continue
		}
		src, _ := netip.AddrFromSlice(ua.IP)
		if src.Unmap() != f.key.dst || buf[0] != byte(header.ICMPv4EchoReply) {
			continue
		}
		f.touch()
		e.opts.Send(echoReply(f.key, buf[:n]))
	}
}

// echoReply builds the IPv4 packet that carries echo reply msg (as a
// ping socket reads it) to k's pod, with the pod's identifier.
func echoReply(k pingKey, msg []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(msg))
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: packet.TCPIPAddr(k.dst), DstAddr: packet.TCPIPAddr(k.pod),
	})
	h.SetChecksum(^h.CalculateChecksum())
	ic := header.ICMPv4(b[header.IPv4MinimumSize:])
	copy(ic, msg)
	ic.SetIdent(k.id)
	ic.SetChecksum(0)
	ic.SetChecksum(header.ICMPv4Checksum(ic, 0))
	return b
}

// closePing ends f once and reports whether this call did.
func (e *Egress) closePing(f *egressPing) bool {
	if !f.closed.CompareAndSwap(false, true) {
		return false
	}
	f.conn.Close()
	e.mu.Lock()
	if e.pings[f.key] == f {
		delete(e.pings, f.key)
		if e.peaks[EgressICMP].shrink(len(e.pings)) {
			e.pings = rebuilt(e.pings)
		}
	}
	e.mu.Unlock()
	e.limits[EgressICMP].Release(f.key.pod)
	e.stats.protos[EgressICMP].active.Add(-1)
	return true
}
