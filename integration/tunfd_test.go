package integration

// A router without privileges, on an adopted TUN:
//
//	hostgw-master  vrouter as root, as everywhere else
//	hostgw-node    the test (the "privileged helper": a CNI plugin or an
//	               init container in real life) creates vr0, gives it its
//	               address, MTU and routes, and hands the open descriptor
//	               to `vrouter run --tun-fd 3` running as uid 65534 with no
//	               capabilities and tun.configure: false.
//
// Pods on the two nodes must reach each other as in the seed test.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
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

func TestUnprivilegedRouterOnAdoptedTUN(t *testing.T) {
	e := newEnv(t, "tunfd", topology.Seed(), harness.ConfigOptions{})
	e.start("hostgw-master")
	const node = "hostgw-node"

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
	cmd := e.c.Command(node, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
		vrouterBin, "run", "--config", cfg, "--tun-fd", "3", "--log-level", "debug")
	cmd.ExtraFiles = []*os.File{fd}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unprivileged router: %v", err)
	}
	fd.Close()
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
