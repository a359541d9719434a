package tun

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A uring is a small io_uring (io_uring_setup(2)) that moves a burst of
// TUN reads or writes in one system call: each SQE is a readv or writev
// of one packet and its virtio_net_hdr, exactly the call offloadFile
// makes per packet without it, and one io_uring_enter submits them all
// and waits for them. A system call costs about a microsecond of entry
// and exit on a virtual machine with page-table isolation (the bench's:
// 1.1–1.3 µs for getppid, 2.6–2.7 µs for a TUN writev of a small
// packet), so a burst of eight small packets costs about half as much
// this way (docs/performance.md, "How the data path got here").
//
// Every request carries RWF_NOWAIT, so a read that finds the queue
// empty completes at once with EAGAIN instead of being parked until a
// packet comes (which io_uring does to a plain read, even on a
// non-blocking descriptor), and a write that would wait fails the same
// way: every request completes inside the io_uring_enter that submits it,
// no kernel worker thread is involved, and nothing is in flight when it
// returns. A kernel whose TUN does not take RWF_NOWAIT fails each request
// with EOPNOTSUPP before it touches the queue; the device then turns its
// rings off (offloadFile.dropRings). The caller makes that call inside
// the poller's callback (syscall.RawConn), which keeps the descriptor
// from being closed and its number reused while the kernel uses it.
//
// A uring is not safe for concurrent use; offloadFile guards each of its
// two (reads, writes) with a lock.
type uring struct {
	fd             int
	ring, sqeMap   []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        []uint32
	sqes           []uringSQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []uringCQE

	// Per-slot scratch: the header and the iovecs of SQE i, which the
	// kernel reads while the request runs.
	hdrs [][virtioNetHdrLen]byte
	iovs [][2]unix.Iovec
	// res is the result of SQE i of the last submit.
	res []int32
}

// uringEntries is the size of a uring's submission queue: the most
// packets one submit moves.
const uringEntries = 16

// io_uring ABI (include/uapi/linux/io_uring.h); x/sys/unix has the
// system call numbers but not the structures.
type uringSQOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type uringCQOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  uringSQOffsets
	CQOff                                                                  uringCQOffsets
}

type uringSQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	_           uint64
}

type uringCQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

const (
	uringOpReadv  = 1 // IORING_OP_READV
	uringOpWritev = 2 // IORING_OP_WRITEV

	uringEnterGetEvents = 1 // IORING_ENTER_GETEVENTS

	// uringLink (IOSQE_IO_LINK) makes the next request wait for this
	// one and fail (ECANCELED) if it does: a batch of writes stops at the
	// first that fails, as a loop of writev does.
	uringLink = 1 << 2

	uringOffSQRing = 0          // IORING_OFF_SQ_RING
	uringOffCQRing = 0x8000000  // IORING_OFF_CQ_RING
	uringOffSQEs   = 0x10000000 // IORING_OFF_SQES

	uringFeatSingleMmap = 1 << 0  // IORING_FEAT_SINGLE_MMAP
	uringFeatNoDrop     = 1 << 1  // IORING_FEAT_NODROP
	uringFeatRegRegRing = 1 << 13 // IORING_FEAT_REG_REG_RING, Linux 6.3
)

// errNoURing says why a device moves its packets one system call each.
var errNoURing = errors.New("io_uring unavailable")

// uringDisabled turns batched TUN I/O off for every device opened after
// it is set: a test's way to compare both paths. Operators turn it off
// for the host (kernel.io_uring_disabled) or the container (seccomp).
var uringDisabled atomic.Bool

