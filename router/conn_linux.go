package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Limits of one UDP_SEGMENT send: the kernel's UDP_MAX_SEGMENTS (64 before
// Linux 6.13, 128 since; the smaller works everywhere) and the largest UDP
// payload over IPv4 (65535 - 20 - 8).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65507
)

// maxGSOMessages is how many UDP_SEGMENT messages one sendmmsg carries. A
// 64 KiB super-packet needs at most two for any segment size from 512
// bytes up; a longer b takes one more sendmmsg per maxGSOMessages chunks.
const maxGSOMessages = 8

// newUDPConn makes c, a socket of network "udp4" or "udp6", the Linux
// overlay socket: larger buffers, UDP_GRO on, and UDP_SEGMENT and
// sendmmsg for WriteBatch when the kernel has them.
func newUDPConn(c *net.UDPConn, network string) (Conn, error) {
	setSocketBuffers(c)
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	u := &udpConn{c: c, rc: rc, is6: network == "udp6"}
	if network == "udp4" {
		u.batch = ipv4.NewPacketConn(c)
	} else {
		u.batch = ipv6.NewPacketConn(c)
	}
	u.mmsg.Store(true)
	gso, _ := setOffloads(c)
	u.gso.Store(gso)
	return u, nil
}

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

// setOffloads turns on UDP_GRO and reports whether the kernel knows
// UDP_SEGMENT (Linux 4.18+) and UDP_GRO (5.0+). Lacking either is not
// fatal, only slower.
func setOffloads(c *net.UDPConn) (gso, gro bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		gso = err == nil
		gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return gso, gro
}

// udpConn is the overlay's UDP socket on Linux: ReadBatch is one
// recvmmsg of UDP_GRO runs, WriteBatch one sendmmsg of UDP_SEGMENT
// messages where the kernel allows. The read side (recv) belongs to the
// single reader goroutine and takes no lock.
type udpConn struct {
	c *net.UDPConn
	// rc is c's descriptor, for the raw recvmmsg and sendmmsg.
	rc syscall.RawConn
	// is6 is whether c is an AF_INET6 socket.
	is6 bool
	// batch sends with sendmmsg when UDP_SEGMENT is off.
	batch batchWriter

	// gso is whether WriteBatch uses UDP_SEGMENT: set at listen when
	// the kernel knows the option, cleared for good the first time the
	// kernel refuses a segmented send (EIO, EINVAL, ENOPROTOOPT: a route
	// whose device cannot checksum, SO_NO_CHECK, an old kernel).
	gso atomic.Bool
	// mmsg is whether WriteBatch uses sendmmsg when gso is off, cleared
	// for good if the kernel lacks it.
	mmsg atomic.Bool
	// gsoCalls counts the UDP_SEGMENT path's sendmmsg system calls, those
	// that found the socket buffer full included; tests read it.
	gsoCalls atomic.Uint64

	// recv is ReadBatch's recvmmsg scratch.
	recv recvBatch
}

var _ Conn = (*udpConn)(nil)

// batchWriter is ipv4.PacketConn or ipv6.PacketConn: sendmmsg.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// ReadBatch implements Conn: one recvmmsg, waiting in Go's poller while
// the socket is empty.
func (u *udpConn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	r := &u.recv
	if r.fn == nil {
		r.fn = r.recvmmsg // bound once: passing it to RawConn.Read does not allocate
	}
	return u.readBatch(bufs, sizes, segSizes, from, r.fn)
}

// TryReadBatch is ReadBatch without the wait: it returns 0 messages at
// once when the socket is empty (a reader that polls, see
// Options.BusyPoll).
func (u *udpConn) TryReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	r := &u.recv
	if r.tryFn == nil {
		r.tryFn = func(fd uintptr) bool {
			if !r.recvmmsg(fd) {
				r.got = 0 // empty: done all the same
			}
			return true
		}
	}
	return u.readBatch(bufs, sizes, segSizes, from, r.tryFn)
}

// Fd runs fn with the socket's descriptor (syscall.RawConn.Control).
func (u *udpConn) Fd(fn func(fd uintptr)) error { return u.rc.Control(fn) }

