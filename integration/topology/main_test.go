package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireRoot skips t unless the process may create network namespaces:
// root, or root in its own user namespace (see TestRootless).
func requireRoot(t *testing.T) {
	t.Helper()
	if err := CanBuild(); err != nil {
		t.Skipf("needs root (or root in a user namespace): %v", err)
	}
}

// entries lists the names in dir that start with prefix.
func entries(t *testing.T, dir, prefix string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var names []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), prefix) {
			names = append(names, de.Name())
		}
	}
	return names
}

// threadNetNSIno returns the inode of the calling thread's network
// namespace; the caller must hold its thread locked.
func threadNetNSIno(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(threadNetNS, &st); err != nil {
		t.Fatalf("stat %s: %v", threadNetNS, err)
	}
	return st.Ino
}

func mustExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stat %s: %v", filepath.Clean(path), err)
	}
}
