package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/integration/topology"
)

// What a demo holds while it runs, and where `vrouter demo --down` finds it:
//
//	/run/vrouter-demo.lock         flock(2)ed by a demo as root, and its PID
//	$TMPDIR/vrouter-demo-XXXX/     demo.pid (the demo's PID), NODE.yaml, NODE.log, NODE.sock;
//	                               a rootless demo's outer process has one too: demo.pid, publish.sock
//	/run/netns/vrdemo-*            its namespaces, as root; a rootless demo's live
//	                               in its own mount namespace and go with it
//	BIN run --config $TMPDIR/vrouter-demo-XXXX/NODE.yaml
//	                               one router per node; it gets SIGTERM when the demo dies
//
// --down stops a demo that still runs (SIGTERM: it tears itself down),
// then stops routers, deletes namespaces and removes directories that are
// left. It acts on the directories of the caller (of everyone, as root)
// in $TMPDIR, default /tmp.

// demoPIDFile, in the demo's directory, holds the demo process's PID.
const demoPIDFile = "demo.pid"

// Grace periods of --down: a demo's teardown stops each router within
// 10 s (harness.Router.Stop), a router drains proxied connections for up
// to 5 s.
const (
	demoStopTimeout   = 30 * time.Second
	routerStopTimeout = 10 * time.Second
)

// demoLeftovers is what demos left on this machine.
type demoLeftovers struct {
	dirs       []string // demo directories in os.TempDir()
	demos      []int    // running demo processes, from the directories' demo.pid
	routers    []int    // router processes whose config is in one of dirs
	namespaces []string // entries of /run/netns with demoPrefix
}

func (l demoLeftovers) empty() bool {
	return len(l.dirs)+len(l.demos)+len(l.routers)+len(l.namespaces) == 0
}

// findDemoLeftovers lists what demos left. Directories of other users
// count only for root, who may remove them.
func findDemoLeftovers() (demoLeftovers, error) {
	var l demoLeftovers
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), demoDirPattern))
	if err != nil {
		return l, err
	}
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() != 0 && int(st.Uid) != os.Geteuid() {
			continue
		}
		l.dirs = append(l.dirs, d)
		if pid, ok := demoPID(d); ok {
			l.demos = append(l.demos, pid)
		}
	}
	// A demo as root in another $TMPDIR is found by its lock.
	if pid, ok := demoLockHolder(); ok && os.Geteuid() == 0 && !slices.Contains(l.demos, pid) {
		l.demos = append(l.demos, pid)
	}
	l.routers = demoRouters(l.dirs)
	entries, err := os.ReadDir(topology.DefaultNetnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return l, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), demoPrefix) {
			l.namespaces = append(l.namespaces, e.Name())
		}
	}
	return l, nil
}

// demoPID returns the PID in dir's demo.pid if that process still runs a
// demo.
func demoPID(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, demoPIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == os.Getpid() || !alive(pid) {
		return 0, false
	}
	args := cmdline(pid)
	if len(args) < 2 || args[1] != "demo" || slices.Contains(args, "--down") {
		return 0, false // the PID was reused
	}
	return pid, true
}

// demoRouters lists the router processes whose --config lies in one of dirs.
func demoRouters(dirs []string) []int {
	if len(dirs) == 0 {
		return nil
	}
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || !alive(pid) {
			continue
		}
		args := cmdline(pid)
		i := slices.Index(args, "--config")
		if !slices.Contains(args, "run") || i < 0 || i+1 >= len(args) {
			continue
		}
		if slices.Contains(dirs, filepath.Dir(args[i+1])) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cmdline is a process's arguments, or nil once it has exited.
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// stopProcesses sends SIGTERM to pids, waits up to timeout for them to
// exit, then kills those left. It returns the PIDs it had to kill.
func stopProcesses(pids []int, timeout time.Duration) (killed []int, err error) {
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("stop process %d: %w", pid, err))
		}
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			killed = append(killed, pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("kill process %d: %w", pid, err))
			}
		}
	}
	return killed, errors.Join(errs...)
}

