package image

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// allowedModes are the bits a File's Mode may carry.
const allowedModes = fs.ModePerm | fs.ModeDir | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// buildLayer returns the uncompressed tar of files and their parent
// directories, sorted by path, every entry owned by 0:0 and dated created.
func buildLayer(files []File, created time.Time) ([]byte, error) {
	byPath := make(map[string]tarEntry, len(files))
	for i, f := range files {
		e, err := layerEntry(f)
		if err != nil {
			return nil, fmt.Errorf("file %d: %w", i, err)
		}
		if _, dup := byPath[f.Path]; dup {
			return nil, fmt.Errorf("file %d: path %s is listed twice", i, f.Path)
		}
		byPath[f.Path] = e
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			parent, ok := byPath[dir]
			if !ok {
				byPath[dir] = tarEntry{name: dir[1:] + "/", mode: fs.ModeDir | 0o755}
				continue
			}
			if !parent.mode.IsDir() {
				return nil, fmt.Errorf("path %s: its parent %s is a file, want a directory", p, dir)
			}
		}
	}
	entries := make([]tarEntry, 0, len(byPath))
	for _, e := range byPath {
		entries = append(entries, e)
	}
	var buf bytes.Buffer
	if err := writeTar(&buf, entries, created); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// layerEntry checks f and returns its tar entry, with a file's content
// read from Source if set.
func layerEntry(f File) (tarEntry, error) {
	if !strings.HasPrefix(f.Path, "/") || path.Clean(f.Path) != f.Path || f.Path == "/" || strings.ContainsRune(f.Path, 0) {
		return tarEntry{}, fmt.Errorf("path %q: want an absolute, clean path below / such as /usr/local/bin/vrouter", f.Path)
	}
	if extra := f.Mode &^ allowedModes; extra != 0 {
		return tarEntry{}, fmt.Errorf("path %s: mode %v: want permission bits, with fs.ModeDir for a directory and setuid, setgid or sticky bits only", f.Path, f.Mode)
	}
	e := tarEntry{name: f.Path[1:], mode: f.Mode}
	if f.Mode.IsDir() {
		if f.Data != nil || f.Source != "" {
			return tarEntry{}, fmt.Errorf("path %s: a directory has no Data or Source", f.Path)
		}
		if f.Mode.Perm() == 0 {
			e.mode |= 0o755
		}
		e.name += "/"
		return e, nil
	}
	if f.Mode.Perm() == 0 {
		e.mode |= 0o644
	}
	switch {
	case f.Source != "" && f.Data != nil:
		return tarEntry{}, fmt.Errorf("path %s: both Data and Source set, want one", f.Path)
	case f.Source != "":
		fi, err := os.Stat(f.Source)
		if err != nil {
			return tarEntry{}, fmt.Errorf("path %s: %w", f.Path, err)
		}
		if !fi.Mode().IsRegular() {
			return tarEntry{}, fmt.Errorf("path %s: source %s is a %v, want a regular file", f.Path, f.Source, fi.Mode().Type())
		}
		if e.data, err = os.ReadFile(f.Source); err != nil {
			return tarEntry{}, fmt.Errorf("path %s: %w", f.Path, err)
		}
	default:
		e.data = f.Data
	}
	return e, nil
}
