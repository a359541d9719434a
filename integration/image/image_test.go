package image

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// makeImage returns vrouter's layout with a fake binary, as v0.2.0 for
// amd64, then applies each mutation.
func makeImage(t *testing.T, mutate ...func(*Image)) Image {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "vrouter")
	if err := os.WriteFile(bin, []byte("not really vrouter\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := Vrouter("vrouter:v0.2.0", bin)
	img.Architecture = "amd64"
	for _, m := range mutate {
		m(&img)
	}
	return img
}

// mustWrite writes img to memory and fails the test on error.
func mustWrite(t *testing.T, img Image) ([]byte, Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Write(&buf, img)
	if err != nil {
		t.Fatalf("Write(%s): %v", img.Name, err)
	}
	return buf.Bytes(), res
}

func TestWrite(t *testing.T) {
	data, res := mustWrite(t, makeImage(t))
	c := checkArchive(t, data)

	if res.Reference != "docker.io/library/vrouter:v0.2.0" {
		t.Errorf("Result.Reference = %q, want docker.io/library/vrouter:v0.2.0", res.Reference)
	}
	if res.ManifestDigest != c.index.Manifests[0].Digest || res.ConfigDigest != c.manifest.Config.Digest {
		t.Errorf("Result digests manifest %s, config %s; the archive has %s, %s", res.ManifestDigest, res.ConfigDigest, c.index.Manifests[0].Digest, c.manifest.Config.Digest)
	}
	ann := c.index.Manifests[0].Annotations
	if ann[annotationImageName] != "docker.io/library/vrouter:v0.2.0" || ann[annotationRefName] != "v0.2.0" {
		t.Errorf("index.json annotations = %v, want %s=docker.io/library/vrouter:v0.2.0 and %s=v0.2.0", ann, annotationImageName, annotationRefName)
	}
	if !slices.Equal(c.docker.RepoTags, []string{"vrouter:v0.2.0"}) {
		t.Errorf("manifest.json RepoTags = %q, want [vrouter:v0.2.0]", c.docker.RepoTags)
	}
	cfg := c.config
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Created != "1970-01-01T00:00:00Z" {
		t.Errorf("config platform %s/%s created %s, want linux/amd64 at the epoch", cfg.OS, cfg.Architecture, cfg.Created)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/vrouter"}) || len(cfg.Config.Cmd) != 0 ||
		!slices.Equal(cfg.Config.Env, []string{DefaultPath}) || cfg.Config.WorkingDir != "/" {
		t.Errorf("config = %+v, want entrypoint [/usr/local/bin/vrouter], no cmd, env [%s], working dir /", cfg.Config, DefaultPath)
	}

	// The layer: sorted, parents first, owned by root, dated the epoch,
	// with the modes asked for.
	type entry struct {
		name string
		typ  byte
		mode int64
		data string
	}
	want := []entry{
		{"etc/", tar.TypeDir, 0o755, ""},
		{"etc/nsswitch.conf", tar.TypeReg, 0o644, "hosts: files dns\n"},
		{"run/", tar.TypeDir, 0o755, ""},
		{"run/vrouter/", tar.TypeDir, 0o755, ""},
		{"tmp/", tar.TypeDir, 0o1777, ""},
		{"usr/", tar.TypeDir, 0o755, ""},
		{"usr/local/", tar.TypeDir, 0o755, ""},
		{"usr/local/bin/", tar.TypeDir, 0o755, ""},
		{"usr/local/bin/vrouter", tar.TypeReg, 0o755, "not really vrouter\n"},
	}
	var got []entry
	for _, name := range c.layer.names {
		f := c.layer.files[name]
		got = append(got, entry{name, f.hdr.Typeflag, f.hdr.Mode, string(f.data)})
		if f.hdr.Uid != 0 || f.hdr.Gid != 0 || !f.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("layer entry %s: uid %d gid %d mtime %v, want 0, 0, the epoch", name, f.hdr.Uid, f.hdr.Gid, f.hdr.ModTime)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n got %+v\nwant %+v", got, want)
	}
}

func TestWriteReproducible(t *testing.T) {
	img := makeImage(t)
	first, res := mustWrite(t, img)
	again, res2 := mustWrite(t, img)
	if !bytes.Equal(first, again) || res != res2 {
		t.Fatalf("Write twice: %s then %s, %d then %d bytes; want the same bytes", res.ManifestDigest, res2.ManifestDigest, len(first), len(again))
	}

	// The order of the files does not matter.
	shuffled := img
	shuffled.Files = slices.Clone(img.Files)
	slices.Reverse(shuffled.Files)
	if data, r := mustWrite(t, shuffled); !bytes.Equal(data, first) {
		t.Errorf("files in reverse order: %s, want %s", r.ManifestDigest, res.ManifestDigest)
	}

	// Whatever changes the image changes the digest.
	for name, mutate := range map[string]func(*Image){
		"Created":   func(img *Image) { img.Created = time.Unix(1700000000, 0) },
		"Name":      func(img *Image) { img.Name = "vrouter:v0.2.1" },
		"label":     func(img *Image) { img.Config.Labels["org.opencontainers.image.version"] = "v0.2.0" },
		"file mode": func(img *Image) { img.Files = append(img.Files, File{Path: "/data", Mode: fs.ModeDir | 0o700}) },
		"binary": func(img *Image) {
			img.Files[2] = File{Path: "/usr/local/bin/vrouter", Mode: 0o755, Data: []byte("other")}
		},
		"Arch":        func(img *Image) { img.Architecture = "arm64" },
		"Cmd":         func(img *Image) { img.Config.Cmd = []string{"run"} },
		"sub-second":  func(img *Image) { img.Created = time.Unix(0, 5e8) }, // dropped: the same
		"zero Create": func(img *Image) { img.Created = time.Unix(0, 0) },   // the epoch: the same
	} {
		data, r := mustWrite(t, makeImage(t, mutate))
		same := name == "sub-second" || name == "zero Create"
		if bytes.Equal(data, first) != same {
			t.Errorf("%s changed: digest %s, before %s; want same = %v", name, r.ManifestDigest, res.ManifestDigest, same)
		}
	}
}

func TestWriteFile(t *testing.T) {
	img := makeImage(t)
	want, _ := mustWrite(t, img)
	dir := t.TempDir()
	out := filepath.Join(dir, "vrouter-image.tar")
	if err := os.WriteFile(out, []byte("an older archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := WriteFile(out, img)
	if err != nil {
		t.Fatalf("WriteFile(%s): %v", out, err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != out || !bytes.Equal(got, want) {
		t.Errorf("WriteFile(%s): path %q, %d bytes; want the %d bytes Write gives", out, res.Path, len(got), len(want))
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("stat %s = %v, %v; want mode 0644", out, fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%s holds %d files after WriteFile, want only the archive", dir, len(entries))
	}

	// A failed write leaves the old file and no temporary one.
	bad := makeImage(t, func(img *Image) { img.Files[0].Path = "relative" })
	if _, err := WriteFile(out, bad); err == nil {
		t.Fatalf("WriteFile with a relative path succeeded")
	}
	if got2, _ := os.ReadFile(out); !bytes.Equal(got2, want) {
		t.Errorf("a failed WriteFile changed %s", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%s holds %d files after a failed WriteFile, want only the archive", dir, len(entries))
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		mutate  func(*Image)
		errPart string
	}{
		{"relative path", func(img *Image) { img.Files[0].Path = "etc/x" }, `path "etc/x": want an absolute, clean path`},
		{"unclean path", func(img *Image) { img.Files[0].Path = "/etc//x" }, `path "/etc//x"`},
		{"root", func(img *Image) { img.Files[0].Path = "/" }, `path "/"`},
		{"twice", func(img *Image) { img.Files = append(img.Files, img.Files[0]) }, "path /etc/nsswitch.conf is listed twice"},
		{"file as parent", func(img *Image) {
			img.Files = append(img.Files, File{Path: "/etc/nsswitch.conf/x", Data: []byte{}})
		}, "its parent /etc/nsswitch.conf is a file"},
		{"symlink mode", func(img *Image) { img.Files[0].Mode |= fs.ModeSymlink }, "want permission bits"},
		{"dir with data", func(img *Image) { img.Files = append(img.Files, File{Path: "/d", Mode: fs.ModeDir, Data: []byte("x")}) }, "a directory has no Data or Source"},
		{"data and source", func(img *Image) { img.Files[0].Source = "/etc/hostname" }, "both Data and Source set"},
		{"missing source", func(img *Image) { img.Files[2].Source = filepath.Join(dir, "nope") }, "no such file or directory"},
		{"directory source", func(img *Image) { img.Files[2].Source = dir }, "want a regular file"},
		{"bad name", func(img *Image) { img.Name = "Vrouter:v1" }, "must be lowercase"},
	} {
		img := makeImage(t, tc.mutate)
		if _, err := Write(&bytes.Buffer{}, img); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("%s: Write = %v, want an error with %q", tc.name, err, tc.errPart)
		}
	}
}

func TestStaticBinary(t *testing.T) {
	text := filepath.Join(t.TempDir(), "script")
	os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct{ path, errPart string }{
		{text, "want a Linux executable"},
		{filepath.Join(t.TempDir(), "nope"), "no such file"},
	} {
		if _, err := StaticBinary(tc.path); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("StaticBinary(%s) = %v, want an error with %q", tc.path, err, tc.errPart)
		}
	}
	// Debian's /bin/sh links the C library dynamically.
	if _, err := os.Stat("/bin/sh"); err == nil {
		if _, err := StaticBinary("/bin/sh"); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("StaticBinary(/bin/sh) = %v, want the dynamically linked error", err)
		}
	}
}
