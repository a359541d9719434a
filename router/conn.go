package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Conn is the underlay transport that carries overlay datagrams: one raw IP
// packet per datagram.
//
// ReadFrom is called from a single goroutine; WriteTo may be called from
// many at once, concurrently with ReadFrom. Close unblocks a pending
// ReadFrom, which then returns an error wrapping net.ErrClosed; Close is
// idempotent. The router owns the Conn it is given and closes it when Run
// returns.
type Conn interface {
	// ReadFrom reads one datagram into b, returning its length and sender.
	ReadFrom(b []byte) (int, netip.AddrPort, error)
	// WriteTo sends b as one datagram to addr.
	WriteTo(b []byte, addr netip.AddrPort) error
	// LocalAddr is the address the Conn is bound to.
	LocalAddr() netip.AddrPort
	Close() error
}

// ListenUDP opens the overlay's UDP socket on addr.
func ListenUDP(addr netip.AddrPort) (Conn, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("listen overlay on udp %s: %w", addr, err)
	}
	return &udpConn{c: c}, nil
}

type udpConn struct {
	c *net.UDPConn
}

func (u *udpConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, err := u.c.ReadFromUDPAddrPort(b)
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

func (u *udpConn) WriteTo(b []byte, addr netip.AddrPort) error {
	_, err := u.c.WriteToUDPAddrPort(b, addr)
	return err
}

func (u *udpConn) LocalAddr() netip.AddrPort {
	return u.c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (u *udpConn) Close() error {
	err := u.c.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
