//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// namePrefix starts every namespace this program makes; runs are told
// apart by process ID ("vrbench-<pid>-k-hostgw-master").
const namePrefix = "vrbench-"

var selfPID = os.Getpid()

func main() {
	os.Exit(run())
}

func run() int {
	var (
		smoke      = flag.Bool("smoke", false, "short run (about a second per measurement, 1 round, 1,000 Services): checks that every measurement can still be taken")
		jsonPath   = flag.String("json", "", "also write the results as JSON to this file")
		bin        = flag.String("vrouter", "", "vrouter binary to benchmark (default: go build ./cmd/vrouter into a temporary directory)")
		rounds     = flag.Int("rounds", 0, "interleaved rounds (default 3, smoke 1)")
		dur        = flag.Duration("duration", 0, "length of each iperf3 and HTTP run (default 4s; smoke 1s, HTTP 2s)")
		profileDir = flag.String("profile-dir", "", "where to write CPU profiles (default: a new directory under $TMPDIR, kept except after --smoke)")
		noProfile  = flag.Bool("no-profile", false, "skip profiling the in-process router")
		noControl  = flag.Bool("no-control-plane", false, "skip the control-plane and in-memory forwarding benchmarks")
		keep       = flag.Bool("keep-logs", false, "keep the routers' configs and logs (printed at the end)")
		routerArgs = flag.String("router-args", "", "extra arguments for every `vrouter run`, space-separated (e.g. \"--log-level debug\")")
		httpGen    = flag.String("http-load", "", "wrk's threads and connections for the HTTP rows, as THREADS,CONNS (default 2,64: what the kernel baseline needs on 2 cores to be bound by the data path)")
		only       = flag.String("only", "", "run only these data-path measurements, comma-separated: "+strings.Join(measurementNames(), ","))
		modesFlag  = flag.String("modes", "", "build and measure only these data paths, comma-separated: "+strings.Join(modeNames(allModes), ",")+" (the in-process profile runs on the vrouter ones among them)")
		wgGo       = flag.String("wireguard-go", "", "wireguard-go binary of the "+string(modeKernelWG)+" baseline (default: .cache/bin/wireguard-go, which make wireguard-go builds, else on PATH)")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: go run ./integration/bench [flags]   (as root)\n\nBenchmarks vrouter against the kernel (flannel host-gw + kube-proxy iptables) on the seed's\ncluster in network namespaces, and prints the results as tables (see doc.go).\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	p := fullParams
	kind := "full"
	if *smoke {
		p, kind = smokeParams, "smoke"
	}
	if *rounds > 0 {
		p.rounds = *rounds
	}
	if *dur > 0 {
		p.dur, p.httpDur = *dur, *dur
	}
	if *httpGen != "" {
		t, c, ok := strings.Cut(*httpGen, ",")
		nt, err1 := strconv.Atoi(t)
		nc, err2 := strconv.Atoi(c)
		if !ok || err1 != nil || err2 != nil || nt < 1 || nc < nt {
			fmt.Fprintf(os.Stderr, "bench: --http-load %q: want THREADS,CONNS with 1 <= THREADS <= CONNS, e.g. 1,16\n", *httpGen)
			return 2
		}
		p.httpThreads, p.httpConns = nt, nc
	}
	if *only != "" {
		p.only = map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			if !slices.Contains(measurementNames(), n) {
				fmt.Fprintf(os.Stderr, "bench: --only %q: unknown measurement, want some of %s\n", n, strings.Join(measurementNames(), ","))
				return 2
			}
			p.only[n] = true
		}
	}
	if *modesFlag != "" {
		p.modes = map[mode]bool{}
		for _, n := range strings.Split(*modesFlag, ",") {
			if !slices.Contains(allModes, mode(n)) {
				fmt.Fprintf(os.Stderr, "bench: --modes %q: unknown data path, want some of %s\n", n, strings.Join(modeNames(allModes), ","))
				return 2
			}
			p.modes[mode(n)] = true
		}
	}
	p.wireguardGo = *wgGo

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	rep := newReport()
	rep.Run, rep.Started, rep.Rounds = kind, time.Now(), p.rounds
	rep.Machine = describeMachine()
	if err := preflight(&rep.Machine); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	// The work directory is named by this process, so that a later run
	// can tell a crashed run's (see cleanupStale).
	work, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", workPrefix, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if !*keep {
		defer os.RemoveAll(work)
	}
	if *bin == "" {
		*bin = filepath.Join(work, "vrouter")
		progress("building vrouter")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", *bin, "github.com/vrouter/vrouter/cmd/vrouter").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: go build ./cmd/vrouter: %v\n%s", err, out)
			return 2
		}
	}
	if err := cleanupStale(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: remove a previous run's namespaces:", err)
	}
	if err := cleanupStaleWireGuardGo(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: remove a previous run's wireguard-go sockets:", err)
	}

	if abs, err := filepath.Abs(*bin); err == nil {
		*bin = abs
	}
	if !*noProfile {
		if *profileDir == "" {
			*profileDir, err = os.MkdirTemp("", "vrouter-bench-profile-")
			if *smoke && err == nil {
				defer os.RemoveAll(*profileDir) // a smoke run's profiles are not worth keeping
			}
		} else {
			err = os.MkdirAll(*profileDir, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: profile directory:", err)
			return 2
		}
		rep.ProfileDir = *profileDir
	}

	p.routerArgs = strings.Fields(*routerArgs)
	rep.RunSecs, rep.HTTPSecs, rep.SustainedSecs = p.dur.Seconds(), p.httpDur.Seconds(), p.sustainedDur.Seconds()
	rep.HTTPThreads, rep.HTTPConns = p.httpThreads, p.httpConns
	failed := dataPlane(ctx, rep, p, *bin, work, rep.ProfileDir)
	if !*noControl && ctx.Err() == nil {
		failed = controlPlane(ctx, rep, p, rep.ProfileDir) || failed
	}
	if ctx.Err() != nil {
		rep.errorf("interrupted: %v", ctx.Err())
		failed = true
	}

	rep.Machine.LoadEnd = loadAvg()
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.finish()
	fmt.Println()
	rep.writeTables(os.Stdout)
	if *jsonPath != "" {
		if err := rep.writeJSON(*jsonPath); err != nil {
			fmt.Fprintln(os.Stderr, "bench: write JSON:", err)
			failed = true
		} else {
			fmt.Printf("\nJSON: %s\n", *jsonPath)
		}
	}
	if *keep {
		fmt.Printf("Configs, rules and logs: %s\n", work)
	}
	if failed {
		fmt.Fprintln(os.Stderr, "bench: FAILED: some measurements could not be taken (see the errors above)")
		return 1
	}
	return 0
}

