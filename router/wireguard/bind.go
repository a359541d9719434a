package wireguard

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
)

// bind is the device's underlay socket with a check in front: a datagram
// that is not a WireGuard message — in practice a plain overlay packet
// from a router whose overlay is not encrypted — is dropped before the
// device sees it, counted, and logged (once a minute per sender), so
// that a mixed pair fails closed and says why.
type bind struct {
	conn.Bind
	c    *Conn
	port atomic.Value // uint16, the port Open bound

	mu     sync.Mutex
	logged map[netip.Addr]time.Time
}

func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.port.Store(actual)
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(packets, sizes, eps)
			for j := range n {
				if sizes[j] > 0 && !IsMessage(packets[j][:sizes[j]]) {
					b.refusePlain(eps[j])
					sizes[j] = 0 // the device skips it
				}
			}
			return n, err
		}
	}
	return wrapped, actual, nil
}

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

func (b *bind) refusePlain(ep conn.Endpoint) {
	b.c.refused[RefusedNotWireGuard].Add(1)
	from := ep.DstIP()
	now := time.Now()
	b.mu.Lock()
	if b.logged == nil {
		b.logged = map[netip.Addr]time.Time{}
	}
	last, seen := b.logged[from]
	if seen && now.Sub(last) < time.Minute {
		b.mu.Unlock()
		return
	}
	if len(b.logged) > 1024 {
		clear(b.logged)
	}
	b.logged[from] = now
	b.mu.Unlock()
	b.c.log.Warn("dropped a datagram that is not WireGuard: its sender's overlay is plain, this router's is encrypted (overlay.encryption: wireguard); set the same overlay.encryption on every node",
		zap.String("from", ep.DstToString()))
}
