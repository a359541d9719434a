package wireguard

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// IsMessage reports whether b begins as a WireGuard message does: a type
// of 1 to 4 (initiation, response, cookie reply, transport data) in a
// little-endian 32-bit word. An IP packet never does: its first byte
// holds the version, 4 or 6, in its top four bits.
func IsMessage(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	t := binary.LittleEndian.Uint32(b)
	return t >= 1 && t <= 4
}

// refusePlain counts a datagram that is not a WireGuard message — in
// practice a plain overlay packet from a router whose overlay is not
// encrypted — and logs it once a minute per sender, so that a mixed pair
// fails closed and says why.
func (c *Conn) refusePlain(from netip.AddrPort) {
	c.refused[RefusedNotWireGuard].Add(1)
	now := time.Now()
	c.plainMu.Lock()
	if c.plainLogged == nil {
		c.plainLogged = map[netip.Addr]time.Time{}
	}
	last, seen := c.plainLogged[from.Addr()]
	if seen && now.Sub(last) < time.Minute {
		c.plainMu.Unlock()
		return
	}
	if len(c.plainLogged) > 1024 {
		clear(c.plainLogged)
	}
	c.plainLogged[from.Addr()] = now
	c.plainMu.Unlock()
	c.log.Warn("dropped a datagram that is not WireGuard: its sender's overlay is plain, this router's is encrypted (overlay.encryption: wireguard); set the same overlay.encryption on every node",
		zap.Stringer("from", from))
}

// stdSocket is the default Socket: Go's UDP socket, one datagram per
// system call.
type stdSocket struct{ c *net.UDPConn }

func listenStd(port uint16) (*stdSocket, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
	if err != nil {
		return nil, err
	}
	return &stdSocket{c: c}, nil
}

func (s *stdSocket) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, addr, err := s.c.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0], segSizes[0], from[0] = n, n, netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	return 1, nil
}

func (s *stdSocket) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	for off := 0; off < len(b); off += segSize {
		if _, err := s.c.WriteToUDPAddrPort(b[off:min(off+segSize, len(b))], addr); err != nil {
			return err
		}
	}
	return nil
}

func (s *stdSocket) LocalAddr() netip.AddrPort {
	return s.c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (s *stdSocket) Close() error { return s.c.Close() }