// demoDown stops a kept demo and removes whatever demos left, printing
// what it did. Running it again finds nothing and says so.
func demoDown(out io.Writer) error {
	l, err := findDemoLeftovers()
	if err != nil {
		return fmt.Errorf("find what demos left: %w", err)
	}
	if l.empty() {
		fmt.Fprintln(out, "No demo is running and none left anything behind.")
		return nil
	}
	var errs []error
	if len(l.demos) > 0 {
		fmt.Fprintf(out, "Stopping demo %s (it tears down its cluster)...\n", pidList(l.demos))
		killed, err := stopProcesses(l.demos, demoStopTimeout)
		errs = append(errs, err)
		if len(killed) > 0 {
			fmt.Fprintf(out, "  demo %s did not exit within %v of SIGTERM: killed\n", pidList(killed), demoStopTimeout)
		}
		// The demo removed what it made; look again for what it did not.
		if l, err = findDemoLeftovers(); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	if len(l.routers) > 0 {
		fmt.Fprintf(out, "Stopping router %s...\n", pidList(l.routers))
		killed, err := stopProcesses(l.routers, routerStopTimeout)
		errs = append(errs, err)
		if len(killed) > 0 {
			fmt.Fprintf(out, "  router %s did not exit within %v of SIGTERM: killed\n", pidList(killed), routerStopTimeout)
		}
	}
	switch {
	case len(l.namespaces) > 0 && os.Geteuid() != 0:
		// Only a demo as root names namespaces in /run/netns.
		what := "left by a demo run as root"
		if pid, ok := demoLockHolder(); ok {
			what = fmt.Sprintf("of a demo running as root (pid %d)", pid)
		}
		errs = append(errs, fmt.Errorf("namespaces %s* in %s are %s: run `sudo %s demo --down`", demoPrefix, topology.DefaultNetnsDir, what, selfPath()))
	case len(l.namespaces) > 0:
		if err := topology.Cleanup(demoPrefix); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(out, "Deleted namespaces %s\n", strings.Join(l.namespaces, " "))
		}
	}
	for _, d := range l.dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(out, "Removed %s\n", d)
	}
	return errors.Join(errs...)
}

func pidList(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	if len(s) == 1 {
		return "pid " + s[0]
	}
	return "pids " + strings.Join(s, ", ")
}

// demoLockPath is flock(2)ed by the demo that owns the demoPrefix
// namespaces in /run/netns, and holds its PID. The kernel drops the lock
// when the demo exits, however it exits; the file stays, as iptables'
// /run/xtables.lock does.
const demoLockPath = "/run/vrouter-demo.lock"

// lockDemo takes the demo lock for this process, or says which demo holds
// it: a second demo would delete the first one's namespaces. Where /run is
// not ours to write (a rootless demo, whose namespaces are its own) there
// is nothing to lock and it returns nil, nil.
func lockDemo(bin string) (*os.File, error) {
	f, err := os.OpenFile(demoLockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := demoLockHolder()
			return nil, fmt.Errorf("a demo is already running (pid %d; kept with --keep?) and owns the %s* namespaces: stop it with Ctrl-C in its terminal or `%s demo --down`", pid, demoPrefix, bin)
		}
		return nil, fmt.Errorf("lock %s: %w", demoLockPath, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// demoLockHolder returns the PID of the demo that holds the demo lock, if
// one does.
func demoLockHolder() (int, bool) {
	f, err := os.Open(demoLockPath)
	if err != nil {
		return 0, false
	}
	defer f.Close() // releases the probe's lock, if it got one
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) == nil {
		return 0, false
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && alive(pid)
}

// selfPath is this binary's path as a user can type it again.
func selfPath() string {
	p, err := os.Executable()
	if err != nil {
		return "vrouter"
	}
	return p
}

// startTied starts cmd, whose SysProcAttr sets Pdeathsig, and returns a
// channel that yields cmd.Wait's result. The parent-death signal fires
// when the OS thread that forked the child exits, not the process, so the
// fork happens on a thread held until the child has exited (see
// harness.Launch).
func startTied(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}
