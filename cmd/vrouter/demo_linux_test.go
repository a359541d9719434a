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
	"strconv"
	"strings"
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
	return e
}

// command is `vrouter args...` with TMPDIR set to the env's.
func (e *demoEnv) command(args ...string) *exec.Cmd {
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
	entries, _ := os.ReadDir(topology.DefaultNetnsDir)
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
	if code != 0 || !strings.Contains(out, "13 passed, 0 failed") {
		t.Fatalf("vrouter demo = exit %d, want 0 with \"13 passed, 0 failed\":\n%s", code, out)
	}
	e.checkNothingLeft("vrouter demo")
}

// TestDemoRootless runs the demo as nobody, which makes it re-run itself
// in a user namespace. That needs /dev/net/tun read-write for nobody.
func TestDemoRootless(t *testing.T) {
	e := newDemoEnv(t)
	if fi, err := os.Stat("/dev/net/tun"); err != nil || fi.Mode().Perm()&0o006 != 0o006 {
		t.Skip("rootless demo: /dev/net/tun is not read-write for others")
	}
	cmd := e.command("demo")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	code, out := e.run(cmd)
	if code != 0 || !strings.Contains(out, "rootless") || !strings.Contains(out, "13 passed, 0 failed") {
		t.Fatalf("vrouter demo as nobody = exit %d, want 0, rootless, with \"13 passed, 0 failed\":\n%s", code, out)
	}
	e.checkNothingLeft("vrouter demo as nobody")
}
