package main

// The demo's own tests run the vrouter binary, built once per test, as a
// user would, and check what it leaves behind: they need root (the demo
// re-runs itself rootless otherwise, which TestDemoRootless covers by
// dropping to nobody) and skip without it. Every run uses a TMPDIR of its
// own, so the demo's directory is found there and nowhere else.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/topology"
)

// demoEnv is one test's vrouter binary and the TMPDIR its demos use.
type demoEnv struct {
	t    *testing.T
	base string // holds bin and tmp; every path a demo's processes name is under it
	bin  string
	tmp  string
}

func newDemoEnv(t *testing.T) *demoEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("demo tests build network namespaces: need root")
	}
	if err := topology.CanBuild(); err != nil {
		t.Skip(err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("demo tests need nsenter (util-linux)")
	}
	// Demo tests of other test binaries (go test ./... runs packages in
	// parallel; several people share a machine) would see this test's
	// namespaces and it theirs: one demo test at a time per machine.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "vrouter-demotest.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // registered first, so it runs last
	// Not t.TempDir: its directories are 0700, and the rootless test runs
	// the binary as nobody.
	base, err := os.MkdirTemp("", "vrouter-demotest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &demoEnv{t: t, base: base, bin: filepath.Join(base, "vrouter"), tmp: filepath.Join(base, "tmp")}
	if err := os.Mkdir(e.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	for dir, mode := range map[string]os.FileMode{base: 0o755, e.tmp: 0o1777} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("go", "build", "-o", e.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// A failed test may leave a demo behind; take it down for the next.
		if t.Failed() {
			e.command("demo", "--down").Run()
		}
	})
	return e
}

// otherDemo returns the PID of a demo as root that is not this env's
// (someone's make demo, another test binary), if one runs.
func (e *demoEnv) otherDemo() (int, bool) {
	pid, ok := demoLockHolder()
	if !ok || strings.Contains(strings.Join(cmdline(pid), " "), e.base) {
		return 0, false
	}
	return pid, true
}

// waitForOtherDemos waits until no other demo as root runs: only one may
// own the demo's namespaces at a time, and the demo would refuse to start.
func (e *demoEnv) waitForOtherDemos() {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		pid, ok := e.otherDemo()
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("another demo (pid %d) still runs after 3 minutes", pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// command is `vrouter args...` with TMPDIR set to the env's.
func (e *demoEnv) command(args ...string) *exec.Cmd {
	if len(args) > 0 && args[0] == "demo" && !slices.Contains(args, "--down") {
		e.waitForOtherDemos()
	}
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+e.tmp)
	return cmd
}

// run runs `vrouter args...` to the end and returns its exit code and
// output (stdout and stderr together).
func (e *demoEnv) run(cmd *exec.Cmd) (int, string) {
	e.t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		e.t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return 0, out.String()
}

// leftovers lists what the demos of this env left: their directories in
// tmp, namespaces with the demo's prefix, and processes whose command line
// names a path under base (the demo itself, its routers, nsenter).
func (e *demoEnv) leftovers() []string {
	var left []string
	dirs, _ := filepath.Glob(filepath.Join(e.tmp, demoDirPattern))
	for _, d := range dirs {
		left = append(left, "directory "+d)
	}
	var entries []os.DirEntry
	if _, ok := e.otherDemo(); !ok { // else the namespaces may be its
		entries, _ = os.ReadDir(topology.DefaultNetnsDir)
	}
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), demoPrefix) {
			left = append(left, "namespace "+en.Name())
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(e.base)) {
			left = append(left, fmt.Sprintf("process %d: %s", pid, bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '})))
		}
	}
	return left
}

// checkNothingLeft fails the test if, within a few seconds (the kernel's
// parent-death signal and a router's shutdown take a moment), the demos
// have not left nothing behind.
func (e *demoEnv) checkNothingLeft(after string) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := e.leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Errorf("after %s, left behind:\n  %s", after, strings.Join(left, "\n  "))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDemoLeavesNothing(t *testing.T) {
	e := newDemoEnv(t)
	code, out := e.run(e.command("demo"))
	if code != 0 || !strings.Contains(out, "14 passed, 0 failed") {
		t.Fatalf("vrouter demo = exit %d, want 0 with \"14 passed, 0 failed\":\n%s", code, out)
	}
	// As root each router binds the node port in its node's namespace.
	if re := regexp.MustCompile(`ok +curl http://127\.0\.0\.1:30080/ x3 on hostgw-master +nginx-`); !re.MatchString(out) {
		t.Errorf("vrouter demo: want the report to match %s:\n%s", re, out)
	}
	e.checkNothingLeft("vrouter demo")
}

// In proxy mode the backends see the client's node, not the client: the
// demo checks for exactly that, so it passes only if the mode took.
func TestDemoProxyMode(t *testing.T) {
	e := newDemoEnv(t)
	code, out := e.run(e.command("demo", "--mode", "proxy"))
	for _, want := range []string{"Service load balancing (proxy mode", "14 passed, 0 failed"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("vrouter demo --mode proxy = exit %d, want 0 with %q:\n%s", code, want, out)
		}
	}
	// From nginx-th5pz, the backend on its node saw cni0's address, the
	// others vr0's.
	re := regexp.MustCompile(`from nginx-th5pz +nginx-th5pz \d+ \(saw 10\.244\.0\.1\), nginx-4k7xw \d+ \(saw 10\.244\.0\.0\)`)
	if !re.MatchString(out) {
		t.Errorf("vrouter demo --mode proxy: want the report to match %s:\n%s", re, out)
	}
	e.checkNothingLeft("vrouter demo --mode proxy")
}

