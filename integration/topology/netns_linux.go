package topology

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netNS is one network namespace Build made. Every field is set once, by
// newNetNS, and only close changes the state behind them.
type netNS struct {
	short string // UnderlayNS, a node name or a pod name
	name  string // Spec.Prefix + short
	// path is the bind mount that names the namespace, or "" when the
	// namespace is held only by file (see prepareNetnsDir).
	path string
	// file is an open handle on the namespace: it keeps the namespace
	// alive and is what setns uses.
	file *os.File
	// nl is an rtnetlink socket opened inside the namespace, so the
	// cluster configures it without switching threads. Safe for
	// concurrent use.
	nl *netlink.Handle
}

const (
	threadNetNS = "/proc/thread-self/ns/net"
	// nsGetUserns is NS_GET_USERNS from <linux/nsfs.h>: _IO(0xb7, 0x1).
	nsGetUserns = 0xb701
	// procUserInitIno is the inode number of the initial user namespace
	// (PROC_USER_INIT_INO in <linux/proc_ns.h>).
	procUserInitIno = 0xEFFFFFFD
)

// dirMu serializes changes to the mounts of netns directories. Mounts
// belong to the process's mount namespace, not to a Cluster, so the lock
// is package-wide: without it two parallel Builds could both find the
// directory unmounted and stack two bind mounts on it.
var dirMu sync.Mutex

// prepareNetnsDir makes dir usable for named namespaces and returns it, or
// returns "" when namespaces must stay unnamed (held open by file only):
//
//   - dir writable (real root, or root in a user namespace that owns dir):
//     like iproute2, make dir a shared mount point (bind-mounting it onto
//     itself first if it is not one) so that deleting a namespace
//     propagates to mount namespaces made later by `ip netns exec`;
//   - not writable, but we are root in a user namespace that owns our
//     mount namespace (`unshare -Urnm`): mount a private tmpfs on dir,
//     visible only inside that mount namespace, then as above;
//   - otherwise (no own mount namespace, read-only file system): unnamed.
func prepareNetnsDir(dir string) (string, error) {
	dirMu.Lock()
	defer dirMu.Unlock()

	if err := os.MkdirAll(dir, 0o755); err != nil && !isPermission(err) {
		return "", fmt.Errorf("create netns dir %s: %w", dir, err)
	}
	if unix.Access(dir, unix.W_OK) != nil {
		if !ownMountNS() {
			return "", nil
		}
		if _, err := os.Stat(dir); err != nil {
			return "", nil // cannot create it, so there is nothing to mount on
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755"); err != nil {
			if isPermission(err) {
				return "", nil
			}
			return "", fmt.Errorf("mount tmpfs on netns dir %s: %w", dir, err)
		}
	}
	// Same dance as iproute2's netns_add.
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			if isPermission(err) {
				return "", nil
			}
			return "", fmt.Errorf("bind-mount netns dir %s onto itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		if isPermission(err) {
			return "", nil
		}
		return "", fmt.Errorf("make netns dir %s a shared mount: %w", dir, err)
	}
	return dir, nil
}

func isPermission(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS)
}

// ownMountNS reports whether the process is in a user namespace other
// than the initial one and that user namespace owns the process's mount
// namespace, so that root in it may mount a tmpfs without affecting
// anybody else.
func ownMountNS() bool {
	mnt, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		return false
	}
	defer mnt.Close()
	owner, err := unix.IoctlRetInt(int(mnt.Fd()), nsGetUserns)
	if err != nil {
		return false // EPERM: owned by an ancestor user namespace
	}
	defer unix.Close(owner)
	var o, self unix.Stat_t
	if unix.Fstat(owner, &o) != nil || unix.Stat("/proc/self/ns/user", &self) != nil {
		return false
	}
	return o.Dev == self.Dev && o.Ino == self.Ino && self.Ino != procUserInitIno
}

// newNetNS creates a network namespace called name, bind-mounted under
// dir unless dir is "", opens an rtnetlink socket in it and runs setup
// inside it.
//
// The work happens on a new goroutine locked to its OS thread, which
// unshares into the new namespace and never unlocks: when the goroutine
// returns the runtime destroys the thread instead of reusing it, so no
// goroutine ever runs in the wrong namespace and the caller's thread is
// never touched.
func newNetNS(dir, short, name string, setup func(h *netlink.Handle) error) (*netNS, error) {
	ch := make(chan error, 1)
	n := &netNS{short: short, name: name}
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		ch <- n.enterNew(dir, setup)
	}()
	if err := <-ch; err != nil {
		return nil, errors.Join(fmt.Errorf("create netns %s: %w", name, err), n.close())
	}
	return n, nil
}

