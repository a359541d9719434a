package router

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/tun"
)

// memTUN is an in-memory tun.Device: the test plays the node kernel.
type memTUN struct {
	name    string
	fromK   chan []byte // kernel → router
	toK     chan []byte // router → kernel
	done    chan struct{}
	closeMu sync.Once
}

func newMemTUN(name string) *memTUN {
	return &memTUN{name: name, fromK: make(chan []byte, 256), toK: make(chan []byte, 256), done: make(chan struct{})}
}

func (m *memTUN) Name() string { return m.name }

// Read implements tun.Device: one packet per call.
func (m *memTUN) Read(bufs [][]byte, sizes []int, offs []tun.Offload) (int, error) {
	select {
	case <-m.done:
		return 0, fmt.Errorf("memTUN read: %w", os.ErrClosed)
	case b := <-m.fromK:
		sizes[0], offs[0] = copy(bufs[0], b), tun.Offload{}
		return 1, nil
	}
}

// Write implements tun.Device for plain packets.
func (m *memTUN) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	for i, b := range bufs {
		if offs != nil && offs[i] != (tun.Offload{}) {
			return i, fmt.Errorf("memTUN write: %w: %+v", tun.ErrBadOffload, offs[i])
		}
		if err := m.writePlain(b); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (m *memTUN) writePlain(p []byte) error {
	select {
	case <-m.done:
		return fmt.Errorf("memTUN write: %w", os.ErrClosed)
	default:
	}
	select {
	case <-m.done:
		return fmt.Errorf("memTUN write: %w", os.ErrClosed)
	case m.toK <- append([]byte(nil), p...):
		return nil
	default:
		return fmt.Errorf("memTUN write: queue full")
	}
}

func (m *memTUN) BatchSize() int   { return 1 }
func (m *memTUN) Offload() bool    { return false }
func (m *memTUN) UDPOffload() bool { return false }

func (m *memTUN) Close() error {
	m.closeMu.Do(func() { close(m.done) })
	return nil
}

// send plays the kernel sending b into the TUN.
func (m *memTUN) send(b []byte) { m.fromK <- b }

// recv waits for the router to write a packet to the kernel.
func (m *memTUN) recv(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-m.toK:
		return b
	case <-time.After(5 * time.Second):
		t.Fatalf("TUN %s: no packet to the kernel within 5s", m.name)
		return nil
	}
}

// expectNone asserts that nothing reaches the kernel for a while.
func (m *memTUN) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case b := <-m.toK:
		t.Fatalf("TUN %s: unexpected packet to the kernel: %x", m.name, b)
	case <-time.After(d):
	}
}

// node is one router in an in-memory cluster.
type node struct {
	name     string
	r        *Router
	tun      *memTUN
	underlay netip.AddrPort
	podCIDR  netip.Prefix
	done     chan error
	cancel   context.CancelFunc
}

var routerAddr4 = netip.MustParseAddr("169.254.244.1")

func startNode(t testing.TB, nw *overlaytest.Network, name, underlay, podCIDR string, opts Options, peers ...Peer) *node {
	t.Helper()
	n := &node{
		name:     name,
		tun:      newMemTUN("vr0"),
		underlay: netip.MustParseAddrPort(underlay),
		podCIDR:  netip.MustParsePrefix(podCIDR),
		done:     make(chan error, 1),
	}
	conn, err := nw.Listen(n.underlay)
	if err != nil {
		t.Fatal(err)
	}
	opts.TUN, opts.Overlay = n.tun, conn
	r, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.r = r
	if err := r.Set(n.config(peers...)); err != nil {
		t.Fatalf("Set: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- r.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

func (n *node) config(peers ...Peer) Config {
	addrs := []netip.Addr{routerAddr4}
	if n.podCIDR.Addr().Is6() {
		addrs = []netip.Addr{netip.MustParseAddr("fd69:7672::1")}
	}
	return Config{PodCIDRs: []netip.Prefix{n.podCIDR}, Addresses: addrs, NodeAddresses: []netip.Addr{n.underlay.Addr()}, Peers: peers}
}

func (n *node) asPeer() Peer {
	return Peer{Name: n.name, Endpoint: n.underlay, PodCIDRs: []netip.Prefix{n.podCIDR}}
}

func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	<-n.done
}

// ipv4Packet builds an IPv4 packet carrying a UDP datagram.
func udp4(src, dst netip.Addr, ttl uint8, df bool, payload []byte) []byte {
	total := header.IPv4MinimumSize + header.UDPMinimumSize + len(payload)
	b := make([]byte, total)
	ip := header.IPv4(b)
	var flags uint8
	if df {
		flags = header.IPv4FlagDontFragment
	}
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		TTL:         ttl,
		Flags:       flags,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     packet.TCPIPAddr(src),
		DstAddr:     packet.TCPIPAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 7, Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, packet.TCPIPAddr(src), packet.TCPIPAddr(dst), uint16(len(u)))
	xsum = checksum.Checksum(payload, xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	return b
}

// udp6 builds an IPv6 packet carrying a UDP datagram.
func udp6(src, dst netip.Addr, hops uint8, payload []byte) []byte {
	ulen := header.UDPMinimumSize + len(payload)
	b := make([]byte, header.IPv6MinimumSize+ulen)
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(ulen),
		TransportProtocol: header.UDPProtocolNumber,
		HopLimit:          hops,
		SrcAddr:           packet.TCPIPAddr(src),
		DstAddr:           packet.TCPIPAddr(dst),
	})
	u := header.UDP(b[header.IPv6MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 7, Length: uint16(ulen)})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, packet.TCPIPAddr(src), packet.TCPIPAddr(dst), uint16(ulen))
	xsum = checksum.Checksum(payload, xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	return b
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ Conn = (*overlaytest.Conn)(nil)
