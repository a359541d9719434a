package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestBuildTestImages builds the test images twice, from the same sources
// into two directories, and wants the same bytes: what `make image` twice
// on one commit must give too.
func TestBuildTestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two programs twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var runs [2][]Result
	for i := range runs {
		dir := t.TempDir()
		res, err := BuildTestImages(ctx, dir, BuildOptions{})
		if err != nil {
			t.Fatalf("BuildTestImages(%s): %v", dir, err)
		}
		runs[i] = res
	}
	first, second := runs[0], runs[1]
	if len(first) != 2 || first[0].Reference != "registry.k8s.io/pause:3.10" || first[1].Reference != "vrouter.test/vrtest:1" {
		t.Fatalf("BuildTestImages = %+v, want pause and vrtest", first)
	}
	for i := range first {
		a, errA := os.ReadFile(first[i].Path)
		b, errB := os.ReadFile(second[i].Path)
		if errA != nil || errB != nil {
			t.Fatalf("read archives: %v, %v", errA, errB)
		}
		if filepath.Base(first[i].Path) != []string{"pause.tar", "vrtest.tar"}[i] {
			t.Errorf("BuildTestImages wrote %s", first[i].Path)
		}
		if !bytes.Equal(a, b) || first[i].ManifestDigest != second[i].ManifestDigest {
			t.Errorf("%s built twice: %s then %s; want the same bytes", first[i].Reference, first[i].ManifestDigest, second[i].ManifestDigest)
		}
		c := checkArchive(t, a)
		entry := []string{"/pause", "/vrtest"}[i]
		if !slices.Equal(c.config.Config.Entrypoint, []string{entry}) {
			t.Errorf("%s entrypoint %q, want [%s]", first[i].Reference, c.config.Config.Entrypoint, entry)
		}
		bin := c.layer.files[entry[1:]]
		if bin == nil || bin.hdr.Mode != 0o755 || !bytes.HasPrefix(bin.data, []byte("\x7fELF")) {
			t.Errorf("%s: %s is not a 0755 ELF executable in the layer", first[i].Reference, entry)
		}
		tmp := c.layer.files["tmp/"]
		if tmp == nil || tmp.hdr.Mode != 0o1777 {
			t.Errorf("%s: /tmp is not a 1777 directory (vrtest unready writes there)", first[i].Reference)
		}
	}
}
