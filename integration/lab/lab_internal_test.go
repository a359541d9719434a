package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVrouterFor: a vrouter path that names no executable, from the
// options or from $VROUTER_BIN, is an error that names it and says how to
// get one; a good one is used as given.
func TestVrouterFor(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "vrouter")
	if _, err := vrouterFor(t, missing); err == nil || !strings.Contains(err.Error(), `vrouter binary "`+missing+`"`) || !strings.Contains(err.Error(), "make build") {
		t.Errorf("vrouterFor(%q) = %v, want an error naming it and make build", missing, err)
	}
	t.Setenv(VrouterEnv, missing)
	if _, err := vrouterFor(t, ""); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("vrouterFor(\"\") with $%s=%s = %v, want an error naming it", VrouterEnv, missing, err)
	}
	if err := os.WriteFile(missing, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := vrouterFor(t, ""); err != nil || got != missing {
		t.Errorf("vrouterFor(\"\") with $%s=%s = %q, %v; want it back", VrouterEnv, missing, got, err)
	}
}
