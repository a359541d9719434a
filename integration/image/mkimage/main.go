// Command mkimage packs a static binary into a container image archive
// that `ctr images import`, `podman load` and `docker load` accept, and
// prints the image's manifest digest. `make image` runs it for vrouter:
//
//	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -buildid= -X main.version=v0.2.0" -o bin/vrouter-static ./cmd/vrouter
//	go run ./integration/image/mkimage --binary bin/vrouter-static --name vrouter:v0.2.0 --out bin/vrouter-image.tar
//
// --layout pause or vrtest packs the test images of the real-cluster test
// instead (see package image). The archive's bytes depend only on the
// binary, the flags and $SOURCE_DATE_EPOCH (the time recorded in the image,
// the Unix epoch if unset).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/integration/image"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// layouts are the images mkimage knows, by --layout.
var layouts = map[string]func(name, binary string) image.Image{
	"vrouter": image.Vrouter,
	"pause": func(name, binary string) image.Image {
		img := image.Pause(binary)
		img.Name = name
		return img
	},
	"vrtest": func(name, binary string) image.Image {
		img := image.Vrtest(binary)
		img.Name = name
		return img
	},
}

// defaultNames are the names of the layouts when --name is not given.
var defaultNames = map[string]string{
	"pause":  image.PauseName,
	"vrtest": image.VrtestName,
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mkimage --binary FILE --name NAME:TAG --out FILE.tar [--layout vrouter|pause|vrtest] [--label KEY=VALUE]...")
		fs.PrintDefaults()
	}
	binary := fs.String("binary", "", "the static `binary` to pack (CGO_ENABLED=0)")
	name := fs.String("name", "", "the image `reference`, e.g. vrouter:v0.2.0 (docker.io/library/vrouter:v0.2.0); pause and vrtest default to their test names")
	out := fs.String("out", "", "the archive to write")
	layout := fs.String("layout", "vrouter", "the image's `layout`: vrouter (/usr/local/bin/vrouter), pause (/pause) or vrtest (/vrtest)")
	var labels labelFlag
	fs.Var(&labels, "label", "a `KEY=VALUE` label to add to the image config (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "mkimage: "+format+"\n", args...)
		fs.Usage()
		return 2
	}
	newImage, ok := layouts[*layout]
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected arguments %q", fs.Args())
	case !ok:
		return usageErr("--layout %q: want vrouter, pause or vrtest", *layout)
	case *binary == "":
		return usageErr("--binary is required")
	case *out == "":
		return usageErr("--out is required")
	case *name == "" && defaultNames[*layout] == "":
		return usageErr("--name is required for --layout %s", *layout)
	}
	if *name == "" {
		*name = defaultNames[*layout]
	}
	created, err := sourceDateEpoch(getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 2
	}
	arch, err := image.StaticBinary(*binary)
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	img := newImage(*name, *binary)
	img.Created = created
	img.Architecture = arch
	for k, v := range labels {
		if img.Config.Labels == nil {
			img.Config.Labels = map[string]string{}
		}
		img.Config.Labels[k] = v
	}
	res, err := image.WriteFile(*out, img)
	if err != nil {
		fmt.Fprintf(stderr, "mkimage: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "mkimage: wrote %s: %s, linux/%s, image ID %s\n", res.Path, res.Reference, arch, res.ConfigDigest)
	fmt.Fprintln(stdout, res.ManifestDigest)
	return 0
}

// sourceDateEpoch parses $SOURCE_DATE_EPOCH (reproducible-builds.org):
// seconds since the Unix epoch. Empty means the epoch itself.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a non-negative number of seconds since the Unix epoch", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// labelFlag collects repeated --label KEY=VALUE flags.
type labelFlag map[string]string

func (l *labelFlag) String() string { return fmt.Sprint(map[string]string(*l)) }

func (l *labelFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	if *l == nil {
		*l = labelFlag{}
	}
	(*l)[k] = v
	return nil
}
