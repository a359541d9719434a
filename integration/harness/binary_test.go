package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestCheckVrouter(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "vrouter")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin, want string
	}{
		{"", "no vrouter binary given: build one with make build (bin/vrouter) or BuildVrouter"},
		{filepath.Join(dir, "missing"), `vrouter binary "` + filepath.Join(dir, "missing") + `": `},
		{plain, "permission denied; build one with make build"},
	} {
		_, err := CheckVrouter(tc.bin)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckVrouter(%q) = %v, want an error containing %q", tc.bin, err, tc.want)
		}
	}
	if got, err := CheckVrouter(exe); err != nil || got != exe {
		t.Errorf("CheckVrouter(%q) = %q, %v; want the path back", exe, got, err)
	}
}
