package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// archive is an image archive read back: its files by name, in order.
type archive struct {
	names []string
	files map[string]*tarFile
}

type tarFile struct {
	hdr  *tar.Header
	data []byte
}

// readTar reads every entry of a tar archive.
func readTar(t *testing.T, data []byte) archive {
	t.Helper()
	a := archive{files: map[string]*tarFile{}}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return a
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar entry %s: %v", hdr.Name, err)
		}
		if _, dup := a.files[hdr.Name]; dup {
			t.Fatalf("tar entry %s appears twice", hdr.Name)
		}
		a.names = append(a.names, hdr.Name)
		a.files[hdr.Name] = &tarFile{hdr: hdr, data: b}
	}
}

// checked is an image archive whose links have been verified.
type checked struct {
	index    ociIndex
	manifest ociManifest
	config   imageConfig
	docker   dockerManifest
	layer    archive
}

// checkArchive walks an image archive as a loader does — oci-layout,
// index.json → manifest → config and layer, and manifest.json — and fails
// the test at the first digest, size or path that does not match.
func checkArchive(t *testing.T, data []byte) checked {
	t.Helper()
	a := readTar(t, data)
	var c checked
	blob := func(d descriptor, what string) []byte {
		t.Helper()
		f := a.files[blobPath(d.Digest)]
		if f == nil {
			t.Fatalf("%s blob %s is not in the archive (entries %v)", what, d.Digest, a.names)
		}
		sum := sha256.Sum256(f.data)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != d.Digest {
			t.Fatalf("%s blob %s has digest %s", what, d.Digest, got)
		}
		if int64(len(f.data)) != d.Size {
			t.Fatalf("%s blob %s is %d bytes, its descriptor says %d", what, d.Digest, len(f.data), d.Size)
		}
		return f.data
	}
	decode := func(name string, data []byte, v any) {
		t.Helper()
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("decode %s: %v\n%s", name, err, data)
		}
	}
	for _, name := range []string{"oci-layout", "index.json", "manifest.json"} {
		if a.files[name] == nil {
			t.Fatalf("archive has no %s (entries %v)", name, a.names)
		}
	}
	if got := string(a.files["oci-layout"].data); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	decode("index.json", a.files["index.json"].data, &c.index)
	if c.index.SchemaVersion != 2 || c.index.MediaType != mediaTypeIndex || len(c.index.Manifests) != 1 {
		t.Fatalf("index.json = %+v, want schema 2, an OCI index of one manifest", c.index)
	}
	md := c.index.Manifests[0]
	if md.MediaType != mediaTypeManifest {
		t.Errorf("index.json manifest media type %q, want %q", md.MediaType, mediaTypeManifest)
	}
	decode("manifest", blob(md, "manifest"), &c.manifest)
	if c.manifest.SchemaVersion != 2 || c.manifest.MediaType != mediaTypeManifest || len(c.manifest.Layers) != 1 {
		t.Fatalf("manifest = %+v, want schema 2 with one layer", c.manifest)
	}
	if c.manifest.Config.MediaType != mediaTypeConfig || c.manifest.Layers[0].MediaType != mediaTypeLayer {
		t.Errorf("manifest media types: config %q, layer %q", c.manifest.Config.MediaType, c.manifest.Layers[0].MediaType)
	}
	decode("config", blob(c.manifest.Config, "config"), &c.config)
	layer := blob(c.manifest.Layers[0], "layer")
	if c.config.RootFS.Type != "layers" || len(c.config.RootFS.DiffIDs) != 1 || c.config.RootFS.DiffIDs[0] != digestOf(layer) {
		t.Errorf("config rootfs = %+v, want layers [%s] (the uncompressed layer)", c.config.RootFS, digestOf(layer))
	}
	if md.Platform == nil || md.Platform.OS != c.config.OS || md.Platform.Architecture != c.config.Architecture {
		t.Errorf("index.json platform %+v, config %s/%s: want the same", md.Platform, c.config.OS, c.config.Architecture)
	}
	c.layer = readTar(t, layer)

	var docker []dockerManifest
	decode("manifest.json", a.files["manifest.json"].data, &docker)
	if len(docker) != 1 {
		t.Fatalf("manifest.json has %d images, want 1", len(docker))
	}
	c.docker = docker[0]
	if c.docker.Config != blobPath(c.manifest.Config.Digest) || len(c.docker.Layers) != 1 || c.docker.Layers[0] != blobPath(c.manifest.Layers[0].Digest) {
		t.Errorf("manifest.json = %+v, want Config %s and Layers [%s]", c.docker, blobPath(c.manifest.Config.Digest), blobPath(c.manifest.Layers[0].Digest))
	}

	// Nothing else: three blobs, their two directories and the three
	// documents.
	if len(a.names) != 8 {
		t.Errorf("archive entries %v, want blobs/, blobs/sha256/, 3 blobs, index.json, manifest.json, oci-layout", a.names)
	}
	return c
}