func (u *udpConn) readBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort, fn func(fd uintptr) bool) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	r := &u.recv
	r.n, r.got, r.err = min(len(bufs), MaxReadBatch), 0, nil
	for i, buf := range bufs[:r.n] {
		iov := &r.iovs[i]
		iov.Base = nil
		if len(buf) > 0 {
			iov.Base = &buf[0]
		}
		iov.SetLen(len(buf))
		h := &r.msgs[i]
		*h = mmsghdr{hdr: unix.Msghdr{
			Name:    &r.sas[i][0],
			Namelen: uint32(len(r.sas[i])),
			Iov:     iov,
			Control: &r.oobs[i][0],
		}}
		h.hdr.SetIovlen(1)
		h.hdr.SetControllen(len(r.oobs[i]))
	}
	err := u.rc.Read(fn)
	clear(r.iovs[:r.n]) // let the buffers go
	if err == nil {
		err = r.err
	}
	if err != nil {
		return 0, err
	}
	for i := range r.got {
		h := &r.msgs[i].hdr
		n := int(r.msgs[i].n)
		seg := groSegmentSize(r.oobs[i][:min(int(h.Controllen), len(r.oobs[i]))])
		if seg <= 0 || seg > n {
			seg = n
		}
		if h.Flags&unix.MSG_TRUNC != 0 && seg < n {
			// A batch cut short by a small buffer: its last datagram
			// is partial.
			n -= n % seg
		}
		sizes[i], segSizes[i] = n, seg
		from[i] = r.sockaddr(r.sas[i][:min(int(h.Namelen), len(r.sas[i]))])
	}
	return r.got, nil
}

// recvBatch is ReadBatch's scratch: one message header per message, each
// with its own sockaddr and control buffer, its iovec pointing into the
// caller's buffer for the length of one call. It lives in the udpConn, so
// a ReadBatch allocates nothing.
type recvBatch struct {
	msgs [MaxReadBatch]mmsghdr
	iovs [MaxReadBatch]unix.Iovec
	// oobs receive each message's UDP_GRO control message.
	oobs [MaxReadBatch][64]byte
	// sas receive each sender's struct sockaddr_in or sockaddr_in6.
	sas [MaxReadBatch][unix.SizeofSockaddrInet6]byte

	// n is how many of msgs to fill, got how many the kernel filled and
	// err the error that stopped it.
	n, got int
	err    error
	// fn is recvmmsg, bound on first use; tryFn the same, never waiting.
	fn, tryFn func(fd uintptr) bool

	// zoneIndex and zone are the last IPv6 scope ID a sender had and its
	// interface's name, so that link-local senders read as Go's net
	// package names them (fe80::1%eth0) without a lookup per message.
	zoneIndex uint32
	zone      string
}

// recvmmsg is RawConn.Read's callback: it fills msgs[:n] with what the
// socket holds and returns false, to wait for it to turn readable, on
// EAGAIN.
func (r *recvBatch) recvmmsg(fd uintptr) bool {
	for {
		got, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(r.n), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			r.got = int(got)
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("recvmmsg", errno)
			return true
		}
	}
}

// sockaddr decodes a struct sockaddr_in or sockaddr_in6 the kernel wrote,
// IPv4-mapped addresses unmapped; the zero AddrPort for any other family.
func (r *recvBatch) sockaddr(sa []byte) netip.AddrPort {
	if len(sa) < unix.SizeofSockaddrInet4 {
		return netip.AddrPort{}
	}
	// The family is native-endian, the port big-endian (network order).
	port := binary.BigEndian.Uint16(sa[2:])
	switch binary.NativeEndian.Uint16(sa) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), port)
	case unix.AF_INET6:
		if len(sa) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}
		}
		ip := netip.AddrFrom16([16]byte(sa[8:24])).Unmap()
		if id := binary.NativeEndian.Uint32(sa[24:]); id != 0 && ip.Is6() {
			ip = ip.WithZone(r.zoneName(id))
		}
		return netip.AddrPortFrom(ip, port)
	}
	return netip.AddrPort{}
}