// newURing sets up a uring. It requires Linux 6.3 or later (the kernel
// whose no-wait handling of non-blocking files this relies on has been
// stable since long before; 6.3 is simply a feature bit that proves a
// recent one), and fails with an error wrapping errNoURing where the
// kernel lacks io_uring, a seccomp filter or kernel.io_uring_disabled
// refuses it, or the kernel is older.
func newURing() (*uring, error) {
	if uringDisabled.Load() {
		return nil, fmt.Errorf("%w: turned off", errNoURing)
	}
	var p uringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %w", errNoURing, errno)
	}
	u := &uring{fd: int(fd)}
	if want := uint32(uringFeatSingleMmap | uringFeatNoDrop | uringFeatRegRegRing); p.Features&want != want {
		u.close()
		return nil, fmt.Errorf("%w: the kernel's io_uring lacks features %#x (Linux 6.3 or later has them)", errNoURing, want&^p.Features)
	}
	size := max(int(p.SQOff.Array)+int(p.SQEntries)*4, int(p.CQOff.Cqes)+int(p.CQEntries)*int(unsafe.Sizeof(uringCQE{})))
	var err error
	if u.ring, err = unix.Mmap(u.fd, uringOffSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		u.close()
		return nil, fmt.Errorf("%w: map the rings: %w", errNoURing, err)
	}
	if u.sqeMap, err = unix.Mmap(u.fd, uringOffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(uringSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		u.close()
		return nil, fmt.Errorf("%w: map the submission queue entries: %w", errNoURing, err)
	}
	base := unsafe.Pointer(&u.ring[0])
	u.sqHead = (*uint32)(unsafe.Add(base, p.SQOff.Head))
	u.sqTail = (*uint32)(unsafe.Add(base, p.SQOff.Tail))
	u.sqMask = *(*uint32)(unsafe.Add(base, p.SQOff.RingMask))
	u.sqArray = unsafe.Slice((*uint32)(unsafe.Add(base, p.SQOff.Array)), p.SQEntries)
	u.cqHead = (*uint32)(unsafe.Add(base, p.CQOff.Head))
	u.cqTail = (*uint32)(unsafe.Add(base, p.CQOff.Tail))
	u.cqMask = *(*uint32)(unsafe.Add(base, p.CQOff.RingMask))
	u.cqes = unsafe.Slice((*uringCQE)(unsafe.Add(base, p.CQOff.Cqes)), p.CQEntries)
	u.sqes = unsafe.Slice((*uringSQE)(unsafe.Pointer(&u.sqeMap[0])), p.SQEntries)
	u.hdrs = make([][virtioNetHdrLen]byte, p.SQEntries)
	u.iovs = make([][2]unix.Iovec, p.SQEntries)
	u.res = make([]int32, p.SQEntries)
	return u, nil
}

// capacity is the most requests one submit takes.
func (u *uring) capacity() int { return len(u.sqes) }

// prep fills SQE slot i (0 ≤ i < capacity, in submission order) with a
// readv or writev (op) on fd of the header in u.hdrs[i] and p, with SQE
// flags (uringLink).
func (u *uring) prep(i int, op, flags uint8, fd uintptr, p []byte) {
	iov := &u.iovs[i]
	iov[0].Base = &u.hdrs[i][0]
	iov[0].SetLen(virtioNetHdrLen)
	n := 1
	if len(p) > 0 {
		iov[1].Base = &p[0]
		iov[1].SetLen(len(p))
		n = 2
	}
	tail := atomic.LoadUint32(u.sqTail)
	slot := (tail + uint32(i)) & u.sqMask
	u.sqes[slot] = uringSQE{
		Opcode:   op,
		Flags:    flags,
		Fd:       int32(fd),
		Off:      ^uint64(0), // the file's position: a TUN has none
		Addr:     uint64(uintptr(unsafe.Pointer(&iov[0]))),
		Len:      uint32(n),
		OpFlags:  unix.RWF_NOWAIT,
		UserData: uint64(i),
	}
	u.sqArray[slot] = slot
}

// submit submits the n requests prepared in slots 0..n-1, waits for all of
// them and leaves each one's result in u.res[i]: the bytes moved, or a
// negated errno. It returns an error only when io_uring_enter itself fails,
// and then no request ran (the submission queue is reset).
//
// Like the per-packet calls, it is a raw system call: every request on a
// non-blocking TUN completes inline (see uring), so the call never sleeps.
func (u *uring) submit(n int) error {
	tail := atomic.LoadUint32(u.sqTail)
	atomic.StoreUint32(u.sqTail, tail+uint32(n))
	for i := range n {
		u.res[i] = -int32(unix.ECANCELED)
	}
	var err error
	for {
		// What is left to submit, and the completions still to come.
		toSubmit := tail + uint32(n) - atomic.LoadUint32(u.sqHead)
		ready := atomic.LoadUint32(u.cqTail) - atomic.LoadUint32(u.cqHead)
		if toSubmit == 0 && ready >= uint32(n) {
			break
		}
		_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(u.fd), uintptr(toSubmit), uintptr(n), uringEnterGetEvents, 0, 0)
		if errno != 0 && errno != unix.EINTR {
			// Take back what the kernel did not consume.
			atomic.StoreUint32(u.sqTail, atomic.LoadUint32(u.sqHead))
			err = fmt.Errorf("io_uring_enter: %w", errno)
			break
		}
		// Every request completes inline (RWF_NOWAIT), but the wait
		// may return early (a signal): look again.
	}
	head, ctail := atomic.LoadUint32(u.cqHead), atomic.LoadUint32(u.cqTail)
	for ; head != ctail; head++ {
		c := &u.cqes[head&u.cqMask]
		if c.UserData < uint64(n) {
			u.res[c.UserData] = c.Res
		}
	}
	atomic.StoreUint32(u.cqHead, head)
	for i := range n {
		u.iovs[i][1] = unix.Iovec{} // let the caller's buffers go
	}
	return err
}