func TestDemoModeFlag(t *testing.T) {
	code, stdout, stderr := run("demo", "--mode", "ipvs")
	if code != 2 || !strings.Contains(stderr, `--mode "ipvs": want nat or proxy`) || stdout != "" {
		t.Errorf("vrouter demo --mode ipvs = exit %d, stdout %q, stderr %q; want exit 2 naming the flag, the value and nat or proxy", code, stdout, stderr)
	}
}

// TestDemoRootless runs the demo as nobody, which makes it re-run itself
// in a user namespace. That needs /dev/net/tun read-write for nobody; on a
// machine where it is not, the demo must say how to fix that before it
// builds anything, and the test then runs it again in a private mount
// namespace where /dev/net/tun is a 0666 node of the same device, so that
// the rootless demo runs on every machine the test does.
func TestDemoRootless(t *testing.T) {
	e := newDemoEnv(t)
	cmd := e.command("demo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	code, out := e.run(cmd)
	if fi, err := os.Stat(tunDevice); err != nil || fi.Mode().Perm()&0o006 != 0o006 {
		want := []string{"uid 65534 cannot open /dev/net/tun read-write", "sudo chmod 0666 /dev/net/tun", "Debian, Ubuntu", "Fedora", "Arch"}
		for _, w := range want {
			if code != 1 || !strings.Contains(out, w) || strings.Contains(out, "Building") {
				t.Fatalf("vrouter demo as nobody with %s not read-write for others = exit %d, want 1 with %q and nothing built:\n%s", tunDevice, code, w, out)
			}
		}
		e.checkNothingLeft("vrouter demo as nobody")
		cmd = e.withOpenTUN(t, "demo")
		code, out = e.run(cmd)
	}
	if code != 0 || !strings.Contains(out, "rootless") || !strings.Contains(out, "14 passed, 0 failed") {
		t.Fatalf("vrouter demo as nobody = exit %d, want 0, rootless, with \"14 passed, 0 failed\":\n%s", code, out)
	}
	// The node port answers on the host: the outer process's publish
	// socket gave hostgw-master's router a socket of the host's, and the
	// demo's outer process made the sockets the check connects.
	if re := regexp.MustCompile(`ok +curl http://127\.0\.0\.1:\d+/ x3 from the host +nginx-`); !re.MatchString(out) {
		t.Errorf("vrouter demo as nobody: want the report to match %s:\n%s", re, out)
	}
	e.checkNothingLeft("vrouter demo as nobody")
}

// withOpenTUN is `vrouter args...` as nobody in a private mount namespace
// where /dev/net/tun is a 0666 node of the same device, made under the
// env's base: the machine's own device keeps its mode.
func (e *demoEnv) withOpenTUN(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	for _, tool := range []string{"unshare", "setpriv", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not read-write for nobody, and running the demo rootless anyway needs %s (util-linux)", tunDevice, tool)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(tunDevice, &st); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(e.base, "tun")
	if err := syscall.Mknod(node, syscall.S_IFCHR|0o666, int(st.Rdev)); err != nil {
		t.Skipf("make a TUN device node under %s: %v", e.base, err)
	}
	if err := os.Chmod(node, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	script := `mount --bind "$1" ` + tunDevice + ` && shift && exec setpriv --reuid 65534 --regid 65534 --clear-groups "$@"`
	cmd := e.command(args...)
	cmd.Args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", node, e.bin}, args...)
	cmd.Path, _ = exec.LookPath("unshare")
	return cmd
}

// keptDemo is a running `vrouter demo --keep`.
type keptDemo struct {
	cmd     *exec.Cmd
	out     *syncBuffer
	done    chan struct{}
	routers []int // the routers' PIDs, from the demo's report
	code    int   // exit code, once done is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var routerPIDRE = regexp.MustCompile(`vrouter pid (\d+)`)

// startKept starts `vrouter demo --keep` and waits until its checks passed
// and it says it keeps running.
func (e *demoEnv) startKept() *keptDemo {
	e.t.Helper()
	k := &keptDemo{cmd: e.command("demo", "--keep"), out: &syncBuffer{}, done: make(chan struct{})}
	k.cmd.Stdout, k.cmd.Stderr = k.out, k.out
	if err := k.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		k.cmd.Wait()
		k.code = k.cmd.ProcessState.ExitCode()
		close(k.done)
	}()
	e.t.Cleanup(func() {
		// Gracefully, so that it tears down what it built.
		k.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-k.done:
		case <-time.After(40 * time.Second):
			k.cmd.Process.Kill()
			<-k.done
		}
	})
	deadline := time.After(60 * time.Second)
	for !strings.Contains(k.out.String(), "The cluster keeps running") {
		select {
		case <-k.done:
			e.t.Fatalf("vrouter demo --keep exited (code %d) before it kept the cluster running:\n%s", k.code, k.out)
		case <-deadline:
			e.t.Fatalf("vrouter demo --keep: no \"The cluster keeps running\" after 60s:\n%s", k.out)
		case <-time.After(100 * time.Millisecond):
		}
	}
	out := k.out.String()
	if !strings.Contains(out, "14 passed, 0 failed") {
		e.t.Fatalf("vrouter demo --keep: want \"14 passed, 0 failed\":\n%s", out)
	}
	for _, m := range routerPIDRE.FindAllStringSubmatch(out, -1) {
		pid, _ := strconv.Atoi(m[1])
		k.routers = append(k.routers, pid)
	}
	if len(k.routers) != 2 {
		e.t.Fatalf("vrouter demo --keep reported router PIDs %v, want 2:\n%s", k.routers, out)
	}
	return k
}

// stopUntouched checks that kept demo k was left alone — its routers
// still run — then stops it with SIGTERM, as Ctrl-C would, and checks
// that it exits 0 leaving nothing behind (after names what came before).
func (e *demoEnv) stopUntouched(t *testing.T, k *keptDemo, after string) {
	t.Helper()
	for _, pid := range k.routers {
		if !alive(pid) {
			t.Errorf("router pid %d of the kept demo died", pid)
		}
	}
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := k.wait(t, 40*time.Second); code != 0 {
		t.Errorf("kept demo after SIGTERM: exit %d, want 0:\n%s", code, k.out)
	}
	e.checkNothingLeft(after)
}

// wait waits for the demo to exit and returns its exit code.
func (k *keptDemo) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-k.done:
		return k.code
	case <-time.After(timeout):
		t.Fatalf("vrouter demo --keep still running %v later:\n%s", timeout, k.out)
		return -1
	}
}

