package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
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

func TestServicesFromConfig(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := lbServices(cfg)
	if err != nil {
		t.Fatalf("lbServices: %v", err)
	}
	table, err := lb.NewTable(nil, lb.Options{NodeName: cfg.Node.Name})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Set(svcs); err != nil {
		t.Fatalf("Set(%d services): %v", len(svcs), err)
	}
	for _, tc := range []struct {
		key      lb.ServiceKey
		backends int
	}{
		{lb.ServiceKey{VIP: mustAddr("10.103.92.81"), Port: 80, Proto: lb.TCP}, 3},
		{lb.ServiceKey{VIP: mustAddr("10.96.0.10"), Port: 53, Proto: lb.UDP}, 2},
		{lb.ServiceKey{VIP: mustAddr("10.96.0.10"), Port: 53, Proto: lb.TCP}, 2},
		{lb.ServiceKey{VIP: mustAddr("10.96.0.10"), Port: 9153, Proto: lb.TCP}, 2},
	} {
		e := table.Lookup(tc.key)
		if e == nil {
			t.Errorf("Lookup(%s) = nil, want an entry", tc.key)
			continue
		}
		if n := len(e.Backends()); n != tc.backends {
			t.Errorf("Lookup(%s) has %d backends, want %d", tc.key, n, tc.backends)
		}
	}

	cfg.Services[0].Mode = configs.ModeProxy
	if _, err := lbServices(cfg); err == nil || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("lbServices with mode proxy = %v, want an error saying proxy mode is not available", err)
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
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
