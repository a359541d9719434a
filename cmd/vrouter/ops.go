package main

// Operability wiring of `vrouter run`: the metrics and health endpoints,
// the admin API, log levels and the shutdown sequence. The servers live
// in internal/metrics, internal/health and internal/admin; this file only
// connects them to the router.
//
//	runCmd ── newOps ── serves /healthz, /readyz (503: starting) and /metrics until close
//	       ── signalContext: SIGTERM/SIGINT → shutdown, SIGUSR1 → debug toggle
//	runRouter ── attach(router, table, nat, proxy, …, overlay) ── binds the admin socket, marks ready
//	          ── observeApply(reloader) ── times each config apply
//	          ── observeRefused ── counts each file the watcher refused
//	          ── run (one goroutine of runRouter's) ── serves the admin API until the router stops
//
// Shutdown on SIGTERM or SIGINT, in order: /readyz fails at once; the
// router keeps routing for --shutdown-delay (default 0), so that whatever
// watches readiness sees it; proxied connections drain for up to
// --shutdown-grace (when the router has a Proxy); then the router stops
// and the process exits 0. A second signal skips what is left.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/health"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/metrics"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// The default addresses of the health and metrics endpoints: kube-proxy's
// (--healthz-bind-address, --metrics-bind-address), on loopback.
const (
	defaultHealthAddress  = "127.0.0.1:10256"
	defaultMetricsAddress = "127.0.0.1:10249"
)

// opsFlags are run's flags for the operability endpoints and shutdown.
type opsFlags struct {
	metricsAddr   string
	healthAddr    string
	adminSocket   string
	shutdownGrace time.Duration
	shutdownDelay time.Duration
}

func (f *opsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-address", defaultMetricsAddress,
		"serve Prometheus metrics at http://ADDRESS/metrics; \"\" turns them off")
	fs.StringVar(&f.healthAddr, "health-address", defaultHealthAddress,
		"serve /healthz and /readyz on this address; \"\" turns them off")
	fs.StringVar(&f.adminSocket, "admin-socket", "",
		"the admin API's unix socket, which vrouter status, routes, peers, services, conns, ping, log-level and capture use (default "+admin.SocketDir+"/<tun name>.netns-<inode>.sock: one per TUN and network namespace, which the status commands run in the same namespace find)")
	fs.DurationVar(&f.shutdownGrace, "shutdown-grace", 5*time.Second,
		"on SIGTERM, how long proxied connections may drain before the router stops")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", 0,
		"on SIGTERM, how long to keep routing with /readyz already failing, before draining and stopping")
}

// ops is the operability side of one `vrouter run`.
type ops struct {
	log       *zap.Logger
	level     zap.AtomicLevel
	baseLevel zapcore.Level
	flags     opsFlags
	// explicit names the flags given on the command line: a listener
	// that fails on a default address only warns, on a chosen one it
	// fails the start.
	explicit map[string]bool
	started  time.Time

	health health.State
	syncs  *metrics.Syncs
	// registry holds the metrics /metrics serves (nil when off). A data
	// path that keeps counters metrics.Sources does not know registers
	// its own collector here.
	registry *prometheus.Registry

	// src is what attach was given; the metrics collector and the
	// signal goroutine read it.
	src atomic.Pointer[metrics.Sources]
	// endpoints are the log fields naming what is served where; addrs
	// the bound addresses by what they serve.
	endpoints []zap.Field
	addrs     map[string]net.Addr

	// The health and metrics servers run from newOps to close, so that
	// probes get answers while the router starts and stops.
	stopServing context.CancelFunc
	serving     sync.WaitGroup

	// admin is bound by attach and served by run.
	admin opsServer

	// mode and source say where desired state comes from, for vrouter
	// status: read from run's flags by newOps.
	mode, source string
	// lastReload is the outcome of the last change of desired state
	// after the start; written by the watcher's or the Kubernetes
	// source's goroutine, read by the admin API's.
	lastReload atomic.Pointer[admin.Reload]
}

// reloaded records the outcome of a change of desired state.
func (o *ops) reloaded(t time.Time, err error) {
	r := &admin.Reload{Time: t, Applied: err == nil}
	if err != nil {
		r.Error = err.Error()
	}
	o.lastReload.Store(r)
}

