package router

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/internal/gso"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// offloadTUN is an in-memory tun.Device with Offload: the test plays a
// node kernel that sends and takes TSO super-packets (fromK, toK) as well
// as plain packets (memTUN's).
type offloadTUN struct {
	*memTUN
	fromK chan offloaded
	toK   chan offloaded
	// noUSO makes it a TUN on a kernel before 6.2: TCP super-packets
	// only.
	noUSO bool
	// ordered sends plain packets to toK too, so that a test sees every
	// write in order.
	ordered bool
}

type offloaded struct {
	pkt []byte
	o   tun.Offload
}

var _ tun.Device = (*offloadTUN)(nil)

func newOffloadTUN() *offloadTUN {
	return &offloadTUN{memTUN: newMemTUN("vr0"), fromK: make(chan offloaded, 256), toK: make(chan offloaded, 256)}
}

func (m *offloadTUN) Offload() bool    { return true }
func (m *offloadTUN) UDPOffload() bool { return !m.noUSO }

func (m *offloadTUN) Read(bufs [][]byte, sizes []int, offs []tun.Offload) (int, error) {
	select {
	case <-m.done:
		return 0, fmt.Errorf("offloadTUN read: %w", os.ErrClosed)
	case b := <-m.memTUN.fromK:
		sizes[0], offs[0] = copy(bufs[0], b), tun.Offload{}
	case x := <-m.fromK:
		sizes[0], offs[0] = copy(bufs[0], x.pkt), x.o
	}
	return 1, nil
}

// Write hands plain packets to memTUN's queue and the others to toK.
func (m *offloadTUN) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	for i, b := range bufs {
		if !m.ordered && (offs == nil || offs[i] == (tun.Offload{})) {
			if err := m.writePlain(b); err != nil {
				return i, err
			}
			continue
		}
		var o tun.Offload
		if offs != nil {
			o = offs[i]
		}
		select {
		case m.toK <- offloaded{bytes.Clone(b), o}:
		default:
			return i, fmt.Errorf("offloadTUN write: queue full")
		}
	}
	return len(bufs), nil
}

// segNet is an in-memory underlay whose Conns carry runs: a WriteBatch
// run arrives as one ReadBatch message, as UDP GSO meets UDP GRO on Linux.
// corrupt, when set, may alter a datagram in flight.
type segNet struct {
	mu      sync.Mutex
	conns   map[netip.AddrPort]*segConn
	corrupt func(i int, d []byte)
}

type segRun struct {
	b       []byte
	segSize int
	from    netip.AddrPort
}

// segConn returns one run per ReadBatch.
type segConn struct {
	n    *segNet
	addr netip.AddrPort
	in   chan segRun
	done chan struct{}
	once sync.Once
}

var _ Conn = (*segConn)(nil)

func (n *segNet) listen(addr string) *segConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conns == nil {
		n.conns = map[netip.AddrPort]*segConn{}
	}
	c := &segConn{n: n, addr: netip.MustParseAddrPort(addr), in: make(chan segRun, 256), done: make(chan struct{})}
	n.conns[c.addr] = c
	return c
}

func (c *segConn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	c.n.mu.Lock()
	dst, corrupt := c.n.conns[addr], c.n.corrupt
	c.n.mu.Unlock()
	if dst == nil {
		return nil // nobody listens: lost, as UDP is
	}
	b = bytes.Clone(b)
	if corrupt != nil {
		for i, off := 0, 0; off < len(b); i, off = i+1, off+segSize {
			corrupt(i, b[off:min(off+segSize, len(b))])
		}
	}
	select {
	case dst.in <- segRun{b, min(segSize, len(b)), c.addr}:
	default:
	}
	return nil
}

func (c *segConn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	select {
	case <-c.done:
		return 0, fmt.Errorf("segConn: %w", net.ErrClosed)
	case r := <-c.in:
		sizes[0], segSizes[0], from[0] = copy(bufs[0], r.b), r.segSize, r.from
		return 1, nil
	}
}

func (c *segConn) LocalAddr() netip.AddrPort { return c.addr }

