package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// mkimage runs the command in-process with $SOURCE_DATE_EPOCH set to
// epoch (if not empty).
func mkimage(epoch string, args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut, func(k string) string {
		if k == "SOURCE_DATE_EPOCH" {
			return epoch
		}
		return ""
	})
	return out.String(), errOut.String(), code
}

// staticBinary builds the pause test program, a small static binary.
func staticBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/vrouter/vrouter/integration/image/testimages/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestReproducible runs mkimage as `make image` does, twice: the same
// digest on stdout, the same bytes.
func TestReproducible(t *testing.T) {
	bin := staticBinary(t)
	dir := t.TempDir()
	var digests []string
	var archives [][]byte
	for _, out := range []string{"a.tar", "b.tar"} {
		path := filepath.Join(dir, out)
		stdout, stderr, code := mkimage("", "--binary", bin, "--name", "vrouter:v0.2.0", "--out", path, "--label", "org.opencontainers.image.version=v0.2.0")
		if code != 0 {
			t.Fatalf("mkimage --out %s: exit %d\n%s", path, code, stderr)
		}
		if !strings.Contains(stderr, "docker.io/library/vrouter:v0.2.0") {
			t.Errorf("mkimage stderr %q does not name docker.io/library/vrouter:v0.2.0", stderr)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, stdout)
		archives = append(archives, data)
	}
	if !strings.HasPrefix(digests[0], "sha256:") || digests[0] != digests[1] || !bytes.Equal(archives[0], archives[1]) {
		t.Errorf("mkimage twice printed %q and %q; want one digest and the same bytes", digests[0], digests[1])
	}
	for _, tc := range []struct {
		name  string
		epoch string
		args  []string
	}{
		{"SOURCE_DATE_EPOCH", "1700000000", nil},
		{"label", "", []string{"--label", "org.opencontainers.image.revision=abc"}},
		{"layout", "", []string{"--layout", "vrtest"}},
	} {
		args := append([]string{"--binary", bin, "--name", "vrouter:v0.2.0", "--out", filepath.Join(dir, "c.tar"), "--label", "org.opencontainers.image.version=v0.2.0"}, tc.args...)
		stdout, stderr, code := mkimage(tc.epoch, args...)
		if code != 0 || stdout == digests[0] {
			t.Errorf("mkimage with another %s: exit %d, digest %q (before %q); want another digest\n%s", tc.name, code, stdout, digests[0], stderr)
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.tar")
	for _, tc := range []struct {
		epoch   string
		args    []string
		code    int
		errPart string
	}{
		{"", []string{"--name", "vrouter:v1", "--out", out}, 2, "--binary is required"},
		{"", []string{"--binary", "/bin/sh", "--name", "vrouter:v1"}, 2, "--out is required"},
		{"", []string{"--binary", "/bin/sh", "--out", out}, 2, "--name is required for --layout vrouter"},
		{"", []string{"--binary", "/bin/sh", "--out", out, "--layout", "busybox"}, 2, `--layout "busybox"`},
		{"", []string{"--binary", "/bin/sh", "--out", out, "--label", "novalue"}, 2, `"novalue": want KEY=VALUE`},
		{"yesterday", []string{"--binary", "/bin/sh", "--name", "vrouter:v1", "--out", out}, 2, `SOURCE_DATE_EPOCH="yesterday"`},
		{"", []string{"--binary", "/bin/sh", "--name", "vrouter:v1", "--out", out}, 1, "CGO_ENABLED=0"},
		{"", []string{"--binary", "/bin/sh", "--name", "vrouter:v1", "--out", out, "extra"}, 2, "unexpected arguments"},
	} {
		if _, err := os.Stat("/bin/sh"); err != nil {
			t.Skip("needs /bin/sh, a dynamically linked binary")
		}
		_, stderr, code := mkimage(tc.epoch, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.errPart) {
			t.Errorf("mkimage %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.errPart)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed runs left %s: %v", out, err)
	}
}
