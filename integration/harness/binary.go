package harness

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// VrouterPackage is the import path of the vrouter command, which
// BuildVrouter builds.
const VrouterPackage = "github.com/vrouter/vrouter/cmd/vrouter"

// BuildVrouter builds the vrouter command into dir and returns the
// binary's path. It runs `go build` in the current directory, so the
// vrouter it builds is the version the current module requires (or, inside
// vrouter's own module, the working tree). It needs the go command on
// PATH. Go's build cache makes a second build a link of a few seconds.
func BuildVrouter(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build vrouter: the go command is not on PATH (%w); install Go, or build vrouter elsewhere (make build writes bin/vrouter) and pass its path", err)
	}
	bin := filepath.Join(dir, "vrouter")
	out, err := exec.Command(goBin, "build", "-o", bin, VrouterPackage).CombinedOutput()
	if err != nil {
		hint := ""
		if strings.Contains(string(out), "go.sum") || strings.Contains(string(out), "no required module") {
			hint = fmt.Sprintf("\nthe current module must require vrouter with the dependencies of its command: go get %s", VrouterPackage)
		}
		return "", fmt.Errorf("go build %s: %w\n%s%s", VrouterPackage, err, strings.TrimSpace(string(out)), hint)
	}
	return bin, nil
}

// CheckVrouter returns the absolute path of the vrouter binary bin (a path,
// or a name looked up in PATH), or an error that says what is wrong with
// it and how to get one.
func CheckVrouter(bin string) (string, error) {
	if bin == "" {
		return "", errors.New("no vrouter binary given: build one with make build (bin/vrouter) or BuildVrouter")
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("vrouter binary %q: %w; build one with make build (bin/vrouter) or BuildVrouter", bin, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", fmt.Errorf("vrouter binary %q: %w", bin, err)
	}
	return path, nil
}
