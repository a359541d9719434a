package router

import (
	"errors"
	"net"
	"net/netip"
)

// stdConn is the overlay's UDP socket through Go's net package alone: one
// datagram per system call, no recvmmsg, GRO or GSO; every batch it reads
// is one datagram. ListenUDP returns it where conn_linux.go's udpConn is
// not built (conn_other.go); it builds everywhere, so that Linux tests
// cover it too.
//
// It keeps no state of its own: its calls are net.UDPConn's, which allow
// the concurrency Conn promises.
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

// ReadBatch implements Conn: one datagram into bufs[0]. The sender is
// unmapped, as udpConn reports it.
func (s *stdConn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, addr, err := s.c.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0], segSizes[0] = n, n
	from[0] = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	return 1, nil
}

// WriteBatch implements Conn, one datagram per system call.
func (s *stdConn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	if segSize < 1 {
		return errSegmentSize(segSize, addr)
	}
	for {
		d := b[:min(segSize, len(b))]
		if _, err := s.c.WriteToUDPAddrPort(d, addr); err != nil {
			return err
		}
		if b = b[len(d):]; len(b) == 0 {
			return nil
		}
	}
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