// close releases the ring. Nothing is in flight after a submit returns.
func (u *uring) close() {
	if u.sqeMap != nil {
		unix.Munmap(u.sqeMap)
		u.sqeMap = nil
	}
	if u.ring != nil {
		unix.Munmap(u.ring)
		u.ring = nil
	}
	if u.fd >= 0 {
		unix.Close(u.fd)
		u.fd = -1
	}
}

// uringIO is a uring with what one batched read or write of an
// offloadFile needs, its poller callbacks bound once so that a call
// allocates nothing.
type uringIO struct {
	u *uring
	// The batch: its buffers and metadata, how many, and for a read
	// whether to wait for the first packet.
	bufs [][]byte
	offs []Offload
	n    int
	wait bool
	// next is how many reads the next batched read submits.
	next int
	// empty is set by a read that found the queue empty and did not wait;
	// err by a submit that failed.
	empty bool
	err   error

	read, write func(fd uintptr) bool
}

func newURingIO() (*uringIO, error) {
	u, err := newURing()
	if err != nil {
		return nil, err
	}
	b := &uringIO{u: u}
	b.read = b.doRead
	b.write = b.doWrite
	return b, nil
}

// doRead submits a readv per buffer and reports whether the batch is done:
// false, for the poller to wait and call again, when every read found the
// queue empty and the caller waits.
func (b *uringIO) doRead(fd uintptr) bool {
	for i := range b.n {
		b.u.prep(i, uringOpReadv, 0, fd, b.bufs[i])
	}
	if b.err = b.u.submit(b.n); b.err != nil {
		return true
	}
	for _, r := range b.u.res[:b.n] {
		if r != -int32(unix.EAGAIN) {
			return true
		}
	}
	if b.wait {
		return false
	}
	b.empty = true
	return true
}

// doWrite submits a writev per buffer, each with its header, linked so
// that the first to fail cancels the rest; it never waits (a write that
// would is reported as EAGAIN, which Write retries on its own).
func (b *uringIO) doWrite(fd uintptr) bool {
	for i := range b.n {
		var o Offload
		if b.offs != nil {
			o = b.offs[i]
		}
		putOffload(b.u.hdrs[i][:], o)
		var flags uint8
		if i < b.n-1 {
			flags = uringLink
		}
		b.u.prep(i, uringOpWritev, flags, fd, b.bufs[i])
	}
	b.err = b.u.submit(b.n)
	return true
}

