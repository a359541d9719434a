package tun

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// offloadFile is a Device with Offload: a TUN descriptor opened with
// IFF_VNET_HDR, in non-blocking mode and registered with Go's poller like
// file. Every read and write is one readv or writev of the 10-byte
// virtio_net_hdr and the packet, so that neither is copied.
type offloadFile struct {
	f    *os.File
	rc   syscall.RawConn // f's, for readv and writev through the poller
	name string

	closed    atomic.Bool // set before f is closed: the poller's error then means os.ErrClosed
	closeOnce sync.Once
	closeErr  error

	// rmu serializes readers and guards r and readErr. The Device
	// contract allows one reader goroutine; the lock makes a second one
	// harmless.
	rmu sync.Mutex
	r   *vnetIO
	// readErr is an error met after the first packet of a burst, which
	// the next Read returns before it reads on.
	readErr error
	// tryBurst, guarded by rmu, is set when the last TryRead found a
	// packet: a TryRead that follows one looks for the rest of a burst.
	tryBurst bool

	// writers holds *vnetIO for concurrent writers.
	writers sync.Pool

	// uso is whether the kernel took TUN_F_USO4|TUN_F_USO6: UDP
	// super-packets cross both ways.
	uso bool

	// Batched I/O (uring_linux.go): rring, guarded by rmu, reads a
	// burst in one system call; wring, guarded by wmu, writes one. Both
	// are nil where io_uring is unavailable, and unused once batchIO is
	// cleared, for the reason in uringErr (guarded by emu); a Write that
	// finds wmu taken writes packet by packet.
	rring, wring *uringIO
	wmu          sync.Mutex
	emu          sync.Mutex
	uringErr     error
	batchIO      atomic.Bool // the rings are in use: what BatchIO reports
}

var (
	_ Device       = (*offloadFile)(nil)
	_ syscall.Conn = (*offloadFile)(nil)
)

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h); x/sys/unix lacks them.
const (
	tunFCsum = 0x01 // TUN_F_CSUM
	tunFTSO4 = 0x02 // TUN_F_TSO4
	tunFTSO6 = 0x04 // TUN_F_TSO6
	tunFUSO4 = 0x20 // TUN_F_USO4, Linux 6.2
	tunFUSO6 = 0x40 // TUN_F_USO6, Linux 6.2
)

// offloadFlags are the TUNSETOFFLOAD flags an offloadFile needs: the
// kernel may hand it TCP super-packets with partial checksums, and takes
// them back. udpOffloadFlags are added where the kernel takes them: UDP
// super-packets too. Variables so that a test can make the kernel refuse.
var (
	offloadFlags    = tunFCsum | tunFTSO4 | tunFTSO6
	udpOffloadFlags = tunFUSO4 | tunFUSO6
)

// vnetIO is the scratch for one readv or writev of header and packet,
// with the poller callbacks bound once, so that a call allocates nothing.
type vnetIO struct {
	hdr   [virtioNetHdrLen]byte
	iov   [2]unix.Iovec
	niov  int
	n     int
	errno syscall.Errno

	// empty is set by tryRead when the queue held nothing.
	empty bool

	read, tryRead, write func(fd uintptr) bool
}

func newVnetIO() *vnetIO {
	v := new(vnetIO)
	v.read = func(fd uintptr) bool { return v.do(fd, unix.SYS_READV) }
	v.write = func(fd uintptr) bool { return v.do(fd, unix.SYS_WRITEV) }
	v.tryRead = func(fd uintptr) bool {
		v.empty = !v.do(fd, unix.SYS_READV)
		return true // never wait
	}
	return v
}

// set points the iovecs at v.hdr and p.
func (v *vnetIO) set(p []byte) {
	v.iov[0].Base = &v.hdr[0]
	v.iov[0].SetLen(virtioNetHdrLen)
	v.niov = 1
	if len(p) > 0 {
		v.iov[1].Base = &p[0]
		v.iov[1].SetLen(len(p))
		v.niov = 2
	}
	v.n, v.errno = 0, 0
}