func (c *segConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// offloadNode is a router on an offloadTUN and a segConn.
type offloadNode struct {
	r   *Router
	tun *offloadTUN
}

// startOffloadNode starts a dual-stack router: podCIDR and its IPv6
// counterpart v6CIDR, peer with its own.
func startOffloadNode(t *testing.T, nw *segNet, underlay, podCIDR, v6CIDR string, opts Options, peer Peer) *offloadNode {
	t.Helper()
	return startOffloadNodeOn(t, nw, newOffloadTUN(), underlay, podCIDR, v6CIDR, opts, peer)
}

// startOffloadNodeOn is startOffloadNode on the TUN dev.
func startOffloadNodeOn(t *testing.T, nw *segNet, dev *offloadTUN, underlay, podCIDR, v6CIDR string, opts Options, peer Peer) *offloadNode {
	t.Helper()
	n := &offloadNode{tun: dev}
	opts.TUN, opts.Overlay = n.tun, nw.listen(underlay)
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n.r = r
	cfg := Config{
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix(podCIDR), netip.MustParsePrefix(v6CIDR)},
		Addresses: []netip.Addr{routerAddr4, addr("fd69:7672::1")},
		Peers:     []Peer{peer},
	}
	if err := r.Set(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

func offloadPair(t *testing.T, opts Options) (*segNet, *offloadNode, *offloadNode) {
	nw := &segNet{}
	pfx := netip.MustParsePrefix
	a := startOffloadNode(t, nw, "192.168.31.201:8285", "10.244.0.0/24", "fd00:10:244::/64", opts,
		Peer{Name: "b", Endpoint: netip.MustParseAddrPort("192.168.31.202:8285"), PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")}})
	b := startOffloadNode(t, nw, "192.168.31.202:8285", "10.244.1.0/24", "fd00:10:244:1::/64", opts,
		Peer{Name: "a", Endpoint: netip.MustParseAddrPort("192.168.31.201:8285"), PodCIDRs: []netip.Prefix{pfx("10.244.0.0/24"), pfx("fd00:10:244::/64")}})
	return nw, a, b
}

// tsoPacket is what a kernel hands an offload TUN for a TCP stream: one
// IPv4 super-packet of payload, cut at mss, with a partial checksum.
func tsoPacket(t *testing.T, ttl uint8, payload []byte, mss int) offloaded {
	t.Helper()
	b := tcp4(addr("10.244.0.4"), addr("10.244.1.2"), ttl, header.TCPFlagAck|header.TCPFlagPsh, payload)
	start, off, err := gso.SetPartial(b)
	if err != nil {
		t.Fatal(err)
	}
	return offloaded{b, tun.Offload{NeedsCsum: true, GSOType: tun.GSOTCPv4, HdrLen: 40, GSOSize: uint16(mss), CsumStart: uint16(start), CsumOffset: uint16(off)}}
}

func streamPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i/251)
	}
	return p
}

// tcpPayload checks that b is a TCP/IPv4 packet with a valid checksum and
// returns its payload.
func tcpPayload(t *testing.T, b []byte) []byte {
	t.Helper()
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.TCPProtocolNumber) {
		t.Fatalf("not a TCP/IPv4 packet: %x", b[:min(len(b), 40)])
	}
	tcp := header.TCP(ip.Payload())
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	if checksum.Checksum(tcp, xsum) != 0xffff {
		t.Fatalf("TCP checksum invalid in packet of %d bytes", len(b))
	}
	return tcp.Payload()
}

// recvTSO waits for the router to write a TSO packet to m's kernel.
func recvTSO(t *testing.T, m *offloadTUN) offloaded {
	t.Helper()
	select {
	case got := <-m.toK:
		return got
	case <-time.After(5 * time.Second):
		t.Fatal("the kernel got no TSO packet within 5s")
		return offloaded{}
	}
}