// preflight checks privileges and tools, and notes their versions.
func preflight(m *machine) error {
	if err := topology.CanBuild(); err != nil {
		return err
	}
	for _, t := range []string{"iperf3", "nsenter", "go", "nginx", "wrk", "ping", "sockperf"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is required (make check-deps installs it): %w", t, err)
		}
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		if _, err2 := exec.LookPath("iptables-legacy-restore"); err2 != nil {
			return fmt.Errorf("iptables-restore is required for the kernel baseline: %w", err)
		}
	}
	if out, err := exec.Command("iptables", "-V").Output(); err == nil {
		m.Iptables = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("iperf3", "--version").Output(); err == nil {
		f := strings.Fields(string(out))
		if len(f) > 1 {
			m.Iperf3 = f[1]
		}
	}
	// nginx -v prints "nginx version: nginx/1.22.1" on stderr; wrk -v
	// "wrk 4.1.0 [epoll] …" and exits 1.
	if out, _ := exec.Command("nginx", "-v").CombinedOutput(); len(out) > 0 {
		if _, v, ok := strings.Cut(strings.TrimSpace(string(out)), "nginx/"); ok {
			m.Nginx = v
		}
	}
	if out, _ := exec.Command("wrk", "-v").CombinedOutput(); len(out) > 0 {
		if f := strings.Fields(string(out)); len(f) > 1 && f[0] == "wrk" {
			m.Wrk = f[1]
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
			m.Commit += "+dirty"
		}
	}
	return nil
}

