package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// Image is what Write packs: a name, the files of its one layer, and how a
// container of it runs.
type Image struct {
	// Name is the image's reference with a tag, as a Pod spec or
	// `docker run` names it: "vrouter:v0.2.0" (that is,
	// docker.io/library/vrouter:v0.2.0) or "registry.k8s.io/pause:3.10".
	// Digest references are not accepted.
	Name string
	// Files are the image's file system. Parent directories not listed
	// are added with mode 0755. Order does not matter.
	Files []File
	// Config is how a container of the image runs.
	Config Config
	// Created is the time recorded in the image config and on every file.
	// Zero means the Unix epoch; sub-second parts are dropped.
	Created time.Time
	// OS and Architecture are the image's platform, in GOOS and GOARCH
	// terms. Empty means linux and the architecture this program runs on
	// (runtime.GOARCH); StaticBinary reads a binary's.
	OS, Architecture string
}

// File is one file or directory in an image, owned by uid and gid 0.
type File struct {
	// Path is the absolute, clean path in the image: "/usr/local/bin/vrouter".
	Path string
	// Mode is the permission bits, plus fs.ModeDir for a directory and
	// fs.ModeSetuid, fs.ModeSetgid or fs.ModeSticky. Zero permission bits
	// mean 0644 for a file and 0755 for a directory.
	Mode fs.FileMode
	// Data is a file's content, unless Source is set.
	Data []byte
	// Source is a file on this machine whose content the image file gets,
	// read by Write; its own mode, owner and times do not matter.
	Source string
}

// Config is the part of the OCI image config that says how a container
// runs (the image spec's "config" object).
type Config struct {
	Entrypoint []string
	Cmd        []string
	// Env entries are KEY=value.
	Env        []string
	WorkingDir string
	// User is a uid[:gid] (there is no /etc/passwd to look names up in).
	User   string
	Labels map[string]string
}

// Result describes an archive Write produced.
type Result struct {
	// Reference is the image's full name, as containerd lists it:
	// docker.io/library/vrouter:v0.2.0.
	Reference string
	// ManifestDigest is the digest of the image manifest, "sha256:…": what
	// `ctr images ls` shows, and what names this exact image in a
	// registry (name@digest).
	ManifestDigest string
	// ConfigDigest is the digest of the image config: the image ID that
	// `docker images`, `crictl images` and a Pod's status show.
	ConfigDigest string
	// Path is the archive's file, set by WriteFile.
	Path string
}

// Media types and annotations of the OCI image spec and containerd.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationImageName = "io.containerd.image.name"
)

// The JSON documents of the archive. Fields are in a fixed order and maps
// are encoded with sorted keys, so the bytes depend only on the values.
type (
	descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
		Platform    *platform         `json:"platform,omitempty"`
	}
	platform struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
	ociIndex struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}
	ociManifest struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	imageConfig struct {
		Created      string     `json:"created"`
		Architecture string     `json:"architecture"`
		OS           string     `json:"os"`
		Config       execConfig `json:"config"`
		RootFS       rootFS     `json:"rootfs"`
		History      []history  `json:"history"`
	}
	execConfig struct {
		User       string            `json:"User,omitempty"`
		Env        []string          `json:"Env,omitempty"`
		Entrypoint []string          `json:"Entrypoint,omitempty"`
		Cmd        []string          `json:"Cmd,omitempty"`
		WorkingDir string            `json:"WorkingDir,omitempty"`
		Labels     map[string]string `json:"Labels,omitempty"`
	}
	rootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	history struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	}
	ociLayout struct {
		Version string `json:"imageLayoutVersion"`
	}
	// dockerManifest is one entry of manifest.json, as docker save writes it.
	dockerManifest struct {
		Config   string   `json:"Config"`
		RepoTags []string `json:"RepoTags"`
		Layers   []string `json:"Layers"`
	}
)

// WriteFile writes img's archive to path, replacing it only once the whole
// archive is written.
func WriteFile(path string, img Image) (Result, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return Result{}, fmt.Errorf("write image %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after a successful rename, a no-op
	bw := bufio.NewWriterSize(f, 1<<20)
	res, err := Write(bw, img)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return Result{}, fmt.Errorf("write image %s: %w", path, err)
	}
	res.Path = path
	return res, nil
}

