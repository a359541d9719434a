package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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

func TestServicesFromConfig(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table, err := lb.NewTable(nil, lb.Options{NodeName: cfg.Node.Name})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Set(cfg.Services); err != nil {
		t.Fatalf("Set(%d services): %v", len(cfg.Services), err)
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

	cfg.Services[0].Mode, cfg.Services[0].ProxyProtocol = lb.ModeProxy, true
	if err := table.Set(cfg.Services); err != nil {
		t.Fatalf("Set(my-service in mode proxy): %v", err)
	}
	my := table.Lookup(lb.ServiceKey{VIP: mustAddr("10.103.92.81"), Port: 80, Proto: lb.TCP})
	dns := table.Lookup(lb.ServiceKey{VIP: mustAddr("10.96.0.10"), Port: 53, Proto: lb.TCP})
	if my.Mode() != lb.ModeProxy || !my.ProxyProtocol() || dns.Mode() != lb.ModeNAT {
		t.Errorf("my-service mode %v, proxyProtocol %v, kube-dns mode %v; want proxy, true, nat", my.Mode(), my.ProxyProtocol(), dns.Mode())
	}
}

// TestProxyVIPs: the router's stack terminates the ClusterIPs of
// proxy-mode Services with a TCP port, and only those.
func TestProxyVIPs(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := routerConfig(cfg).ServiceAddresses; len(got) != 0 {
		t.Errorf("routerConfig(nat mode only).ServiceAddresses = %v, want none", got)
	}
	udpOnly := cfg.Services[1] // kube-dns, its dns port alone
	udpOnly.Name, udpOnly.ClusterIPs, udpOnly.Ports = "dns-udp", []netip.Addr{mustAddr("10.96.0.11")}, udpOnly.Ports[:1]
	cfg.Services = append(cfg.Services, udpOnly)
	for i := range cfg.Services {
		cfg.Services[i].Mode = lb.ModeProxy
	}
	want := []netip.Addr{mustAddr("10.103.92.81"), mustAddr("10.96.0.10")}
	if got := routerConfig(cfg).ServiceAddresses; !slices.Equal(got, want) {
		t.Errorf("routerConfig(every Service in proxy mode).ServiceAddresses = %v, want %v (not the UDP-only 10.96.0.11)", got, want)
	}
	if got := mergeAddrs(want[:1:1], []netip.Addr{mustAddr("10.96.0.10"), mustAddr("10.103.92.81")}); !slices.Equal(got, want) {
		t.Errorf("mergeAddrs = %v, want %v", got, want)
	}
}

// TestLBOptionsFromConfig: lb.nat and lb.proxy reach the data path.
func TestLBOptionsFromConfig(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := lb.NATOptions{MaxTCP: 262144, MaxUDP: 262144, MaxPerClient: 16384, UDPTimeout: 30 * time.Second, TCPEstablishedTimeout: 24 * time.Hour}
	if got := cfg.LB.NAT; got != want {
		t.Errorf("LB.NAT = %+v, want lb's defaults %+v", got, want)
	}
	wantProxy := lb.ProxyOptions{DialTimeout: time.Second, IdleTimeout: time.Hour, DrainTimeout: 30 * time.Second}
	if got := cfg.LB.Proxy; got != wantProxy {
		t.Errorf("LB.Proxy = %+v, want lb's defaults %+v", got, wantProxy)
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

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
