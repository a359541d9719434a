package image

import (
	"strings"
	"testing"
)

func TestParseReference(t *testing.T) {
	for _, tc := range []struct{ in, full, familiar string }{
		{"vrouter:v0.2.0", "docker.io/library/vrouter:v0.2.0", "vrouter:v0.2.0"},
		{"vrouter", "docker.io/library/vrouter:latest", "vrouter:latest"},
		{"docker.io/library/vrouter:v0.2.0", "docker.io/library/vrouter:v0.2.0", "vrouter:v0.2.0"},
		{"index.docker.io/vrouter/vrouter:1", "docker.io/vrouter/vrouter:1", "vrouter/vrouter:1"},
		{"registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"},
		{"vrouter.test/vrtest:1", "vrouter.test/vrtest:1", "vrouter.test/vrtest:1"},
		{"localhost:5000/team/vrouter:dev", "localhost:5000/team/vrouter:dev", "localhost:5000/team/vrouter:dev"},
		{"localhost/vrouter:x", "localhost/vrouter:x", "localhost/vrouter:x"},
		{"docker.io/team/library/x:1", "docker.io/team/library/x:1", "team/library/x:1"},
		{"a__b/c-d.e:TAG_1.0-rc", "docker.io/a__b/c-d.e:TAG_1.0-rc", "a__b/c-d.e:TAG_1.0-rc"},
	} {
		r, err := parseReference(tc.in)
		if err != nil || r.String() != tc.full || r.familiar() != tc.familiar {
			t.Errorf("parseReference(%q) = %q (familiar %q), %v; want %q (%q)", tc.in, r, r.familiar(), err, tc.full, tc.familiar)
		}
	}
}

func TestParseReferenceErrors(t *testing.T) {
	for _, tc := range []struct{ in, errPart string }{
		{"", "empty"},
		{"vrouter@sha256:0123", "digest references are not supported"},
		{"Vrouter:v1", "must be lowercase"},
		{"vrouter:-v1", `tag "-v1"`},
		{"vrouter:", `tag ""`},
		{"vrouter/:v1", `repository component ""`},
		{"vr--/x", `repository component "vr--"`},
		{"bad_host.example/x:1", `registry "bad_host.example"`},
		{strings.Repeat("a", 256), "at most 255"},
	} {
		if r, err := parseReference(tc.in); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("parseReference(%q) = %q, %v; want an error with %q", tc.in, r, err, tc.errPart)
		}
	}
}