// process is what vrouter status reports of the process itself.
func (o *ops) process() admin.Process {
	b := readBuildInfo()
	rd := o.health.Readiness()
	return admin.Process{
		Version: b.Version, Commit: b.Commit, Mode: o.mode, Source: o.source, Started: o.started,
		LastReload: o.lastReload.Load(), Ready: rd.Reason == "", NotReady: rd.Reason,
	}
}

type opsServer struct {
	what    string
	ln      net.Listener
	handler http.Handler
}

// newOps returns the operability side of a run with flags f, parsed by fs,
// and starts serving health (/readyz fails until attach) and metrics.
// Call close when the run is over.
func (f *opsFlags) newOps(fs *flag.FlagSet, log *zap.Logger, level zap.AtomicLevel) (*ops, error) {
	o := &ops{
		log:       log,
		level:     level,
		baseLevel: level.Level(),
		flags:     *f,
		explicit:  map[string]bool{},
		started:   time.Now(),
		syncs:     metrics.NewSyncs(),
		addrs:     map[string]net.Addr{},
	}
	fs.Visit(func(fl *flag.Flag) { o.explicit[fl.Name] = true })
	o.mode, o.source = sourceOf(fs)

	// Health and metrics may share an address.
	muxes := map[string]*http.ServeMux{}
	var addrs []string
	mux := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
			addrs = append(addrs, addr)
		}
		return muxes[addr]
	}
	if a := f.healthAddr; a != "" {
		h := o.health.Handler()
		mux(a).Handle("/healthz", h)
		mux(a).Handle("/readyz", h)
	}
	if a := f.metricsAddr; a != "" {
		b := readBuildInfo()
		o.registry = metrics.NewRegistry(attachedCollector{o}, o.syncs, metrics.BuildInfo(b.Version, b.Commit, runtime.Version()))
		mux(a).Handle("/metrics", metrics.Handler(o.registry))
	}
	var servers []opsServer
	for _, a := range addrs {
		what := "health"
		switch {
		case a == f.healthAddr && a == f.metricsAddr:
			what = "health+metrics"
		case a == f.metricsAddr:
			what = "metrics"
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			// Chosen on the command line: fail the start. A default
			// only warns, so that a second router sharing the network
			// namespace (or a kube-proxy still running) does not stop
			// this one from starting.
			var flags []string
			chosen := false
			for _, fl := range []struct{ name, addr string }{{"health-address", f.healthAddr}, {"metrics-address", f.metricsAddr}} {
				if fl.addr == a {
					flags = append(flags, "--"+fl.name)
					chosen = chosen || o.explicit[fl.name]
				}
			}
			if chosen {
				for _, s := range servers {
					s.ln.Close()
				}
				return nil, fmt.Errorf("serve %s on %s: %w", what, a, err)
			}
			o.log.Warn(what+" endpoints off: cannot listen on their default address; pass "+strings.Join(flags, " or ")+" (\"\" turns them off)",
				zap.String("address", a), zap.Error(err))
			continue
		}
		servers = append(servers, opsServer{what: what, ln: ln, handler: muxes[a]})
		o.endpoints = append(o.endpoints, zap.Stringer(what, ln.Addr()))
		o.addrs[what] = ln.Addr()
	}
	ctx, cancel := context.WithCancel(context.Background())
	o.stopServing = cancel
	for _, s := range servers {
		o.serving.Add(1)
		go func() {
			defer o.serving.Done()
			o.serve(ctx, s)
		}()
	}
	return o, nil
}

// sourceOf says where run's flags in fs take desired state from: mode
// "file", "kubernetes" or "sidecar", and the config file, the kubeconfig
// or "in-cluster".
func sourceOf(fs *flag.FlagSet) (mode, source string) {
	get := func(name string) string {
		if fl := fs.Lookup(name); fl != nil {
			return fl.Value.String()
		}
		return ""
	}
	switch {
	case get("kubeconfig") == "" && get("in-cluster") != "true":
		return "file", get("config")
	case get("sidecar") == "true":
		mode = "sidecar"
	default:
		mode = "kubernetes"
	}
	if kc := get("kubeconfig"); kc != "" {
		return mode, "kubeconfig " + kc
	}
	return mode, "in-cluster"
}

