//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/integration/topology"
)

// The endpoints the measurements load are the ones users run, so that
// the data path, not a test server or generator sharing the two cores,
// is what runs out first: nginx serves HTTP, wrk loads it, iperf3 sends
// streams and iputils' ping sends echoes. Each endpoint's CPU is
// reported next to the rate it reached (the endpoints table), and the
// kernel's HTTP rows are measured again with twice the generator
// threads and four times the connections: if that raises the rate, the
// baseline was bound by its generator.

// nginxProc is one nginx serving what topology's ServeHTTP serves: the
// namespace's name as the body and the client's address in
// X-Client-Addr, so the checks that ask which backend answered, and
// from where it was seen, hold for either server.
type nginxProc struct {
	ns   string
	cmd  *exec.Cmd
	done chan struct{}
}

// nginxConf is one process (no master, no worker: its CPU is one PID's),
// no access log, keep-alive connections that outlive any run.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
user root root;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log warn;
events { worker_connections 65536; }
http {
	access_log off;
	client_body_temp_path {{dir}}/tmp;
	proxy_temp_path {{dir}}/tmp;
	fastcgi_temp_path {{dir}}/tmp;
	uwsgi_temp_path {{dir}}/tmp;
	scgi_temp_path {{dir}}/tmp;
	keepalive_requests 100000000;
	keepalive_timeout 600s;
	server {
		listen {{listen}} backlog=4096;
		default_type text/plain;
		location / {
			add_header ` + topology.ClientAddrHeader + ` "$remote_addr:$remote_port" always;
			return 200 "{{ns}}";
		}
	}
}
`

// startNginx starts nginx in namespace ns listening on listen, and waits
// until it accepts connections.
func (b *bed) startNginx(ns string, listen netip.AddrPort) error {
	dir := filepath.Join(b.dir, "nginx-"+ns)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	conf := strings.NewReplacer("{{dir}}", dir, "{{listen}}", listen.String(), "{{ns}}", ns).Replace(nginxConf)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return err
	}
	cmd := b.c.Command(ns, "nginx", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(cmd.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start nginx in %s: %w (make check-deps installs nginx-light)", ns, err)
	}
	p := &nginxProc{ns: ns, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	b.nginx = append(b.nginx, p)
	if err := b.waitListening(ns, int(listen.Port()), 5*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return fmt.Errorf("nginx in %s: %w; its error log: %s", ns, err, bytes.TrimSpace(log))
	}
	return nil
}

// stop kills the nginx and waits for it.
func (p *nginxProc) stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
		<-p.done
	}
}

// serversCPU is the CPU seconds the nginx processes in namespaces nss
// have used.
func (b *bed) serversCPU(nss []string) (float64, error) {
	var sum float64
	for _, p := range b.nginx {
		for _, ns := range nss {
			if p.ns != ns {
				continue
			}
			s, err := procCPU(p.cmd.Process.Pid)
			if err != nil {
				return 0, fmt.Errorf("nginx in %s: %w", ns, err)
			}
			sum += s
		}
	}
	return sum, nil
}

// wrkResult is what one wrk run reports.
type wrkResult struct {
	perSec      float64
	requests    int
	p50, p99    float64 // µs
	errs        int     // socket errors (connect, read, write, timeout) and non-2xx answers
	errLine     string
	cpu         float64 // wrk's user+system CPU seconds
	elapsed     float64 // seconds
	serversCPU  float64 // the servers' CPU seconds over the run
	serverCount int
}

// runWrk loads t with wrk: threads threads, conns connections, for dur,
// every request on a new connection unless keepAlive.
func runWrk(ctx context.Context, b *bed, t loadTarget, keepAlive bool, threads, conns int, dur time.Duration) (wrkResult, error) {
	var res wrkResult
	args := []string{"-t", fmt.Sprint(threads), "-c", fmt.Sprint(conns), "-d", fmt.Sprintf("%ds", int(math.Ceil(dur.Seconds()))),
		"--latency", "--timeout", "2s"}
	if !keepAlive {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+t.addr.String()+"/")
	path, err := b.nsPath(t.from)
	if err != nil {
		return res, err
	}
	cctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nsenter", append([]string{"--net=" + path, "--", "wrk"}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	s0, err := b.serversCPU(t.servers)
	if err != nil {
		return res, err
	}
	start := time.Now()
	err = cmd.Run()
	res.elapsed = time.Since(start).Seconds()
	if err != nil {
		return res, fmt.Errorf("wrk %s from %s: %w: %s", strings.Join(args, " "), t.from, err, bytes.TrimSpace(stderr.Bytes()))
	}
	s1, err := b.serversCPU(t.servers)
	if err != nil {
		return res, err
	}
	res.serversCPU, res.serverCount = s1-s0, len(t.servers)
	res.cpu = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if err := parseWrk(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("wrk %s from %s: %w; output:\n%s", strings.Join(args, " "), t.from, err, out.Bytes())
	}
	return res, nil
}

var (
	wrkRate     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkTotal    = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkSockErrs = regexp.MustCompile(`(?m)^\s*Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: ([0-9]+)`)
)

// parseWrk reads wrk's text report (with --latency) into r.
func parseWrk(out []byte, r *wrkResult) error {
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return errors.New("no Requests/sec line")
	}
	r.perSec, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := wrkTotal.FindSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(string(m[1]))
	}
	for _, m := range wrkPct.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		switch string(m[3]) {
		case "ms":
			v *= 1e3
		case "s":
			v *= 1e6
		}
		if string(m[1]) == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if m := wrkSockErrs.FindSubmatch(out); m != nil {
		for _, g := range m[1:] {
			n, _ := strconv.Atoi(string(g))
			r.errs += n
		}
		r.errLine = strings.TrimSpace(string(m[0]))
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		n, _ := strconv.Atoi(string(m[1]))
		r.errs += n
		r.errLine = strings.TrimSpace(r.errLine + " " + string(m[0]))
	}
	if r.requests == 0 {
		return errors.New("no request completed")
	}
	return nil
}

// measureHTTP loads my-service (or the egress server) as t says for dur
// with wrk, threads threads and conns connections, and reports the rate, the
// latencies and each endpoint's CPU. On the kernel bed it runs wrk again
// with two threads and four times the connections: the rate that
// reaches is reported as <name>_per_s_more, so a baseline bound by its
// generator shows.
func measureHTTP(ctx context.Context, b *bed, t loadTarget, keepAlive bool, threads, conns int, dur time.Duration) (map[string]float64, error) {
	name := t.name + "_close"
	if keepAlive {
		name = t.name + "_keepalive"
	}
	r, err := runWrk(ctx, b, t, keepAlive, threads, conns, dur)
	if err != nil {
		return nil, err
	}
	if r.errs > 0 {
		progress("%s on %s: %d errors in %d requests (%s)", name, b.mode, r.errs, r.requests, r.errLine)
	}
	m := map[string]float64{
		name + "_per_s":          r.perSec,
		name + "_errors":         float64(r.errs),
		name + "_error_rate":     float64(r.errs) / float64(r.requests+r.errs),
		name + "_p50_us":         r.p50,
		name + "_p99_us":         r.p99,
		name + "_client_cpu_pct": 100 * r.cpu / r.elapsed,
		name + "_server_cpu_pct": 100 * r.serversCPU / r.elapsed,
	}
	if b.mode == modeKernel {
		more, err := runWrk(ctx, b, t, keepAlive, 2*threads, 4*conns, dur)
		if err != nil {
			return nil, fmt.Errorf("with more generator: %w", err)
		}
		m[name+"_per_s_more"] = more.perSec
	}
	return m, nil
}

// measureSparsePing sends count echoes from clientPod to serverPod with
// iputils' ping, one every interval: a router that idles between them
// wakes for each, as it does for health checks and interactive traffic.
func measureSparsePing(ctx context.Context, b *bed, count int, interval time.Duration) (map[string]float64, error) {
	args := []string{"-n", "-i", fmt.Sprintf("%.3f", interval.Seconds()), "-c", fmt.Sprint(count), "-W", "1", serverAddr.String()}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(count)*interval+20*time.Second)
	defer cancel()
	c0, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := b.c.CommandContext(cctx, clientPod, "ping", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("ping %s from %s: %w", strings.Join(args, " "), clientPod, err)
	}
	c1, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	routerCPU := 100 * (c1 - c0) / time.Since(start).Seconds()
	rtts, err := parsePingTimes(out)
	if err != nil {
		return nil, fmt.Errorf("ping %s from %s: %w", strings.Join(args, " "), clientPod, err)
	}
	if len(rtts) < count*9/10 {
		return nil, fmt.Errorf("ping %s from %s: %d of %d answered, want at least 90%%", strings.Join(args, " "), clientPod, len(rtts), count)
	}
	var sum time.Duration
	for _, d := range rtts {
		sum += d
	}
	m := map[string]float64{
		"icmp_sparse_p50_us": percentile(rtts, 0.50),
		"icmp_sparse_p99_us": percentile(rtts, 0.99),
		"icmp_sparse_avg_us": float64(sum) / float64(len(rtts)) / float64(time.Microsecond),
	}
	if len(b.pids) > 0 {
		m["icmp_sparse_router_cpu_pct"] = routerCPU
	}
	return m, nil
}

// measureIdleCPU is the CPU the routers of b (both nodes, summed) use
// while nothing crosses them, in % of one core: what a router costs its
// node at rest — timers, a busy-polling router once its window has
// passed.
func measureIdleCPU(ctx context.Context, b *bed, dur time.Duration) (map[string]float64, error) {
	// Let the last measurement's packets, and any polling window, end.
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c0, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	select {
	case <-time.After(dur):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c1, err := b.routersCPU()
	if err != nil {
		return nil, err
	}
	return map[string]float64{"router_idle_cpu_pct": 100 * (c1 - c0) / time.Since(start).Seconds()}, nil
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// parsePingTimes reads the round trip of every reply line of iputils'
// ping.
func parsePingTimes(out []byte) ([]time.Duration, error) {
	var rtts []time.Duration
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := pingTime.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		ms, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			return nil, fmt.Errorf("reply %q: %w", sc.Text(), err)
		}
		rtts = append(rtts, time.Duration(ms*float64(time.Millisecond)))
	}
	if len(rtts) == 0 {
		return nil, errors.New("no reply")
	}
	return rtts, nil
}

// The request/response row runs sockperf, a C client and server built for
// latency: the server (sockperf sr) echoes each message from one process
// waiting in epoll, the client (sockperf pp) sends the next message as
// soon as the answer is in, on one TCP connection (Nagle's algorithm off
// on both), and reports the full round trips' percentiles after a warm-up
// it leaves out.

// rrSize is the request/response message size, sockperf's header included.
const rrSize = 64

// sockperfServer is sockperf's server in one namespace.
type sockperfServer struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startSockperf starts sockperf's TCP server in namespace ns on port, and
// waits until it listens.
func (b *bed) startSockperf(ns string, port int) error {
	logPath := filepath.Join(b.dir, "sockperf-server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := b.c.Command(ns, "sockperf", "sr", "--tcp", "-i", "0.0.0.0", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(cmd.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start sockperf server in %s: %w (make check-deps installs sockperf)", ns, err)
	}
	s := &sockperfServer{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	b.rr = s
	if err := b.waitListening(ns, port, 5*time.Second); err != nil {
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("sockperf server in %s: %w; its output: %s", ns, err, firstLines(log, 5))
	}
	return nil
}

// stop kills the server and waits for it.
func (s *sockperfServer) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// measureRR runs rrSize-byte request/response exchanges from clientPod to
// the sockperf server in serverPod, one at a time on one TCP connection,
// for dur (whole seconds, at least one), and returns the round trips'
// p50 and p99.
func measureRR(ctx context.Context, b *bed, dur time.Duration) (map[string]float64, error) {
	secs := max(1, int(math.Ceil(dur.Seconds())))
	args := []string{"pp", "--tcp", "-i", serverAddr.String(), "-p", fmt.Sprint(rrPort),
		"-m", fmt.Sprint(rrSize), "-t", fmt.Sprint(secs), "--full-rtt"}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+20*time.Second)
	defer cancel()
	out, err := b.c.CommandContext(cctx, clientPod, "sockperf", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("sockperf %s from %s: %w: %s", strings.Join(args, " "), clientPod, err, firstLines(out, 5))
	}
	r, err := parseSockperf(out)
	if err != nil {
		return nil, fmt.Errorf("sockperf %s from %s: %w; output:\n%s", strings.Join(args, " "), clientPod, err, out)
	}
	return map[string]float64{"tcprr_p50_us": r.p50, "tcprr_p99_us": r.p99}, nil
}

// sockperfResult is what the bench reads from sockperf's client report.
type sockperfResult struct {
	observations int
	p50, p99     float64 // µs, full round trips (--full-rtt)
}

var (
	sockperfObs = regexp.MustCompile(`Total ([0-9]+) observations`)
	sockperfPct = regexp.MustCompile(`(?m)---> percentile (50|99)\.000 =\s*([0-9.]+)`)
	sockperfErr = regexp.MustCompile(`# dropped messages = ([0-9]+); # duplicated messages = ([0-9]+); # out-of-order messages = ([0-9]+)`)
)

// parseSockperf reads sockperf pp's report: the observations it kept,
// their p50 and p99. A report with too few observations, or with lost,
// repeated or reordered answers, is an error: its percentiles say
// nothing of a working path.
func parseSockperf(out []byte) (sockperfResult, error) {
	var r sockperfResult
	m := sockperfObs.FindSubmatch(out)
	if m == nil {
		return r, errors.New("no observation count in sockperf's report")
	}
	r.observations, _ = strconv.Atoi(string(m[1]))
	if r.observations < 100 {
		return r, fmt.Errorf("%d round trips observed, want at least 100", r.observations)
	}
	if e := sockperfErr.FindSubmatch(out); e != nil && (string(e[1]) != "0" || string(e[2]) != "0" || string(e[3]) != "0") {
		return r, fmt.Errorf("answers dropped %s, duplicated %s, out of order %s", e[1], e[2], e[3])
	}
	for _, m := range sockperfPct.FindAllSubmatch(out, -1) {
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			return r, fmt.Errorf("percentile %s: %w", m[1], err)
		}
		if string(m[1]) == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if r.p50 <= 0 || r.p99 <= 0 {
		return r, errors.New("no p50 and p99 in sockperf's report")
	}
	return r, nil
}
