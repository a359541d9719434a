package integration

// A router without privileges, on an adopted TUN:
//
//	hostgw-master  vrouter as root, as everywhere else
//	hostgw-node    a "privileged helper" (a CNI plugin or an init
//	               container in real life) creates vr0, gives it its
//	               address, MTU and routes, and hands the open descriptor
//	               to `vrouter run --tun-fd 3` running as uid 65534 with no
//	               capabilities and tun.configure: false.
//
// The helper is the test itself (TestUnprivilegedRouterOnAdoptedTUN), or
// the example helper docs/examples/tunfd, which then executes the router
// in its own place (TestTUNFDExampleHelper). Pods on the two nodes must
// reach each other as in the seed test, and the router must not take the
// descriptor it was given for a change of its config.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/tun"
)

// tunNode is the node whose router runs on an adopted TUN.
const tunNode = "hostgw-node"

// tunArgs are the router's arguments after --config FILE.
var tunArgs = []string{"--tun-fd", "3", "--log-level", "debug"}

func TestUnprivilegedRouterOnAdoptedTUN(t *testing.T) {
	testAdoptedTUN(t, "tunfd", func(e *env, cfg string) *exec.Cmd {
		fd := openTUNForChild(e)
		t.Cleanup(func() { fd.Close() }) // after Start, the child's copy keeps the device
		cmd := e.c.Command(tunNode, "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
			vrouterBin, "run", "--config", cfg, "--state-dir", ""}, tunArgs...)...)
		cmd.ExtraFiles = []*os.File{fd}
		return cmd
	})
}

// TestTUNFDExampleHelper runs the whole hand-off with the example helper
// docs/examples/tunfd, as its documentation shows.
func TestTUNFDExampleHelper(t *testing.T) {
	requireRoot(t)
	// Both binaries in a directory uid 65534 may enter: the helper
	// executes the router after it has dropped to that user.
	dir, err := os.MkdirTemp("", "vrouter-tunfd-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	helper, router := filepath.Join(dir, "tunfd"), filepath.Join(dir, "vrouter")
	if out, err := exec.Command("go", "build", "-o", helper, "github.com/vrouter/vrouter/docs/examples/tunfd").CombinedOutput(); err != nil {
		t.Fatalf("go build docs/examples/tunfd: %v\n%s", err, out)
	}
	if err := os.Link(vrouterBin, router); err != nil {
		t.Fatal(err)
	}
	testAdoptedTUN(t, "tunhelp", func(e *env, cfg string) *exec.Cmd {
		return e.c.Command(tunNode, helper, append([]string{"--name", "vr0", "--addresses", "10.244.1.0/32", "--mtu", "1472",
			"--routes", "10.244.0.0/16,10.96.0.0/12,169.254.244.1/32", "--user", "65534:65534",
			"--", router, "run", "--config", cfg, "--state-dir", ""}, tunArgs...)...)
	})
}

// openTUNForChild is the privileged helper's part, done by the test:
// create and configure vr0 in tunNode's namespace and return a duplicate
// of its descriptor for a child.
func openTUNForChild(e *env) *os.File {
	t := e.t
	t.Helper()
	const node = tunNode
	// The privileged helper's part: create and configure the device.
	var fd *os.File
	err := e.c.Do(node, func() error {
		dev, err := tun.Open(tun.Options{Name: "vr0"})
		if err != nil {
			return err
		}
		defer dev.Close()
		lc := tun.LinkConfig{
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/32")},
			MTU:       1472,
			Routes: []netip.Prefix{
				netip.MustParsePrefix("10.244.0.0/16"),
				netip.MustParsePrefix("10.96.0.0/12"),
				netip.MustParsePrefix("169.254.244.1/32"),
			},
		}
		if err := tun.Configure("vr0", lc); err != nil {
			return err
		}
		// Keep a duplicate for the child; the device lives as long as it.
		rc, err := dev.(syscall.Conn).SyscallConn()
		if err != nil {
			return err
		}
		var dupErr error
		if err := rc.Control(func(raw uintptr) {
			var nfd int
			nfd, dupErr = unix.Dup(int(raw))
			if dupErr == nil {
				fd = os.NewFile(uintptr(nfd), "vr0")
			}
		}); err != nil {
			return err
		}
		return dupErr
	})
	if err != nil {
		t.Fatalf("create vr0 in %s: %v", node, err)
	}
	return fd
}

// testAdoptedTUN starts hostgw-master's router as root and hostgw-node's
// with the command launch returns for its config file, which must run
// `vrouter run --config cfg` with tunArgs as uid 65534 without
// capabilities, on a vr0 made and configured for it, in the process that
// launch returns. It checks that the router runs so, routes, and takes
// neither its start nor a SIGHUP for a config change.
func testAdoptedTUN(t *testing.T, name string, launch func(e *env, cfg string) *exec.Cmd) {
	e := newEnv(t, name, topology.Seed(), harness.ConfigOptions{})
	e.start("hostgw-master")
	const node = tunNode

	// The router's part: a config that leaves the device alone, readable
	// by the unprivileged user.
	f, err := harness.NodeFile(e.spec, node, harness.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	no := false
	f.TUN.Configure = &no
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is private to root: make a directory the
	// unprivileged user can read.
	dir, err := os.MkdirTemp("", "vrouter-tunfd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "hostgw-node.yaml")
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "hostgw-node.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := launch(e, cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unprivileged router: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return errors.New("no exit within 10s of SIGTERM; killed")
		}
	}
	t.Cleanup(func() { _ = stop() })

	eventually(t, 10*time.Second, "unprivileged router bound to its overlay port", func() error {
		ready, err := harness.Ready(e.c, node)
		if err != nil {
			return err
		}
		if !ready {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("not ready yet; log:\n%s", log)
		}
		return nil
	})

	// It really runs without privileges.
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t65534", "CapEff:\t0000000000000000"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("router process status lacks %q:\n%s", want, status)
		}
	}

	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, 60)
	e.mustPing(nginxJ6zwk.name, nginxTh5pz.addr, 60)

	// --tun-fd is copied into every config the router reads, so neither
	// its start-up check of the file nor a SIGHUP finds a change: no
	// "needs a restart", no reload.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the SIGHUP's read of the unchanged file", func() error {
		log, _ := os.ReadFile(logPath)
		if n := strings.Count(string(log), "config unchanged, skipping reload"); n < 2 {
			return fmt.Errorf("%d reads found the file unchanged, want 2 (start-up, SIGHUP); log:\n%s", n, log)
		}
		return nil
	})
	log, _ := os.ReadFile(logPath)
	for _, bad := range []string{"needs a restart", "config reloaded"} {
		if strings.Contains(string(log), bad) {
			t.Errorf("router on --tun-fd 3 logged %q with an unchanged file:\n%s", bad, log)
		}
	}

	if err := stop(); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Errorf("unprivileged router exit: %v\n%s", err, log)
	}
}
