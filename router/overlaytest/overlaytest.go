// Package overlaytest is an in-memory underlay for router tests: a Network
// of datagram sockets that implement router.Conn without touching the
// kernel, so whole routers run inside `go test` without privileges.
package overlaytest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// queueLen is how many datagrams a Conn buffers before it drops, like a
// full socket receive buffer.
const queueLen = 1024

type datagram struct {
	from netip.AddrPort
	b    []byte
}

// Network connects Conns by address. The zero value is not usable; call
// NewNetwork.
type Network struct {
	// mu guards conns.
	mu    sync.Mutex
	conns map[netip.AddrPort]*Conn
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{conns: make(map[netip.AddrPort]*Conn)}
}

// Listen binds a Conn to addr.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.conns[addr]; ok {
		return nil, fmt.Errorf("overlaytest: listen %s: address in use", addr)
	}
	c := &Conn{net: n, addr: addr, in: make(chan datagram, queueLen), done: make(chan struct{})}
	n.conns[addr] = c
	return c, nil
}

// Send delivers b to the Conn bound at to as if sent from from, which need
// not be bound: tests use it to play unknown or spoofing senders. It
// reports whether a Conn received it.
func (n *Network) Send(from, to netip.AddrPort, b []byte) bool {
	n.mu.Lock()
	c := n.conns[to]
	n.mu.Unlock()
	if c == nil {
		return false
	}
	d := datagram{from: from, b: append([]byte(nil), b...)}
	select {
	case <-c.done:
		return false
	case c.in <- d:
		return true
	default:
		return false
	}
}

// maxBatch is router.MaxReadBatch: the most datagrams one ReadBatch
// returns.
const maxBatch = 8

// Conn is an in-memory router.Conn (router checks that it satisfies the
// interface; this package cannot import router without a cycle in its
// tests). Every message ReadBatch returns is one datagram; one ReadBatch
// returns all that are queued, up to its slices' length. ReadFrom and
// WriteTo are for tests that play a peer with a Conn of their own.
type Conn struct {
	net  *Network
	addr netip.AddrPort
	in   chan datagram
	done chan struct{}
	once sync.Once
}

// ReadBatch implements router.Conn: it waits for one datagram, then takes
// those queued behind it.
func (c *Conn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, f, err := c.ReadFrom(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0], segSizes[0], from[0] = n, n, f
	k := 1
	for k < min(len(bufs), maxBatch) {
		select {
		case d := <-c.in:
			n := copy(bufs[k], d.b)
			sizes[k], segSizes[k], from[k] = n, n, d.from
			k++
		default:
			return k, nil
		}
	}
	return k, nil
}

// WriteBatch implements router.Conn. Datagrams to unbound addresses
// vanish, as UDP datagrams do.
func (c *Conn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	if segSize < 1 {
		return fmt.Errorf("overlaytest: write to %s: segment size %d, want at least 1", addr, segSize)
	}
	for {
		d := b[:min(segSize, len(b))]
		if err := c.WriteTo(d, addr); err != nil {
			return err
		}
		if b = b[len(d):]; len(b) == 0 {
			return nil
		}
	}
}

// ReadFrom reads one datagram into b, returning its length and sender.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case <-c.done:
		return 0, netip.AddrPort{}, fmt.Errorf("overlaytest: read %s: %w", c.addr, net.ErrClosed)
	case d := <-c.in:
		return copy(b, d.b), d.from, nil
	}
}

// WriteTo sends b as one datagram to addr. Datagrams to unbound addresses
// vanish, as UDP datagrams do.
func (c *Conn) WriteTo(b []byte, addr netip.AddrPort) error {
	select {
	case <-c.done:
		return fmt.Errorf("overlaytest: write %s: %w", c.addr, net.ErrClosed)
	default:
	}
	c.net.Send(c.addr, addr, b)
	return nil
}

// LocalAddr implements router.Conn.
func (c *Conn) LocalAddr() netip.AddrPort { return c.addr }

// Close implements router.Conn.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		delete(c.net.conns, c.addr)
		c.net.mu.Unlock()
	})
	return nil
}