// A closed terminal sends SIGHUP: the kept demo tears everything down and
// exits 0.
func TestDemoKeepTearsDownOnSIGHUP(t *testing.T) {
	e := newDemoEnv(t)
	k := e.startKept()
	if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if code := k.wait(t, 40*time.Second); code != 0 || !strings.Contains(k.out.String(), "Tearing down (hangup signal received)") {
		t.Errorf("vrouter demo --keep after SIGHUP = exit %d, want 0 after \"Tearing down (hangup signal received)\":\n%s", code, k.out)
	}
	e.checkNothingLeft("SIGHUP to vrouter demo --keep")
}

// --down stops a kept demo, which tears down; with nothing left a second
// --down says so and succeeds.
func TestDemoDownStopsKeptDemo(t *testing.T) {
	e := newDemoEnv(t)
	k := e.startKept()
	code, out := e.run(e.command("demo", "--down"))
	if code != 0 || !strings.Contains(out, fmt.Sprintf("Stopping demo pid %d", k.cmd.Process.Pid)) {
		t.Errorf("vrouter demo --down = exit %d, want 0 after stopping demo pid %d:\n%s", code, k.cmd.Process.Pid, out)
	}
	if code := k.wait(t, 5*time.Second); code != 0 {
		t.Errorf("kept demo stopped by --down: exit %d, want 0:\n%s", code, k.out)
	}
	e.checkNothingLeft("vrouter demo --down")
	code, out = e.run(e.command("demo", "--down"))
	if code != 0 || !strings.Contains(out, "No demo is running and none left anything behind.") {
		t.Errorf("second vrouter demo --down = exit %d, %q; want 0 saying nothing was left", code, out)
	}
}

