//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// params size the measurements; see fullParams and smokeParams.
type params struct {
	rounds  int
	dur     time.Duration // each iperf3 run
	httpDur time.Duration // each HTTP run
	// sustainedDur is egress-close's second run (measureEgressClose).
	sustainedDur time.Duration
	pings        int
	// sparsePings are sent one every sparsePingInterval (icmp-sparse).
	sparsePings int
	// idleDur is how long idle-cpu watches the idle routers.
	idleDur     time.Duration
	rrDur       time.Duration
	httpConns   int // wrk's connections
	httpThreads int // wrk's threads
	lbServices  int // control plane: Services × lbEndpoints
	lbEndpts    int
	lbChanges   int // Upserts timed
	iptChanges  int // kube-proxy partial syncs timed
	fwdPackets  int // in-memory forwarding: packets per route count
	profileDur  time.Duration
	idleConns   int // conn-mem: idle connections held open
	// only, when set, names the data-path measurements to run.
	only map[string]bool
	// routerArgs are added to every `vrouter run`.
	routerArgs []string
	// modes, when set, names the data paths to build and measure.
	modes map[mode]bool
	// wireguardGo is the --wireguard-go binary, if given.
	wireguardGo string
}

func (p params) selected(name string) bool { return p.only == nil || p.only[name] }

// mode reports whether the data path m is to be built and measured.
func (p params) mode(m mode) bool { return p.modes == nil || p.modes[m] }

// allModes are the data paths, in the order they are built and measured.
var allModes = []mode{modeKernel, modeNAT, modeProxy, modeKernelWG, modeWG, modeBusyPoll}

func modeNames(ms []mode) []string {
	var ns []string
	for _, m := range ms {
		ns = append(ns, string(m))
	}
	return ns
}

func measurementNames() []string {
	var ns []string
	for _, m := range measurements {
		ns = append(ns, m.name)
	}
	return ns
}

var fullParams = params{
	rounds: 3, dur: 4 * time.Second, httpDur: 4 * time.Second, sustainedDur: 20 * time.Second, pings: 1000, sparsePings: 400, idleDur: 3 * time.Second, rrDur: 2 * time.Second, httpConns: 64, httpThreads: 2,
	lbServices: 10000, lbEndpts: 10, lbChanges: 1000, iptChanges: 3,
	fwdPackets: 200000, profileDur: 6 * time.Second, idleConns: 2000,
}

var smokeParams = params{
	rounds: 1, dur: time.Second, httpDur: 2 * time.Second, sustainedDur: 2 * time.Second, pings: 100, sparsePings: 100, idleDur: time.Second, rrDur: 500 * time.Millisecond, httpConns: 64, httpThreads: 2,
	lbServices: 1000, lbEndpts: 10, lbChanges: 100, iptChanges: 2,
	fwdPackets: 20000, profileDur: time.Second, idleConns: 200,
}

// sparsePingInterval spaces the sparse echoes: a health check or an
// interactive session sends far less often, and a router idles between.
const sparsePingInterval = 5 * time.Millisecond

// measurement is one data-path test, run once per round on each of its
// modes (only in the first round if firstRoundOnly says so); it returns
// values keyed by metric.
type measurement struct {
	name  string
	modes []mode
	run   func(ctx context.Context, b *bed, p params) (map[string]float64, error)
}

// appliesTo reports whether m runs on b.
func (m measurement) appliesTo(b *bed) bool {
	return containsMode(m.modes, b.mode) && (!nodePortMeasurements[m.name] || b.nodePorts) &&
		(!egressMeasurementSet[m.name] || b.egress) && (!slirpMeasurementSet[m.name] || b.slirp != nil)
}

// firstRoundOnly names the measurements taken in the first round only.
var firstRoundOnly = map[string]bool{"conn-mem": true}

