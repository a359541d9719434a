package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = mainWithArgs(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
		inStdout string
	}{
		{nil, 2, "Commands:", ""},
		{[]string{"bogus"}, 2, `unknown command "bogus"`, ""},
		{[]string{"version"}, 0, "", "vrouter "},
		{[]string{"run"}, 2, "--config is required", ""},
		{[]string{"run", "--config", "x.yaml", "extra"}, 2, "unexpected arguments", ""},
		{[]string{"run", "--config", "x.yaml", "--log-level", "loud"}, 2, `--log-level "loud"`, ""},
		{[]string{"run", "--config", "/nonexistent/node.yaml"}, 1, "/nonexistent/node.yaml", ""},
		{[]string{"validate"}, 2, "no config file given", ""},
		{[]string{"run", "--in-cluster", "--sidecar", "--cni-conf-dir=/etc/cni/net.d"}, 2, "--cni-conf-dir does not apply with --sidecar", ""},
		{[]string{"run", "--config", "x.yaml", "--masquerade"}, 2, "--masquerade applies with --kubeconfig or --in-cluster", ""},
		{[]string{"run", "--in-cluster", "--sidecar", "--masquerade"}, 2, "not with --sidecar", ""},
		// A chosen CNI directory that cannot be written fails the start,
		// before anything is brought up.
		{[]string{"run", "--config", "../../configs/examples/hostgw-master.yaml", "--cni-conf-dir", "main_test.go/net.d"}, 1, "--cni-conf-dir main_test.go/net.d", ""},
	} {
		code, stdout, stderr := run(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.inStderr) || !strings.Contains(stdout, tc.inStdout) {
			t.Errorf("vrouter %q = exit %d, stdout %q, stderr %q; want exit %d with %q in stderr and %q in stdout",
				tc.args, code, stdout, stderr, tc.code, tc.inStderr, tc.inStdout)
		}
	}
}

// TestHelp: asked for, usage goes to stdout with exit 0, for the top level
// and every command; a mistake's usage goes to stderr with exit 2.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		if code, stdout, stderr := run(args...); code != 0 || !strings.Contains(stdout, "Commands:") || stderr != "" {
			t.Errorf("vrouter %q = exit %d, stdout %q, stderr %q; want exit 0 with the command list on stdout", args, code, stdout, stderr)
		}
	}
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			code, stdout, stderr := run(args...)
			if code != 0 || !strings.Contains(stdout, "Usage: vrouter "+c.name) || stderr != "" {
				t.Errorf("vrouter %q = exit %d, stdout %q, stderr %q; want exit 0 with its usage on stdout", args, code, stdout, stderr)
			}
		}
	}
	code, stdout, stderr := run("run", "--no-such-flag")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: vrouter run") {
		t.Errorf("vrouter run --no-such-flag = exit %d, stdout %q, stderr %q; want exit 2 with the usage on stderr", code, stdout, stderr)
	}
	// In Kubernetes mode --config is an optional tuning file.
	_, stdout, _ = run("run", "-h")
	if !strings.Contains(stdout, "required unless --kubeconfig or --in-cluster") || strings.Contains(stdout, "(required)") {
		t.Errorf("vrouter run -h = %q, want --config \"required unless --kubeconfig or --in-cluster\", never plain \"(required)\"", stdout)
	}
}

// TestVersion: --version and version print the version and the commit,
// as stamped by make build's -ldflags, or say the commit is unknown.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, stdout, stderr := run(args...)
		if code != 0 || !strings.HasPrefix(stdout, "vrouter ") || !strings.Contains(stdout, "commit: ") || !strings.Contains(stdout, runtime.Version()) || stderr != "" {
			t.Errorf("vrouter %q = exit %d, stdout %q, stderr %q; want exit 0 with the version, commit and Go release", args, code, stdout, stderr)
		}
	}
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v9.8.7", "0123456789ab"
	_, stdout, _ := run("--version")
	if !strings.HasPrefix(stdout, "vrouter v9.8.7\n  commit: 0123456789ab") {
		t.Errorf("vrouter --version built with -X main.version=v9.8.7 -X main.commit=0123456789ab = %q, want both", stdout)
	}
	if got := versionString(); !strings.HasPrefix(got, "vrouter v9.8.7 commit 0123456789ab ") {
		t.Errorf("versionString() = %q, want the version and commit", got)
	}
	// Without stamping (go build with -buildvcs=false, as in this test
	// binary), the commit is unknown and the output says why.
	if _, ok := debug.ReadBuildInfo(); ok && readBuildInfo().Commit == "" {
		version, commit = "", ""
		if _, stdout, _ := run("version"); !strings.Contains(stdout, "commit: unknown (this build carries no VCS information") {
			t.Errorf("vrouter version without VCS information = %q, want the commit unknown and why", stdout)
		}
	}
}

func TestValidateExamples(t *testing.T) {
	files, err := filepath.Glob("../../configs/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	code, stdout, stderr := run(append([]string{"validate"}, files...)...)
	if code != 0 {
		t.Fatalf("validate examples = exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "hostgw-master.yaml: ok — node hostgw-master, pods [10.244.0.0/24], 1 peer(s), 2 service(s), tunnel MTU 1472") {
		t.Errorf("validate output = %q, want the master's summary", stdout)
	}
}

func TestValidateNamesTheBrokenField(t *testing.T) {
	b, err := os.ReadFile("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(b), "podCIDRs: [10.244.1.0/24]", "podCIDRs: [10.244.1.0/33]", 1)
	path := filepath.Join(t.TempDir(), "broken.yaml")
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ := run("validate", path)
	if code != 1 || !strings.Contains(stdout, "peers[0].podCIDRs[0]") || !strings.Contains(stdout, "10.244.1.0/33") {
		t.Errorf("validate broken file = exit %d, %q; want exit 1 naming peers[0].podCIDRs[0] and the value", code, stdout)
	}
}

func TestRestartNeeded(t *testing.T) {
	a, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := configs.Load("../../configs/examples/hostgw-master.yaml")
	if got := restartNeeded(a, b); len(got) != 0 {
		t.Errorf("restartNeeded(same) = %v, want none", got)
	}
	b.Overlay.Port = 9999
	b.TUN.Name = "vr1"
	if got := restartNeeded(a, b); strings.Join(got, ",") != "tun,overlay" {
		t.Errorf("restartNeeded = %v, want [tun overlay]", got)
	}
	b, _ = configs.Load("../../configs/examples/hostgw-master.yaml")
	b.LB.Proxy.DrainTimeout = time.Minute
	b.LB.NAT.MaxTCP = 10
	if got := restartNeeded(a, b); strings.Join(got, ",") != "lb.proxy,lb.nat" {
		t.Errorf("restartNeeded(lb tuning changed) = %v, want [lb.proxy lb.nat]", got)
	}
}