// TestOffloadStreamEndToEnd sends one 61,600-byte TSO packet into a's TUN
// and expects it at b's TUN as one TSO packet: cut into 44 datagrams on
// the overlay, coalesced back on b, TTL lowered by each router, payload
// and checksum intact.
func TestOffloadStreamEndToEnd(t *testing.T) {
	_, a, b := offloadPair(t, Options{})
	payload := streamPayload(44 * 1400)
	a.tun.fromK <- tsoPacket(t, 64, payload, 1400)
	got := recvTSO(t, b.tun)
	if got.o.GSOType != tun.GSOTCPv4 || got.o.GSOSize != 1400 || !got.o.NeedsCsum || got.o.CsumStart != 20 || got.o.CsumOffset != 16 || got.o.HdrLen != 40 {
		t.Errorf("offload header %+v, want TCPv4, GSOSize 1400, NeedsCsum, CsumStart 20, CsumOffset 16, HdrLen 40", got.o)
	}
	if ttl := header.IPv4(got.pkt).TTL(); ttl != 62 {
		t.Errorf("TTL %d, want 62", ttl)
	}
	if err := gso.Complete(got.pkt, int(got.o.CsumStart), int(got.o.CsumOffset)); err != nil {
		t.Fatal(err)
	}
	if p := tcpPayload(t, got.pkt); !bytes.Equal(p, payload) {
		t.Errorf("payload of %d bytes differs from the %d sent", len(p), len(payload))
	}
	// Counters move after the write returns: give them a moment.
	var sa, sb Stats
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		sa, sb = a.r.Stats(), b.r.Stats()
		if sa.TUN.RxPackets == 44 && sa.Overlay.TxPackets == 44 && sb.Overlay.RxPackets == 44 && sb.TUN.TxPackets == 44 {
			break
		}
	}
	if sa.TUN.RxPackets != 44 || sa.Overlay.TxPackets != 44 {
		t.Errorf("a counted %d packets in from the TUN and %d out to the overlay, want 44 and 44 (segments)", sa.TUN.RxPackets, sa.Overlay.TxPackets)
	}
	if sb.Overlay.RxPackets != 44 || sb.TUN.TxPackets != 44 {
		t.Errorf("b counted %d packets in from the overlay and %d out to the TUN, want 44 and 44", sb.Overlay.RxPackets, sb.TUN.TxPackets)
	}
}

// TestOffloadNeverRepairsCorruption corrupts one datagram of a run on the
// underlay: b must coalesce around it and pass it on with its bad
// checksum, for the receiving TCP to drop, never fold it into a
// super-packet whose checksum the kernel would then compute afresh.
func TestOffloadNeverRepairsCorruption(t *testing.T) {
	nw, a, b := offloadPair(t, Options{})
	nw.corrupt = func(i int, d []byte) {
		if i == 10 {
			d[len(d)-1] ^= 0x40
		}
	}
	payload := streamPayload(44 * 1400)
	a.tun.fromK <- tsoPacket(t, 64, payload, 1400)

	var supers []offloaded
	var plain [][]byte
	deadline := time.After(5 * time.Second)
	for len(supers) < 2 || len(plain) < 1 {
		select {
		case x := <-b.tun.toK:
			supers = append(supers, x)
		case p := <-b.tun.memTUN.toK:
			plain = append(plain, p)
		case <-deadline:
			t.Fatalf("b's kernel got %d TSO packets and %d plain ones, want 2 and 1", len(supers), len(plain))
		}
	}
	if n := len(supers[0].pkt) - 40; n != 10*1400 {
		t.Errorf("first TSO packet carries %d bytes, want the 10 segments before the corrupt one (14000)", n)
	}
	if n := len(supers[1].pkt) - 40; n != 33*1400 {
		t.Errorf("second TSO packet carries %d bytes, want the 33 segments after the corrupt one (46200)", n)
	}
	ip := header.IPv4(plain[0])
	tcp := header.TCP(ip.Payload())
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	if checksum.Checksum(tcp, xsum) == 0xffff {
		t.Error("the corrupt segment reached the kernel with a valid checksum: the router repaired it")
	}
}