// zoneName is the name of interface index, or the index in decimal if it
// has none, as Go's net names zones; cached for the last index asked.
func (r *recvBatch) zoneName(index uint32) string {
	if index != r.zoneIndex {
		r.zoneIndex, r.zone = index, strconv.FormatUint(uint64(index), 10)
		if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
			r.zone = ifi.Name
		}
	}
	return r.zone
}

// groSegmentSize returns the segment size in a UDP_GRO control message
// (struct cmsghdr, then a native-endian int), or 0 when there is none. It
// decodes the bytes itself: x/sys's ParseOneSocketControlMessage casts a
// buffer shorter than a cmsghdr, which the race detector's checkptr kills.
func groSegmentSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		var l uint64
		if unix.SizeofCmsghdr == 16 {
			l = binary.NativeEndian.Uint64(oob)
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob))
		}
		if l < unix.SizeofCmsghdr || l > uint64(len(oob)) {
			return 0
		}
		level := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-4:]))
		if level == unix.SOL_UDP && typ == unix.UDP_GRO && l >= unix.SizeofCmsghdr+4 {
			return int(int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr:])))
		}
		oob = oob[min(unix.CmsgSpace(int(l)-unix.SizeofCmsghdr), len(oob)):]
	}
	return 0
}

// writeOne sends b as one datagram. It goes through the same raw sendmmsg
// as a batch (one message, no UDP_SEGMENT) rather than Go's net package:
// the socket is non-blocking, and a raw system call keeps the scheduler
// from handing the P to another thread while the kernel delivers the
// datagram inline (see tun's vnetIO).
func (u *udpConn) writeOne(b []byte, addr netip.AddrPort) error {
	if u.mmsg.Load() && len(b) > 0 && len(b) <= maxGSOBytes {
		_, err := u.writeGSO(b, len(b), addr)
		if !errors.Is(err, unix.ENOSYS) {
			return err
		}
		u.mmsg.Store(false)
	}
	_, err := u.c.WriteToUDPAddrPort(b, addr)
	return err
}

// WriteBatch implements Conn: one sendmmsg of UDP_SEGMENT messages when
// the kernel supports it, else sendmmsg of datagrams, else one write per
// datagram.
func (u *udpConn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	if segSize < 1 {
		return errSegmentSize(segSize, addr)
	}
	if segSize >= len(b) {
		return u.writeOne(b, addr)
	}
	if u.gso.Load() && segSize <= maxGSOBytes {
		sent, err := u.writeGSO(b, segSize, addr)
		if err == nil {
			return nil
		}
		if !isGSORefused(err) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		// Nothing from b[sent:] went: send it below, for good without
		// UDP_SEGMENT.
		u.gso.Store(false)
		b = b[sent:]
	}
	if u.mmsg.Load() {
		err := u.writeBatch(b, segSize, addr)
		if !errors.Is(err, unix.ENOSYS) {
			return err
		}
		u.mmsg.Store(false)
	}
	for ; len(b) > 0; b = b[min(segSize, len(b)):] {
		if err := u.writeOne(b[:min(segSize, len(b))], addr); err != nil {
			return err
		}
	}
	return nil
}

// mmsgSend is one sendmmsg of msgs, resumed after partial sends: send is
// RawConn.Write's callback.
type mmsgSend struct {
	msgs []mmsghdr
	// sent is how many of msgs went, calls how many system calls that
	// took and err the error that stopped it.
	sent, calls int
	err         error
	// send is sendmmsg, bound once so that passing it to RawConn.Write
	// does not allocate.
	send func(fd uintptr) bool
}

// sendmmsg is RawConn.Write's callback: it sends msgs[sent:], resuming
// after a partial send, and returns false, to wait for the socket to turn
// writable, on EAGAIN.
func (b *mmsgSend) sendmmsg(fd uintptr) bool {
	for b.sent < len(b.msgs) {
		r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[b.sent])), uintptr(len(b.msgs)-b.sent), 0, 0, 0)
		b.calls++
		switch {
		case errno == unix.EINTR:
		case errno == unix.EAGAIN:
			return false
		case errno != 0:
			b.err = errno
			return true
		case r == 0:
			b.err = errors.New("sendmmsg sent nothing")
			return true
		default:
			b.sent += int(r)
		}
	}
	return true
}

