package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/health"
	"github.com/vrouter/vrouter/configs"
)

// testOps returns ops built from run's command line args, with its logs
// observed, closed when the test ends.
func testOps(t *testing.T, args ...string) (*ops, *observer.ObservedLogs, zap.AtomicLevel) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var of opsFlags
	of.register(fs)
	// Metrics off unless asked for: the tests need not hold 10249.
	if err := fs.Parse(append([]string{"--metrics-address="}, args...)); err != nil {
		t.Fatal(err)
	}
	level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	core, logs := observer.New(zapcore.DebugLevel)
	o, err := of.newOps(fs, zap.New(core), level)
	if err != nil {
		t.Fatalf("newOps(%q): %v", args, err)
	}
	t.Cleanup(o.close)
	return o, logs, level
}

// probe GETs path from the health server of o.
func probe(t *testing.T, o *ops, path string) (int, string) {
	t.Helper()
	addr := o.addrs["health"]
	if addr == nil {
		t.Fatalf("no health server: %v", o.addrs)
	}
	resp, err := http.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readyReason(t *testing.T, o *ops) (int, string) {
	t.Helper()
	code, body := probe(t, o, "/readyz")
	var r health.Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("GET /readyz: %q: %v", body, err)
	}
	return code, r.Reason
}

func TestHealthBeforeReady(t *testing.T) {
	o, _, _ := testOps(t, "--health-address", "127.0.0.1:0")
	if code, reason := readyReason(t, o); code != 503 || reason != "starting" {
		t.Errorf("GET /readyz before the data path is programmed = %d %q, want 503 starting", code, reason)
	}
	code, body := probe(t, o, "/healthz")
	if code != 200 || strings.Contains(body, "lastSync") {
		t.Errorf("GET /healthz before the first sync = %d %s, want 200 without lastSync", code, body)
	}
}

func TestListenFailures(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, flagName := range []string{"--health-address", "--metrics-address"} {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var of opsFlags
		of.register(fs)
		fs.Parse([]string{flagName, busy.Addr().String()})
		if o, err := of.newOps(fs, zap.NewNop(), zap.NewAtomicLevel()); err == nil || !strings.Contains(err.Error(), "address already in use") {
			if o != nil {
				o.close()
			}
			t.Errorf("newOps(%s %v) with the address taken = %v, want an error", flagName, busy.Addr(), err)
		}
	}
}

// TestDefaultAddressesTaken: health and metrics on their default
// addresses (kube-proxy's) only warn when those are taken, by another
// router in the same network namespace or a kube-proxy not yet removed.
func TestDefaultAddressesTaken(t *testing.T) {
	for _, a := range []string{defaultHealthAddress, defaultMetricsAddress} {
		// Held here, or already by someone else: either way taken.
		if ln, err := net.Listen("tcp", a); err == nil {
			defer ln.Close()
		}
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var of opsFlags
	of.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	o, err := of.newOps(fs, zap.New(core), zap.NewAtomicLevel())
	if err != nil {
		t.Fatalf("newOps(defaults) with %s and %s taken = %v, want a start with warnings", defaultHealthAddress, defaultMetricsAddress, err)
	}
	defer o.close()
	for _, want := range []string{"health endpoints off", "metrics endpoints off"} {
		found := false
		for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
			found = found || strings.HasPrefix(e.Message, want)
		}
		if !found {
			t.Errorf("newOps(defaults) with the addresses taken logged %v, want a warning %q", logs.All(), want+" ...")
		}
	}
}

// TestMetricsOff: --metrics-address "" serves no metrics.
func TestMetricsOff(t *testing.T) {
	o, _, _ := testOps(t, "--health-address", "127.0.0.1:0", "--metrics-address", "")
	if o.addrs["metrics"] != nil || o.registry != nil {
		t.Errorf("newOps(--metrics-address \"\") serves metrics at %v, want none", o.addrs["metrics"])
	}
	o, _, _ = testOps(t, "--health-address", "", "--metrics-address", "127.0.0.1:0")
	if o.addrs["metrics"] == nil {
		t.Errorf("newOps(--metrics-address 127.0.0.1:0) serves no metrics (%v), want them", o.addrs)
	}
}