// nodePortMeasurements name the measurements taken only on beds whose
// my-service has a node port (see nodePortAvailable).
var nodePortMeasurements = map[string]bool{"nodeport-close": true, "nodeport-keepalive": true}

var (
	podModes      = []mode{modeKernel, modeNAT, modeKernelWG, modeWG}            // proxy mode forwards pods exactly as nat mode
	nodePortModes = []mode{modeKernel, modeNAT}                                  // vrouter relays node ports from host sockets in either mode
	serviceModes  = []mode{modeKernel, modeNAT, modeProxy, modeKernelWG, modeWG} // ClusterIP traffic differs per mode
	routerModes   = []mode{modeNAT, modeProxy}                                   // what a router process holds
	egressModes   = []mode{modeKernel, modeNAT}                                  // masquerading does not cross the overlay
	// latencyModes add the opt-in low-latency router to podModes.
	latencyModes = append(slices.Clone(podModes), modeBusyPoll)
	// pacedModes offer UDP at one rate to the kernel and vrouter.
	pacedModes = []mode{modeKernel, modeNAT}
	// idleModes are the router beds whose idle CPU is measured.
	idleModes = []mode{modeNAT, modeWG, modeBusyPoll}
)

var measurements = []measurement{
	// conn-mem goes first, in the first round only: connections closed by
	// later measurements linger (nat flows 10 s, proxied ones in gVisor's
	// TIME_WAIT for a minute) and would be freed while it measures.
	{"conn-mem", routerModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureConnMemory(ctx, b, p.idleConns)
	}},
	{"tcp-1", latencyModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureTCP(ctx, b, 1, p.dur)
	}},
	{"tcp-4", podModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureTCP(ctx, b, 4, p.dur)
	}},
	{"udp-64", latencyModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureUDP(ctx, b, 64, p.dur)
	}},
	{"udp-1400", podModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureUDP(ctx, b, 1400, p.dur)
	}},
	{"udp-64-paced", pacedModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measurePacedUDP(ctx, b, 64, pacedPPS, p.dur)
	}},
	{"udp-1400-paced", pacedModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measurePacedUDP(ctx, b, 1400, pacedPPS, p.dur)
	}},
	{"idle-cpu", idleModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureIdleCPU(ctx, b, p.idleDur)
	}},
	{"icmp", latencyModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measurePing(b, p.pings)
	}},
	{"icmp-sparse", latencyModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureSparsePing(ctx, b, p.sparsePings, sparsePingInterval)
	}},
	{"tcp-rr", latencyModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureRR(ctx, b, p.rrDur)
	}},
	{"http-close", serviceModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureHTTP(ctx, b, clusterIPLoad, false, p.httpThreads, p.httpConns, p.httpDur)
	}},
	{"http-keepalive", serviceModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureHTTP(ctx, b, clusterIPLoad, true, p.httpThreads, p.httpConns, p.httpDur)
	}},
	{"nodeport-close", nodePortModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		if b.nodePortErr != nil {
			return nil, b.nodePortErr
		}
		return measureHTTP(ctx, b, nodePortLoad, false, p.httpThreads, p.httpConns, p.httpDur)
	}},
	{"nodeport-keepalive", nodePortModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		if b.nodePortErr != nil {
			return nil, b.nodePortErr
		}
		return measureHTTP(ctx, b, nodePortLoad, true, p.httpThreads, p.httpConns, p.httpDur)
	}},
	{"egress-tcp", egressModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureEgressTCP(ctx, b, p.dur)
	}},
	{"egress-close", egressModes, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureEgressClose(ctx, b, p, egressLoad)
	}},
	// The userspace anchor (anchor.go), on the kernel bed's node.
	{"egress-slirp4netns-tcp", []mode{modeKernel}, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureSlirpTCP(ctx, b, p.dur)
	}},
	{"egress-slirp4netns-close", []mode{modeKernel}, func(ctx context.Context, b *bed, p params) (map[string]float64, error) {
		return measureEgressClose(ctx, b, p, slirpLoad)
	}},
}