// start readies b to send msgs.
func (b *mmsgSend) start(msgs []mmsghdr) {
	b.msgs, b.sent, b.calls, b.err = msgs, 0, 0, nil
	if b.send == nil {
		b.send = b.sendmmsg
	}
}

// gsoBatch is the scratch of the UDP_SEGMENT sendmmsg: one message per
// chunk of b, each with its own UDP_SEGMENT control message, all to one
// sockaddr. Pooled, so a send allocates nothing; the message headers point
// into the batch itself and, until put back, into b.
type gsoBatch struct {
	msgs [maxGSOMessages]mmsghdr
	iovs [maxGSOMessages]unix.Iovec
	oobs [maxGSOMessages][unix.SizeofCmsghdr + 8]byte
	// sa is a struct sockaddr_in or sockaddr_in6.
	sa [unix.SizeofSockaddrInet6]byte
	mmsgSend
}

// mmsghdr is struct mmsghdr: a msghdr, then msg_len (n), where the kernel
// writes how many bytes of it went or came. Go pads it to the kernel's size
// (64 bytes on 64-bit).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

var gsoBatches = sync.Pool{New: func() any { return new(gsoBatch) }}

// writeGSO sends b as datagrams of segSize bytes with UDP_SEGMENT: chunks
// of at most maxGSOSegments datagrams and maxGSOBytes, up to
// maxGSOMessages chunks per sendmmsg. On error, sent is how many bytes of
// b went, a multiple of the chunk size.
func (u *udpConn) writeGSO(b []byte, segSize int, addr netip.AddrPort) (sent int, err error) {
	per := min(maxGSOSegments, maxGSOBytes/segSize) * segSize
	mb := gsoBatches.Get().(*gsoBatch)
	defer func() {
		clear(mb.iovs[:]) // let b go
		mb.err = nil
		gsoBatches.Put(mb)
	}()
	salen := putSockaddr(&mb.sa, u.is6, addr)
	if salen == 0 {
		// A zone or an address the socket cannot reach: let Go's
		// sendmsg resolve or refuse it, one chunk at a time.
		return u.writeGSOEach(b, segSize, per, addr)
	}
	for sent < len(b) {
		rest := b[sent:]
		n := 0
		for ; n < maxGSOMessages && len(rest) > 0; n++ {
			chunk := rest[:min(per, len(rest))]
			rest = rest[len(chunk):]
			iov := &mb.iovs[n]
			iov.Base = &chunk[0]
			iov.SetLen(len(chunk))
			h := &mb.msgs[n].hdr
			*h = unix.Msghdr{Name: &mb.sa[0], Namelen: uint32(salen), Iov: iov}
			h.SetIovlen(1)
			if len(chunk) > segSize {
				// A one-datagram chunk goes without UDP_SEGMENT,
				// which SO_NO_CHECK would refuse even then.
				oob := putSegmentSize(mb.oobs[n][:], uint16(segSize))
				h.Control = &oob[0]
				h.SetControllen(len(oob))
			}
		}
		mb.start(mb.msgs[:n])
		err := u.rc.Write(mb.send)
		u.gsoCalls.Add(uint64(mb.calls))
		if err == nil {
			err = mb.err
		}
		if err != nil {
			sent += min(mb.sent*per, len(b)-sent)
			return sent, fmt.Errorf("sendmmsg %d bytes in %d-byte segments to %s: %w", len(b)-sent, segSize, addr, err)
		}
		sent = len(b) - len(rest)
	}
	return len(b), nil
}

// writeGSOEach is writeGSO with one sendmsg per chunk of per bytes.
func (u *udpConn) writeGSOEach(b []byte, segSize, per int, addr netip.AddrPort) (sent int, err error) {
	for sent < len(b) {
		chunk := b[sent:min(sent+per, len(b))]
		var oob []byte
		if len(chunk) > segSize {
			var buf [unix.SizeofCmsghdr + 8]byte
			oob = putSegmentSize(buf[:], uint16(segSize))
		}
		if _, _, err := u.c.WriteMsgUDPAddrPort(chunk, oob, addr); err != nil {
			return sent, err
		}
		sent += len(chunk)
	}
	return sent, nil
}

