package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
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
	setSocketBuffers(c)
	return &udpConn{c: c}, nil
}

// socketBufferSize is the overlay socket's send and receive buffer. The
// default (about 200 KiB) overflows under a single TCP stream and every
// overflow is a lost inner packet; wireguard-go sizes its sockets alike.
const socketBufferSize = 7 << 20

// setSocketBuffers raises the socket's buffers: past net.core.rmem_max
// with CAP_NET_ADMIN (SO_RCVBUFFORCE), else as far as the limit allows.
// Failing to is not fatal, only slower.
func setSocketBuffers(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for _, opt := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], socketBufferSize) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], socketBufferSize)
			}
		}
	})
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
