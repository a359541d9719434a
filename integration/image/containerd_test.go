package image

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestContainerdImport imports vrouter's image into a private containerd,
// as a node's containerd gets it (`ctr -n k8s.io images import`), and
// checks the name it lists and the file system it unpacked:
//
//	t: Write ──▶ vrouter-image.tar ──ctr import──▶ containerd (own root, state, socket in a temp dir)
//	                                                 │ unpack (overlayfs): checks the layer's diff_id
//	t: ctr images ls, ctr images mount ◀─────────────┘
//
// containerd, its mounts and its directories are gone when the test ends.
func TestContainerdImport(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs containerd")
	}
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (apt-get install containerd)", bin)
		}
	}
	ctrd := startContainerd(t)

	img := makeImage(t, func(img *Image) {
		img.Name = "vrouter:v0.0.0-import-test"
		img.Architecture = runtime.GOARCH // else containerd does not unpack it
	})
	archive := filepath.Join(ctrd.dir, "vrouter-image.tar")
	res, err := WriteFile(archive, img)
	if err != nil {
		t.Fatal(err)
	}
	out := ctrd.ctr(t, "images", "import", archive)
	if want := fmt.Sprintf("unpacking %s (%s)...done", res.Reference, res.ManifestDigest); !strings.Contains(out, want) {
		t.Errorf("ctr images import %s:\n%s\nwant %q", archive, out, want)
	}

	// REF TYPE DIGEST SIZE ("4.0 KiB") PLATFORMS LABELS
	var listed []string
	for _, line := range strings.Split(ctrd.ctr(t, "images", "ls"), "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 6 {
			listed = append(listed, f[0]+" "+f[2]+" "+f[5])
		}
	}
	want := res.Reference + " " + res.ManifestDigest + " linux/" + runtime.GOARCH
	if !slices.Equal(listed, []string{want}) {
		t.Errorf("ctr images ls lists %q, want [%q]", listed, want)
	}

	// The unpacked root file system, as a container gets it.
	mnt := filepath.Join(ctrd.dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ctrd.ctr(t, "images", "mount", res.Reference, mnt)
	defer ctrd.ctr(t, "images", "unmount", "--rm", mnt)
	for _, tc := range []struct {
		path string
		mode fs.FileMode
		data string
	}{
		{"/usr/local/bin/vrouter", 0o755, "not really vrouter\n"},
		{"/etc/nsswitch.conf", 0o644, "hosts: files dns\n"},
		{"/run/vrouter", fs.ModeDir | 0o755, ""},
		{"/tmp", fs.ModeDir | fs.ModeSticky | 0o777, ""},
	} {
		p := filepath.Join(mnt, tc.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("in the unpacked image: %v", err)
			continue
		}
		if fi.Mode() != tc.mode || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s in the unpacked image: mode %v uid %d, want %v and 0", tc.path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, tc.mode)
		}
		if tc.data != "" {
			if b, _ := os.ReadFile(p); string(b) != tc.data {
				t.Errorf("%s in the unpacked image = %q, want %q", tc.path, b, tc.data)
			}
		}
	}
}

// containerd is a private containerd: its root, state, socket and log are
// in dir.
type containerd struct {
	dir, socket string
}

// startContainerd starts a containerd that shares nothing with the
// machine's (no CRI plugin), and stops it, unmounts whatever it left
// mounted and removes its directory at the end of the test.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir, err := os.MkdirTemp("", "vrimage-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{dir: dir, socket: filepath.Join(dir, "containerd.sock")}
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket, c.socket+".ttrpc", filepath.Join(dir, "opt"))
	configPath := filepath.Join(dir, "config.toml")
	logPath := filepath.Join(dir, "containerd.log")
	log, err := os.Create(logPath)
	if err == nil {
		err = os.WriteFile(configPath, []byte(config), 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", configPath)
	cmd.Stdout, cmd.Stderr = log, log
	// Should the test binary die without its cleanups (a timeout), so
	// does containerd (Go ends no thread the test uses, so the signal
	// comes only then).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	log.Close()
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("containerd log:\n%s", b)
			}
		}
		if err := unmountUnder(dir); err != nil {
			t.Errorf("unmount what containerd left under %s: %v", dir, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove containerd's directory: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command("ctr", "--address", c.socket, "version").CombinedOutput()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd does not answer on %s after 30s: %v\n%s", c.socket, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctr runs `ctr -n k8s.io args...` against c and returns its output.
func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", c.socket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr -n k8s.io %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// unmountUnder detaches every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mount-point options ...; the mount
		// point escapes spaces as \040, which a temp dir does not have.
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}
