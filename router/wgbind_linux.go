package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// udpBind is the encrypted overlay's underlay socket (NewWireGuardBind):
// the plain overlay's own UDP sockets (ListenUDP; recvmmsg with UDP_GRO,
// sendmmsg with UDP_SEGMENT), one per address family on the listen port,
// as conn.StdNetBind opens them. It differs from StdNetBind where the
// profile of an encrypted stream found it costly: Send hands the sealed
// messages to the kernel in place (udpConn.WriteDatagrams) instead of
// copying each run of them into one buffer first, and a received datagram
// takes its sender's endpoint from a small cache instead of allocating
// one. It keeps no sticky source address (the kernel picks it per
// datagram, as for the plain overlay).
type udpBind struct {
	// mu guards conns, which Open fills and Close empties; Send reads
	// them under it.
	mu    sync.RWMutex
	conns [2]*udpConn // IPv4, IPv6 (nil when the host has none)

	eps endpoints
}

var _ conn.Bind = (*udpBind)(nil)

// NewWireGuardBind returns the socket for wireguard.Options.Bind: on
// Linux the overlay's own (udpBind), elsewhere wireguard-go's
// conn.StdNetBind.
func NewWireGuardBind() conn.Bind { return &udpBind{} }

// Open listens on port (any if 0) on every IPv4 address and, where the
// host has IPv6, on every IPv6 address, on the same port.
func (b *udpBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns[0] != nil || b.conns[1] != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	// A random port free for IPv4 may be taken for IPv6: try another.
	for tries := 0; ; tries++ {
		c4, c6, err := listenBoth(port)
		if err == nil {
			b.conns = [2]*udpConn{c4, c6}
			break
		}
		if port != 0 || !errors.Is(err, syscall.EADDRINUSE) || tries >= 100 {
			return nil, 0, err
		}
	}
	var fns []conn.ReceiveFunc
	for _, c := range b.conns {
		if c != nil {
			fns = append(fns, b.receiver(c))
		}
	}
	return fns, b.conns[0].LocalAddr().Port(), nil
}

// listenBoth opens the IPv4 socket on port and the IPv6 one on the port
// that got; a host without IPv6 has no IPv6 socket.
func listenBoth(port uint16) (c4, c6 *udpConn, err error) {
	c, err := ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port))
	if err != nil {
		return nil, nil, err
	}
	c4 = c.(*udpConn) // ListenUDP's on Linux
	c, err = ListenUDP(netip.AddrPortFrom(netip.IPv6Unspecified(), c4.LocalAddr().Port()))
	if errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) {
		return c4, nil, nil
	}
	if err != nil {
		_ = c4.Close()
		return nil, nil, err
	}
	return c4, c.(*udpConn), nil
}

// Close closes both sockets; the receive functions then return an error
// wrapping net.ErrClosed, and Open may open them again.
func (b *udpBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for i, c := range b.conns {
		if c != nil {
			errs = append(errs, c.Close())
			b.conns[i] = nil
		}
	}
	return errors.Join(errs...)
}

// SetMark sets SO_MARK on both sockets (wg's fwmark).
func (b *udpBind) SetMark(mark uint32) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, c := range b.conns {
		if c == nil {
			continue
		}
		var serr error
		if err := c.Fd(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %d: %w", mark, serr)
		}
	}
	return nil
}

// BatchSize is how many messages the device reads and sends at a time.
func (b *udpBind) BatchSize() int { return conn.IdealBatchSize }

// ParseEndpoint parses "ip:port".
func (b *udpBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return b.eps.get(ap), nil
}

// Send sends each of bufs as one datagram to ep, in one go
// (udpConn.WriteDatagrams).
func (b *udpBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	// The socket is taken under the lock and used without it: a send
	// that waits for the socket to drain never holds up Close, whose
	// closing the socket ends it.
	b.mu.RLock()
	c := b.conns[0]
	if e.ap.Addr().Is6() && !e.ap.Addr().Is4In6() {
		c = b.conns[1]
	}
	b.mu.RUnlock()
	if c == nil {
		return fmt.Errorf("send to %s: %w", e.ap, net.ErrClosed)
	}
	return c.WriteDatagrams(bufs, e.ap)
}

// maxGRODatagrams is the most datagrams the kernel coalesces into one
// UDP_GRO read (UDP_GRO_CNT_MAX).
const maxGRODatagrams = 64

// receiver is c's receive function for the device, called from one
// goroutine. It reads runs of datagrams (UDP_GRO) into the last of the
// device's buffers, at most one run per 64 buffers, and splits them into
// the buffers from the first on: a run's datagrams never reach a buffer
// still holding a run not yet split.
func (b *udpBind) receiver(c *udpConn) conn.ReceiveFunc {
	var (
		sizes, segs [MaxReadBatch]int
		from        [MaxReadBatch]netip.AddrPort
	)
	return func(packets [][]byte, psizes []int, eps []conn.Endpoint) (int, error) {
		k := max(1, min(MaxReadBatch, len(packets)/maxGRODatagrams))
		at := len(packets) - k
		n, err := c.ReadBatch(packets[at:], sizes[:k], segs[:k], from[:k])
		if err != nil {
			return 0, err
		}
		out := 0
		for i := range n {
			run := packets[at+i][:sizes[i]]
			seg := max(segs[i], 1)
			ep := b.eps.get(from[i])
			for off := 0; off < len(run); off += seg {
				if out > at+i {
					// Cannot happen while the kernel coalesces at
					// most maxGRODatagrams; never overwrite a run.
					return out, fmt.Errorf("a run of %d datagrams from %s does not fit the batch", (len(run)+seg-1)/seg, from[i])
				}
				end := min(off+seg, len(run))
				psizes[out] = copy(packets[out], run[off:end])
				eps[out] = ep
				out++
			}
		}
		return out, nil
	}
}

// endpoints caches one endpoint per sender, so that a datagram costs a
// map lookup, not an allocation. Spoofed senders cannot grow it without
// bound: it starts over at maxEndpoints.
type endpoints struct {
	mu sync.Mutex
	m  map[netip.AddrPort]*endpoint
}

const maxEndpoints = 1024

func (c *endpoints) get(ap netip.AddrPort) *endpoint {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[ap]; ok {
		return e
	}
	if c.m == nil || len(c.m) >= maxEndpoints {
		c.m = map[netip.AddrPort]*endpoint{}
	}
	b, _ := ap.MarshalBinary()
	e := &endpoint{ap: ap, bytes: b}
	c.m[ap] = e
	return e
}

// endpoint is a peer's address as the device keeps it.
type endpoint struct {
	ap    netip.AddrPort
	bytes []byte // DstToBytes, for the cookie MAC
}

var _ conn.Endpoint = (*endpoint)(nil)

func (e *endpoint) ClearSrc()           {}
func (e *endpoint) SrcToString() string { return "" }
func (e *endpoint) DstToString() string { return e.ap.String() }
func (e *endpoint) DstToBytes() []byte  { return e.bytes }
func (e *endpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *endpoint) SrcIP() netip.Addr   { return netip.Addr{} }