// dataPlane builds the beds, runs the interleaved rounds, reads the
// routers' memory and, with a profileDir, profiles the forwarding path.
// It reports whether a measurement could not be taken at all.
func dataPlane(ctx context.Context, rep *report, p params, bin, work, profileDir string) bool {
	failed := false
	proxyOK, why := proxyAvailable(ctx, bin, work)
	rep.Proxy = "measured"
	if !proxyOK {
		rep.Proxy = why
		progress("proxy mode: n/a (%s)", why)
	}
	wgGo, why := wireGuardGoAvailable(ctx, p.wireguardGo)
	rep.WireGuardGo = "measured"
	if wgGo == "" {
		rep.WireGuardGo = why
		progress("the %s baseline: n/a (%s)", modeKernelWG, why)
	} else {
		rep.Machine.WireGuardGo = wireGuardGoVersion(wgGo)
	}
	var modes []mode
	for _, m := range allModes {
		if p.mode(m) && (m != modeProxy || proxyOK) && (m != modeKernelWG || wgGo != "") {
			modes = append(modes, m)
		}
	}
	nodePortOK, why := nodePortAvailable(ctx, bin, work)
	rep.NodePort = "measured"
	if !nodePortOK {
		rep.NodePort = why
		progress("NodePort on vrouter: n/a (%s)", why)
	}
	egressOK, why := egressAvailable(ctx, bin, work)
	rep.Egress = "measured"
	if !egressOK {
		rep.Egress = why
		progress("egress on vrouter: n/a (%s)", why)
	}
	slirpOK, why := slirpAvailable()
	rep.Anchor = "measured"
	if !slirpOK {
		rep.Anchor = why
		progress("the slirp4netns anchor: n/a (%s)", why)
	}
	spawn := newSpawner()
	defer spawn.stop() // registered first, so it runs after the beds are closed
	beds := map[mode]*bed{}
	defer func() {
		for _, m := range modes {
			if b := beds[m]; b != nil {
				if err := b.close(); err != nil {
					rep.errorf("clean up %s: %v", m, err)
				}
			}
		}
	}()
	tags := map[mode]string{modeKernel: "k", modeNAT: "v", modeProxy: "p", modeKernelWG: "w", modeWG: "e", modeBusyPoll: "b"}
	for _, m := range modes {
		progress("building the %s cluster", m)
		o := bedOptions{
			prefix:   fmt.Sprintf("%s%d-%s-", namePrefix, selfPID, tags[m]),
			dir:      filepath.Join(work, "bed-"+string(m)),
			vrouter:  bin,
			services: harness.SeedServices(""),
			spawn:    spawn,
			args:     p.routerArgs,
			egress:   m == modeKernel || (egressOK && m != modeKernelWG && m != modeWG && m != modeBusyPoll),
			slirp:    m == modeKernel && slirpOK,
		}
		switch {
		case m == modeBusyPoll:
			// Round trips only: the seed's Services, no node ports.
			o.busyPoll = busyPollWindow
		case m == modeKernelWG || m == modeWG:
			// The encrypted rows are pod to pod and ClusterIP: no node
			// ports, no egress.
			o.wireguardGo = wgGo
		case m == modeProxy:
			o.services = proxyServices()
		case m == modeKernel || nodePortOK:
			o.services, o.nodePorts = nodePortServices(), true
		}
		b, err := newBed(ctx, m, o)
		if err != nil {
			rep.errorf("%v", err)
			failed = true
			continue
		}
		beds[m] = b
		if b.slirpErr != nil {
			rep.Anchor = b.slirpErr.Error()
		}
	}
	rep.KernelWireGuard = "not checked"
	for _, m := range []mode{modeKernelWG, modeKernel, modeWG, modeNAT} {
		if b := beds[m]; b != nil {
			rep.KernelWireGuard = kernelWireGuard(ctx, b.c, masterNode)
			if rep.KernelWireGuard == "" {
				rep.KernelWireGuard = "this kernel has WireGuard, but the bench does not measure it yet"
			}
			progress("the kernel's WireGuard: n/a (%s)", rep.KernelWireGuard)
			break
		}
	}

	for round := range p.rounds {
		rep.round = round
		// Alternate which mode goes first, so drift and warm-up hit both.
		order := modes
		if round%2 == 1 {
			order = reversed(modes)
		}
		for _, ms := range measurements {
			for _, m := range order {
				b := beds[m]
				if b == nil || !ms.appliesTo(b) || !p.selected(ms.name) || (firstRoundOnly[ms.name] && round > 0) || ctx.Err() != nil {
					continue
				}
				vals, err := ms.run(ctx, b, p)
				if err != nil {
					rep.errorf("round %d %s on %s: %v", round+1, ms.name, m, err)
					continue
				}
				progress("round %d/%d %-14s %-13s %s", round+1, p.rounds, ms.name, m, brief(vals))
				for k, v := range vals {
					if !math.IsNaN(v) && !math.IsInf(v, 0) {
						rep.add(k, m, v)
					}
				}
			}
		}
	}
	// A measurement that got no value at all on a mode it applies to is a
	// failure; slow numbers never are.
	for _, ms := range measurements {
		for _, m := range ms.modes {
			if !containsMode(modes, m) || !p.selected(ms.name) {
				continue
			}
			if b := beds[m]; b != nil && !ms.appliesTo(b) {
				continue // no node ports (or egress) on this vrouter: rep.NodePort (rep.Egress) says why
			}
			if !hasSamples(rep, ms.name, m) {
				rep.errorf("%s on %s: no measurement could be taken", ms.name, m)
				failed = true
			}
		}
	}

	for _, m := range []mode{modeNAT, modeProxy, modeWG, modeBusyPoll} {
		b := beds[m]
		if b == nil {
			continue
		}
		for i, pid := range b.pids {
			rss, hwm, err := procMemory(pid)
			if err != nil {
				rep.errorf("memory of the %s router on %s: %v", m, b.routers[i].Node, err)
				failed = true
				continue
			}
			rep.add("rss_mib_"+b.routers[i].Node, m, float64(rss)/(1<<20))
			rep.add("peak_rss_mib_"+b.routers[i].Node, m, float64(hwm)/(1<<20))
		}
	}

	// The profile replaces a bed's master router: last, once per
	// overlay.
	for _, m := range []mode{modeNAT, modeWG} {
		if profileDir == "" || beds[m] == nil || ctx.Err() != nil {
			continue
		}
		progress("profiling the forwarding path (in-process router on %s, %s)", masterNode, m)
		prof, err := profileForwarding(ctx, beds[m], p.profileDur, profileDir)
		rep.Profile = append(rep.Profile, prof...)
		if err != nil {
			rep.errorf("profile (%s): %v", m, err)
			failed = true
		}
	}
	return failed
}