// close stops the health and metrics servers and waits for them.
func (o *ops) close() {
	o.stopServing()
	o.serving.Wait()
}

// serve serves s until ctx is done. A server that fails is logged; the
// router goes on without it.
func (o *ops) serve(ctx context.Context, s opsServer) {
	if err := admin.ServeHTTP(ctx, s.ln, s.handler); err != nil && !errors.Is(err, net.ErrClosed) {
		o.log.Error("endpoint stopped", zap.String("endpoint", s.what), zap.Error(err))
	}
}

// attachedCollector exports the metrics of the data path attach was
// given; none before.
type attachedCollector struct{ o *ops }

func (c attachedCollector) Describe(ch chan<- *prometheus.Desc) {
	metrics.NewCollector(metrics.Sources{}).Describe(ch)
}

func (c attachedCollector) Collect(ch chan<- prometheus.Metric) {
	if src := c.o.src.Load(); src != nil {
		metrics.NewCollector(*src).Collect(ch)
	}
}

// signalContext returns a context that ends once a SIGTERM or SIGINT has
// been through the shutdown sequence. SIGUSR1 toggles the debug log
// level. stop releases the signals and waits for the goroutine it owns.
func (o *ops) signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig == syscall.SIGUSR1 {
					o.toggleDebug()
					continue
				}
				o.shutdown(ctx, sig, sigs)
				cancel()
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
		<-done
	}
}

// toggleDebug switches the log level between debug and the configured one.
func (o *ops) toggleDebug() {
	from := o.level.Level()
	to := zapcore.DebugLevel
	if from == zapcore.DebugLevel {
		to = o.baseLevel
	}
	if to == from {
		o.log.Info("SIGUSR1: the log level is already debug, the configured level")
		return
	}
	o.level.SetLevel(to)
	// Warn, so that the line shows at either level.
	o.log.Warn("log level changed", zap.Stringer("from", from), zap.Stringer("to", to), zap.String("by", "SIGUSR1"))
}

// shutdown marks the router not ready, waits --shutdown-delay, then lets
// proxied connections drain for up to --shutdown-grace. A second SIGTERM
// or SIGINT, or the end of ctx, cuts it short.
func (o *ops) shutdown(ctx context.Context, sig os.Signal, sigs <-chan os.Signal) {
	o.health.SetStopping()
	o.log.Info("shutting down: not ready", zap.Stringer("signal", sig),
		zap.Duration("delay", o.flags.shutdownDelay), zap.Duration("grace", o.flags.shutdownGrace))
	// wait waits d, or until done reports true (polled), and reports
	// false if it was cut short.
	wait := func(d time.Duration, done func() bool) bool {
		deadline := time.NewTimer(d)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if done != nil && done() {
				return true
			}
			select {
			case <-deadline.C:
				return true
			case <-tick.C:
			case <-ctx.Done():
				return false
			case s := <-sigs:
				if s == syscall.SIGUSR1 {
					o.toggleDebug()
					continue
				}
				o.log.Info("second signal: stopping now", zap.Stringer("signal", s))
				return false
			}
		}
	}
	if d := o.flags.shutdownDelay; d > 0 && !wait(d, nil) {
		return
	}
	src := o.src.Load()
	if src == nil || src.Proxy == nil || o.flags.shutdownGrace <= 0 {
		return
	}
	active := func() int64 { return src.Proxy.Stats().Active }
	if n := active(); n > 0 {
		o.log.Info("draining proxied connections", zap.Int64("active", n), zap.Duration("grace", o.flags.shutdownGrace))
		if wait(o.flags.shutdownGrace, func() bool { return active() == 0 }) {
			if n := active(); n > 0 {
				o.log.Info("grace period over; closing the remaining proxied connections", zap.Int64("active", n))
			} else {
				o.log.Info("proxied connections drained")
			}
		}
	}
}

