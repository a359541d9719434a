//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
)

// The kernel baseline must program what kube-proxy programs: the seed
// article lists kube-dns:metrics' chains, so their names must come out
// the same.
func TestKubeProxyChainNamesMatchSeed(t *testing.T) {
	ports, err := kpPorts(harness.SeedServices(""))
	if err != nil {
		t.Fatalf("kpPorts(SeedServices) = %v", err)
	}
	var metrics *kpPort
	for i := range ports {
		if ports[i].name == "kube-system/kube-dns:metrics" {
			metrics = &ports[i]
		}
	}
	if metrics == nil {
		t.Fatalf("kpPorts(SeedServices) = %v, want kube-system/kube-dns:metrics among them", ports)
	}
	if got, want := metrics.svcChain(), "KUBE-SVC-JD5MR3NA4I4DYORP"; got != want {
		t.Errorf("svcChain(kube-dns:metrics) = %s, want %s (the seed's)", got, want)
	}
	for ep, want := range map[string]string{
		"10.244.0.2:9153": "KUBE-SEP-N4G2XR5TDX7PQE7P",
		"10.244.0.3:9153": "KUBE-SEP-ZP3FB6NMPNCO4VBJ",
	} {
		if got := metrics.sepChain(netip.MustParseAddrPort(ep)); got != want {
			t.Errorf("sepChain(kube-dns:metrics, %s) = %s, want %s (the seed's)", ep, got, want)
		}
	}
}

func TestKubeProxyRulesForMyService(t *testing.T) {
	ports, err := kpPorts(harness.SeedServices(""))
	if err != nil {
		t.Fatal(err)
	}
	rules := kubeProxyRules(clusterCIDR, ports)
	var svc kpPort
	for _, p := range ports {
		if p.name == "default/my-service" {
			svc = p
		}
	}
	if len(svc.endpoints) != 3 {
		t.Fatalf("my-service endpoints = %v, want the seed's three", svc.endpoints)
	}
	for _, want := range []string{
		"-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
		"-A KUBE-SERVICES -d 10.103.92.81/32 -p tcp -m comment --comment \"default/my-service cluster IP\" -m tcp --dport 80 -j " + svc.svcChain(),
		"-A " + svc.svcChain() + " -m comment --comment \"default/my-service -> 10.244.0.4:80\" -m statistic --mode random --probability 0.3333333333 -j " + svc.sepChain(svc.endpoints[0]),
		"-A " + svc.svcChain() + " -m comment --comment \"default/my-service -> 10.244.1.2:80\" -m statistic --mode random --probability 0.5000000000 -j " + svc.sepChain(svc.endpoints[1]),
		"-A " + svc.svcChain() + " -m comment --comment \"default/my-service -> 10.244.1.3:80\" -j " + svc.sepChain(svc.endpoints[2]),
		"-A " + svc.sepChain(svc.endpoints[1]) + " -p tcp -m comment --comment \"default/my-service\" -m tcp -j DNAT --to-destination 10.244.1.2:80",
		"-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE",
	} {
		if !strings.Contains(rules, want+"\n") {
			t.Errorf("kubeProxyRules(seed) lacks the line\n%s", want)
		}
	}
	if n := strings.Count(rules, "COMMIT\n"); n != 2 {
		t.Errorf("kubeProxyRules(seed) has %d COMMIT lines, want 2 (filter and nat)", n)
	}
}