// readRing is readBurst with a ring: an io_uring_enter of a readv per
// buffer — as many as the last burst suggests, more while each finds a
// packet, up to maxReadBurst — takes what the queue holds, waiting first
// for a packet when wait is set. Packets come back in queue order; a
// malformed one is dropped and its error returned by the next Read, as
// readBurst does.
func (d *offloadFile) readRing(bufs [][]byte, sizes []int, offs []Offload, wait bool) (int, error) {
	b := d.rring
	limit := min(len(bufs), maxReadBurst, b.u.capacity())
	// As many reads as the last burst suggests: each read that finds
	// the queue empty costs the kernel a request, so a steady trickle of
	// single packets is read two at a time (one finds nothing, as the
	// per-packet path's second readv). When every read found a packet,
	// more may be queued: another round, twice the size, without
	// waiting, until a read finds nothing or the burst is full.
	k := min(limit, max(2, b.next))
	got := 0
	var first error
	for round := 0; ; round++ {
		b.bufs, b.n, b.wait, b.empty, b.err = bufs[got:], k, wait && round == 0, false, nil
		err := d.rc.Read(b.read)
		b.bufs = nil
		switch {
		case err != nil:
			err = d.pollError("read", err)
		case b.err != nil:
			err = &os.PathError{Op: "read", Path: d.f.Name(), Err: b.err}
		case round == 0 && unsupported(b.u.res[0]):
			d.dropRings(fmt.Errorf("%w: the TUN refused a no-wait read: %w", errNoURing, unix.Errno(-b.u.res[0])))
			return 0, errRingUnsupported
		}
		if err != nil {
			if got == 0 {
				return 0, err
			}
			d.readErr = err
			break
		}
		if b.empty {
			break
		}
		full := true
		base := got
		for i, r := range b.u.res[:k] {
			var perr error
			switch {
			case r == -int32(unix.EAGAIN):
				full = false
				continue // nothing was queued then; a later read found more
			case r < 0:
				perr = &os.PathError{Op: "read", Path: d.f.Name(), Err: unix.Errno(-r)}
			case int(r) < virtioNetHdrLen:
				perr = fmt.Errorf("read TUN %s: %w: read %d bytes, shorter than the %d-byte header", d.name, ErrBadOffload, r, virtioNetHdrLen)
			default:
				j := base + i
				n := min(int(r)-virtioNetHdrLen, len(bufs[j]))
				o, err := parseOffload(b.u.hdrs[i][:], bufs[j][:n])
				if err != nil {
					perr = fmt.Errorf("read TUN %s: %w", d.name, err)
					break
				}
				if got != j {
					// A hole before it: keep the burst packed, in order.
					copy(bufs[got], bufs[j][:n])
				}
				sizes[got], offs[got] = n, o
				got++
			}
			if perr != nil {
				full = false
				if first == nil {
					first = perr
				}
			}
		}
		if !full || got == limit {
			break
		}
		k = min(limit-got, 2*k)
	}
	b.next = got
	if got == 0 {
		return 0, first
	}
	if first != nil {
		d.readErr = first
	}
	return got, nil
}

// writeRing writes bufs in batches of up to a ring's capacity, one
// io_uring_enter each, and returns how many it wrote before the first
// failure: on EAGAIN (the kernel's queue is full) with no error, for
// Write to go on packet by packet, which waits.
func (d *offloadFile) writeRing(bufs [][]byte, offs []Offload) (int, error) {
	b := d.wring
	done := 0
	for done < len(bufs) {
		b.n = min(len(bufs)-done, b.u.capacity())
		b.bufs, b.offs, b.err = bufs[done:done+b.n], nil, nil
		if offs != nil {
			b.offs = offs[done : done+b.n]
		}
		err := d.rc.Write(b.write)
		b.bufs, b.offs = nil, nil
		if err != nil {
			return done, d.pollError("write", err)
		}
		if b.err != nil {
			return done, &os.PathError{Op: "write", Path: d.f.Name(), Err: b.err}
		}
		if unsupported(b.u.res[0]) {
			d.dropRings(fmt.Errorf("%w: the TUN refused a no-wait write: %w", errNoURing, unix.Errno(-b.u.res[0])))
			return done, nil
		}
		for _, r := range b.u.res[:b.n] {
			switch {
			case r == -int32(unix.EAGAIN), r == -int32(unix.ECANCELED):
				return done, nil // Write goes on packet by packet
			case r < 0:
				return done, &os.PathError{Op: "write", Path: d.f.Name(), Err: unix.Errno(-r)}
			}
			done++
		}
	}
	return done, nil
}

// errRingUnsupported is readRing's: the kernel refused the ring's reads
// before touching the queue, and the rings are off now; read the plain
// way.
var errRingUnsupported = errors.New("batched TUN reads unsupported")

// unsupported reports whether a request's result says the kernel refuses
// the request itself (RWF_NOWAIT on a TUN that lacks it), not the packet.
func unsupported(res int32) bool {
	return res == -int32(unix.EOPNOTSUPP)
}

// dropRings turns batched I/O off for good, for reason; the rings stay
// allocated, unused, until Close.
func (d *offloadFile) dropRings(reason error) {
	if d.batchIO.CompareAndSwap(true, false) {
		d.emu.Lock()
		d.uringErr = reason
		d.emu.Unlock()
	}
}

// BatchIO reports whether the device moves bursts of packets through
// io_uring, one system call per burst, and if not, why.
func (d *offloadFile) BatchIO() (bool, error) {
	d.emu.Lock()
	defer d.emu.Unlock()
	return d.batchIO.Load(), d.uringErr
}
