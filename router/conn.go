package router

import (
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

// SegmentConn is a Conn that moves many datagrams per system call.
//
// ReadSegments and ReadFrom share the Conn's single reader goroutine: call
// them from the same one. WriteSegments may be called from many goroutines
// at once, like WriteTo. After Close, ReadSegments returns an error wrapping
// net.ErrClosed.
type SegmentConn interface {
	Conn
	// WriteSegments sends b as consecutive datagrams of segSize bytes (the
	// last may be shorter) to addr, in order: one sendmmsg of UDP_SEGMENT
	// messages when the kernel supports it, else sendmmsg of datagrams,
	// else one write per datagram.
	// segSize >= len(b) sends one datagram. It does not retain b.
	WriteSegments(b []byte, segSize int, addr netip.AddrPort) error
	// ReadSegments reads into b one or more datagrams that arrived back to
	// back from one sender (UDP_GRO), returning their total length n, the
	// size of each but the last (segSize == n for a single datagram) and
	// the sender (unmapped). b should hold MaxSegmentsRead bytes: a batch
	// larger than b keeps only the whole datagrams that fit, and a single
	// datagram larger than b is truncated, as with ReadFrom.
	ReadSegments(b []byte) (n, segSize int, from netip.AddrPort, err error)
}

// BatchConn is a SegmentConn that reads many messages per system call. A
// peer sends a 64 KiB super-packet as one sendmmsg of several UDP_SEGMENT
// messages, which arrive as as many GRO batches: one ReadBatch takes them
// all, so the reader can coalesce across them.
//
// It is an interface of its own, not part of SegmentConn, so that a
// SegmentConn without recvmmsg (an in-memory fake, another platform) stays
// one; the reader asks for it with a type assertion.
//
// ReadBatch shares the Conn's single reader goroutine with ReadFrom and
// ReadSegments. After Close, ReadBatch returns an error wrapping
// net.ErrClosed.
type BatchConn interface {
	SegmentConn
	// ReadBatch reads up to min(len(msgs), MaxReadBatch) messages with
	// one system call, blocking until at least one is available, and
	// returns how many it filled: msgs[:n]. Each message is a datagram or
	// a GRO batch from one sender, read into msgs[i].Buf as ReadSegments
	// reads into b; the caller sets Buf, MaxSegmentsRead bytes to never
	// lose a datagram, and ReadBatch sets N, SegSize and From. Datagrams
	// ReadFrom queued come first, as one message on their own. ReadBatch
	// does not retain the buffers.
	ReadBatch(msgs []SegmentBatch) (int, error)
}

// SegmentBatch is one message of ReadBatch: N bytes in Buf[:N], datagrams
// of SegSize bytes back to back (the last may be shorter; SegSize == N for
// a single datagram), all from From (unmapped).
type SegmentBatch struct {
	Buf        []byte
	N, SegSize int
	From       netip.AddrPort
}

// MaxReadBatch is the most messages one ReadBatch fills; a longer msgs
// keeps its tail untouched. Eight hold a few super-packets of two GRO
// batches each, and the single datagrams between them.
const MaxReadBatch = 8

// MaxSegmentsRead is the buffer size that ReadSegments needs to never lose
// a datagram: the kernel coalesces at most one IP packet's worth (64 KiB).
const MaxSegmentsRead = 65535

// ListenUDP opens the overlay's UDP socket on addr.
//
// On Linux (conn_linux.go) the Conn it returns is a BatchConn, and so a
// SegmentConn: it reads with recvmmsg, turns on UDP_GRO and uses
// UDP_SEGMENT when the kernel has them, and works without them when it
// does not. Elsewhere (conn_other.go) it is a plain Conn through Go's net
// package, one datagram per system call (stdConn): correct, and slower.
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
