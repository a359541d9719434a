package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// file is a Device backed by a TUN descriptor in non-blocking mode,
// registered with Go's poller: a Read parks its goroutine rather than a
// thread, and Close wakes it with os.ErrClosed.
type file struct {
	f    *os.File
	name string

	closeOnce sync.Once
	closeErr  error
}

var (
	_ Device       = (*file)(nil)
	_ syscall.Conn = (*file)(nil)
)

// Read implements Device: one packet, one read(2).
func (d *file) Read(bufs [][]byte, sizes []int, offs []Offload) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	n, err := d.f.Read(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0], offs[0] = n, Offload{}
	return 1, nil
}

// Write implements Device: one write(2) per packet. It refuses offload
// metadata: the device was opened without IFF_VNET_HDR.
func (d *file) Write(bufs [][]byte, offs []Offload) (int, error) {
	for i, b := range bufs {
		if offs != nil && offs[i] != (Offload{}) {
			return i, fmt.Errorf("write TUN %s: %w: %+v on a device opened without offloads", d.name, ErrBadOffload, offs[i])
		}
		if _, err := d.f.Write(b); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (d *file) BatchSize() int { return 1 }
func (d *file) Offload() bool  { return false }

// UDPOffload implements Device.
func (d *file) UDPOffload() bool { return false }
func (d *file) Name() string     { return d.name }

// SyscallConn gives access to the raw descriptor. The descriptor belongs to
// the Device: it is valid only until Close, and callers must not change its
// blocking mode or close it.
func (d *file) SyscallConn() (syscall.RawConn, error) { return d.f.SyscallConn() }

// Close closes the descriptor. When it was the device's last queue and the
// device is not persistent, the kernel deletes the interface and with it
// its addresses and routes. Later calls return the first call's result.
func (d *file) Close() error {
	d.closeOnce.Do(func() {
		if err := d.f.Close(); err != nil {
			d.closeErr = fmt.Errorf("close TUN %s: %w", d.name, err)
		}
	})
	return d.closeErr
}

// Open creates the TUN interface opts.Name, or attaches to an existing one
// this process may use (a persistent TUN it owns, or another queue of a
// multiqueue TUN), and returns a Device carrying raw IP packets
// (IFF_TUN|IFF_NO_PI). It needs CAP_NET_ADMIN in the current thread's
// network namespace to create the interface; the interface is created
// there.
//
// With opts.Offload the Device carries TCP super-packets (see
// Options.Offload);
// errors then also wrap ErrOffloadRefused when the kernel refuses the offloads.
//
// The descriptor is close-on-exec. If the interface already existed as a
// persistent TUN it stays persistent; otherwise it disappears with the
// Device's Close.
//
// Errors wrap ErrNoDevice, ErrPermission or ErrBusy when those apply and
// say how to fix them.
func Open(opts Options) (Device, error) {
	name := opts.name()
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("create TUN: Options.Name: %w", err)
	}
	return openDevice(name, opts.MultiQueue, opts.Offload)
}

// OpenQueues opens n queues of the multiqueue TUN opts.Name (creating it
// if needed), as Open with opts.MultiQueue set. Each queue is a Device with
// its own reader; the kernel spreads flows across queues. On error it
// closes the queues it opened.
func OpenQueues(opts Options, n int) ([]Device, error) {
	name := opts.name()
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("create TUN: Options.Name: %w", err)
	}
	if n < 1 {
		return nil, fmt.Errorf("create TUN %s: %d queues; want at least 1", name, n)
	}
	devs := make([]Device, 0, n)
	for i := range n {
		d, err := openDevice(name, true, opts.Offload)
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		// With "%d" in the name, later queues attach to the one the
		// kernel picked for the first.
		name = d.Name()
		devs = append(devs, d)
	}
	return devs, nil
}