// iperfReport is the part of `iperf3 -J` output the benchmark reads.
type iperfReport struct {
	End struct {
		SumSent     iperfSum `json:"sum_sent"`
		SumReceived iperfSum `json:"sum_received"`
		CPU         struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

type iperfSum struct {
	Seconds     float64 `json:"seconds"`
	Bytes       float64 `json:"bytes"`
	BitsPerSec  float64 `json:"bits_per_second"`
	Packets     float64 `json:"packets"`
	LostPackets float64 `json:"lost_packets"`
}

// iperf runs an iperf3 client in clientPod against serverPod's server,
// once more after a short pause if the server was still busy with the
// previous test.
func iperf(ctx context.Context, b *bed, dur time.Duration, args ...string) (iperfReport, error) {
	argv := append([]string{"-c", serverAddr.String(), "-p", fmt.Sprint(iperfPort), "-J",
		"-t", fmt.Sprint(int(math.Ceil(dur.Seconds())))}, args...)
	var rep iperfReport
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		cctx, cancel := context.WithTimeout(ctx, dur+20*time.Second)
		out, runErr := b.c.CommandContext(cctx, clientPod, "iperf3", argv...).Output()
		cancel()
		rep = iperfReport{}
		jerr := json.Unmarshal(out, &rep)
		switch {
		case jerr == nil && rep.Error == "" && runErr == nil:
			return rep, nil
		case jerr == nil && rep.Error != "":
			err = fmt.Errorf("iperf3 %s: %s", strings.Join(argv, " "), rep.Error)
		case runErr != nil:
			err = fmt.Errorf("iperf3 %s: %w", strings.Join(argv, " "), runErr)
		default:
			err = fmt.Errorf("iperf3 %s: parse output: %w", strings.Join(argv, " "), jerr)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return rep, err
}

// measureTCP runs iperf3 with streams parallel TCP streams from clientPod
// to serverPod and reports the throughput and the CPU time it cost.
func measureTCP(ctx context.Context, b *bed, streams int, dur time.Duration) (map[string]float64, error) {
	cpu0, err := readCPUStat()
	if err != nil {
		return nil, err
	}
	r0, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	l0, err := b.uplinkTX()
	if err != nil {
		return nil, err
	}
	rep, err := iperf(ctx, b, dur, "-P", fmt.Sprint(streams))
	if err != nil {
		return nil, err
	}
	cpu1, err := readCPUStat()
	if err != nil {
		return nil, err
	}
	r1, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	l1, err := b.uplinkTX()
	if err != nil {
		return nil, err
	}
	rx := rep.End.SumReceived
	if rx.Bytes <= 0 || rx.Seconds <= 0 {
		return nil, fmt.Errorf("iperf3 -P %d: nothing received", streams)
	}
	// CPU is taken over the whole client run, so divide by every byte
	// the client sent (all of it received: TCP).
	gb := rep.End.SumSent.Bytes / 1e9
	if gb <= 0 {
		gb = rx.Bytes / 1e9
	}
	d := cpu1.sub(cpu0)
	sfx := fmt.Sprintf("_%d", streams)
	m := map[string]float64{
		"tcp_client_cpu_pct" + sfx:        rep.End.CPU.HostTotal,
		"tcp_server_cpu_pct" + sfx:        rep.End.CPU.RemoteTotal,
		"tcp_gbps" + sfx:                  rx.BitsPerSec / 1e9,
		"cpu_machine_kernel_per_gb" + sfx: d.sysSoftirq() / gb,
		"cpu_machine_busy_per_gb" + sfx:   d.busy() / gb,
	}
	if pk := l1.packets - l0.packets; pk > 0 {
		m["underlay_bytes_per_packet"+sfx] = float64(l1.bytes-l0.bytes) / float64(pk)
	}
	if b.mode == modeKernel {
		m["cpu_per_gb"+sfx] = d.sysSoftirq() / gb
	} else {
		m["cpu_per_gb"+sfx] = (r1 - r0) / gb
	}
	return m, nil
}

// pacedPPS is the paced UDP rows' offered load: below what iperf3's
// sender reaches on either data path, so both are offered the same.
const pacedPPS = 50000

// measurePacedUDP offers pps datagrams of size payload bytes a second
// from clientPod to serverPod (iperf3 -b, which sends them in bursts of
// a millisecond's worth) and reports the rate received and the loss: the
// same offered load on every data path.
func measurePacedUDP(ctx context.Context, b *bed, size, pps int, dur time.Duration) (map[string]float64, error) {
	rep, err := iperf(ctx, b, dur, "-u", "-b", fmt.Sprint(pps*size*8), "-l", fmt.Sprint(size))
	if err != nil {
		return nil, err
	}
	rx := rep.End.SumReceived
	if rx.Seconds <= 0 || rx.Packets <= 0 {
		return nil, fmt.Errorf("iperf3 -u -b %d -l %d: no packets", pps*size*8, size)
	}
	sfx := fmt.Sprintf("_%d", size)
	return map[string]float64{
		"udp_paced_kpps" + sfx:         rx.Bytes / float64(size) / rx.Seconds / 1e3,
		"udp_paced_offered_kpps" + sfx: rx.Packets / rx.Seconds / 1e3,
		"udp_paced_loss_pct" + sfx:     100 * rx.LostPackets / rx.Packets,
	}, nil
}

// measureUDP sends UDP datagrams of size payload bytes from clientPod to
// serverPod as fast as iperf3 can and reports the rate received.
func measureUDP(ctx context.Context, b *bed, size int, dur time.Duration) (map[string]float64, error) {
	rep, err := iperf(ctx, b, dur, "-u", "-b", "10G", "-l", fmt.Sprint(size))
	if err != nil {
		return nil, err
	}
	rx := rep.End.SumReceived
	if rx.Seconds <= 0 || rx.Packets <= 0 {
		return nil, fmt.Errorf("iperf3 -u -l %d: no packets", size)
	}
	got := rx.Bytes / float64(size)
	sfx := fmt.Sprintf("_%d", size)
	// The offered load is what iperf3's client sent (-b 10G: as fast as
	// its one thread can), which the receiver counts as received + lost.
	return map[string]float64{
		"udp_kpps" + sfx:           got / rx.Seconds / 1e3,
		"udp_offered_kpps" + sfx:   rx.Packets / rx.Seconds / 1e3,
		"udp_loss_pct" + sfx:       100 * rx.LostPackets / rx.Packets,
		"udp_client_cpu_pct" + sfx: rep.End.CPU.HostTotal,
		"udp_server_cpu_pct" + sfx: rep.End.CPU.RemoteTotal,
	}, nil
}

// measurePing sends count ICMP echo requests, one after the other, from
// clientPod to serverPod.
func measurePing(b *bed, count int) (map[string]float64, error) {
	res, err := b.c.Ping(clientPod, serverAddr, count, time.Second)
	if err != nil {
		return nil, err
	}
	if res.Received < count*9/10 {
		return nil, fmt.Errorf("ping %s -> %v: %v; want at least 90%% answered", clientPod, serverAddr, res)
	}
	return map[string]float64{
		"icmp_p50_us": percentile(res.RTTs, 0.50),
		"icmp_p99_us": percentile(res.RTTs, 0.99),
	}, nil
}

// inNetnsGo runs fn on a new goroutine inside the namespace at path (see
// inNetns) and waits for it.
func inNetnsGo(path string, fn func() error) error {
	return workers(path, 1, func(int) error { return fn() })
}

// percentile returns the q-quantile of ds in microseconds (nearest rank).
func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i]) / float64(time.Microsecond)
}
