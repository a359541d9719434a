package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Packages of this module that BuildVrouter and BuildTestImages build.
const (
	vrouterPkg = "github.com/vrouter/vrouter/cmd/vrouter"
	pausePkg   = "github.com/vrouter/vrouter/integration/image/testimages/pause"
	vrtestPkg  = "github.com/vrouter/vrouter/integration/image/testimages/vrtest"
)

// BuildOptions configures BuildVrouter and BuildTestImages. The zero value
// builds from the current directory with the go command on PATH.
type BuildOptions struct {
	// Dir is a directory inside the vrouter module, where go build runs.
	// Empty means the current directory (a test's package directory is
	// inside the module).
	Dir string
	// Go is the go command. Empty means "go".
	Go string
	// Created is the images' time (Image.Created). Zero means the Unix
	// epoch.
	Created time.Time
}

// BuildVrouter builds vrouter as `make image` does — a static binary
// stamped with version — and writes its image, named "vrouter:"+version,
// to out.
func BuildVrouter(ctx context.Context, out, version string, opts BuildOptions) (Result, error) {
	tmp, err := os.MkdirTemp("", "vrouter-image-")
	if err != nil {
		return Result{}, fmt.Errorf("build vrouter image: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := goBuild(ctx, opts, tmp, "-X main.version="+version, vrouterPkg); err != nil {
		return Result{}, err
	}
	return pack(Vrouter("vrouter:"+version, filepath.Join(tmp, "vrouter")), opts, out)
}

// BuildTestImages builds the test images of the real-cluster test from
// testimages/ and writes them to outDir: pause.tar (PauseName) and
// vrtest.tar (VrtestName), in that order.
func BuildTestImages(ctx context.Context, outDir string, opts BuildOptions) ([]Result, error) {
	tmp, err := os.MkdirTemp("", "vrouter-testimages-")
	if err != nil {
		return nil, fmt.Errorf("build test images: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := goBuild(ctx, opts, tmp, "", pausePkg, vrtestPkg); err != nil {
		return nil, err
	}
	var results []Result
	for _, img := range []struct {
		image Image
		file  string
	}{
		{Pause(filepath.Join(tmp, "pause")), "pause.tar"},
		{Vrtest(filepath.Join(tmp, "vrtest")), "vrtest.tar"},
	} {
		res, err := pack(img.image, opts, filepath.Join(outDir, img.file))
		if err != nil {
			return nil, err
		}
		results = append(results, res)
	}
	return results, nil
}

// pack sets img's time and platform (from its binary, the Source of its
// entrypoint) and writes it to out.
func pack(img Image, opts BuildOptions, out string) (Result, error) {
	img.Created = opts.Created
	for _, f := range img.Files {
		if len(img.Config.Entrypoint) > 0 && f.Path == img.Config.Entrypoint[0] {
			arch, err := StaticBinary(f.Source)
			if err != nil {
				return Result{}, err
			}
			img.Architecture = arch
		}
	}
	return WriteFile(out, img)
}

// goBuild builds pkgs into dir as static, reproducible Linux binaries: no cgo,
// no file system paths, no build ID, no symbol table. ldflags are added.
func goBuild(ctx context.Context, opts BuildOptions, dir, ldflags string, pkgs ...string) error {
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	args := []string{"build", "-trimpath", "-ldflags", strings.TrimSpace("-s -w -buildid= " + ldflags), "-o", dir + "/"}
	cmd := exec.CommandContext(ctx, goCmd, append(args, pkgs...)...)
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", goCmd, strings.Join(cmd.Args[1:], " "), err, out)
	}
	return nil
}