// maxVecMessages is how many messages one sendmmsg of WriteDatagrams
// carries: runs of UDP_SEGMENT datagrams, or single datagrams without it.
const maxVecMessages = 64

// vecBatch is WriteDatagrams' scratch: a message per run of datagrams,
// its iovecs one per datagram, pointing into the caller's buffers until
// put back. Pooled, so a send allocates nothing.
type vecBatch struct {
	msgs [maxVecMessages]mmsghdr
	iovs [maxVecMessages * maxGSOSegments]unix.Iovec
	oobs [maxVecMessages][unix.SizeofCmsghdr + 8]byte
	// first is the index in bufs of each message's first datagram.
	first [maxVecMessages]int
	sa    [unix.SizeofSockaddrInet6]byte
	mmsgSend
}

var vecBatches = sync.Pool{New: func() any { return new(vecBatch) }}

// WriteDatagrams sends each of bufs as one datagram to addr, in order,
// without copying them together (the encrypted overlay's device hands
// its sealed messages over so, udpBind.Send). Consecutive datagrams
// of one size (the last of a run may be shorter) go as one UDP_SEGMENT
// message whose iovecs point at each, up to maxVecMessages messages per
// sendmmsg; without UDP_SEGMENT, one message per datagram.
func (u *udpConn) WriteDatagrams(bufs [][]byte, addr netip.AddrPort) error {
	if len(bufs) == 0 {
		return nil
	}
	if !u.mmsg.Load() {
		return u.writeEach(bufs, addr)
	}
	mb := vecBatches.Get().(*vecBatch)
	defer func() {
		clear(mb.iovs[:]) // let bufs go
		mb.err = nil
		vecBatches.Put(mb)
	}()
	salen := putSockaddr(&mb.sa, u.is6, addr)
	if salen == 0 {
		return u.writeEach(bufs, addr)
	}
	for i := 0; i < len(bufs); {
		gso := u.gso.Load()
		n, iv := 0, 0
		for ; n < maxVecMessages && i < len(bufs); n++ {
			mb.first[n] = i
			seg, total, k := len(bufs[i]), 0, 0
			for i < len(bufs) && k < maxGSOSegments && (k == 0 || gso) {
				l := len(bufs[i])
				if k > 0 && (l > seg || l == 0 || total+l > maxGSOBytes) {
					break // an empty datagram would vanish from a run
				}
				iov := &mb.iovs[iv+k]
				iov.Base = nil
				if l > 0 {
					iov.Base = &bufs[i][0]
				}
				iov.SetLen(l)
				total += l
				k++
				i++
				if l < seg {
					break // a shorter datagram ends a run
				}
			}
			h := &mb.msgs[n].hdr
			*h = unix.Msghdr{Name: &mb.sa[0], Namelen: uint32(salen), Iov: &mb.iovs[iv]}
			h.SetIovlen(k)
			if k > 1 {
				oob := putSegmentSize(mb.oobs[n][:], uint16(seg))
				h.Control = &oob[0]
				h.SetControllen(len(oob))
			}
			iv += k
		}
		mb.start(mb.msgs[:n])
		err := u.rc.Write(mb.send)
		if gso {
			u.gsoCalls.Add(uint64(mb.calls))
		}
		if err == nil {
			err = mb.err
		}
		switch {
		case err == nil:
		case gso && isGSORefused(err):
			// Nothing from the first unsent message on went: send it
			// again, for good without UDP_SEGMENT.
			u.gso.Store(false)
			i = mb.first[mb.sent]
		case errors.Is(err, unix.ENOSYS):
			u.mmsg.Store(false)
			return u.writeEach(bufs[mb.first[mb.sent]:], addr)
		default:
			return fmt.Errorf("sendmmsg %d datagrams to %s: %w", len(bufs)-mb.first[mb.sent], addr, err)
		}
	}
	return nil
}

