package main

import (
	"bytes"
	"os"
	"path/filepath"
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