// TestOffloadWithoutFastPath: with NoFastPath the stack forwards a TSO
// packet's segments one by one, and the far kernel gets 44 plain packets
// whose payloads make up the stream.
func TestOffloadWithoutFastPath(t *testing.T) {
	_, a, b := offloadPair(t, Options{NoFastPath: true})
	payload := streamPayload(44 * 1400)
	a.tun.fromK <- tsoPacket(t, 64, payload, 1400)
	var got []byte
	for i := range 44 {
		select {
		case p := <-b.tun.memTUN.toK:
			if ttl := header.IPv4(p).TTL(); ttl != 62 {
				t.Fatalf("segment %d: TTL %d, want 62", i, ttl)
			}
			got = append(got, tcpPayload(t, p)...)
		case <-time.After(5 * time.Second):
			t.Fatalf("b's kernel got %d of 44 segments", i)
		}
	}
	if !bytes.Equal(got, payload) {
		t.Error("the segments' payloads do not make up the stream")
	}
}

// TestOffloadTTLExpiry: a TSO packet with TTL 1 is cut into segments and
// each is answered by the stack with "time exceeded"; nothing crosses.
func TestOffloadTTLExpiry(t *testing.T) {
	_, a, b := offloadPair(t, Options{})
	a.tun.fromK <- tsoPacket(t, 1, streamPayload(4*1400), 1400)
	for range 4 {
		p := a.tun.memTUN.recv(t)
		ip := header.IPv4(p)
		if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || header.ICMPv4(ip.Payload()).Type() != header.ICMPv4TimeExceeded {
			t.Fatalf("got %x, want ICMP time exceeded", p[:min(len(p), 28)])
		}
	}
	select {
	case <-b.tun.toK:
		t.Error("a TSO packet with TTL 1 crossed")
	case p := <-b.tun.memTUN.toK:
		t.Errorf("a segment of a TSO packet with TTL 1 crossed: %x", p[:min(len(p), 28)])
	case <-time.After(100 * time.Millisecond):
	}
}

// tso6Packet is tsoPacket for IPv6: fd00:10:244::4 → fd00:10:244:1::2.
func tso6Packet(t *testing.T, hops uint8, payload []byte, mss int) offloaded {
	t.Helper()
	src, dst := addr("fd00:10:244::4"), addr("fd00:10:244:1::2")
	b := make([]byte, header.IPv6MinimumSize+header.TCPMinimumSize+len(payload))
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: header.TCPProtocolNumber,
		HopLimit: hops, SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	tcp := header.TCP(b[header.IPv6MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1, AckNum: 2, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 100})
	copy(tcp.Payload(), payload)
	start, off, err := gso.SetPartial(b)
	if err != nil {
		t.Fatal(err)
	}
	return offloaded{b, tun.Offload{NeedsCsum: true, GSOType: tun.GSOTCPv6, HdrLen: 60, GSOSize: uint16(mss), CsumStart: uint16(start), CsumOffset: uint16(off)}}
}

// TestOffloadStreamIPv6 is TestOffloadStreamEndToEnd for IPv6 pods over
// the IPv4 underlay.
func TestOffloadStreamIPv6(t *testing.T) {
	_, a, b := offloadPair(t, Options{})
	payload := streamPayload(40 * 1380)
	a.tun.fromK <- tso6Packet(t, 64, payload, 1380)
	got := recvTSO(t, b.tun)
	if got.o.GSOType != tun.GSOTCPv6 || got.o.GSOSize != 1380 || got.o.CsumStart != 40 || got.o.HdrLen != 60 {
		t.Errorf("offload header %+v, want TCPv6, GSOSize 1380, CsumStart 40, HdrLen 60", got.o)
	}
	ip := header.IPv6(got.pkt)
	if ip.HopLimit() != 62 {
		t.Errorf("hop limit %d, want 62", ip.HopLimit())
	}
	if err := gso.Complete(got.pkt, int(got.o.CsumStart), int(got.o.CsumOffset)); err != nil {
		t.Fatal(err)
	}
	tcp := header.TCP(ip.Payload())
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	if checksum.Checksum(tcp, xsum) != 0xffff {
		t.Error("TCP checksum invalid after completing it")
	}
	if !bytes.Equal(tcp.Payload(), payload) {
		t.Errorf("payload of %d bytes differs from the %d sent", len(tcp.Payload()), len(payload))
	}
}