// controlPlane runs the Service-table and in-memory forwarding
// benchmarks; with a profileDir, the forwarding runs are profiled.
func controlPlane(ctx context.Context, rep *report, p params, profileDir string) bool {
	failed := false
	progress("control plane: lb.Table with %d Services × %d endpoints", p.lbServices, p.lbEndpts)
	v, err := benchTable(p.lbServices, p.lbEndpts, p.lbChanges)
	if err != nil {
		rep.errorf("control plane (vrouter): %v", err)
		failed = true
	} else {
		rep.Control.VRouter = &v
	}
	progress("control plane: kube-proxy iptables-restore with %d Services × %d endpoints", p.lbServices, p.lbEndpts)
	k, err := benchIptables(ctx, fmt.Sprintf("%s%d-cp-", namePrefix, selfPID), p.lbServices, p.lbEndpts, p.iptChanges)
	if err != nil {
		rep.errorf("control plane (kernel): %v", err)
		failed = true
	} else {
		rep.Control.Kernel = &k
	}
	for _, peers := range []int{2, 1000} {
		progress("in-memory forwarding with %d peers", peers)
		prof := ""
		if profileDir != "" {
			prof = filepath.Join(profileDir, fmt.Sprintf("cpu-forward-%d-peers.pprof", peers))
		}
		f, err := benchForward(ctx, peers, p.fwdPackets, prof)
		if err != nil {
			rep.errorf("forwarding in memory (%d peers): %v", peers, err)
			failed = true
			continue
		}
		rep.Forwarding = append(rep.Forwarding, f)
	}
	return failed
}

// proxyAvailable reports whether this vrouter has proxy mode: lb/proxy.go
// exists and `vrouter validate` accepts a Service with mode: proxy.
func proxyAvailable(ctx context.Context, bin, work string) (bool, string) {
	if root, err := moduleRoot(ctx); err == nil {
		if _, err := os.Stat(filepath.Join(root, "lb", "proxy.go")); errors.Is(err, fs.ErrNotExist) {
			return false, "lb/proxy.go does not exist"
		}
	}
	dir := filepath.Join(work, "proxy-check")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err.Error()
	}
	path, err := harness.WriteConfig(dir, topology.Seed(), masterNode, harness.ConfigOptions{Services: proxyServices()})
	if err != nil {
		return false, fmt.Sprintf("the config package refuses mode: proxy: %v", err)
	}
	out, err := exec.CommandContext(ctx, bin, "validate", path).CombinedOutput()
	if err != nil {
		return false, fmt.Sprintf("`vrouter validate` refuses mode: proxy: %s", firstLines(out, 2))
	}
	return true, ""
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not in a module")
	}
	return filepath.Dir(gomod), nil
}

