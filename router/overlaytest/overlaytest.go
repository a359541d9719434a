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

// Conn is an in-memory router.Conn (router checks that it satisfies the
// interface; this package cannot import router without a cycle in its tests).
type Conn struct {
	net  *Network
	addr netip.AddrPort
	in   chan datagram
	done chan struct{}
	once sync.Once
}

// ReadFrom implements router.Conn.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case <-c.done:
		return 0, netip.AddrPort{}, fmt.Errorf("overlaytest: read %s: %w", c.addr, net.ErrClosed)
	case d := <-c.in:
		return copy(b, d.b), d.from, nil
	}
}

// WriteTo implements router.Conn. Datagrams to unbound addresses vanish, as
// UDP datagrams do.
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
