package router

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gVisor's stack keeps a process-wide timer goroutine for its
		// jobs; it is not ours to stop.
		goleak.IgnoreAnyFunction("gvisor.dev/gvisor/pkg/sync.Gopark"),
	)
}
