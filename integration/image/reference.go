package image

import (
	"fmt"
	"regexp"
	"strings"
)

// reference is an image name with a tag, normalized as Docker and the
// kubelet normalize it: "vrouter:v0.2.0" is docker.io/library/vrouter:v0.2.0.
type reference struct {
	domain string // "docker.io", "registry.k8s.io", "localhost:5000"
	path   string // "library/vrouter", "pause"
	tag    string // "v0.2.0"
}

// The grammar of github.com/distribution/reference, without digests.
var (
	pathComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	domainRE        = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	tagRE           = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
)

const (
	dockerDomain  = "docker.io"
	defaultTag    = "latest"
	maxNameLength = 255
)

// parseReference parses and normalizes an image name: a missing domain is
// docker.io, a one-component name on docker.io is under library/, and a
// missing tag is "latest".
func parseReference(s string) (reference, error) {
	bad := func(format string, args ...any) (reference, error) {
		return reference{}, fmt.Errorf("image name %q: %s", s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return bad("empty; want a name like vrouter:v0.2.0 or registry.example.com/vrouter:v0.2.0")
	}
	if strings.Contains(s, "@") {
		return bad("digest references are not supported; give a tag (name:tag)")
	}
	name, tag := s, defaultTag
	if i := strings.LastIndexByte(s, ':'); i > strings.LastIndexByte(s, '/') {
		name, tag = s[:i], s[i+1:]
		if !tagRE.MatchString(tag) {
			return bad("tag %q: want up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", tag)
		}
	}
	r := reference{domain: dockerDomain, tag: tag}
	path := name
	if first, rest, ok := strings.Cut(name, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if !domainRE.MatchString(first) {
			return bad("registry %q: want a host name with an optional :port", first)
		}
		r.domain, path = first, rest
	}
	if r.domain == "index.docker.io" {
		r.domain = dockerDomain
	}
	for _, c := range strings.Split(path, "/") {
		if !pathComponentRE.MatchString(c) {
			if strings.ToLower(c) != c {
				return bad("repository %q must be lowercase", path)
			}
			return bad("repository component %q: want lowercase letters and digits, separated by '.', '_', '__' or '-'", c)
		}
	}
	if r.domain == dockerDomain && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	r.path = path
	if n := len(r.domain) + 1 + len(r.path); n > maxNameLength {
		return bad("name is %d characters, want at most %d", n, maxNameLength)
	}
	return r, nil
}

// String returns the full reference: docker.io/library/vrouter:v0.2.0.
func (r reference) String() string {
	return r.domain + "/" + r.path + ":" + r.tag
}

// familiar returns the short form Docker prints and writes in RepoTags:
// vrouter:v0.2.0, registry.k8s.io/pause:3.10.
func (r reference) familiar() string {
	if r.domain != dockerDomain {
		return r.String()
	}
	path := r.path
	if rest, ok := strings.CutPrefix(path, "library/"); ok && !strings.Contains(rest, "/") {
		path = rest
	}
	return path + ":" + r.tag
}
