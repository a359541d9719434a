package topology

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// TB is the part of testing.TB that BuildT uses; *testing.T and
// *testing.B satisfy it. (An interface, so that programs such as
// `vrouter demo` can import this package without importing testing.)
type TB interface {
	Helper()
	Cleanup(func())
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
}

// BuildT is Build for tests: it skips t, with the reason, when the
// process cannot create network namespaces (see CanBuild), fails t when
// Build fails, and closes the cluster when t ends, reporting a Close error
// as a test error.
func BuildT(t TB, spec Spec) *Cluster {
	t.Helper()
	if err := CanBuild(); err != nil {
		t.Skipf("topology: %v", err)
	}
	c, err := Build(spec)
	if err != nil {
		t.Fatalf("topology.Build: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("topology Cluster.Close: %v", err)
		}
	})
	return c
}

// CanBuild returns nil if this process may create network namespaces —
// it is root, or root in a user namespace of its own — and otherwise an
// error that says what is missing.
func CanBuild() error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with the goroutine, together
		// with the namespace it made.
		runtime.LockOSThread()
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("cannot create network namespaces (unshare(CLONE_NEWNET): %w); run as root or inside a user namespace (unshare -Urnm)", err)
	}
	return nil
}