// release drops the reference to the caller's buffer.
func (v *vnetIO) release() { v.iov[1] = unix.Iovec{} }

// do runs readv or writev (trap) on fd; it returns false, for the poller
// to wait and call again, when fd is not ready.
//
// The descriptor is non-blocking, so the call never sleeps and is made
// without telling the scheduler (RawSyscall, as gVisor's rawfile does for
// its non-blocking I/O). Through Syscall, a write that runs long — a TUN
// write runs the receiving pod's TCP inline — lets sysmon hand the P to
// another thread, and every such hand-off is a thread wakeup and two
// context switches, paid in new connections/s and request/response round
// trips; the overlay socket's calls are made the same way. `make bench`
// prints both figures (integration/bench: "ClusterIP new connections/s",
// "TCP 64 B request/response RTT p50").
func (v *vnetIO) do(fd, trap uintptr) bool {
	for {
		n, _, errno := unix.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(v.niov))
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		v.n, v.errno = int(n), errno
		return true
	}
}

// newOffloadFile makes an offloadFile of fd, a non-blocking, close-on-exec
// TUN descriptor on which enableOffload succeeded (and reported uso),
// attached to name.
func newOffloadFile(fd int, name string, uso bool) (*offloadFile, error) {
	// A non-blocking descriptor given to os.NewFile is registered with
	// the poller.
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &offloadFile{f: f, rc: rc, name: name, r: newVnetIO(), uso: uso}
	d.writers.New = func() any { return newVnetIO() }
	d.rring, d.uringErr = newURingIO()
	if d.uringErr == nil {
		if d.wring, d.uringErr = newURingIO(); d.uringErr != nil {
			d.rring.u.close()
			d.rring = nil
		}
	}
	d.batchIO.Store(d.uringErr == nil)
	return d, nil
}

// enableOffload turns on the offloads of fd, a TUN descriptor attached
// with IFF_VNET_HDR, and fixes the header's layout: 10 bytes (struct
// virtio_net_hdr, no num_buffers), little endian on every host. It sets
// the offloads first, so that when the kernel refuses them fd is left as
// it was. It asks for UDP segmentation offload too and reports whether the
// kernel took it (uso); a kernel before 6.2 refuses it with EINVAL, and
// the device then carries TCP super-packets only.
func enableOffload(fd int) (uso bool, err error) {
	uso = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadFlags|udpOffloadFlags) == nil
	if !uso {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadFlags); err != nil {
			return false, fmt.Errorf("%w: the kernel refused TUNSETOFFLOAD %#x (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): %w", ErrOffloadRefused, offloadFlags, err)
		}
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtioNetHdrLen); err != nil {
		return false, fmt.Errorf("%w: set the virtio-net header size to %d (TUNSETVNETHDRSZ): %w", ErrOffloadRefused, virtioNetHdrLen, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
		return false, fmt.Errorf("%w: make the virtio-net header little endian (TUNSETVNETLE): %w", ErrOffloadRefused, err)
	}
	return uso, nil
}

// openOffload creates or attaches to TUN name with IFF_VNET_HDR and turns
// its offloads on. Unlike open (water), it leaves IFF_PERSIST alone.
func openOffload(name string, multiQueue bool) (*offloadFile, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		// The shapes water's errors have, which openError explains: the
		// bare errno from open, an *os.SyscallError from the ioctl.
		return nil, openError(name, multiQueue, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if multiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, openError(name, multiQueue, os.NewSyscallError("ioctl", err))
	}
	uso, err := enableOffload(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %s: %w; open it without Options.Offload", name, err)
	}
	d, err := newOffloadFile(fd, ifr.Name(), uso)
	if err != nil {
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	return d, nil
}

func (d *offloadFile) Name() string { return d.name }

// SyscallConn gives access to the raw descriptor, as file's does. Every
// packet on it carries a virtio_net_hdr.
func (d *offloadFile) SyscallConn() (syscall.RawConn, error) { return d.rc, nil }

// Close closes the descriptor, as file's Close does.
func (d *offloadFile) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		if err := d.f.Close(); err != nil {
			d.closeErr = fmt.Errorf("close TUN %s: %w", d.name, err)
		}
		// A pending Read has returned (the poller saw the close) and
		// released rmu; nothing is in flight on a ring between calls.
		d.rmu.Lock()
		if d.rring != nil {
			d.rring.u.close()
			d.rring = nil
		}
		d.rmu.Unlock()
		d.wmu.Lock()
		if d.wring != nil {
			d.wring.u.close()
			d.wring = nil
		}
		d.wmu.Unlock()
	})
	return d.closeErr
}