// proxyServices are the seed's Services with my-service in proxy mode.
func proxyServices() []configs.ServiceSpec {
	svcs := harness.SeedServices("")
	for i := range svcs {
		if svcs[i].Name == "my-service" {
			svcs[i].Mode = configs.ModeProxy
		}
	}
	return svcs
}

// workPrefix starts the name of every run's work directory in $TMPDIR,
// followed by the run's process ID.
const workPrefix = "vrouter-bench-"

// cleanupStale removes the namespaces of earlier runs whose process is
// gone, and their work directories with the tmpfs their routers' flow
// files were on; those of live runs stay.
func cleanupStale() error {
	return errors.Join(cleanupStaleNetns(), cleanupStaleWork())
}

// cleanupStaleWork unmounts the flow-file tmpfs of crashed runs (mounted
// on $TMPDIR/vrouter-bench-<pid>-*/bed-*/run) and removes their work
// directories.
func cleanupStaleWork() error {
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), workPrefix+"*"))
	if err != nil {
		return err
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), workPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 || !errors.Is(syscall.Kill(n, 0), syscall.ESRCH) {
			continue // not a run's, or its run is alive
		}
		for _, line := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
				if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil {
					errs = append(errs, fmt.Errorf("unmount %s of a crashed run: %w", f[1], err))
				}
			}
		}
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}

// cleanupStaleNetns removes the namespaces of earlier runs whose process
// is gone.
func cleanupStaleNetns() error {
	entries, err := os.ReadDir(topology.DefaultNetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	stale := map[string]bool{}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			continue
		}
		if err := syscall.Kill(n, 0); errors.Is(err, syscall.ESRCH) {
			stale[namePrefix+pid+"-"] = true
		}
	}
	var errs []error
	for prefix := range stale {
		errs = append(errs, topology.Cleanup(prefix))
	}
	return errors.Join(errs...)
}

func containsMode(ms []mode, m mode) bool {
	for _, x := range ms {
		if x == m {
			return true
		}
	}
	return false
}

func reversed(ms []mode) []mode {
	out := make([]mode, len(ms))
	for i, m := range ms {
		out[len(ms)-1-i] = m
	}
	return out
}

// measurementKeys maps a measurement to one metric it always yields, to
// tell whether it was taken.
var measurementKeys = map[string]string{
	"tcp-1": "tcp_gbps_1", "tcp-4": "tcp_gbps_4", "udp-64": "udp_kpps_64", "udp-1400": "udp_kpps_1400",
	"udp-64-paced": "udp_paced_kpps_64", "udp-1400-paced": "udp_paced_kpps_1400",
	"icmp": "icmp_p50_us", "icmp-sparse": "icmp_sparse_p50_us", "idle-cpu": "router_idle_cpu_pct", "tcp-rr": "tcprr_p50_us", "http-close": "http_close_per_s", "http-keepalive": "http_keepalive_per_s",
	"nodeport-close": "nodeport_close_per_s", "nodeport-keepalive": "nodeport_keepalive_per_s",
	"conn-mem":   "conn_mem_kib",
	"egress-tcp": "egress_tcp_gbps_up", "egress-close": "egress_close_per_s",
	"egress-slirp4netns-tcp": "egress_slirp4netns_tcp_gbps_up", "egress-slirp4netns-close": "egress_slirp4netns_close_per_s",
}

func hasSamples(rep *report, name string, m mode) bool {
	return len(rep.samples[measurementKeys[name]][m]) > 0
}

// brief formats a measurement's values for the progress line.
func brief(vals map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(vals) {
		if strings.Contains(k, "machine") || strings.HasSuffix(k, "_errors") || strings.HasSuffix(k, "_rate") {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s", k, num(vals[k])))
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]float64) []string {
	return slices.Sorted(maps.Keys(m))
}

var startTime = time.Now()

// progress prints a timestamped line to stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(startTime).Seconds(), fmt.Sprintf(format, args...))
}