// The NodePort path is kube-proxy's for externalTrafficPolicy Cluster:
// KUBE-SERVICES' last rule sends local destinations to KUBE-NODEPORTS,
// which sends the node port to KUBE-EXT-<the KUBE-SVC hash>, which marks
// for masquerade and goes on to KUBE-SVC.
func TestKubeProxyRulesForNodePort(t *testing.T) {
	ports, err := kpPorts(nodePortServices())
	if err != nil {
		t.Fatalf("kpPorts(nodePortServices) = %v", err)
	}
	var svc kpPort
	for _, p := range ports {
		if p.name == "default/my-service" {
			svc = p
		}
		if p.name != "default/my-service" && p.nodePort != 0 {
			t.Errorf("kpPorts(nodePortServices): %s has node port %d, want none", p.name, p.nodePort)
		}
	}
	if svc.nodePort != myNodePort {
		t.Fatalf("kpPorts(nodePortServices): my-service node port %d, want %d", svc.nodePort, myNodePort)
	}
	if got, want := strings.TrimPrefix(svc.extChain(), "KUBE-EXT-"), strings.TrimPrefix(svc.svcChain(), "KUBE-SVC-"); got != want {
		t.Errorf("extChain() = KUBE-EXT-%s, want the KUBE-SVC chain's hash %s", got, want)
	}
	rules := kubeProxyRules(clusterCIDR, ports)
	for _, want := range []string{
		":" + svc.extChain() + " - [0:0]",
		`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
		`-A KUBE-NODEPORTS -p tcp -m comment --comment "default/my-service" -m tcp --dport 30080 -j ` + svc.extChain(),
		`-A ` + svc.extChain() + ` -m comment --comment "masquerade traffic for default/my-service external destinations" -j KUBE-MARK-MASQ`,
		`-A ` + svc.extChain() + ` -j ` + svc.svcChain(),
		`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE`,
	} {
		if !strings.Contains(rules, want+"\n") {
			t.Errorf("kubeProxyRules(nodePortServices) lacks the line\n%s", want)
		}
	}
	// The KUBE-SERVICES jump to KUBE-NODEPORTS stays its last rule.
	last := strings.LastIndex(rules, "-A KUBE-SERVICES ")
	if !strings.HasPrefix(rules[last:], `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports`) {
		t.Errorf("kubeProxyRules(nodePortServices): last KUBE-SERVICES rule is %q, want the KUBE-NODEPORTS jump", firstLines([]byte(rules[last:]), 1))
	}
	if n := strings.Count(rules, "KUBE-EXT-"); n != 4 {
		t.Errorf("kubeProxyRules(nodePortServices) names KUBE-EXT chains %d times, want 4 (my-service's: declared, jumped to, two rules)", n)
	}
	if plain, _ := kpPorts(harness.SeedServices("")); strings.Contains(kubeProxyRules(clusterCIDR, plain), "KUBE-EXT-") {
		t.Errorf("kubeProxyRules(SeedServices) has KUBE-EXT chains, want none without node ports")
	}
}

func TestParseTracesAndClassify(t *testing.T) {
	out := []byte(`File: bench
Type: cpu
Duration: 6s, Total samples = 30ms (0.5%)
-----------+-------------------------------------------------------
      20ms   internal/runtime/syscall/linux.Syscall6
             syscall.Syscall6
             net.(*UDPConn).WriteToUDPAddrPort
             github.com/vrouter/vrouter/router.(*overlayEndpoint).WritePackets
             github.com/vrouter/vrouter/router.(*tunEndpoint).readLoop
-----------+-------------------------------------------------------
      10ms   gvisor.dev/gvisor/pkg/tcpip.(*Subnet).Contains (inline)
             gvisor.dev/gvisor/pkg/tcpip/stack.(*Stack).FindRoute
             github.com/vrouter/vrouter/router.(*tunEndpoint).readLoop
-----------+-------------------------------------------------------
`)
	samples, err := parseTraces(out)
	if err != nil {
		t.Fatalf("parseTraces = %v", err)
	}
	if len(samples) != 2 || samples[0].secs != 0.02 || samples[1].secs != 0.01 {
		t.Fatalf("parseTraces = %+v, want samples of 20ms and 10ms", samples)
	}
	if got, want := classify(samples[0].frames), "syscall: UDP send (overlay out)"; got != want {
		t.Errorf("classify(%v) = %q, want %q", samples[0].frames, got, want)
	}
	if got, want := classify(samples[1].frames), "gVisor: stack (forwarding, routing, packet buffers)"; got != want {
		t.Errorf("classify(%v) = %q, want %q", samples[1].frames, got, want)
	}
	// The fast path writes from the other link's reader.
	for frames, want := range map[[4]string]string{
		{"internal/runtime/syscall/linux.Syscall6", "github.com/vrouter/vrouter/router.(*udpConn).WriteBatch", "github.com/vrouter/vrouter/router.(*overlayEndpoint).send", "github.com/vrouter/vrouter/router.(*tunEndpoint).readLoop"}:        "syscall: UDP send (overlay out)",
		{"internal/runtime/syscall/linux.Syscall6", "github.com/vrouter/vrouter/tun.(*offloadFile).Write", "github.com/vrouter/vrouter/router.(*tunEndpoint).send", "github.com/vrouter/vrouter/router.(*overlayEndpoint).readLoop"}:            "syscall: TUN write (to node kernel)",
		{"internal/runtime/syscall/linux.Syscall6", "github.com/vrouter/vrouter/router.(*udpConn).ReadBatch", "github.com/vrouter/vrouter/router.(*overlayEndpoint).readLoop", "github.com/vrouter/vrouter/router.(*overlayEndpoint).readLoop"}: "syscall: UDP receive (overlay in)",
		// The encrypted overlay: its socket under the router's readers, and its own code.
		{"internal/runtime/syscall/linux.Syscall6", "github.com/vrouter/vrouter/router.(*mmsgSend).sendmmsg", "github.com/vrouter/vrouter/router.(*udpConn).WriteBatch", "github.com/vrouter/vrouter/router/wireguard.(*Conn).sealRun"}:                                                       "syscall: UDP send (overlay out)",
		{"internal/runtime/syscall/linux.Syscall6", "github.com/vrouter/vrouter/router.(*udpConn).ReadBatch", "github.com/vrouter/vrouter/router/wireguard.(*Conn).fill", "github.com/vrouter/vrouter/router/wireguard.(*Conn).ReadBatch"}:                                                    "syscall: UDP receive (overlay in)",
		{"github.com/vrouter/vrouter/router/wireguard.(*replayFilter).accept", "github.com/vrouter/vrouter/router/wireguard.(*keypair).openTransport", "github.com/vrouter/vrouter/router/wireguard.(*Conn).receiveTransport", "github.com/vrouter/vrouter/router/wireguard.(*Conn).receive"}: "vrouter: router/wireguard (sessions, replay window, handshakes)",
	} {
		if got := classify(frames[:]); got != want {
			t.Errorf("classify(%v) = %q, want %q", frames, got, want)
		}
	}
}

func TestNumbers(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{0.3489, "0.349"}, {4.58, "4.58"}, {29.21, "29.2"}, {134.4, "134"}, {5221, "5,220"}, {247123, "247,000"}} {
		if got := num(tc.v); got != tc.want {
			t.Errorf("num(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	if got, want := ratioString(1/31.9), "1/31.9×"; got != want {
		t.Errorf("ratioString(1/31.9) = %q, want %q", got, want)
	}
}

func TestParseMetrics(t *testing.T) {
	text := "# HELP go_memstats_heap_alloc_bytes x\n# TYPE go_memstats_heap_alloc_bytes gauge\ngo_memstats_heap_alloc_bytes 1.2345e+07\n" +
		"go_gc_duration_seconds{quantile=\"0.5\"} 0.001\ngo_gc_duration_seconds_count 7\nvrouter_nat_flows 2000\n"
	m := parseMetrics(text)
	for k, want := range map[string]float64{"go_memstats_heap_alloc_bytes": 12345000, "go_gc_duration_seconds_count": 7, "vrouter_nat_flows": 2000} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("parseMetrics(...)[%s] = %v, %v; want %v", k, got, ok, want)
		}
	}
	if len(m) != 3 {
		t.Errorf("parseMetrics(...) = %v, want 3 unlabelled samples", m)
	}
}

// The anchor table pairs vrouter's egress rows (nat bed) with slirp4netns's
// (taken on the kernel bed) and divides the medians.
func TestAnchorTable(t *testing.T) {
	r := newReport()
	for _, v := range []float64{6, 4, 5} {
		r.add("egress_tcp_gbps_down", modeNAT, v)
		r.add("egress_tcp_gbps_down", modeKernel, 2*v)
	}
	for _, v := range []float64{2, 3, 1} {
		r.add("egress_slirp4netns_tcp_gbps_down", modeKernel, v)
	}
	r.add("egress_tcp_gbps_up", modeNAT, 7) // no anchor sample: no row
	// A count per 100 connections gets no ratio.
	r.add("egress_close_sustained_syn_retrans_per_100", modeKernel, 30)
	r.add("egress_close_sustained_syn_retrans_per_100", modeNAT, 0)
	r.add("egress_slirp4netns_close_sustained_syn_retrans_per_100", modeKernel, 2)
	r.finish()
	if len(r.Anchored) != 2 {
		t.Fatalf("finish: Anchored = %+v, want two rows (outside→pod, SYNs retransmitted)", r.Anchored)
	}
	if a := r.Anchored[1]; a.RatioSlirp != nil {
		t.Errorf("finish: a ratio of SYN retransmissions: %+v", a)
	}
	a := r.Anchored[0]
	if a.Key != "egress_tcp_gbps_down" || a.RatioSlirp == nil || *a.RatioSlirp != 2.5 || *a.Kernel != 10 {
		t.Errorf("finish: Anchored[0] = %+v (ratio %v), want vrouter 5 ÷ slirp4netns 2 = 2.5, kernel 10", a, a.RatioSlirp)
	}
	var out strings.Builder
	r.writeTables(&out)
	for _, want := range []string{
		"| outside→pod TCP, 1 stream | Gbit/s | 10.0 | 5.00 | 2.00 | 0.50× | 2.50× |",
		"| pod→outside, sustained: SYNs retransmitted per 100 connections | per 100 | 30.0 | 0 | 2.00 |  |  |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("writeTables: no line %q in\n%s", want, out.String())
		}
	}
}

// The encrypted table divides vrouter-wireguard's medians by the
// wireguard-go baseline's and by vrouter's plain overlay's, and says why
// the kernel's own WireGuard is n/a.
func TestEncryptedTable(t *testing.T) {
	r := newReport()
	for _, v := range []float64{1, 3, 2} {
		r.add("tcp_gbps_1", modeWG, v)
		r.add("tcp_gbps_1", modeKernelWG, v/2)
		r.add("tcp_gbps_1", modeNAT, 2*v)
	}
	r.add("udp_loss_pct_64", modeWG, 10)
	r.add("udp_loss_pct_64", modeKernelWG, 5)
	r.WireGuardGo, r.KernelWireGuard = "measured", "this kernel has no WireGuard"
	r.finish()
	m, ok := r.metric("tcp_gbps_1")
	if !ok || m.WGRatioWGGo == nil || *m.WGRatioWGGo != 2 || m.WGRatioPlain == nil || *m.WGRatioPlain != 0.5 {
		t.Fatalf("finish: tcp_gbps_1 = %+v, want vrouter-wireguard 2 ÷ wireguard-go 1 = 2 and ÷ plain 4 = 0.5", m)
	}
	var out strings.Builder
	r.writeTables(&out)
	for _, want := range []string{
		"| pod→pod TCP, 1 stream; targets ≥ 1.0× wireguard-go, ≥ 0.6× plain | Gbit/s | 1.00 | 4.00 | 2.00 | 2.00× | 0.50× | n/a |",
		"| UDP 64 B payload, loss | % | 5.00 | n/a | 10.0 |  |  | n/a |",
		"Kernel WireGuard: n/a (this kernel has no WireGuard).",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("writeTables: no line %q in\n%s", want, out.String())
		}
	}

	// Without either encrypted bed there is no table, only the reason.
	r = newReport()
	r.add("tcp_gbps_1", modeNAT, 4)
	r.WireGuardGo = "wireguard-go is not built"
	r.finish()
	out.Reset()
	r.writeTables(&out)
	if strings.Contains(out.String(), "encrypted overlay") || !strings.Contains(out.String(), "Kernel routes over wireguard-go: n/a (wireguard-go is not built).") {
		t.Errorf("writeTables without encrypted beds:\n%s\nwant no encrypted table and the reason for the baseline", out.String())
	}
}

// The ratio cells carry the rounds' own ratios, each round's value over
// the same round's baseline, where a round measured both modes once.
func TestRatioRounds(t *testing.T) {
	r := newReport()
	r.Rounds = 3
	for i, kv := range [][2]float64{{10, 5}, {10, 4}, {8, 4.8}} {
		r.round = i
		r.add("tcp_gbps_1", modeKernel, kv[0])
		r.add("tcp_gbps_1", modeNAT, kv[1])
		if i != 1 {
			r.add("http_close_per_s", modeKernel, 1000)
			r.add("http_close_per_s", modeProxy, 250*float64(i+1))
		}
	}
	for i, v := range [3][3]float64{{10, 5, 2}, {12, 4, 1}, {10, 6, 3}} { // kernel, vrouter, slirp4netns
		r.round = i
		r.add("egress_tcp_gbps_down", modeKernel, v[0])
		r.add("egress_tcp_gbps_down", modeNAT, v[1])
		r.add("egress_slirp4netns_tcp_gbps_down", modeKernel, v[2])
	}
	r.round = 2
	r.add("tcp_gbps_4", modeKernel, 10) // one round with two values, one without the kernel: no pairs
	r.add("tcp_gbps_4", modeNAT, 3)
	r.add("tcp_gbps_4", modeNAT, 4)
	r.round = 1
	r.add("tcp_gbps_4", modeNAT, 5)
	r.finish()
	m, _ := r.metric("tcp_gbps_1")
	if want := []float64{0.5, 0.4, 0.6}; !slices.Equal(m.RatioRounds, want) {
		t.Errorf("tcp_gbps_1 RatioRounds = %v, want %v (rounds in order)", m.RatioRounds, want)
	}
	m, _ = r.metric("http_close_per_s")
	if want := []float64{0.25, 0.75}; !slices.Equal(m.ProxyRatioRounds, want) {
		t.Errorf("http_close_per_s ProxyRatioRounds = %v, want %v (rounds 1 and 3)", m.ProxyRatioRounds, want)
	}
	if m, _ = r.metric("tcp_gbps_4"); m.RatioRounds != nil {
		t.Errorf("tcp_gbps_4 RatioRounds = %v, want none: no round has one value of each", m.RatioRounds)
	}
	var out strings.Builder
	r.writeTables(&out)
	for _, want := range []string{
		"| pod→pod TCP, 1 stream | Gbit/s | 10.0 | 4.80 | 0.48× (0.40–0.60) |",
		"| 0.50× (0.25–0.75) |",
		"| outside→pod TCP, 1 stream | Gbit/s | 10.0 | 5.00 | 2.00 | 0.50× (0.33–0.60) | 2.50× (2.00–4.00) |",
		"the lowest and highest of the rounds' own ratios",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("writeTables: no %q in\n%s", want, out.String())
		}
	}
}

// wireguard-go's interfaces are named per run (their control sockets are
// shared by every namespace), fit IFNAMSIZ, and a killed run's sockets
// are recognised by that name.
func TestWireGuardGoIface(t *testing.T) {
	m, n := wgGoIface(masterNode), wgGoIface(workerNode)
	if m == n || len(m) > 15 || len(n) > 15 {
		t.Errorf("wgGoIface = %q, %q; want two names of at most 15 bytes", m, n)
	}
	for _, name := range []string{m, n} {
		got := staleWGSocket.FindStringSubmatch(name + ".sock")
		if got == nil || got[1] != fmt.Sprint(selfPID) {
			t.Errorf("staleWGSocket(%q) = %v, want process ID %d", name+".sock", got, selfPID)
		}
	}
	if staleWGSocket.MatchString("wg0.sock") {
		t.Errorf("staleWGSocket matches wg0.sock, an interface the bench did not make")
	}
}

// wrk's report, as wrk 4.1.0 prints it with --latency.
const wrkOutput = `Running 4s test @ http://10.103.92.81:80/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms    1.45ms  11.13ms   87.51%
    Req/Sec     7.68k     2.56k   12.95k    65.00%
  Latency Distribution
     50%  900.00us
     75%    1.66ms
     90%    3.36ms
     99%    1.20s
  15465 requests in 2.03s, 2.74MB read
  Socket errors: connect 2, read 1, write 0, timeout 4
  Non-2xx or 3xx responses: 3
Requests/sec:   7630.38
Transfer/sec:      1.35MB
`

func TestParseWrk(t *testing.T) {
	var r wrkResult
	if err := parseWrk([]byte(wrkOutput), &r); err != nil {
		t.Fatal(err)
	}
	if r.perSec != 7630.38 || r.requests != 15465 || r.p50 != 900 || r.p99 != 1.2e6 || r.errs != 10 {
		t.Errorf("parseWrk = rate %v, requests %d, p50 %v µs, p99 %v µs, errors %d; want 7630.38, 15465, 900, 1200000, 10", r.perSec, r.requests, r.p50, r.p99, r.errs)
	}
	if err := parseWrk([]byte("unable to connect to 10.103.92.81:80 Connection refused\n"), &r); err == nil {
		t.Error("parseWrk of an error message: no error")
	}
}

// sockperfOutput is sockperf 3.7's client report (pp --tcp --full-rtt),
// color codes included.
const sockperfOutput = "sockperf: ========= Printing statistics for Server No: 0\n" +
	"sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=18585; ReceivedMessages=18585\n" +
	"sockperf: \x1b[2;35m====> avg-rtt=29.600 (std-dev=18.697)\x1b[0m\n" +
	"sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n" +
	"sockperf: Summary: Round trip is 29.600 usec\n" +
	"sockperf: \x1b[2;35mTotal 18585 observations\x1b[0m; each percentile contains 185.85 observations\n" +
	"sockperf: ---> <MAX> observation = 2147.645\n" +
	"sockperf: ---> percentile 99.999 = 2147.645\n" +
	"sockperf: ---> percentile 99.990 =  293.183\n" +
	"sockperf: ---> percentile 99.900 =  102.643\n" +
	"sockperf: ---> percentile 99.000 =   70.142\n" +
	"sockperf: ---> percentile 90.000 =   28.203\n" +
	"sockperf: ---> percentile 75.000 =   27.972\n" +
	"sockperf: ---> percentile 50.000 =   27.772\n" +
	"sockperf: ---> percentile 25.000 =   27.612\n" +
	"sockperf: ---> <MIN> observation =   19.837\n"

func TestParseSockperf(t *testing.T) {
	r, err := parseSockperf([]byte(sockperfOutput))
	if err != nil {
		t.Fatal(err)
	}
	if r.observations != 18585 || r.p50 != 27.772 || r.p99 != 70.142 {
		t.Errorf("parseSockperf = %d observations, p50 %v µs, p99 %v µs; want 18585, 27.772, 70.142", r.observations, r.p50, r.p99)
	}
	lost := strings.Replace(sockperfOutput, "# dropped messages = 0", "# dropped messages = 3", 1)
	if _, err := parseSockperf([]byte(lost)); err == nil {
		t.Error("parseSockperf of a run with dropped answers: no error")
	}
	if _, err := parseSockperf([]byte("sockperf: ERROR: Failed to connect (errno=111 Connection refused)\n")); err == nil {
		t.Error("parseSockperf of an error message: no error")
	}
}

func TestParsePingTimes(t *testing.T) {
	out := `PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.331 ms
64 bytes from 10.244.1.2: icmp_seq=3 ttl=62 time=1.05 ms

--- 10.244.1.2 ping statistics ---
3 packets transmitted, 2 received, 33.3333% packet loss, time 10ms
rtt min/avg/max/mdev = 0.331/0.690/1.050/0.359 ms
`
	rtts, err := parsePingTimes([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rtts) != "[331µs 1.05ms]" {
		t.Errorf("parsePingTimes = %v, want [331µs 1.05ms]", rtts)
	}
	if _, err := parsePingTimes([]byte("3 packets transmitted, 0 received\n")); err == nil {
		t.Error("parsePingTimes without a reply: no error")
	}
}

// TestCleanupStaleWork: a crashed run's work directory, with the tmpfs its
// routers' flow files were on, is unmounted and removed by the next run;
// a live run's stays.
func TestCleanupStaleWork(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	t.Setenv("TMPDIR", t.TempDir())
	dead := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-1", workPrefix, 1<<22+7)) // above pid_max: no such process
	live := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-1", workPrefix, os.Getpid()))
	for _, dir := range []string{dead, live} {
		run := filepath.Join(dir, "bed-vrouter", "run")
		if err := os.MkdirAll(run, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(run, unix.MNT_DETACH) })
	}
	if err := cleanupStaleWork(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a crashed run's work directory after cleanupStaleWork: %v, want it gone", err)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), dead) {
		t.Errorf("a crashed run's tmpfs is still mounted")
	}
	if !strings.Contains(string(mounts), live) {
		t.Errorf("a live run's tmpfs was unmounted")
	}
}
