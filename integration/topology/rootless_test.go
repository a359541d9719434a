package topology

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of the re-executed test binary in TestRootless.
const (
	rootlessModeEnv = "TOPOLOGY_ROOTLESS_WANT_MODE" // "named" or "unnamed"
	rootlessDirEnv  = "TOPOLOGY_ROOTLESS_NETNS_DIR"
	rootlessTmpfs   = "TOPOLOGY_ROOTLESS_WANT_TMPFS" // "1": NetnsDir must become a tmpfs
)

// TestRootless re-executes this test binary as root of a new user
// namespace that maps to an unprivileged user outside (nobody when the
// test runs as real root, else the caller), and runs TestRootlessChild
// there:
//
//   - with its own mount namespace (like `unshare -Urnm`), NetnsDir is
//     not writable, so Build mounts a private tmpfs on it: named;
//   - without one (CLONE_NEWUSER|CLONE_NEWNET only), Build cannot mount
//     and keeps namespaces open by file descriptor: unnamed.
func TestRootless(t *testing.T) {
	if os.Getenv(rootlessModeEnv) != "" {
		t.Skip("already inside the user namespace")
	}
	t.Parallel()
	hostID := os.Getuid()
	if hostID == 0 {
		hostID = 65534 // nobody: no privilege at all outside the user namespace
	}
	for _, tc := range []struct {
		name  string
		flags uintptr
		want  string
	}{
		{"OwnMountNS", syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET, "named"},
		{"NoMountNS", syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET, "unnamed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A directory the child can reach but, being nobody outside,
			// not write to (unless the test runs unprivileged).
			dir := t.TempDir()
			for _, d := range []string{filepath.Dir(dir), dir} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// Run unprivileged, the child owns dir and needs no tmpfs; it
			// still cannot mount without its own mount namespace.
			want, tmpfs := tc.want, tc.want == "named" && os.Getuid() == 0

			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "/proc/self/exe", "-test.run=^TestRootlessChild$", "-test.v", "-test.count=1")
			cmd.Dir = "/"
			cmd.Env = append(os.Environ(), rootlessModeEnv+"="+want, rootlessDirEnv+"="+dir, fmt.Sprintf("%s=%t", rootlessTmpfs, tmpfs))
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Cloneflags:                 tc.flags,
				UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: 1}},
				GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostID, Size: 1}},
				GidMappingsEnableSetgroups: false,
				// Become uid 0 of the new namespace; otherwise a real-root
				// parent's uid is unmapped there and shows as nobody.
				Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
			}
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			if err != nil && !errors.As(err, &exitErr) {
				t.Skipf("cannot start a process in a new user namespace (%v): user namespaces unavailable here", err)
			}
			if err != nil || !strings.Contains(string(out), "--- PASS: TestRootlessChild") {
				t.Fatalf("TestRootlessChild in a user namespace (%s, uid 0 -> %d): %v\n%s", tc.name, hostID, err, out)
			}
			if !strings.Contains(string(out), "netns mode: "+want) {
				t.Errorf("TestRootlessChild (%s) output lacks %q:\n%s", tc.name, "netns mode: "+want, out)
			}
			t.Logf("child output:\n%s", out)
		})
	}
}

// TestRootlessChild is TestRootless's body inside the user namespace.
func TestRootlessChild(t *testing.T) {
	want := os.Getenv(rootlessModeEnv)
	if want == "" {
		t.Skip("run by TestRootless inside a user namespace")
	}
	requireRoot(t)
	uidMap, _ := os.ReadFile("/proc/self/uid_map")
	t.Logf("uid_map: %s", strings.Join(strings.Fields(string(uidMap)), " "))

	s := Seed()
	s.NetnsDir = os.Getenv(rootlessDirEnv)
	c := BuildT(t, s)
	mode := "unnamed"
	if c.NetnsDir() != "" {
		mode = "named"
	}
	t.Logf("netns mode: %s (dir %q)", mode, c.NetnsDir())
	if mode != want {
		t.Errorf("NetnsDir() = %q: mode %s, want %s", c.NetnsDir(), mode, want)
	}
	if os.Getenv(rootlessTmpfs) == "true" {
		var st unix.Statfs_t
		if err := unix.Statfs(s.NetnsDir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Errorf("statfs(%s) = type %#x, %v; want a tmpfs mounted by Build", s.NetnsDir, st.Type, err)
		}
	}
	if mode == "named" {
		if got := entries(t, s.NetnsDir, c.Prefix()); len(got) != len(c.Namespaces()) {
			t.Errorf("%s holds %v, want %d namespaces", s.NetnsDir, got, len(c.Namespaces()))
		}
	}

	if r := ping(t, c, nginxMaster, addrCorednsA); r.Received != 1 || r.TTL != 64 {
		t.Errorf("Ping(%s -> %v) = %v, want 1 reply with TTL 64", nginxMaster, addrCorednsA, r)
	}
	if err := c.InstallKernelHostGW(); err != nil {
		t.Fatalf("InstallKernelHostGW: %v", err)
	}
	if r := ping(t, c, nginxMaster, addrNginxNodeB); r.Received != 1 || r.TTL != 62 {
		t.Errorf("Ping(%s -> %v) = %v, want 1 reply with TTL 62", nginxMaster, addrNginxNodeB, r)
	}

	srv := serve(t)(c.ServeHTTP(nginxNodeA, ":80"))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := c.HTTPGet(ctx, nginxMaster, "http://10.244.1.2/")
	if err != nil || got.Server != nginxNodeA {
		t.Errorf("HTTPGet(%s -> 10.244.1.2) = %q, %v; want %q", nginxMaster, got.Server, err, nginxNodeA)
	}
	u := serve(t)(c.ServeUDPEcho(corednsA, ":53"))
	defer u.Close()
	got, err = c.UDPExchange(ctx, nginxNodeB, netip.AddrPortFrom(addrCorednsA, 53), []byte("q"))
	if err != nil || got.Server != corednsA {
		t.Errorf("UDPExchange(%s -> %v:53) = %q, %v; want %q", nginxNodeB, addrCorednsA, got.Server, err, corednsA)
	}

	out, err := c.Command(nginxNodeA, "ip", "-4", "-o", "addr", "show", "dev", PodLink).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.244.1.2/24") {
		t.Errorf("Command(%s, ip addr show) = %q, %v; want 10.244.1.2/24", nginxNodeA, out, err)
	}

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if mode == "named" {
		if got := entries(t, s.NetnsDir, c.Prefix()); len(got) != 0 {
			t.Errorf("after Close %s holds %v", s.NetnsDir, got)
		}
	}
}