// Write writes img's archive to w.
func Write(w io.Writer, img Image) (Result, error) {
	ref, err := parseReference(img.Name)
	if err != nil {
		return Result{}, err
	}
	created := time.Unix(0, 0).UTC()
	if !img.Created.IsZero() {
		created = img.Created.Truncate(time.Second).UTC()
	}
	plat := platform{OS: img.OS, Architecture: img.Architecture}
	if plat.OS == "" {
		plat.OS = "linux"
	}
	if plat.Architecture == "" {
		plat.Architecture = runtime.GOARCH
	}

	layer, err := buildLayer(img.Files, created)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", img.Name, err)
	}
	layerDesc := blobDescriptor(mediaTypeLayer, layer)
	cfg := mustJSON(imageConfig{
		Created:      created.Format(time.RFC3339),
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Config: execConfig{
			User:       img.Config.User,
			Env:        img.Config.Env,
			Entrypoint: img.Config.Entrypoint,
			Cmd:        img.Config.Cmd,
			WorkingDir: img.Config.WorkingDir,
			Labels:     img.Config.Labels,
		},
		// The layer is not compressed: its digest is its diff_id.
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{layerDesc.Digest}},
		History: []history{{Created: created.Format(time.RFC3339), CreatedBy: "vrouter integration/image"}},
	})
	cfgDesc := blobDescriptor(mediaTypeConfig, cfg)
	manifest := mustJSON(ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        cfgDesc,
		Layers:        []descriptor{layerDesc},
	})
	manifestDesc := blobDescriptor(mediaTypeManifest, manifest)
	manifestDesc.Annotations = map[string]string{
		annotationImageName: ref.String(),
		annotationRefName:   ref.tag,
	}
	manifestDesc.Platform = &plat
	index := mustJSON(ociIndex{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests:     []descriptor{manifestDesc},
	})
	dockerJSON := mustJSON([]dockerManifest{{
		Config:   blobPath(cfgDesc.Digest),
		RepoTags: []string{ref.familiar()},
		Layers:   []string{blobPath(layerDesc.Digest)},
	}})

	blobs := map[string][]byte{
		blobPath(layerDesc.Digest):    layer,
		blobPath(cfgDesc.Digest):      cfg,
		blobPath(manifestDesc.Digest): manifest,
	}
	entries := []tarEntry{
		{name: "blobs/", mode: fs.ModeDir | 0o755},
		{name: "blobs/sha256/", mode: fs.ModeDir | 0o755},
		{name: "index.json", mode: 0o644, data: index},
		{name: "manifest.json", mode: 0o644, data: dockerJSON},
		{name: "oci-layout", mode: 0o644, data: mustJSON(ociLayout{Version: "1.0.0"})},
	}
	for name, data := range blobs {
		entries = append(entries, tarEntry{name: name, mode: 0o644, data: data})
	}
	if err := writeTar(w, entries, created); err != nil {
		return Result{}, fmt.Errorf("write image %s: %w", img.Name, err)
	}
	return Result{
		Reference:      ref.String(),
		ManifestDigest: manifestDesc.Digest,
		ConfigDigest:   cfgDesc.Digest,
	}, nil
}

// tarEntry is one file or directory ("name/") of a tar archive.
type tarEntry struct {
	name string
	mode fs.FileMode
	data []byte
}

// writeTar writes entries sorted by name, owned by 0:0, all dated created.
func writeTar(w io.Writer, entries []tarEntry, created time.Time) error {
	slices.SortFunc(entries, func(a, b tarEntry) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    tarMode(e.mode),
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if e.mode.IsDir() {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	return tw.Close()
}

// tarMode is the tar header mode of a fs.FileMode: permission bits plus
// the setuid, setgid and sticky bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func blobDescriptor(mediaType string, data []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digestOf(data), Size: int64(len(data))}
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blobPath is where the OCI layout keeps a blob: blobs/sha256/<hex>.
func blobPath(digest string) string {
	return "blobs/sha256/" + digest[len("sha256:"):]
}

// mustJSON encodes v, which holds only strings, numbers, slices, structs
// and string maps and so always encodes.
func mustJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("image: encode %T: %v", v, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