// openDevice opens TUN name as Open does: an offloadFile if offload is
// set, a file otherwise.
func openDevice(name string, multiQueue, offload bool) (Device, error) {
	if offload {
		d, err := openOffload(name, multiQueue)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
	d, err := open(name, multiQueue)
	if err != nil {
		return nil, err
	}
	return d, nil
}

func open(name string, multiQueue bool) (*file, error) {
	// water clears IFF_PERSIST on the device it attaches to. Remember
	// whether an operator made this one persistent (ip tuntap add ... user
	// U, so that an unprivileged vrouter can attach) and put it back.
	persistent := isPersistentTUN(name)

	f, kernelName, err := waterOpen(name, multiQueue)
	if err != nil {
		return nil, openError(name, multiQueue, err)
	}
	d := &file{f: f, name: kernelName}
	if persistent {
		err := control(f, func(fd int) error {
			return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("create TUN %s: restore persistence (TUNSETPERSIST): %w", name, err)
		}
	}
	return d, nil
}

// waterOpen has water create or attach the TUN and returns its file and
// the name the kernel gave it. Errors are water's, unexplained.
//
// water opens /dev/net/tun without O_CLOEXEC; ForkLock, held until the
// descriptor has it, keeps a concurrent fork+exec from inheriting it (a
// child holding it would keep the interface alive after Close). water
// also leaks that descriptor when TUNSETIFF fails: one per failed Open.
func waterOpen(name string, multiQueue bool) (*os.File, string, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	ifce, err := water.New(water.Config{
		DeviceType: water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{
			Name:       name,
			MultiQueue: multiQueue,
		},
	})
	if err != nil {
		return nil, "", err
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, "", fmt.Errorf("water returned a %T, want an *os.File", ifce.ReadWriteCloser)
	}
	if err := control(f, func(fd int) error {
		unix.CloseOnExec(fd)
		return nil
	}); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("set close-on-exec: %w", err)
	}
	return f, ifce.Name(), nil
}

// isPersistentTUN reports whether name is an existing persistent TUN. If
// netlink cannot tell, it reports false.
func isPersistentTUN(name string) bool {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return false
	}
	t, ok := link.(*netlink.Tuntap)
	return ok && t.Mode == netlink.TUNTAP_MODE_TUN && !t.NonPersist
}

// control runs fn with f's descriptor without putting it into blocking
// mode (which f.Fd would do).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) { fnErr = fn(int(fd)) }); err != nil {
		return err
	}
	return fnErr
}

// Adopt makes a Device of fd, a TUN descriptor that a privileged helper (a
// CNI plugin, an init container, the parent of a user namespace) opened
// and passed to this process, so that vrouter runs without CAP_NET_ADMIN.
//
// The descriptor must be attached to a TUN interface opened with
// IFF_TUN|IFF_NO_PI. IFF_NO_PI can only be checked when the interface is in
// this process's network namespace; elsewhere it is assumed. name, if not
// empty, must be the interface's name; empty takes the name from the
// descriptor.
//
// If the helper opened it with IFF_VNET_HDR too, Adopt turns on its
// offloads (TUNSETOFFLOAD, as Options.Offload does; it needs no
// privilege) and returns a Device whose Offload is true; it also sets the header to
// the 10-byte little-endian struct virtio_net_hdr (TUNSETVNETHDRSZ,
// TUNSETVNETLE), which the helper must not change. If the kernel refuses
// the offloads, Adopt fails with an error wrapping ErrOffloadRefused: the
// helper must open the TUN without IFF_VNET_HDR.
//
// On success the Device owns fd: it sets fd close-on-exec and non-blocking
// (the latter is shared with every process holding the same open file),
// and Close closes it. On error fd is left open and unchanged. Errors wrap
// ErrNotTUN for a descriptor that is not a usable TUN and unix.EBADF for
// one that is not open.
func Adopt(fd int, name string) (Device, error) {
	op := fmt.Sprintf("adopt TUN fd %d", fd)
	if fd < 0 {
		return nil, fmt.Errorf("%s: %w: want a descriptor number >= 0", op, unix.EBADF)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, adoptError(op, fd, err)
	}
	got, flags := ifr.Name(), ifr.Uint16()
	switch {
	case flags&unix.IFF_TAP != 0:
		return nil, fmt.Errorf("%s: %w: it is TAP device %s (Ethernet frames); vrouter needs a TUN (IFF_TUN) carrying IP packets", op, ErrNotTUN, got)
	case flags&unix.IFF_TUN == 0:
		return nil, fmt.Errorf("%s: %w: interface %s has flags %#x without IFF_TUN", op, ErrNotTUN, got, flags)
	case !hasNoPI(got):
		return nil, fmt.Errorf("%s: %w: TUN %s was opened without IFF_NO_PI, so every packet carries a 4-byte packet-information header; the helper must open it with IFF_TUN|IFF_NO_PI", op, ErrNotTUN, got)
	case name != "" && name != got:
		return nil, fmt.Errorf("%s: it is TUN %s, not %s: pass the name the helper created, or none", op, got, name)
	}
	vnetHdr, uso := flags&unix.IFF_VNET_HDR != 0, false
	if vnetHdr {
		var err error
		if uso, err = enableOffload(fd); err != nil {
			return nil, fmt.Errorf("%s: TUN %s was opened with IFF_VNET_HDR: %w; the helper must open it without IFF_VNET_HDR", op, got, err)
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("%s: set non-blocking: %w", op, err)
	}
	unix.CloseOnExec(fd)
	if vnetHdr {
		d, err := newOffloadFile(fd, got, uso)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		return d, nil
	}
	// A non-blocking descriptor given to os.NewFile is registered with the
	// poller.
	return &file{f: os.NewFile(uintptr(fd), "tun"), name: got}, nil
}

// hasNoPI reports whether TUN name, if this network namespace has it, was
// set up with IFF_NO_PI. TUNGETIFF cannot tell: on every TUN it reports
// IFF_NOFILTER, which is the same bit (0x1000). Netlink's IFLA_TUN_PI can,
// but only for an interface in this namespace; one that is not (the
// helper made it elsewhere, or netlink fails) is taken on trust.
func hasNoPI(name string) bool {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return true
	}
	t, ok := link.(*netlink.Tuntap)
	return !ok || t.Flags&netlink.TUNTAP_NO_PI != 0
}