// A kept demo killed outright (SIGKILL: no teardown) takes its routers
// with it (their parent-death signal), leaves its namespaces and
// directory, and --down removes them.
func TestDemoDownAfterKill(t *testing.T) {
	e := newDemoEnv(t)
	k := e.startKept()
	if err := k.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	k.wait(t, 5*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range k.routers {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("router pid %d still runs 15s after its demo was killed", pid)
		}
	}
	left := e.leftovers()
	var dirs, namespaces int
	for _, l := range left {
		dirs += strings.Count(l, "directory ")
		namespaces += strings.Count(l, "namespace ")
	}
	if dirs != 1 || namespaces != 8 {
		t.Fatalf("after SIGKILL to the demo: left %q, want its directory and 8 namespaces (else --down is not tested)", left)
	}
	code, out := e.run(e.command("demo", "--down"))
	if code != 0 || !strings.Contains(out, "Deleted namespaces "+demoPrefix) || !strings.Contains(out, "Removed "+e.tmp) {
		t.Errorf("vrouter demo --down = exit %d, want 0 deleting the namespaces and removing the directory:\n%s", code, out)
	}
	e.checkNothingLeft("vrouter demo --down")
	code, out = e.run(e.command("demo", "--down"))
	if code != 0 || !strings.Contains(out, "No demo is running") {
		t.Errorf("second vrouter demo --down = exit %d, %q; want 0 saying nothing was left", code, out)
	}
}

// A second demo while one is kept would delete the first one's
// namespaces: it refuses and says how to stop the first, and --down by
// another user than root says it needs root. SIGTERM then tears the kept
// one down.
func TestDemoRefusesWhileOneIsKept(t *testing.T) {
	e := newDemoEnv(t)
	k := e.startKept()
	code, out := e.run(exec.Command(e.bin, "demo")) // in /tmp: its lock, not its directory, finds the kept one
	want := fmt.Sprintf("a demo is already running (pid %d", k.cmd.Process.Pid)
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, e.bin+" demo --down") {
		t.Errorf("vrouter demo beside a kept one = exit %d, want 1 with %q and the --down hint:\n%s", code, want, out)
	}
	// Nor may a user other than root take it down.
	down := e.command("demo", "--down")
	down.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	code, out = e.run(down)
	want = fmt.Sprintf("are of a demo running as root (pid %d): run `sudo %s demo --down`", k.cmd.Process.Pid, e.bin)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("vrouter demo --down as nobody beside a kept demo of root's = exit %d, want 1 with %q:\n%s", code, want, out)
	}
	e.stopUntouched(t, k, "SIGTERM to vrouter demo --keep")
}