// Read implements Device: a burst. It waits for one packet, then takes
// whatever else the device's queue holds, up to len(bufs) packets, without
// waiting: one readv per packet and its header, all in one system call
// with batched I/O (readRing). A burst lets the router send a run of
// packets to one peer in one system call (UDP_SEGMENT) instead of one
// each; when the queue is empty after the first packet, it costs one readv
// that finds nothing. An error met after the first packet (a malformed
// header) ends the burst and is returned by the next Read.
func (d *offloadFile) Read(bufs [][]byte, sizes []int, offs []Offload) (int, error) {
	return d.readBurst(bufs, sizes, offs, true)
}

// TryRead is Read without the wait: it returns 0 packets at once when the
// queue is empty (a reader that polls, see router.Options.BusyPoll). The
// first packet after a TryRead that found nothing comes back alone, so
// that the poller forwards it before it reads again: a round trip's
// packets come one at a time, and looking behind each for more cost it a
// system call before it went on. The TryRead after one that found a
// packet reads the rest of a burst, as Read does.
func (d *offloadFile) TryRead(bufs [][]byte, sizes []int, offs []Offload) (int, error) {
	return d.readBurst(bufs, sizes, offs, false)
}

// readBurst is Read when wait is set, TryRead when not.
func (d *offloadFile) readBurst(bufs [][]byte, sizes []int, offs []Offload, wait bool) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if err := d.readErr; err != nil {
		d.readErr = nil
		return 0, err
	}
	ring := d.rring != nil && len(bufs) > 1 && d.batchIO.Load()
	if ring && wait {
		if n, err := d.readRing(bufs, sizes, offs, true); err != errRingUnsupported {
			return n, err
		}
		ring = false
	}
	// TryRead (a busy poller) or no ring: the first packet through one
	// readv — for a poller that mostly finds nothing, the cheapest
	// call — and with a ring the rest of the burst in one more.
	first := d.r.tryRead
	if wait {
		first = d.r.read
	}
	n, err := d.readLocked(bufs[0], first)
	if err != nil {
		return 0, err
	}
	if d.r.empty {
		if !wait {
			d.tryBurst = false
		}
		return 0, nil
	}
	if !wait && !d.tryBurst {
		// A poller's first packet after finding nothing goes on at
		// once; the next TryRead looks for a burst behind it.
		d.tryBurst = true
		ring = false
		bufs = bufs[:1]
	}
	o, err := parseOffload(d.r.hdr[:], bufs[0][:n])
	if err != nil {
		return 0, fmt.Errorf("read TUN %s: %w", d.name, err)
	}
	sizes[0], offs[0] = n, o
	got := 1
	if ring {
		end := min(len(bufs), maxReadBurst)
		m, err := d.readRing(bufs[1:end], sizes[1:end], offs[1:end], false)
		if err != errRingUnsupported {
			if err != nil {
				d.readErr = err
			}
			return 1 + m, nil
		}
	}
	for ; got < len(bufs) && got < maxReadBurst; got++ {
		n, err := d.readLocked(bufs[got], d.r.tryRead)
		if err == nil && d.r.empty {
			break
		}
		if err == nil {
			offs[got], err = parseOffload(d.r.hdr[:], bufs[got][:n])
			if err != nil {
				err = fmt.Errorf("read TUN %s: %w", d.name, err)
			}
		}
		if err != nil {
			d.readErr = err
			break
		}
		sizes[got] = n
	}
	return got, nil
}