// openError explains why water.New failed. water returns the bare errno
// when opening /dev/net/tun fails and an *os.SyscallError "ioctl" when
// TUNSETIFF (or TUNSETPERSIST) does.
func openError(name string, multiQueue bool, err error) error {
	op := "create TUN " + name
	var se *os.SyscallError
	inIoctl := errors.As(err, &se) && se.Syscall == "ioctl"
	var errno syscall.Errno
	errors.As(err, &errno)

	if !inIoctl {
		switch errno {
		case unix.ENOENT:
			return fmt.Errorf("%s: %w: /dev/net/tun not found: load the tun module (modprobe tun) or, in a container, pass --device /dev/net/tun (open: %w)", op, ErrNoDevice, err)
		case unix.ENODEV, unix.ENXIO:
			return fmt.Errorf("%s: %w: /dev/net/tun exists but the tun driver is not loaded: load the tun module (modprobe tun) (open: %w)", op, ErrNoDevice, err)
		case unix.EACCES, unix.EPERM:
			return fmt.Errorf("%s: %w: cannot open /dev/net/tun: run as root, make /dev/net/tun read-write for this user (mode 0666, which udev sets where it runs: `chmod 0666 /dev/net/tun`; in a container pass --device /dev/net/tun), or let a privileged helper open the TUN and pass --tun-fd (open: %w)", op, ErrPermission, err)
		}
		return fmt.Errorf("%s: open /dev/net/tun: %w", op, err)
	}

	switch errno {
	case unix.EPERM, unix.EACCES:
		return fmt.Errorf("%s: %w: creating TUN %s needs CAP_NET_ADMIN in this network namespace; run as root, inside `unshare -Urn`, or let a privileged helper open it and pass --tun-fd; if %s is a persistent TUN, only its owner may attach to it (%w)", op, ErrPermission, name, name, err)
	case unix.EBUSY:
		return fmt.Errorf("%s: %w: TUN %s is in use by another process; stop it, choose another name, or open every queue with MultiQueue (%w)", op, ErrBusy, name, err)
	case unix.EINVAL:
		// TUNSETIFF says EINVAL when the name belongs to something it
		// cannot attach to. Say what that is.
		link, lerr := netlink.LinkByName(name)
		if lerr != nil {
			break
		}
		t, ok := link.(*netlink.Tuntap)
		switch {
		case !ok:
			return fmt.Errorf("%s: %w: an interface %s of type %s already exists: delete it (ip link del %s) or choose another name (%w)", op, ErrBusy, name, link.Type(), name, err)
		case t.Mode != netlink.TUNTAP_MODE_TUN:
			return fmt.Errorf("%s: %w: %s is a TAP device: delete it or choose another name (%w)", op, ErrBusy, name, err)
		case (t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0) != multiQueue:
			return fmt.Errorf("%s: %w: TUN %s exists with multiqueue %s but MultiQueue is %t: open it with the same setting (%w)", op, ErrBusy, name, onOff(!multiQueue), multiQueue, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// adoptError explains why TUNGETIFF on fd failed.
func adoptError(op string, fd int, err error) error {
	switch {
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("%s: %w: descriptor %d is not open in this process: the helper must pass it without close-on-exec (for example in exec.Cmd.ExtraFiles) and the number must be the one this process sees", op, err, fd)
	case errors.Is(err, unix.EBADFD):
		return fmt.Errorf("%s: %w: it is /dev/net/tun but not attached to an interface: the helper must call TUNSETIFF with IFF_TUN|IFF_NO_PI before passing it (TUNGETIFF: %w)", op, ErrNotTUN, err)
	}
	return fmt.Errorf("%s: %w: it is %s, not a TUN device (TUNGETIFF: %w)", op, ErrNotTUN, describeFD(fd), err)
}

// describeFD names what fd refers to, for error messages: "a pipe
// (pipe:[1234])", "a character device 1:3 (/dev/null)".
func describeFD(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "an unknown file"
	}
	kind := "a file"
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		kind = "a pipe"
	case unix.S_IFSOCK:
		kind = "a socket"
	case unix.S_IFREG:
		kind = "a regular file"
	case unix.S_IFDIR:
		kind = "a directory"
	case unix.S_IFCHR:
		kind = fmt.Sprintf("a character device %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case unix.S_IFBLK:
		kind = "a block device"
	}
	if target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil {
		return kind + " (" + target + ")"
	}
	return kind
}
