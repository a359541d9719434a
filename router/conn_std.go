package router

import (
	"errors"
	"net"
	"net/netip"
)

// stdConn is the overlay's UDP socket through Go's net package alone: one
// datagram per system call, no batching, GRO or GSO. It is a Conn and not
// a SegmentConn. ListenUDP returns it where conn_linux.go's udpConn is
// not built (conn_other.go); it builds everywhere, so that Linux tests
// cover it too.
//
// It keeps no state of its own: ReadFrom, WriteTo and Close are
// net.UDPConn's, which allow the concurrency Conn promises.
type stdConn struct {
	c *net.UDPConn
}

var _ Conn = (*stdConn)(nil)

// newStdConn wraps c, raising its buffers to socketBufferSize as far as
// the system's limit allows; failing to is not fatal, only slower.
func newStdConn(c *net.UDPConn) *stdConn {
	_ = c.SetReadBuffer(socketBufferSize)
	_ = c.SetWriteBuffer(socketBufferSize)
	return &stdConn{c: c}
}

// ReadFrom implements Conn. The sender is unmapped, as udpConn reports it.
func (s *stdConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, err := s.c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// WriteTo implements Conn.
func (s *stdConn) WriteTo(b []byte, addr netip.AddrPort) error {
	_, err := s.c.WriteToUDPAddrPort(b, addr)
	return err
}

func (s *stdConn) LocalAddr() netip.AddrPort {
	return s.c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (s *stdConn) Close() error {
	err := s.c.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
