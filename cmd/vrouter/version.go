package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time by `make build` and `make image`:
//
//	-ldflags "-X main.version=v0.2.0 -X main.commit=$(git rev-parse --short=12 HEAD)"
//
// Both stay empty in a plain `go build`; build then reads what the Go
// toolchain stamped, if anything.
var (
	version string
	commit  string
)

// buildInfo says which vrouter this is.
type buildInfo struct {
	// Version is main.version, else the module version the Go toolchain
	// recorded (v0.2.0 for `go install ...@v0.2.0`), else "(devel)".
	Version string
	// Commit is main.commit, else the VCS revision the Go toolchain
	// recorded (shortened to 12 digits), else "" (built with
	// -buildvcs=false or outside a checkout).
	Commit string
	// Modified reports that the toolchain recorded uncommitted changes.
	Modified bool
}

// readBuildInfo returns this binary's buildInfo.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value[:min(12, len(s.Value))]
				}
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// commitString is the commit for humans: "abc123def456", with
// " (modified)" for a tree with uncommitted changes, or "unknown".
func (b buildInfo) commitString() string {
	switch {
	case b.Commit == "":
		return "unknown"
	case b.Modified:
		return b.Commit + " (modified)"
	}
	return b.Commit
}

// versionString is one line for logs: "vrouter v0.2.0 commit abc123def456
// go1.26.8 linux/amd64".
func versionString() string {
	b := readBuildInfo()
	return fmt.Sprintf("vrouter %s commit %s %s %s/%s", b.Version, b.commitString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: vrouter version    (or vrouter --version)\n\nPrints the version, the VCS commit it was built from, the Go release and the platform.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	b := readBuildInfo()
	c := b.commitString()
	if b.Commit == "" {
		c += " (this build carries no VCS information: built with -buildvcs=false or outside a git checkout; `make build` stamps it)"
	}
	fmt.Fprintf(stdout, "vrouter %s\n  commit: %s\n  go:     %s %s/%s\n", b.Version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