// attach connects the endpoints to the data path, binds the admin socket,
// records the initial programming as the first sync and marks the router
// ready. Call it once the data path is programmed from the config; then
// run serves the admin API. An admin socket that cannot be bound fails
// attach if --admin-socket was given, and is only logged (the admin API
// stays off) on the default.
func (o *ops) attach(r *router.Router, table *lb.Table, nat *lb.NAT, proxy *lb.Proxy, hp *lb.HostPorts, egress *lb.Egress, overlay router.Conn) error {
	// An encrypted overlay's sessions and counters are reported beside
	// the router's; a plain overlay has none.
	wg, _ := overlay.(*wireguard.Conn)
	src := metrics.Sources{Router: r, Table: table, NAT: nat, Proxy: proxy, HostPorts: hp, Egress: egress, WireGuard: wg}
	o.src.Store(&src)

	fields := o.endpoints
	socket := o.flags.adminSocket
	if socket == "" {
		socket = admin.DefaultSocket(r.Stack().FindNICNameFromID(router.TUNNIC))
	}
	ln, err := admin.Listen(socket)
	switch {
	case err == nil:
		opts := admin.Options{
			Log: o.log.Named("admin"), Router: r, Table: table, NAT: nat, Proxy: proxy, Egress: egress, WireGuard: wg,
			Level: o.level, Process: o.process,
		}
		if hp != nil {
			opts.HostPorts = hostPortsOf(hp)
			opts.HostSockets = func() []admin.HostPort { return hostSockets(hp, nil) }
		}
		srv := admin.NewServer(opts)
		o.admin = opsServer{what: "admin", ln: ln, handler: srv.Handler()}
		fields = append(fields, zap.String("admin", socket))
	case o.explicit["admin-socket"]:
		return err
	default:
		o.log.Warn("admin API off: cannot listen on its default socket; pass --admin-socket", zap.Error(err))
	}

	now := time.Now()
	o.syncs.Observe(now.Sub(o.started), now, true)
	o.health.Synced(now)
	o.health.SetReady()
	o.log.Info("ready", fields...)
	return nil
}

// observeApply wraps the reloader's apply: it times each apply for the
// sync metrics, and a successful one (the data path took the new config)
// counts as the last sync for /healthz.
func (o *ops) observeApply(rl *reloader) func(*configs.Config) {
	return func(next *configs.Config) {
		start := time.Now()
		err := rl.apply(next)
		end := time.Now()
		ok := err == nil
		o.syncs.Observe(end.Sub(start), end, ok)
		o.reloaded(end, err)
		if ok {
			o.health.Synced(end)
		}
	}
}

// observeRefused counts a config file the watcher refused (unreadable or
// invalid) as a refused reload. The watcher calls it from its goroutine.
func (o *ops) observeRefused(err error) {
	o.syncs.Refused()
	o.reloaded(time.Now(), err)
}

// observeProgramming records the network programming latency of a change
// the Kubernetes source applied, which also counts as a sync for /healthz.
func (o *ops) observeProgramming(d time.Duration) {
	now := time.Now()
	o.syncs.ObserveProgramming(d)
	o.health.Synced(now)
	o.reloaded(now, nil)
}

// run serves the admin API until ctx is done, and returns once it has
// stopped (captures in progress end).
func (o *ops) run(ctx context.Context) {
	if o.admin.ln != nil {
		o.serve(ctx, o.admin)
	}
}

// hostPortsOf returns the admin API's view of hp's sockets, per Service.
func hostPortsOf(hp *lb.HostPorts) func(lb.ServiceName) []admin.HostPort {
	return func(name lb.ServiceName) []admin.HostPort {
		return hostSockets(hp, &name)
	}
}

// hostSockets returns the admin API's view of hp's sockets: those of
// Service name, or all of them when name is nil.
func hostSockets(hp *lb.HostPorts, name *lb.ServiceName) []admin.HostPort {
	var out []admin.HostPort
	for _, b := range hp.Bindings() {
		if name != nil && b.Service.ServiceName != *name {
			continue
		}
		proto := b.Proto.String()
		if b.Proto == lb.HostHealth {
			proto = "HTTP"
		}
		out = append(out, admin.HostPort{
			Port: b.Service.Port, Address: b.Addr, Protocol: proto, State: b.State.String(), Error: b.Err,
		})
	}
	return out
}