// vrouter demo --topology builds the example's three nodes, checks pods
// between every pair of them and each Service from a pod on every node,
// answered by all its backends, and leaves nothing behind.
func TestDemoTopology(t *testing.T) {
	e := newDemoEnv(t)
	path, err := filepath.Abs(demoTopologyExample)
	if err != nil {
		t.Fatal(err)
	}
	code, out := e.run(e.command("demo", "--topology", path))
	for _, want := range []string{"Building the cluster of " + path, "21 passed, 0 failed"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("vrouter demo --topology %s = exit %d, want 0 with %q:\n%s", path, code, want, out)
		}
	}
	for _, re := range []*regexp.Regexp{
		// Pods across each pair of the three nodes.
		regexp.MustCompile(`ok +tcp  web-0 -> 10\.244\.1\.3:7 +answered by client-1`),
		regexp.MustCompile(`ok +tcp  web-2 -> 10\.244\.0\.2:7 +answered by dns-0`),
		regexp.MustCompile(`ok +tcp  web-1 -> 10\.244\.2\.3:7 +answered by dns-2`),
		// web from hostgw-node2's pod: its own backend sees the router
		// address, the others the client (nat mode).
		regexp.MustCompile(`ok +curl http://10\.103\.92\.81/ x36 from web-2 +web-0 \d+ \(saw 10\.244\.2\.2\), web-1 \d+ \(saw 10\.244\.2\.2\), web-2 \d+ \(saw 169\.254\.244\.1\)`),
		regexp.MustCompile(`ok +curl http://10\.103\.92\.81:8080/ x36 from web-0 `),
		regexp.MustCompile(`ok +udp 10\.96\.0\.10:53 x24 from web-1 +dns-0 \d+ \(saw 10\.244\.1\.2\), dns-2 \d+ \(saw 10\.244\.1\.2\)`),
	} {
		if !re.MatchString(out) {
			t.Errorf("vrouter demo --topology: want the report to match %s:\n%s", re, out)
		}
	}
	if strings.Contains(out, "Node port") {
		t.Errorf("vrouter demo --topology: a node port section, but the file has no node port:\n%s", out)
	}
	e.checkNothingLeft("vrouter demo --topology")
}

// --mode proxy applies to every Service of the file: TCP backends see the
// client's node (cni0 on its own node, vr0 on another); UDP goes by nat.
func TestDemoTopologyProxyMode(t *testing.T) {
	e := newDemoEnv(t)
	path, err := filepath.Abs(demoTopologyExample)
	if err != nil {
		t.Fatal(err)
	}
	code, out := e.run(e.command("demo", "--topology", path, "--mode", "proxy"))
	for _, want := range []string{"Service load balancing (proxy mode", "21 passed, 0 failed"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("vrouter demo --topology %s --mode proxy = exit %d, want 0 with %q:\n%s", path, code, want, out)
		}
	}
	re := regexp.MustCompile(`ok +curl http://10\.103\.92\.81/ x36 from web-1 +web-0 \d+ \(saw 10\.244\.1\.0\), web-1 \d+ \(saw 10\.244\.1\.1\), web-2 \d+ \(saw 10\.244\.1\.0\)`)
	if !re.MatchString(out) {
		t.Errorf("vrouter demo --topology --mode proxy: want the report to match %s:\n%s", re, out)
	}
	e.checkNothingLeft("vrouter demo --topology --mode proxy")
}

// A rootless demo's namespaces are its own: beside a demo as root, whose
// namespaces it sees in the host's /run/netns until it mounts its own,
// it neither touches them nor fails on them.
func TestDemoRootlessBesideRootDemo(t *testing.T) {
	e := newDemoEnv(t)
	k := e.startKept()
	cmd := e.command("demo") // k is this env's: nothing to wait for
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if fi, err := os.Stat(tunDevice); err != nil || fi.Mode().Perm()&0o006 != 0o006 {
		cmd = e.withOpenTUN(t, "demo")
	}
	code, out := e.run(cmd)
	if code != 0 || !strings.Contains(out, "rootless") || !strings.Contains(out, "14 passed, 0 failed") {
		t.Errorf("rootless vrouter demo beside a kept demo as root = exit %d, want 0 with \"14 passed, 0 failed\":\n%s", code, out)
	}
	e.stopUntouched(t, k, "a rootless demo beside a kept one")
}
