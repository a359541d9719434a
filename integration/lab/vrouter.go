package lab

import (
	"os"
	"sync"
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
)

// VrouterEnv names the environment variable that gives the vrouter binary
// when Options.Vrouter is empty.
const VrouterEnv = "VROUTER_BIN"

// vrouterFor returns the binary a Lab of t runs: opt, else $VROUTER_BIN,
// else BuildVrouter's.
func vrouterFor(t testing.TB, opt string) (string, error) {
	t.Helper()
	if opt == "" {
		opt = os.Getenv(VrouterEnv)
	}
	if opt != "" {
		return harness.CheckVrouter(opt)
	}
	return buildFor(t)
}

// built is the vrouter binary built for this test binary, shared by every
// test that holds it and removed when the last one ends.
var built struct {
	mu   sync.Mutex // guards the fields below
	dir  string
	path string
	refs int
}

// BuildVrouter returns a vrouter binary built from the module with `go
// build` (harness.BuildVrouter): the version the current module requires,
// or vrouter's working tree inside vrouter's own module. Tests that hold
// it at the same time share one build; it is removed when the last of
// them ends, and a later test builds again, which Go's build cache makes
// a link of a few seconds. A TestMain can build once for the whole run
// with harness.BuildVrouter and pass the path in Options.Vrouter or
// $VROUTER_BIN. BuildVrouter fails t if the build fails.
func BuildVrouter(t testing.TB) string {
	t.Helper()
	path, err := buildFor(t)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return path
}

func buildFor(t testing.TB) (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.refs == 0 {
		dir, err := os.MkdirTemp("", "vrouter-lab-")
		if err != nil {
			return "", err
		}
		path, err := harness.BuildVrouter(dir)
		if err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		built.dir, built.path = dir, path
	}
	built.refs++
	t.Cleanup(func() {
		built.mu.Lock()
		defer built.mu.Unlock()
		if built.refs--; built.refs == 0 {
			os.RemoveAll(built.dir)
			built.dir, built.path = "", ""
		}
	})
	return built.path, nil
}
