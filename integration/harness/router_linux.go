package harness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/topology"
)

// Router is one `vrouter run` process inside a node's namespace.
type Router struct {
	Node   string
	Config string
	Log    string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	// readyBefore counts the "ready" lines Log held before this process
	// started (a restarted router appends to its predecessor's log).
	readyBefore int
}

// StartRouter starts `bin run --config config` in node's namespace with
// its output appended to logPath, and waits until it is up (Ready).
func StartRouter(c *topology.Cluster, bin, node, config, logPath string, args ...string) (*Router, error) {
	r, err := Launch(c, bin, node, logPath, append([]string{"run", "--config", config}, args...)...)
	if err != nil {
		return nil, err
	}
	r.Config = config
	if err := r.WaitReady(c, 10*time.Second); err != nil {
		return nil, err
	}
	return r, nil
}

// WaitReady waits until the router is up (Ready); if it is not within
// timeout, it stops the router and returns why, with its log.
func (r *Router) WaitReady(c *topology.Cluster, timeout time.Duration) error {
	if err := r.waitReady(c, timeout); err != nil {
		r.Stop()
		log, _ := os.ReadFile(r.Log)
		return fmt.Errorf("router on %s did not come up: %w\n--- %s ---\n%s", r.Node, err, r.Log, log)
	}
	return nil
}

// Launch starts `bin argv...` in node's namespace with its output appended
// to logPath, without waiting for it to come up (see WaitReady). A `run`
// without --state-dir gets StateDir(logPath, node). A bin
// that is missing or not executable is an error that says so (see
// CheckVrouter), before anything starts.
func Launch(c *topology.Cluster, bin, node, logPath string, argv ...string) (*Router, error) {
	bin, err := CheckVrouter(bin)
	if err != nil {
		return nil, fmt.Errorf("start router on %s: %w", node, err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if len(argv) > 0 && argv[0] == "run" && !hasFlag(argv, "--state-dir") {
		// The flow file goes beside the log, never into the host's
		// /run/vrouter, where it would outlive the test.
		argv = append(slices.Clone(argv), "--state-dir", StateDir(logPath, node))
	}
	cmd := c.Command(node, bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The router gets its own process group so a terminal's Ctrl-C goes
	// to the demo, which then stops the routers in order. Its lifetime is
	// tied to ours: the kernel sends it ParentDeathSignal when we die,
	// however we die (nsenter keeps the setting across its exec).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: ParentDeathSignal}
	r := &Router{Node: node, Log: logPath, cmd: cmd, done: make(chan struct{}), readyBefore: readyLines(logPath)}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the OS thread that forked
		// the child exits, not the process, and package topology ends
		// threads on purpose (each namespace is made on a thread that is
		// then thrown away): a fork from an unlocked goroutine could land
		// on a thread that dies later and take the router with it. So
		// this goroutine forks from a thread it holds until the router
		// has exited.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		started <- nil
		r.err = cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start router on %s: %w", node, err)
	}
	return r, nil
}

// hasFlag reports whether argv sets flag (as "--flag value" or
// "--flag=value").
func hasFlag(argv []string, flag string) bool {
	for _, a := range argv {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// StateDir is a --state-dir for the router of node logging to logPath: a
// directory beside the log, so that a test's routers keep their flow
// files in the test's directory (not /run/vrouter, where a later test's
// namespace could reuse the inode in the file's name), and a router
// started again on the node adopts the one its predecessor left.
func StateDir(logPath, node string) string {
	return filepath.Join(filepath.Dir(logPath), node+".state")
}

// ParentDeathSignal is what a router started by Launch receives when the
// process that started it exits without stopping it (a crash, SIGKILL):
// SIGTERM, on which the router shuts down as on any stop.
const ParentDeathSignal = syscall.SIGTERM

// PID is the router's process ID.
func (r *Router) PID() int { return r.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (r *Router) Exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the router.
func (r *Router) Signal(sig os.Signal) error { return r.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to 10 seconds for a clean exit, then
// kills. It returns the process's exit error (nil for exit status 0).
// Stop is idempotent.
func (r *Router) Stop() error {
	if r.Exited() {
		return r.err
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return errors.New("router did not exit within 10s of SIGTERM; killed")
	}
}

// readyLines counts the lines of the router log at path in which a router
// said it is ready: it logs one once its data path is programmed (the
// node kernel's routes into the TUN included) and its endpoints serve.
func readyLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\tready\t")) + bytes.Count(b, []byte("\tready\n")) + bytes.Count(b, []byte(`"msg":"ready"`))
}

// waitReady waits until the router's TUN is up, its overlay socket is
// bound and it has logged that it is ready (Ready alone can be true
// before the node kernel's routes into the TUN are in), or the process
// exits.
func (r *Router) waitReady(c *topology.Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if r.Exited() {
			return fmt.Errorf("exited: %v", r.err)
		}
		ready, err := Ready(c, r.Node)
		if err != nil {
			return err
		}
		if ready && readyLines(r.Log) > r.readyBefore {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v (TUN and overlay socket up: %v; the router has not logged \"ready\")", timeout, ready)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ready reports whether node has a router up: the TUN device vr0 exists
// and is up, and a UDP socket holds the overlay port on the node's
// underlay address (or on every address).
//
// It looks the socket up in the kernel's socket table (sock_diag, as ss
// does) and never binds the port itself: a probe that did would hold the
// port for a moment, and a router that binds its overlay right after
// bringing vr0 up, as every router does, could meet it there and fail
// with "bind: address already in use".
func Ready(c *topology.Cluster, node string) (bool, error) {
	n, ok := c.Spec().Node(node)
	if !ok {
		return false, fmt.Errorf("node %q is not in the cluster", node)
	}
	var ready bool
	err := c.Do(node, func() error {
		l, err := netlink.LinkByName("vr0")
		if err != nil || l.Attrs().Flags&net.FlagUp == 0 {
			return nil
		}
		ready, err = udpBound(netip.AddrPortFrom(n.Underlay, OverlayPort))
		return err
	})
	return ready, err
}

// udpBound reports whether a UDP socket of the calling thread's network
// namespace is bound to addr's port on addr or on a wildcard address,
// which is what a bind of addr would find in use.
func udpBound(addr netip.AddrPort) (bool, error) {
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagUDP(family)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			return false, nil // the table changed under the dump: ask again
		}
		if err != nil {
			return false, fmt.Errorf("list UDP sockets: %w", err)
		}
		for _, s := range socks {
			if s.ID.SourcePort != addr.Port() {
				continue
			}
			a, _ := netip.AddrFromSlice(s.ID.Source)
			if a = a.Unmap(); a == addr.Addr() || a.IsUnspecified() {
				return true, nil
			}
		}
	}
	return false, nil
}
