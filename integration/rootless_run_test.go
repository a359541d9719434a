package integration

// TestRunInOwnNamespace runs `vrouter run` as docs/operations.md's rootless
// recipe does, under `unshare -Urn`: in a user and network namespace of
// its own, which holds nothing but a loopback that is down:
//
//	host (the test)                       unshare -Urn (new user + network namespace)
//	  DIR/hostgw-master.yaml ──(--config)──▶ vrouter run ─ vr0 (made by the router)
//	  DIR/admin.sock ◀─────── admin socket ──┘  overlay 0.0.0.0:8285 (overlay.listenAddress)
//
// The seed's config for hostgw-master, as written, binds the overlay on
// node.underlayAddress 192.168.31.201, which that namespace does not hold:
// the router must exit saying that overlay.listenAddress is the fix. With
// overlay.listenAddress 0.0.0.0 it must come up and answer `vrouter status`
// on its admin socket, and stop cleanly on SIGTERM.
//
// The test runs as root, so the user namespace maps root to root (with
// /dev/net/tun 0666 an unprivileged user gets the same namespaces and the
// same router); it needs unshare from util-linux.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestRunInOwnNamespace(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("needs unshare (apt-get install util-linux): %v", err)
	}
	dir := t.TempDir()
	f, err := harness.NodeFile(topology.Seed(), masterNode, harness.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, masterNode+".yaml")
	write := func() {
		t.Helper()
		b, err := yaml.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "admin.sock")
	run := func(ctx context.Context) *exec.Cmd {
		return exec.CommandContext(ctx, "unshare", "-Urn", vrouterBin, "run", "--config", cfg,
			"--admin-socket", sock, "--state-dir", "")
	}

	// As written: the overlay binds an address the namespace lacks.
	write()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := run(ctx).CombinedOutput()
	const hint = "192.168.31.201 (node.underlayAddress, which the overlay binds unless overlay.listenAddress is set) is not an address of this network namespace; set overlay.listenAddress"
	if err == nil || !strings.Contains(string(out), hint) {
		t.Fatalf("unshare -Urn vrouter run (no overlay.listenAddress) = %v\n%s\nwant a failure saying %q", err, out, hint)
	}

	// The fix.
	f.Overlay.ListenAddress = "0.0.0.0"
	write()
	logPath := filepath.Join(dir, "router.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := run(ctx)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return <-done // ctx kills it at the latest
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})
	eventually(t, 10*time.Second, "the router's admin socket answering vrouter status", func() error {
		out, err := exec.Command(vrouterBin, "status", "--socket", sock).CombinedOutput()
		if err != nil || !strings.Contains(string(out), masterNode) {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("vrouter status = %v, want the status of %s:\n%s\n--- router log ---\n%s", err, masterNode, out, log)
		}
		return nil
	})
	stopped = true
	if err := stop(); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Errorf("router under unshare -Urn: exit after SIGTERM = %v, want 0\n%s", err, log)
	}
}