// writeEach sends each of bufs as one datagram, one system call each
// (writeOne).
func (u *udpConn) writeEach(bufs [][]byte, addr netip.AddrPort) error {
	for _, b := range bufs {
		if err := u.writeOne(b, addr); err != nil {
			return err
		}
	}
	return nil
}

// putSockaddr writes addr into sa as the socket's family takes it — a
// sockaddr_in, or a sockaddr_in6 with IPv4 mapped — and returns its
// length, or 0 if addr has a zone or the socket cannot send to it.
func putSockaddr(sa *[unix.SizeofSockaddrInet6]byte, is6 bool, addr netip.AddrPort) int {
	ip := addr.Addr()
	if ip.Zone() != "" {
		return 0
	}
	clear(sa[:])
	// The family is native-endian, the port big-endian (network order).
	binary.BigEndian.PutUint16(sa[2:], addr.Port())
	if is6 {
		if !ip.IsValid() {
			return 0
		}
		binary.NativeEndian.PutUint16(sa[0:], unix.AF_INET6)
		a := ip.As16()
		copy(sa[8:24], a[:]) // after sin6_flowinfo
		return unix.SizeofSockaddrInet6
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return 0
	}
	binary.NativeEndian.PutUint16(sa[0:], unix.AF_INET)
	a := ip.As4()
	copy(sa[4:8], a[:])
	return unix.SizeofSockaddrInet4
}

// putSegmentSize writes a UDP_SEGMENT control message for segSize into
// oob, which holds at least unix.CmsgSpace(2) bytes, and returns it.
func putSegmentSize(oob []byte, segSize uint16) []byte {
	oob = oob[:unix.CmsgSpace(2)]
	clear(oob)
	// struct cmsghdr: a size_t length, then int level and int type.
	if unix.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(oob, uint64(unix.CmsgLen(2)))
	} else {
		binary.NativeEndian.PutUint32(oob, uint32(unix.CmsgLen(2)))
	}
	binary.NativeEndian.PutUint32(oob[unix.SizeofCmsghdr-8:], unix.SOL_UDP)
	binary.NativeEndian.PutUint32(oob[unix.SizeofCmsghdr-4:], unix.UDP_SEGMENT)
	binary.NativeEndian.PutUint16(oob[unix.SizeofCmsghdr:], segSize)
	return oob
}

// isGSORefused reports whether err is the kernel refusing UDP_SEGMENT on
// this socket or route, rather than failing this one send.
func isGSORefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOPROTOOPT)
}

// mmsgBatch is one sendmmsg's scratch, pooled so writes allocate little.
type mmsgBatch struct {
	msgs [maxGSOSegments]ipv4.Message
	bufs [maxGSOSegments][1][]byte
}

var mmsgBatches = sync.Pool{New: func() any { return new(mmsgBatch) }}

// writeBatch sends b as datagrams of segSize bytes with sendmmsg, up to
// maxGSOSegments per call.
func (u *udpConn) writeBatch(b []byte, segSize int, addr netip.AddrPort) error {
	mb := mmsgBatches.Get().(*mmsgBatch)
	defer func() {
		clear(mb.bufs[:])
		clear(mb.msgs[:])
		mmsgBatches.Put(mb)
	}()
	to := net.UDPAddrFromAddrPort(addr)
	for len(b) > 0 {
		k := 0
		for ; k < len(mb.msgs) && len(b) > 0; k++ {
			d := b[:min(segSize, len(b))]
			b = b[len(d):]
			mb.bufs[k][0] = d
			mb.msgs[k] = ipv4.Message{Buffers: mb.bufs[k][:], Addr: to}
		}
		for sent := 0; sent < k; {
			n, err := u.batch.WriteBatch(mb.msgs[sent:k], 0)
			if err == nil && n < 1 {
				err = errors.New("sendmmsg sent nothing")
			}
			if err != nil {
				return fmt.Errorf("send %d datagrams to %s: %w", k-sent, addr, err)
			}
			sent += n
		}
	}
	return nil
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