func TestSIGTERMMarksNotReadyThenStops(t *testing.T) {
	o, logs, _ := testOps(t, "--health-address", "127.0.0.1:0", "--shutdown-delay", "1s")
	o.health.SetReady()
	ctx, stop := o.signalContext(context.Background())
	defer stop()
	if code, _ := readyReason(t, o); code != 200 {
		t.Fatalf("GET /readyz when ready = %d, want 200", code)
	}

	sent := time.Now()
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	waitFor(t, "/readyz 503 after SIGTERM", func() bool { code, _ := readyReason(t, o); return code == 503 })
	if ctx.Err() != nil {
		t.Fatalf("the router stopped %v after SIGTERM, before --shutdown-delay 1s", time.Since(sent))
	}
	if _, reason := readyReason(t, o); reason != "shutting down" {
		t.Errorf("/readyz reason after SIGTERM = %q, want shutting down", reason)
	}
	select {
	case <-ctx.Done():
		if d := time.Since(sent); d < time.Second {
			t.Errorf("the router stopped %v after SIGTERM, want --shutdown-delay 1s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the router did not stop within 10s of SIGTERM")
	}
	if logs.FilterMessage("shutting down: not ready").Len() != 1 {
		t.Errorf("logs = %v, want one 'shutting down: not ready'", logs.All())
	}
}

func TestSecondSignalStopsAtOnce(t *testing.T) {
	o, _, _ := testOps(t, "--health-address", "127.0.0.1:0", "--shutdown-delay", "1h")
	o.health.SetReady()
	ctx, stop := o.signalContext(context.Background())
	defer stop()
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	waitFor(t, "/readyz 503 after SIGTERM", func() bool { code, _ := readyReason(t, o); return code == 503 })
	syscall.Kill(syscall.Getpid(), syscall.SIGINT)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the router did not stop within 5s of a second signal")
	}
}

func TestSIGUSR1TogglesDebug(t *testing.T) {
	o, logs, level := testOps(t, "--health-address", "")
	_, stop := o.signalContext(context.Background())
	defer stop()
	for i, want := range []zapcore.Level{zapcore.DebugLevel, zapcore.InfoLevel, zapcore.DebugLevel} {
		syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
		waitFor(t, "log level "+want.String(), func() bool { return level.Level() == want })
		if n := logs.FilterMessage("log level changed").Len(); n != i+1 {
			t.Errorf("after SIGUSR1 #%d: %d 'log level changed' lines, want %d", i+1, n, i+1)
		}
	}
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRefusedReloadCounted: a config file the watcher refuses (invalid,
// so the data path never sees it) shows in
// vrouter_config_reloads_total{result="refused"}.
func TestRefusedReloadCounted(t *testing.T) {
	o, _, _ := testOps(t, "--health-address", "", "--metrics-address", "127.0.0.1:0")
	good, err := os.ReadFile("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// No data path: a valid change would reach the nil reloader; this test
	// writes only an invalid one, which must not.
	w := newWatcher(path, cfg, fileOverrides{tunFD: -1}, zap.NewNop(), o, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watcher Run() = %v after cancel, want nil", err)
		}
	}()

	if got := scrapeReloads(t, o, "refused"); got != "0" {
		t.Fatalf(`vrouter_config_reloads_total{result="refused"} = %s before any change, want 0`, got)
	}
	if err := os.WriteFile(path, append(good, "peers: not-a-list\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := ""; got != "1"; {
		if got = scrapeReloads(t, o, "refused"); time.Now().After(deadline) {
			t.Fatalf(`vrouter_config_reloads_total{result="refused"} = %s after an invalid config file, want 1`, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := scrapeReloads(t, o, "applied"); got != "0" {
		t.Errorf(`vrouter_config_reloads_total{result="applied"} = %s, want 0`, got)
	}
	// vrouter status says so, with the reason.
	if rl := o.process().LastReload; rl == nil || rl.Applied || !strings.Contains(rl.Error, "peers") || time.Since(rl.Time) > time.Minute {
		t.Errorf("status: last reload = %+v, want refused just now with an error naming peers", rl)
	}
}

// scrapeReloads GETs o's /metrics and returns the value of
// vrouter_config_reloads_total{result=result}, as written there.
func scrapeReloads(t *testing.T, o *ops, result string) string {
	t.Helper()
	resp, err := http.Get("http://" + o.addrs["metrics"].String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := `vrouter_config_reloads_total{result="` + result + `"} `
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return v
		}
	}
	t.Fatalf("GET /metrics has no %s...:\n%s", prefix, b)
	return ""
}

// TestSourceOf: vrouter status names the mode and source run's flags
// chose.
func TestSourceOf(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		mode, source string
	}{
		{[]string{"--config", "/etc/vrouter/node.yaml"}, "file", "/etc/vrouter/node.yaml"},
		{[]string{"--kubeconfig", "/etc/vrouter/kubeconfig", "--config", "tuning.yaml"}, "kubernetes", "kubeconfig /etc/vrouter/kubeconfig"},
		{[]string{"--in-cluster"}, "kubernetes", "in-cluster"},
		{[]string{"--in-cluster", "--sidecar"}, "sidecar", "in-cluster"},
	} {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.String("config", "", "")
		fs.String("kubeconfig", "", "")
		fs.Bool("in-cluster", false, "")
		fs.Bool("sidecar", false, "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if mode, source := sourceOf(fs); mode != tc.mode || source != tc.source {
			t.Errorf("sourceOf(%q) = %q, %q; want %q, %q", tc.args, mode, source, tc.mode, tc.source)
		}
	}
}
