//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// report is everything one run found; it is printed as tables and
// written as JSON (--json) for tracking.
type report struct {
	Machine  machine   `json:"machine"`
	Run      string    `json:"run"` // "full" or "smoke"
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"duration_s"`
	Rounds   int       `json:"rounds"`
	RunSecs  float64   `json:"seconds_per_iperf3_run"`
	HTTPSecs float64   `json:"seconds_per_http_run"`
	// SustainedSecs is egress-close's sustained run.
	SustainedSecs float64 `json:"seconds_per_sustained_run,omitempty"`
	// HTTPThreads and HTTPConns are wrk's -t and -c.
	HTTPThreads int    `json:"http_threads"`
	HTTPConns   int    `json:"http_connections"`
	Proxy       string `json:"proxy_mode"`         // "measured", or why not
	NodePort    string `json:"nodeport_vrouter"`   // "measured", or why not
	Egress      string `json:"egress_vrouter"`     // "measured", or why not
	Anchor      string `json:"egress_slirp4netns"` // "measured", or why not
	// WireGuardGo is "measured", or why the kernel-wireguard-go baseline
	// was not; KernelWireGuard why the kernel's own WireGuard was not.
	WireGuardGo     string   `json:"kernel_wireguard_go"`
	KernelWireGuard string   `json:"kernel_wireguard"`
	Metrics         []metric `json:"metrics"`
	Control         struct {
		Kernel  *controlResult `json:"kernel_iptables_restore,omitempty"`
		VRouter *controlResult `json:"vrouter_lb_table,omitempty"`
	} `json:"control_plane"`
	// Anchored are the egress rows beside their slirp4netns anchor.
	Anchored   []anchored      `json:"egress_vs_slirp4netns,omitempty"`
	Forwarding []forwardResult `json:"forwarding_in_memory,omitempty"`
	Profile    []profileResult `json:"profile,omitempty"`
	ProfileDir string          `json:"profile_dir,omitempty"`
	Errors     []string        `json:"errors,omitempty"`

	// samples[metric][mode] holds one value per round; sampleRounds, in
	// parallel, the round (from 0) each was taken in: round when add ran.
	samples      map[string]map[mode][]float64
	sampleRounds map[string]map[mode][]int
	round        int
}

// metric is one measured quantity with its statistics per mode.
type metric struct {
	Key        string           `json:"key"`
	Label      string           `json:"label,omitempty"`
	Unit       string           `json:"unit,omitempty"`
	Better     string           `json:"better,omitempty"` // "higher" or "lower"
	Modes      map[mode]summary `json:"modes"`
	Ratio      *float64         `json:"ratio_vrouter_kernel,omitempty"`
	ProxyRatio *float64         `json:"ratio_proxy_kernel,omitempty"`
	// The encrypted overlay against the kernel's routes over
	// wireguard-go and against vrouter's plain overlay.
	WGRatioWGGo  *float64 `json:"ratio_vrouter_wireguard_kernel_wireguard_go,omitempty"`
	WGRatioPlain *float64 `json:"ratio_vrouter_wireguard_vrouter,omitempty"`
	// Each ratio's own value in every round that measured each of its
	// modes once (see perRound), in round order; set for two or more.
	RatioRounds        []float64 `json:"ratio_vrouter_kernel_rounds,omitempty"`
	ProxyRatioRounds   []float64 `json:"ratio_proxy_kernel_rounds,omitempty"`
	WGRatioWGGoRounds  []float64 `json:"ratio_vrouter_wireguard_kernel_wireguard_go_rounds,omitempty"`
	WGRatioPlainRounds []float64 `json:"ratio_vrouter_wireguard_vrouter_rounds,omitempty"`
}

type summary struct {
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

// metricDef describes a metric of the main table; metrics not listed go
// to the JSON only.
type metricDef struct {
	key, label, unit string
	lowerBetter      bool
}

var tableMetrics = []metricDef{
	{"tcp_gbps_1", "pod→pod TCP, 1 stream", "Gbit/s", false},
	{"tcp_gbps_4", "pod→pod TCP, 4 streams", "Gbit/s", false},
	{"udp_offered_kpps_64", "UDP 64 B payload, offered (iperf3 -b 10G: as fast as its sender goes)", "kpps", false},
	{"udp_kpps_64", "UDP 64 B payload, received", "kpps", false},
	{"udp_loss_pct_64", "UDP 64 B payload, loss", "%", true},
	{"udp_offered_kpps_1400", "UDP 1400 B payload, offered", "kpps", false},
	{"udp_kpps_1400", "UDP 1400 B payload, received", "kpps", false},
	{"udp_loss_pct_1400", "UDP 1400 B payload, loss", "%", true},
	{"udp_paced_kpps_64", "UDP 64 B payload, 50 kpps offered to both (iperf3 -b), received", "kpps", false},
	{"udp_paced_loss_pct_64", "UDP 64 B payload, 50 kpps offered, loss", "%", true},
	{"udp_paced_kpps_1400", "UDP 1400 B payload, 50 kpps offered, received", "kpps", false},
	{"udp_paced_loss_pct_1400", "UDP 1400 B payload, 50 kpps offered, loss", "%", true},
	{"icmp_p50_us", "ICMP echo RTT p50, back-to-back", "µs", true},
	{"icmp_p99_us", "ICMP echo RTT p99, back-to-back", "µs", true},
	{"icmp_sparse_p50_us", "ICMP echo RTT p50, one every 5 ms (ping -i 0.005: the router idles between)", "µs", true},
	{"icmp_sparse_p99_us", "ICMP echo RTT p99, one every 5 ms", "µs", true},
	{"tcprr_p50_us", "TCP 64 B request/response RTT p50 (sockperf)", "µs", true},
	{"tcprr_p99_us", "TCP 64 B request/response RTT p99 (sockperf)", "µs", true},
	{"http_close_per_s", "ClusterIP new connections/s (HTTP, Connection: close) ⁹", "conn/s", false},
	{"http_keepalive_per_s", "ClusterIP keep-alive requests/s (HTTP) ⁹", "req/s", false},
	{"nodeport_close_per_s", "NodePort new connections/s (HTTP, Connection: close), client outside the cluster; target ≥ 0.5× ⁵", "conn/s", false},
	{"nodeport_keepalive_per_s", "NodePort keep-alive requests/s (HTTP), client outside the cluster ⁵", "req/s", false},
	{"egress_tcp_gbps_up", "pod→outside TCP, 1 stream, masqueraded ⁶", "Gbit/s", false},
	{"egress_tcp_gbps_down", "outside→pod TCP, 1 stream, masqueraded ⁶", "Gbit/s", false},
	{"egress_close_per_s", "pod→outside new connections/s (HTTP, Connection: close), masqueraded ⁶", "conn/s", false},
	{"egress_close_sustained_per_s", "pod→outside new connections/s, sustained: a second, longer run right after the one above ⁶", "conn/s", false},
	{"egress_close_sustained_syn_retrans_per_100", "pod→outside, sustained: SYNs retransmitted per 100 connections ⁶", "per 100", true},
	{"egress_close_sustained_paws_per_100", "pod→outside, sustained: SYNs the server dropped in TIME_WAIT (PAWS) per 100 connections ⁶", "per 100", true},
	{"underlay_bytes_per_packet_1", "bytes per packet on the underlay (" + masterNode + " eth0), TCP 1 stream", "B", false},
	{"cpu_per_gb_1", "CPU per GB forwarded, TCP 1 stream ¹", "CPU s/GB", true},
	{"cpu_machine_kernel_per_gb_1", "machine sys+irq+softirq per GB, TCP 1 stream ²", "CPU s/GB", true},
	{"cpu_machine_busy_per_gb_1", "machine busy CPU per GB, TCP 1 stream ²", "CPU s/GB", true},
	{"conn_mem_kib", "router memory per idle ClusterIP connection (Go heap + stacks), " + masterNode + "; target nat ≤ 2, proxy ≤ 64 ⁴", "KiB", true},
	{"conn_rss_kib", "router VmRSS growth per idle ClusterIP connection, " + masterNode + " ⁴", "KiB", true},
	{"rss_mib_" + masterNode, "router resident memory (VmRSS), " + masterNode, "MiB", true},
	{"rss_mib_" + workerNode, "router resident memory (VmRSS), " + workerNode, "MiB", true},
}

// encryptedRows are the rows of the encrypted-overlay table: vrouter with
// overlay.encryption wireguard against the kernel's routes over
// wireguard-go and against vrouter's plain overlay (wireguard.go).
var encryptedRows = []metricDef{
	{"tcp_gbps_1", "pod→pod TCP, 1 stream; targets ≥ 1.0× wireguard-go, ≥ 0.6× plain", "Gbit/s", false},
	{"tcp_gbps_4", "pod→pod TCP, 4 streams", "Gbit/s", false},
	{"udp_kpps_64", "UDP 64 B payload, received", "kpps", false},
	{"udp_loss_pct_64", "UDP 64 B payload, loss", "%", true},
	{"udp_kpps_1400", "UDP 1400 B payload, received", "kpps", false},
	{"udp_loss_pct_1400", "UDP 1400 B payload, loss", "%", true},
	{"icmp_p50_us", "ICMP echo RTT p50", "µs", true},
	{"tcprr_p50_us", "TCP 64 B request/response RTT p50 (sockperf)", "µs", true},
	{"tcprr_p99_us", "TCP 64 B request/response RTT p99 (sockperf)", "µs", true},
	{"http_close_per_s", "ClusterIP new connections/s (HTTP, Connection: close)", "conn/s", false},
	{"http_keepalive_per_s", "ClusterIP keep-alive requests/s (HTTP)", "req/s", false},
	{"underlay_bytes_per_packet_1", "bytes per packet on the underlay (" + masterNode + " eth0), TCP 1 stream", "B", false},
	{"cpu_per_gb_1", "CPU per GB forwarded, TCP 1 stream ⁸", "CPU s/GB", true},
	{"cpu_machine_busy_per_gb_1", "machine busy CPU per GB, TCP 1 stream ²", "CPU s/GB", true},
}

// anchorRows pair each egress metric with its slirp4netns anchor
// (anchor.go), measured on the kernel bed's node.
var anchorRows = []struct{ key, anchor, label, unit string }{
	{"egress_tcp_gbps_up", "egress_slirp4netns_tcp_gbps_up", "pod→outside TCP, 1 stream", "Gbit/s"},
	{"egress_tcp_gbps_down", "egress_slirp4netns_tcp_gbps_down", "outside→pod TCP, 1 stream", "Gbit/s"},
	{"egress_close_per_s", "egress_slirp4netns_close_per_s", "pod→outside new connections/s (HTTP, Connection: close)", "conn/s"},
	{"egress_close_sustained_per_s", "egress_slirp4netns_close_sustained_per_s", "pod→outside new connections/s, sustained (20 s more, at once)", "conn/s"},
	{"egress_close_sustained_syn_retrans_per_100", "egress_slirp4netns_close_sustained_syn_retrans_per_100", "pod→outside, sustained: SYNs retransmitted per 100 connections", "per 100"},
}

// anchored is one egress metric's medians on the three data paths: the
// kernel's MASQUERADE, vrouter's egress stack and slirp4netns.
type anchored struct {
	Key         string   `json:"key"`
	Label       string   `json:"label"`
	Unit        string   `json:"unit"`
	Kernel      *float64 `json:"kernel,omitempty"`
	VRouter     *float64 `json:"vrouter,omitempty"`
	Slirp4netns *float64 `json:"slirp4netns,omitempty"`
	// RatioSlirp is vrouter ÷ slirp4netns (target ≥ 3).
	RatioSlirp *float64 `json:"ratio_vrouter_slirp4netns,omitempty"`
	// The rounds' own ratios (see perRound), where known.
	RatioKernelRounds []float64 `json:"ratio_vrouter_kernel_rounds,omitempty"`
	RatioSlirpRounds  []float64 `json:"ratio_vrouter_slirp4netns_rounds,omitempty"`
}

func newReport() *report {
	return &report{samples: make(map[string]map[mode][]float64), sampleRounds: make(map[string]map[mode][]int)}
}

// add records value v of metric key on mode m, taken in round r.round.
func (r *report) add(key string, m mode, v float64) {
	if r.samples[key] == nil {
		r.samples[key] = make(map[mode][]float64)
		r.sampleRounds[key] = make(map[mode][]int)
	}
	r.samples[key][m] = append(r.samples[key][m], v)
	r.sampleRounds[key][m] = append(r.sampleRounds[key][m], r.round)
}

// perRound returns key's a ÷ b of each round in which each of the two
// modes was measured once (a round takes each measurement on every mode
// one after the other, so a round's two values were taken seconds apart,
// under the same conditions), in round order: how much the ratio of the
// medians moves from round to round. It is nil unless there are two or
// more.
func (r *report) perRound(key string, a, b mode) []float64 {
	return r.perRoundOf(key, a, key, b)
}

// perRoundOf is perRound of keyA on a over keyB on b.
func (r *report) perRoundOf(keyA string, a mode, keyB string, b mode) []float64 {
	once := func(key string, m mode) map[int]float64 {
		vals, seen := map[int]float64{}, map[int]int{}
		for i, v := range r.samples[key][m] {
			rd := r.sampleRounds[key][m][i]
			vals[rd] = v
			seen[rd]++
		}
		for rd, n := range seen {
			if n > 1 {
				delete(vals, rd) // which of them pairs with b's is not known
			}
		}
		return vals
	}
	nums, dens := once(keyA, a), once(keyB, b)
	var out []float64
	for _, rd := range slices.Sorted(maps.Keys(nums)) {
		if d, ok := dens[rd]; ok && d != 0 {
			out = append(out, nums[rd]/d)
		}
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

func (r *report) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.Errors = append(r.Errors, msg)
	fmt.Fprintln(os.Stderr, "bench: error:", msg)
}

// finish computes the per-mode summaries and ratios.
func (r *report) finish() {
	defs := map[string]metricDef{}
	var keys []string
	for _, d := range tableMetrics {
		defs[d.key] = d
		if r.samples[d.key] != nil {
			keys = append(keys, d.key)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.samples)) {
		if _, ok := defs[k]; !ok {
			keys = append(keys, k)
		}
	}
	r.Metrics = nil
	for _, k := range keys {
		m := metric{Key: k, Modes: map[mode]summary{}}
		if d, ok := defs[k]; ok {
			m.Label, m.Unit, m.Better = d.label, d.unit, "higher"
			if d.lowerBetter {
				m.Better = "lower"
			}
		}
		for md, vs := range r.samples[k] {
			m.Modes[md] = summarize(vs)
		}
		if k, ok := m.Modes[modeKernel]; ok && k.Median != 0 {
			if v, ok := m.Modes[modeNAT]; ok {
				x := v.Median / k.Median
				m.Ratio = &x
				m.RatioRounds = r.perRound(m.Key, modeNAT, modeKernel)
			}
			if v, ok := m.Modes[modeProxy]; ok {
				x := v.Median / k.Median
				m.ProxyRatio = &x
				m.ProxyRatioRounds = r.perRound(m.Key, modeProxy, modeKernel)
			}
		}
		if v, ok := m.Modes[modeWG]; ok {
			if k, ok := m.Modes[modeKernelWG]; ok && k.Median != 0 {
				x := v.Median / k.Median
				m.WGRatioWGGo = &x
				m.WGRatioWGGoRounds = r.perRound(m.Key, modeWG, modeKernelWG)
			}
			if n, ok := m.Modes[modeNAT]; ok && n.Median != 0 {
				x := v.Median / n.Median
				m.WGRatioPlain = &x
				m.WGRatioPlainRounds = r.perRound(m.Key, modeWG, modeNAT)
			}
		}
		r.Metrics = append(r.Metrics, m)
	}
	r.Anchored = nil
	for _, a := range anchorRows {
		row := anchored{Key: a.key, Label: a.label, Unit: a.unit}
		median := func(key string, md mode) *float64 {
			if vs := r.samples[key][md]; len(vs) > 0 {
				x := summarize(vs).Median
				return &x
			}
			return nil
		}
		row.Kernel, row.VRouter, row.Slirp4netns = median(a.key, modeKernel), median(a.key, modeNAT), median(a.anchor, modeKernel)
		if row.Slirp4netns == nil {
			continue
		}
		if row.VRouter != nil && *row.Slirp4netns > 0 && a.unit != "per 100" {
			x := *row.VRouter / *row.Slirp4netns
			row.RatioSlirp = &x
			row.RatioKernelRounds = r.perRound(a.key, modeNAT, modeKernel)
			row.RatioSlirpRounds = r.perRoundOf(a.key, modeNAT, a.anchor, modeKernel)
		}
		r.Anchored = append(r.Anchored, row)
	}
}

func summarize(vs []float64) summary {
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{Median: med, Min: s[0], Max: s[len(s)-1], Samples: vs}
}

func (r *report) metric(key string) (metric, bool) {
	for _, m := range r.Metrics {
		if m.Key == key {
			return m, true
		}
	}
	return metric{}, false
}

// num formats v with three significant digits, and thousands as 12,300.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case v == 0:
		return "0"
	}
	a := math.Abs(v)
	var s string
	switch {
	case a >= 1000:
		s = fmt.Sprintf("%.0f", math.Round(v/math.Pow(10, math.Floor(math.Log10(a))-2))*math.Pow(10, math.Floor(math.Log10(a))-2))
		return thousands(s)
	case a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	case a >= 1:
		s = fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		s = fmt.Sprintf("%.3f", v)
	default:
		s = fmt.Sprintf("%.2g", v)
	}
	return s
}

func thousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ratio(x *float64) string {
	if x == nil {
		return ""
	}
	return ratioString(*x)
}

// ratioRange is ratio(x) followed, where the rounds' own ratios are
// known, by their lowest and highest: "0.51× (0.43–0.53)".
func ratioRange(x *float64, rounds []float64) string {
	s := ratio(x)
	if s == "" || s == "n/a" || len(rounds) < 2 {
		return s
	}
	lo, hi := ratioString(slices.Min(rounds)), ratioString(slices.Max(rounds))
	return fmt.Sprintf("%s (%s–%s)", s, strings.TrimSuffix(lo, "×"), strings.TrimSuffix(hi, "×"))
}

// ratioString formats a ratio; one far below 1 reads better as 1/N.
func ratioString(x float64) string {
	switch {
	case x <= 0 || math.IsNaN(x) || math.IsInf(x, 0):
		return "n/a"
	case x < 0.1:
		return "1/" + num(1/x) + "×"
	case x >= 100:
		return num(x) + "×"
	}
	return fmt.Sprintf("%.2f×", x)
}

// writeTables prints the report as Markdown tables.
func (r *report) writeTables(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "vrouter vs kernel (host-gw + kube-proxy iptables), seed cluster in network namespaces, MTU 1500 underlay.\n")
	fmt.Fprintf(w, "Machine: %d CPUs, %s, Linux %s, %s, %s, iperf %s; load average %.2f at start, %.2f at end.\n",
		m.CPUs, m.CPUModel, m.Kernel, m.Go, m.Iptables, m.Iperf3, m.LoadStart[0], m.LoadEnd[0])
	fmt.Fprintf(w, "Run: %s, %d interleaved round(s), %v per iperf3 run, %v per HTTP run, median of rounds; took %.0f s. Commit %s.\n",
		r.Run, r.Rounds, time.Duration(r.RunSecs*float64(time.Second)), time.Duration(r.HTTPSecs*float64(time.Second)), r.Seconds, orNA(m.Commit))
	if r.Rounds > 1 {
		fmt.Fprintf(w, "Ratios are of the medians; in brackets, the lowest and highest of the rounds' own ratios (each round's value ÷ the same round's baseline).\n")
	}
	fmt.Fprintln(w)

	proxyHead := "vrouter-proxy"
	fmt.Fprintf(w, "| measurement | unit | kernel | vrouter (nat) | vrouter ÷ kernel | %s | proxy ÷ kernel |\n", proxyHead)
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|\n")
	for _, d := range tableMetrics {
		mt, ok := r.metric(d.key)
		kernel, nat, proxy := "n/a", "n/a", "n/a"
		var rt, prt string
		if ok {
			if s, ok := mt.Modes[modeKernel]; ok {
				kernel = num(s.Median)
			}
			if s, ok := mt.Modes[modeNAT]; ok {
				nat = num(s.Median)
			}
			if s, ok := mt.Modes[modeProxy]; ok {
				proxy = num(s.Median)
			}
			rt, prt = ratioRange(mt.Ratio, mt.RatioRounds), ratioRange(mt.ProxyRatio, mt.ProxyRatioRounds)
			if strings.Contains(d.key, "loss") || d.unit == "per 100" {
				rt, prt = "", "" // a ratio of near-zero losses means nothing
			}
		}
		if strings.HasPrefix(d.key, "rss_mib_") || strings.HasPrefix(d.key, "conn_") {
			kernel = "in kernel"
		}
		if proxy == "n/a" && r.Proxy == "measured" && !slices.Contains([]string{"http_close_per_s", "http_keepalive_per_s"}, d.key) && !strings.HasPrefix(d.key, "rss_") && !strings.HasPrefix(d.key, "conn_") {
			proxy = "= nat"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", d.label, d.unit, kernel, nat, rt, proxy, prt)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "¹ kernel: the whole machine's system+irq+softirq time, so it includes both iperf3 endpoints' TCP stacks and every other process's kernel time; vrouter: the two vrouter processes' utime+stime only (their system calls included; softirq work the kernel does for their sockets and TUN is not).")
	fmt.Fprintln(w, "² the whole machine, for both modes: endpoints, routers, kernel, and anything else running on the box. Divided by the bytes iperf3 sent.")
	if c, ok := r.metric("conn_count"); ok {
		var parts []string
		for _, md := range []mode{modeNAT, modeProxy} {
			if s, ok := c.Modes[md]; ok {
				parts = append(parts, fmt.Sprintf("%s %s", md, thousands(fmt.Sprint(int(s.Median)))))
			}
		}
		fmt.Fprintf(w, "⁴ first round only: idle connections from %s to my-service (one HTTP exchange each, then left open; tracked: %s), the router's memory read from its /metrics just after a garbage collection before and after opening them, divided by the connections it tracked (nat flows, proxied connections). The kernel keeps a conntrack entry per connection in its nf_conntrack slab (about 0.3 KiB).\n", httpClientPod, strings.Join(parts, ", "))
	}
	if _, ok := r.metric("nodeport_close_per_s"); ok {
		fmt.Fprintf(w, "⁵ my-service's node port %d on %s's address %v, loaded from %s (a host on the underlay that is not a node) by the ClusterIP rows' load generator. kernel: kube-proxy's NodePort rules (KUBE-NODEPORTS, KUBE-EXT masquerade mark, KUBE-SVC, KUBE-SEP DNAT); vrouter: the router's host listener on the node relays each connection to an endpoint it dials from the node, in either mode (\"= nat\").\n",
			myNodePort, masterNode, masterNodePort.Addr(), outsideClient)
	}
	if _, ok := r.metric("egress_close_per_s"); ok {
		fmt.Fprintf(w, "⁶ a server at %v on %s (a host on the underlay that is not a node), which the nodes route via it; clients %s (TCP, iperf3; down: -R) and %s (HTTP). kernel: flannel's masquerade rules (RETURN inside 10.244.0.0/16, MASQUERADE otherwise); vrouter: egress.masquerade, which terminates the pod's connection in the router and dials the server from the node. Sustained: wrk again for %v at once after the first run (on the kernel bed, after its run with more generator), when every port toward the server has been used and the server holds each last use in TIME_WAIT; SYNs retransmitted are the client pod's and the node's (whose sockets vrouter dials from), PAWS drops the server's (TcpExtPAWSTimewait), both per 100 connections the server opened (Tcp PassiveOpens).\n",
			egressServer, outsideClient, clientPod, httpClientPod, time.Duration(r.SustainedSecs*float64(time.Second)))
	}
	r.writeEndpoints(w)
	r.writeLowLatency(w)
	r.writeEncrypted(w)
	if len(r.Anchored) > 0 {
		fmt.Fprintf(w, "\n| egress against the userspace anchor; targets vrouter ≥ 0.5× kernel, ≥ 3× slirp4netns ⁷ | unit | kernel MASQUERADE | vrouter | slirp4netns | vrouter ÷ kernel | vrouter ÷ slirp4netns |\n")
		fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|\n")
		val := func(x *float64) string {
			if x == nil {
				return "n/a"
			}
			return num(*x)
		}
		for _, a := range r.Anchored {
			rk := ""
			if a.Kernel != nil && a.VRouter != nil && *a.Kernel > 0 && a.Unit != "per 100" {
				x := *a.VRouter / *a.Kernel
				rk = ratioRange(&x, a.RatioKernelRounds)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", a.Label, a.Unit, val(a.Kernel), val(a.VRouter), val(a.Slirp4netns), rk, ratioRange(a.RatioSlirp, a.RatioSlirpRounds))
		}
		fmt.Fprintf(w, "\n⁷ the same loads as ⁶, from a pod namespace whose only way out is slirp4netns %s (%s, as rootless Podman runs it), on the kernel bed's %s, measured in the same rounds; its HTTP server is a second nginx on %s at %v, so that the TIME_WAIT the kernel's masqueraded connections leave at %v never meets its connections.\n",
			orNA(slirpVersion()), strings.Join(slirpArgs(0)[:len(slirpArgs(0))-2], " "), masterNode, outsideClient, slirpServer, egressServer)
	}
	if r.Anchor != "measured" && r.Anchor != "" {
		fmt.Fprintf(w, "Egress through slirp4netns (the userspace anchor): n/a (%s).\n", r.Anchor)
	}
	if r.Egress != "measured" && r.Egress != "" {
		fmt.Fprintf(w, "Egress on vrouter: n/a (%s).\n", r.Egress)
	}
	if r.NodePort != "measured" {
		fmt.Fprintf(w, "NodePort on vrouter: n/a (%s).\n", r.NodePort)
	}
	if r.Proxy != "measured" {
		fmt.Fprintf(w, "vrouter-proxy: n/a (%s).\n", r.Proxy)
	} else {
		fmt.Fprintln(w, "vrouter-proxy: my-service in proxy mode; pod-to-pod traffic takes the same path as in nat mode (\"= nat\").")
	}

	if k, v := r.Control.Kernel, r.Control.VRouter; k != nil || v != nil {
		n, per := 0, 0
		if v != nil {
			n, per = v.Services, v.Endpoints
		} else {
			n, per = k.Services, k.Endpoints
		}
		fmt.Fprintf(w, "\n| control plane, %s Services × %d endpoints | kernel (kube-proxy iptables-restore) | vrouter (lb.Table) | vrouter ÷ kernel |\n", thousands(fmt.Sprint(n)), per)
		fmt.Fprintf(w, "|---|--:|--:|--:|\n")
		row := func(label string, kf, vf func(*controlResult) float64) {
			ks, vs, rs := "n/a", "n/a", ""
			var kv, vv float64
			if k != nil {
				kv = kf(k)
				ks = num(kv) + " ms"
			}
			if v != nil {
				vv = vf(v)
				vs = num(vv) + " ms"
			}
			if k != nil && v != nil && kv > 0 {
				rs = ratioString(vv / kv)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", label, ks, vs, rs)
		}
		row("program the table from empty", func(c *controlResult) float64 { return c.BuildMS }, func(c *controlResult) float64 { return c.BuildMS })
		row("re-apply it unchanged (full resync)", func(c *controlResult) float64 { return c.ResyncMS }, func(c *controlResult) float64 { return c.ResyncMS })
		row("one endpoint change, p50", func(c *controlResult) float64 { return c.ChangeP50MS }, func(c *controlResult) float64 { return c.ChangeP50MS })
		row("one endpoint change, p99", func(c *controlResult) float64 { return c.ChangeP99MS }, func(c *controlResult) float64 { return c.ChangeP99MS })
		kc, vc, rules, heap := "n/a", "n/a", "", "n/a"
		if k != nil {
			kc, rules = fmt.Sprint(k.Changes), fmt.Sprintf("; %s rules via %s", thousands(fmt.Sprint(k.Rules)), k.RestoreBinary)
		}
		if v != nil {
			vc, heap = fmt.Sprint(v.Changes), fmt.Sprintf("%.1f MiB", v.HeapMiB)
		}
		fmt.Fprintf(w, "| memory | not measured | %s | |\n", heap)
		fmt.Fprintf(w, "\nChanges timed: kernel %s (kube-proxy's partial sync: KUBE-SERVICES rewritten, one KUBE-SVC chain, one KUBE-SEP chain deleted, `iptables-restore --noflush`), vrouter %s (`lb.Table.Upsert`)%s.\n", kc, vc, rules)
	}

	if len(r.Forwarding) == 2 {
		a, b := r.Forwarding[0], r.Forwarding[1]
		fmt.Fprintf(w, "\n| in-memory forwarding, router.Router, 64 B UDP (tuntest → overlaytest) | %d routes | %s routes | %s ÷ %d |\n",
			a.Routes, thousands(fmt.Sprint(b.Routes)), thousands(fmt.Sprint(b.Routes)), a.Routes)
		fmt.Fprintf(w, "|---|--:|--:|--:|\n")
		fr := func(label string, x, y float64) {
			rs := ""
			if x > 0 {
				rs = ratioString(y / x)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", label, num(x), num(y), rs)
		}
		fr("wall ns per packet", a.NsPerPacket, b.NsPerPacket)
		fr("CPU ns per packet (whole process)", a.CPUNsPerPacket, b.CPUNsPerPacket)
		fr("allocations per packet ³", a.AllocsPerPacket, b.AllocsPerPacket)
		fr("bytes allocated per packet ³", a.BytesAllocPerPkt, b.BytesAllocPerPkt)
		if a.Profile != "" {
			fr("of which route lookup, CPU ns per packet (gVisor FindRoute, profiled)", a.RouteLookupNsPerPacket, b.RouteLookupNsPerPacket)
		}
		fmt.Fprintln(w, "\n³ includes the test fakes' own copy of each datagram (overlaytest: one allocation per packet).")
	}

	if len(r.Profile) > 0 {
		where := "profiles in " + r.ProfileDir
		if r.Run == "smoke" {
			where = "a smoke run's profiles are not kept"
		}
		fmt.Fprintf(w, "\nProfile of the forwarding path (in-process router on %s, iperf3 TCP 1 stream, CPU profile of user+system time; %s):\n\n", masterNode, where)
		fmt.Fprintf(w, "| where the CPU goes |")
		for _, p := range r.Profile {
			fmt.Fprintf(w, " %s: ns/packet (share) |", p.Direction)
		}
		fmt.Fprintf(w, "\n|---|")
		for range r.Profile {
			fmt.Fprintf(w, "--:|")
		}
		fmt.Fprintln(w)
		names := slices.Clone(categories)
		for _, p := range r.Profile {
			for _, s := range p.Inclusive {
				names = append(names, "(incl.) "+s.Name)
			}
		}
		seen := map[string]bool{}
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			var cells []string
			any := false
			for _, p := range r.Profile {
				cell := ""
				for _, s := range slices.Concat(p.Categories, prefixed(p.Inclusive)) {
					if s.Name == name {
						cell = fmt.Sprintf("%s (%.0f%%)", num(s.NsPerPacket), s.Percent)
						any = true
					}
				}
				cells = append(cells, cell)
			}
			if any {
				fmt.Fprintf(w, "| %s | %s |\n", name, strings.Join(cells, " | "))
			}
		}
		for _, p := range r.Profile {
			fmt.Fprintf(w, "\n%s: %.2f Gbit/s, %s packets into the router, %.0f CPU ns/packet (%.2f CPU s in %.1f s), %.1f allocations and %.0f bytes per packet, %d GCs.\n",
				p.Direction, p.Gbps, thousands(fmt.Sprint(p.Packets)), p.NsPerPacket, p.CPUSeconds, p.Seconds, p.AllocsPerPacket, p.BytesPerPacket, p.GCs)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "\nErrors (%d):\n", len(r.Errors))
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- %s\n", e)
		}
	}
}

// endpointRows are the loads whose endpoints' CPU the endpoints table
// shows: iperf3's client and server (its own -J figures, the whole
// machine's view of each process), and wrk's and the nginx servers' CPU
// time over the run (endpoints.go). more is the rate the kernel reached
// with more generator (HTTP rows).
var endpointRows = []struct{ label, client, server, rate, more string }{
	{"pod→pod TCP, 1 stream (iperf3)", "tcp_client_cpu_pct_1", "tcp_server_cpu_pct_1", "tcp_gbps_1", ""},
	{"pod→pod TCP, 4 streams (iperf3)", "tcp_client_cpu_pct_4", "tcp_server_cpu_pct_4", "tcp_gbps_4", ""},
	{"UDP 64 B (iperf3)", "udp_client_cpu_pct_64", "udp_server_cpu_pct_64", "udp_kpps_64", ""},
	{"UDP 1400 B (iperf3)", "udp_client_cpu_pct_1400", "udp_server_cpu_pct_1400", "udp_kpps_1400", ""},
	{"ClusterIP new connections (wrk → 3 nginx)", "http_close_client_cpu_pct", "http_close_server_cpu_pct", "http_close_per_s", "http_close_per_s_more"},
	{"ClusterIP keep-alive (wrk → 3 nginx)", "http_keepalive_client_cpu_pct", "http_keepalive_server_cpu_pct", "http_keepalive_per_s", "http_keepalive_per_s_more"},
	{"NodePort new connections (wrk → 3 nginx)", "nodeport_close_client_cpu_pct", "nodeport_close_server_cpu_pct", "nodeport_close_per_s", "nodeport_close_per_s_more"},
	{"NodePort keep-alive (wrk → 3 nginx)", "nodeport_keepalive_client_cpu_pct", "nodeport_keepalive_server_cpu_pct", "nodeport_keepalive_per_s", "nodeport_keepalive_per_s_more"},
	{"pod→outside new connections (wrk → nginx)", "egress_close_client_cpu_pct", "egress_close_server_cpu_pct", "egress_close_per_s", "egress_close_per_s_more"},
}

// writeEndpoints prints what the endpoints cost: a baseline whose client
// or server is at 100% of a core, or that rises with more generator, is
// bound by its endpoints, not by the kernel's data path.
func (r *report) writeEndpoints(w io.Writer) {
	median := func(key string, md mode) (float64, bool) {
		vs := r.samples[key][md]
		if len(vs) == 0 {
			return 0, false
		}
		return summarize(vs).Median, true
	}
	cell := func(key string, md mode) string {
		if v, ok := median(key, md); ok {
			return num(v)
		}
		return "n/a"
	}
	printed := false
	for _, row := range endpointRows {
		if _, ok := median(row.rate, modeKernel); !ok {
			continue
		}
		if !printed {
			fmt.Fprintf(w, "\n| endpoints' CPU ⁹ | kernel: client %% | kernel: server %% | kernel with more generator ÷ kernel | vrouter: client %% | vrouter: server %% |\n")
			fmt.Fprintf(w, "|---|--:|--:|--:|--:|--:|\n")
			printed = true
		}
		more := ""
		if row.more != "" {
			k, ok1 := median(row.rate, modeKernel)
			m, ok2 := median(row.more, modeKernel)
			if ok1 && ok2 && k > 0 {
				more = ratioString(m / k)
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", row.label, cell(row.client, modeKernel), cell(row.server, modeKernel), more, cell(row.client, modeNAT), cell(row.server, modeNAT))
	}
	if printed {
		fmt.Fprintf(w, "\n⁹ %% of one core over the run. iperf3: its own figures (-J cpu_utilization_percent; 3.12 runs every stream on one thread). wrk %s: -t%d -c%d; \"more generator\" runs it again on the kernel bed with -t%d -c%d — a ratio near 1.00× says the baseline was not bound by its generator. Servers: nginx %s, one process each (master_process off, access_log off), the CPU of all of a load's nginx processes summed.\n",
			orNA(r.Machine.Wrk), r.HTTPThreads, r.HTTPConns, 2*r.HTTPThreads, 4*r.HTTPConns, orNA(r.Machine.Nginx))
	}
}

// lowLatencyRows are the rows of the busy-polling router's table.
var lowLatencyRows = []metricDef{
	{"icmp_p50_us", "ICMP echo RTT p50, back-to-back", "µs", true},
	{"icmp_sparse_p50_us", "ICMP echo RTT p50, one every 5 ms; target busy-poll ≤ 2×", "µs", true},
	{"icmp_sparse_p99_us", "ICMP echo RTT p99, one every 5 ms", "µs", true},
	{"tcprr_p50_us", "TCP 64 B request/response RTT p50 (sockperf)", "µs", true},
	{"tcprr_p99_us", "TCP 64 B request/response RTT p99 (sockperf)", "µs", true},
	{"icmp_sparse_router_cpu_pct", "both routers' CPU while the echoes run (one every 5 ms)", "% of a core", true},
	{"router_idle_cpu_pct", "both routers' CPU at rest", "% of a core", true},
	{"tcp_gbps_1", "pod→pod TCP, 1 stream", "Gbit/s", false},
	{"udp_kpps_64", "UDP 64 B payload, received", "kpps", false},
}

// writeLowLatency prints the opt-in low-latency router's table, when its
// bed was measured.
func (r *report) writeLowLatency(w io.Writer) {
	if mt, ok := r.metric("tcprr_p50_us"); !ok || mt.Modes[modeBusyPoll].Samples == nil {
		return
	}
	fmt.Fprintf(w, "\n| opt-in low latency: router.busyPoll %s ¹⁰ | unit | kernel | vrouter | vrouter, busy-polling | vrouter ÷ kernel | busy-polling ÷ kernel |\n", busyPollWindow)
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|\n")
	for _, d := range lowLatencyRows {
		mt, _ := r.metric(d.key)
		cell := func(m mode) (string, float64) {
			if s, ok := mt.Modes[m]; ok {
				return num(s.Median), s.Median
			}
			if strings.Contains(d.key, "cpu") && m == modeKernel {
				return "in kernel", math.NaN()
			}
			return "n/a", math.NaN()
		}
		k, kv := cell(modeKernel)
		v, vv := cell(modeNAT)
		b, bv := cell(modeBusyPoll)
		rv, rb := "", ""
		if kv > 0 {
			rv, rb = ratioString(vv/kv), ratioString(bv/kv)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", d.label, d.unit, k, v, b, rv, rb)
	}
	fmt.Fprintf(w, "\n¹⁰ a fourth copy of the cluster whose routers run with router.busyPoll %s: after each packet a router keeps reading its TUN and overlay socket, without waiting, for that long (yielding the CPU between reads), then waits in poll(2). Measured in the same rounds as the rest; its CPU is both routers' utime+stime, in %% of one core, during the sparse echoes and while nothing crosses them.\n", busyPollWindow)
}

// writeEncrypted prints the encrypted-overlay table, when the encrypted
// bed or its baseline was measured.
func (r *report) writeEncrypted(w io.Writer) {
	measured := false
	for _, d := range encryptedRows {
		if mt, ok := r.metric(d.key); ok {
			_, a := mt.Modes[modeWG]
			_, b := mt.Modes[modeKernelWG]
			measured = measured || a || b
		}
	}
	if !measured {
		if r.WireGuardGo != "measured" && r.WireGuardGo != "" {
			fmt.Fprintf(w, "Kernel routes over wireguard-go: n/a (%s).\n", r.WireGuardGo)
		}
		return
	}
	kernelWG := "n/a" // not measured: see the line below the table
	fmt.Fprintf(w, "\n| encrypted overlay ⁸ | unit | kernel routes + wireguard-go | vrouter (plain) | vrouter (wireguard) | wireguard ÷ wireguard-go | wireguard ÷ plain | kernel WireGuard |\n")
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, d := range encryptedRows {
		mt, _ := r.metric(d.key)
		cell := func(m mode) string {
			if s, ok := mt.Modes[m]; ok {
				return num(s.Median)
			}
			return "n/a"
		}
		rg, rp := ratioRange(mt.WGRatioWGGo, mt.WGRatioWGGoRounds), ratioRange(mt.WGRatioPlain, mt.WGRatioPlainRounds)
		if strings.Contains(d.key, "loss") {
			rg, rp = "", ""
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", d.label, d.unit, cell(modeKernelWG), cell(modeNAT), cell(modeWG), rg, rp, kernelWG)
	}
	wgv := ""
	if r.Machine.WireGuardGo != "" {
		wgv = " " + r.Machine.WireGuardGo
	}
	fmt.Fprintf(w, "\n⁸ the same pods and Services on a third and fourth copy of the cluster. kernel routes + wireguard-go: on each node wireguard-go%s (built from golang.zx2c4.com/wireguard, whose device its tests interoperate with) makes a TUN interface, MTU %d, that wg gives the other node as its one peer (allowed IPs its pod CIDR, UDP port %d), the node kernel routes the peer's pod CIDR into it, and kube-proxy's iptables chains serve the Services, as on the kernel bed; vrouter (wireguard): overlay.encryption wireguard, each peer's public key in the config file. CPU per GB: the two wireguard-go processes' utime+stime against the two vrouter processes'.\n", wgv, wgGoMTU, wgGoPort)
	if r.WireGuardGo != "measured" && r.WireGuardGo != "" {
		fmt.Fprintf(w, "Kernel routes over wireguard-go: n/a (%s).\n", r.WireGuardGo)
	}
	if r.KernelWireGuard != "" {
		fmt.Fprintf(w, "Kernel WireGuard: n/a (%s).\n", r.KernelWireGuard)
	}
}

func prefixed(ss []profileShare) []profileShare {
	out := make([]profileShare, len(ss))
	for i, s := range ss {
		s.Name = "(incl.) " + s.Name
		out[i] = s
	}
	return out
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
