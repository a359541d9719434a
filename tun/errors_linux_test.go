package tun

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenError checks the message and the errors.Is targets for each way
// water.New fails: the bare errno from opening /dev/net/tun, or an
// *os.SyscallError "ioctl" from TUNSETIFF. The kernel paths that produce
// them are exercised for real in the root-only tests.
func TestOpenError(t *testing.T) {
	ioctl := func(errno syscall.Errno) error { return os.NewSyscallError("ioctl", errno) }
	for _, tc := range []struct {
		desc  string
		err   error
		is    []error
		wants []string
	}{
		{
			desc:  "no /dev/net/tun",
			err:   unix.ENOENT,
			is:    []error{ErrNoDevice, os.ErrNotExist},
			wants: []string{"create TUN vr0: ", "/dev/net/tun not found: load the tun module (modprobe tun) or, in a container, pass --device /dev/net/tun"},
		},
		{
			desc:  "driver not loaded",
			err:   unix.ENODEV,
			is:    []error{ErrNoDevice},
			wants: []string{"modprobe tun"},
		},
		{
			desc:  "/dev/net/tun not accessible",
			err:   unix.EACCES,
			is:    []error{ErrPermission, os.ErrPermission},
			wants: []string{"cannot open /dev/net/tun", "--tun-fd"},
		},
		{
			desc:  "no CAP_NET_ADMIN",
			err:   ioctl(unix.EPERM),
			is:    []error{ErrPermission, os.ErrPermission},
			wants: []string{"creating TUN vr0 needs CAP_NET_ADMIN in this network namespace; run as root, inside `unshare -Urn`, or let a privileged helper open it and pass --tun-fd"},
		},
		{
			desc:  "held by another process",
			err:   ioctl(unix.EBUSY),
			is:    []error{ErrBusy, unix.EBUSY},
			wants: []string{"TUN vr0 is in use by another process"},
		},
		{
			desc: "other errno passes through",
			err:  ioctl(unix.ENOMEM),
			is:   []error{unix.ENOMEM},
		},
	} {
		err := openError("vr0", false, tc.err)
		for _, target := range tc.is {
			if !errors.Is(err, target) {
				t.Errorf("%s: openError(%v) = %q, want errors.Is(_, %v)", tc.desc, tc.err, err, target)
			}
		}
		for _, want := range tc.wants {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: openError(%v) = %q, want it to contain %q", tc.desc, tc.err, err, want)
			}
		}
	}
}

// TestAdoptNotTUN needs no privileges: descriptors that are no TUN at all.
func TestAdoptNotTUN(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	closedFD := func() int {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		f.Close()
		return fd
	}()

	for _, tc := range []struct {
		desc  string
		fd    int
		is    error
		wants []string
	}{
		{"pipe", int(r.Fd()), ErrNotTUN, []string{"it is a pipe (pipe:[", "not a TUN device"}},
		{"/dev/null", int(devNull.Fd()), ErrNotTUN, []string{"it is a character device 1:3 (/dev/null), not a TUN device"}},
		{"closed descriptor", closedFD, unix.EBADF, []string{"is not open in this process", "ExtraFiles"}},
		{"negative", -1, unix.EBADF, []string{"adopt TUN fd -1", "want a descriptor number >= 0"}},
	} {
		dev, err := Adopt(tc.fd, "")
		if err == nil {
			dev.Close()
			t.Errorf("%s: Adopt(%d) = %v, want an error", tc.desc, tc.fd, dev.Name())
			continue
		}
		if !errors.Is(err, tc.is) {
			t.Errorf("%s: Adopt(%d) = %q, want errors.Is(_, %v)", tc.desc, tc.fd, err, tc.is)
		}
		for _, want := range tc.wants {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: Adopt(%d) = %q, want it to contain %q", tc.desc, tc.fd, err, want)
			}
		}
	}
	// The caller still owns a descriptor Adopt refused.
	if _, err := unix.FcntlInt(r.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("pipe descriptor after a refused Adopt: F_GETFD: %v, want it still open", err)
	}
}
