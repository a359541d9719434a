package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
)

// The flow file is named by the admin socket's rule: per TUN and network
// namespace, in --state-dir.
func TestFlowFilePath(t *testing.T) {
	got := flowFilePath("/run/vrouter", "vr0")
	if !regexp.MustCompile(`^/run/vrouter/vr0(\.netns-[0-9]+)?\.flows$`).MatchString(got) {
		t.Errorf("flowFilePath(/run/vrouter, vr0) = %q, want /run/vrouter/vr0.netns-<inode>.flows", got)
	}
	sock := admin.DefaultSocket("vr0")
	if strings.TrimSuffix(got, ".flows") != strings.TrimSuffix(sock, ".sock") {
		t.Errorf("flowFilePath = %q, admin socket %q: want the same name but the suffix", got, sock)
	}
	if got := flowFilePath("/tmp/x", "vr1"); !strings.HasPrefix(got, "/tmp/x/vr1.") {
		t.Errorf("flowFilePath(/tmp/x, vr1) = %q, want it in /tmp/x and named after vr1", got)
	}
}