// enterNew is newNetNS's body, running on its locked thread.
func (n *netNS) enterNew(dir string, setup func(h *netlink.Handle) error) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	f, err := os.Open(threadNetNS)
	if err != nil {
		return err
	}
	n.file = f
	if dir != "" {
		path := filepath.Join(dir, n.name)
		mf, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s already exists (another run with the same prefix, or a leftover: see Cleanup)", path)
			}
			return err
		}
		mf.Close()
		if err := unix.Mount(threadNetNS, path, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(path)
			return fmt.Errorf("bind-mount %s on %s: %w", threadNetNS, path, err)
		}
		n.path = path
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink socket: %w", err)
	}
	n.nl = h
	if setup != nil {
		return setup(h)
	}
	return nil
}

// close releases the namespace: the rtnetlink socket, the file and the
// bind mount. The kernel frees the namespace once nothing else (a process,
// a socket) holds it. Safe on a partly made netNS; not idempotent.
func (n *netNS) close() error {
	var errs []error
	if n.nl != nil {
		n.nl.Close()
	}
	if n.file != nil {
		errs = append(errs, n.file.Close())
	}
	if n.path != "" {
		errs = append(errs, unmountAndRemove(n.path))
	}
	return errors.Join(errs...)
}

// pathOrFD returns a path that reaches the namespace from any process
// while this one lives: the bind mount, or our file descriptor under
// /proc.
func (n *netNS) pathOrFD() string {
	if n.path != "" {
		return n.path
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.file.Fd())
}

// errGoexit reports that fn stopped its goroutine with runtime.Goexit,
// which is what t.FailNow does when called outside the test goroutine.
var errGoexit = errors.New("function called runtime.Goexit (t.FailNow or t.Fatal inside Do?)")

// do runs fn on a new goroutine locked to an OS thread that has entered
// the namespace, and waits for it. The thread goes back to the original
// namespace afterwards and is unlocked only if that worked; otherwise the
// runtime destroys it. A panic in fn is re-raised on the caller's
// goroutine.
func (n *netNS) do(fn func() error) error {
	rc, err := n.file.SyscallConn()
	if err != nil {
		return err
	}
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	ch := make(chan result, 1)
	go func() {
		var res result
		runtime.LockOSThread()
		orig, err := unix.Open(threadNetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open current netns: %w", err)}
			return
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.Setns(int(fd), unix.CLONE_NEWNET) }); err != nil {
			serr = err
		}
		if serr != nil {
			unix.Close(orig)
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter netns %s: %w", n.name, serr)}
			return
		}
		finished := false
		defer func() {
			if !finished {
				if p := recover(); p != nil {
					res.panicked, res.panicVal = true, p
				} else {
					res.err = errGoexit
				}
			}
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			} // else stay locked: the thread dies with this goroutine.
			unix.Close(orig)
			ch <- res
		}()
		res.err = fn()
		finished = true
	}()
	res := <-ch
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// unmountAndRemove deletes a namespace bind mount. A file that is no
// longer a mount point is removed all the same.
func unmountAndRemove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Cleanup removes, from DefaultNetnsDir, every namespace whose name
// starts with prefix: the leftovers of a run that crashed before Close.
// Cleanup(DefaultPrefixBase) removes those of every run that used a
// random prefix, including runs still in progress. Processes still in a
// removed namespace keep it alive but unnamed; Cleanup kills nothing.
func Cleanup(prefix string) error {
	return CleanupDir(DefaultNetnsDir, prefix)
}

// CleanupDir is Cleanup for namespaces bind-mounted under dir
// (Spec.NetnsDir). A missing dir has nothing to clean.
func CleanupDir(dir, prefix string) error {
	if err := checkName(prefix); err != nil {
		return fmt.Errorf("cleanup %s: prefix %q: %w", dir, prefix, err)
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cleanup %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			errs = append(errs, unmountAndRemove(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}