// maxReadBurst is the most packets one Read returns: enough to send a
// burst of small packets in a few system calls, few enough that the
// reader's buffers (64 KiB each, for super-packets) stay small.
const maxReadBurst = 8

func (d *offloadFile) BatchSize() int { return maxReadBurst }
func (d *offloadFile) Offload() bool  { return true }

// UDPOffload implements Device.
func (d *offloadFile) UDPOffload() bool { return d.uso }

// readLocked reads the next header into d.r.hdr and its packet into p
// through the poller callback read (d.r.read waits for a packet, d.r.tryRead
// sets d.r.empty instead), and returns the packet's length, capped at
// len(p).
func (d *offloadFile) readLocked(p []byte, read func(fd uintptr) bool) (int, error) {
	v := d.r
	v.set(p)
	v.empty = false
	err := d.rc.Read(read)
	v.release()
	if err != nil {
		return 0, d.pollError("read", err)
	}
	if v.empty {
		return 0, nil
	}
	if v.errno != 0 {
		return 0, &os.PathError{Op: "read", Path: d.f.Name(), Err: v.errno}
	}
	if v.n < virtioNetHdrLen {
		return 0, fmt.Errorf("read TUN %s: %w: read %d bytes, shorter than the %d-byte header", d.name, ErrBadOffload, v.n, virtioNetHdrLen)
	}
	return min(v.n-virtioNetHdrLen, len(p)), nil
}

// Write implements Device: one writev of header and packet per packet, or,
// for more than one packet where io_uring is available, one system call
// for up to uringEntries of them (writeRing). On error it reports the
// packets before the first that failed and writes none after it.
func (d *offloadFile) Write(bufs [][]byte, offs []Offload) (int, error) {
	valid, verr := len(bufs), error(nil)
	for i, b := range bufs {
		var o Offload
		if offs != nil {
			o = offs[i]
		}
		if verr = d.checkWrite(b, o); verr != nil {
			valid = i
			break
		}
	}
	n, err := 0, error(nil)
	if valid > 1 && d.batchIO.Load() && d.wmu.TryLock() {
		if d.wring != nil {
			n, err = d.writeRing(bufs[:valid], offs)
		}
		d.wmu.Unlock()
	}
	for ; err == nil && n < valid; n++ {
		var o Offload
		if offs != nil {
			o = offs[n]
		}
		if _, err = d.writev(bufs[n], o); err != nil {
			break
		}
	}
	if err != nil {
		return n, err
	}
	return valid, verr
}

// checkWrite refuses metadata o that cannot describe b on this device.
func (d *offloadFile) checkWrite(b []byte, o Offload) error {
	if err := o.check(b); err != nil {
		return fmt.Errorf("write TUN %s: %w", d.name, err)
	}
	if o.GSOType == GSOUDPL4 && !d.uso {
		return fmt.Errorf("write TUN %s: %w: a UDP super-packet, and the kernel did not take UDP segmentation offload (TUN_F_USO4|TUN_F_USO6, Linux 6.2)", d.name, ErrBadOffload)
	}
	return nil
}

func (d *offloadFile) writev(p []byte, o Offload) (int, error) {
	v := d.writers.Get().(*vnetIO)
	putOffload(v.hdr[:], o)
	v.set(p)
	err := d.rc.Write(v.write)
	v.release()
	n, errno := v.n, v.errno
	d.writers.Put(v)
	if err != nil {
		return 0, d.pollError("write", err)
	}
	if errno != 0 {
		return 0, &os.PathError{Op: "write", Path: d.f.Name(), Err: errno}
	}
	return max(n-virtioNetHdrLen, 0), nil
}

// pollError makes an error from the poller look like os.File's: the
// poller says "use of closed file" where os.File says os.ErrClosed.
func (d *offloadFile) pollError(op string, err error) error {
	if d.closed.Load() {
		err = os.ErrClosed
	}
	return &os.PathError{Op: op, Path: d.f.Name(), Err: err}
}
