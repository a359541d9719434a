package router

import (
	"fmt"
	"net"
	"net/netip"
)

// Conn is the underlay transport that carries overlay datagrams: one raw IP
// packet per datagram. Batches are its one contract, as with wireguard-go's
// conn.Bind: a read returns runs of datagrams, a write sends one, and a
// single datagram is a run of one. How many datagrams one system call
// moves — recvmmsg and UDP_GRO, sendmmsg and UDP_SEGMENT, or one datagram
// per call — is the implementation's, fixed when it is made; the router
// drives every Conn alike, with one reader goroutine.
//
// ReadBatch is called from a single goroutine; WriteBatch may be called
// from many at once, concurrently with ReadBatch. Close unblocks a pending
// ReadBatch, which then returns an error wrapping net.ErrClosed, as do
// later calls; Close is idempotent. The router owns the Conn it is given
// and closes it when Run returns.
type Conn interface {
	// ReadBatch reads at least one and at most min(len(bufs),
	// MaxReadBatch) messages, blocking until one is available, and
	// returns how many: n. Message i is read into bufs[i]: sizes[i]
	// bytes of datagrams of segSizes[i] bytes back to back (the last may
	// be shorter; segSizes[i] == sizes[i] for a single datagram), all
	// from from[i] (unmapped) — one datagram, or a run the kernel
	// coalesced (UDP_GRO). sizes, segSizes and from are at least as long
	// as bufs. A buffer of MaxSegmentsRead bytes never loses a datagram;
	// a run larger than its buffer keeps only the whole datagrams that
	// fit, and a single datagram larger than it is truncated. ReadBatch
	// does not retain the buffers.
	ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (n int, err error)
	// WriteBatch sends b as consecutive datagrams of segSize bytes (the
	// last may be shorter) to addr, in order; segSize >= len(b) sends b
	// as one datagram. It does not retain b.
	WriteBatch(b []byte, segSize int, addr netip.AddrPort) error
	// LocalAddr is the address the Conn is bound to.
	LocalAddr() netip.AddrPort
	Close() error
}

// MaxReadBatch is the most messages one ReadBatch fills; longer slices
// keep their tails untouched. Eight hold a few super-packets of two GRO
// batches each, and the single datagrams between them.
const MaxReadBatch = 8

// MaxSegmentsRead is the buffer size that ReadBatch needs to never lose a
// datagram: the kernel coalesces at most one IP packet's worth (64 KiB).
const MaxSegmentsRead = 65535

// ListenUDP opens the overlay's UDP socket on addr.
//
// On Linux (conn_linux.go) it reads with recvmmsg, turns on UDP_GRO and
// writes with sendmmsg and UDP_SEGMENT when the kernel has them, and works
// without them when it does not. Elsewhere (conn_other.go) it goes through
// Go's net package, one datagram per system call (stdConn): correct, and
// slower.
func ListenUDP(addr netip.AddrPort) (Conn, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("listen overlay on udp %s: %w", addr, err)
	}
	u, err := newUDPConn(c, network)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("listen overlay on udp %s: %w", addr, err)
	}
	return u, nil
}

// socketBufferSize is the overlay socket's send and receive buffer. The
// default (about 200 KiB) overflows under a single TCP stream and every
// overflow is a lost inner packet; wireguard-go sizes its sockets alike.
const socketBufferSize = 7 << 20

// errSegmentSize is WriteBatch's refusal of a segment size below 1.
func errSegmentSize(segSize int, addr netip.AddrPort) error {
	return fmt.Errorf("send segments to %s: segment size %d, want at least 1", addr, segSize)
}
