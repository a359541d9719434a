package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/cni"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/tun"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		path  = fs.String("config", "", "path of the router's config file (required)")
		tunFD = fs.Int("tun-fd", -1, "adopt this already-open TUN file descriptor instead of creating the device")
		lf    logFlags
		of    opsFlags
		kf    kubeFlags
	)
	lf.register(fs)
	of.register(fs)
	fs.StringVar(&kf.kubeconfig, "kubeconfig", "", "learn Nodes, Services and EndpointSlices from the API server this kubeconfig names (instead of peers and Services from --config)")
	fs.BoolVar(&kf.inCluster, "in-cluster", false, "learn them from the API server with the Pod's ServiceAccount (in a DaemonSet or sidecar)")
	fs.StringVar(&kf.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's Node name, with --kubeconfig or --in-cluster (default $NODE_NAME)")
	fs.StringVar(&kf.clusterCIDR, "cluster-cidr", "10.244.0.0/16", "the pod network, with --kubeconfig or --in-cluster and no --config")
	fs.StringVar(&kf.serviceCIDR, "service-cidr", "10.96.0.0/12", "the Service ClusterIP range, with --kubeconfig or --in-cluster and no --config")
	fs.DurationVar(&kf.minSync, "min-sync-period", 250*time.Millisecond,
		"with --kubeconfig or --in-cluster: the least time between two applies of API changes, so a burst (a rollout) is applied in a few batches; kube-proxy's --iptables-min-sync-period, shorter because one apply here costs what changed, not the whole table")
	fs.DurationVar(&kf.unhealthy, "api-unhealthy-after", 30*time.Second,
		"with --kubeconfig or --in-cluster: how long listing or watching the API server may keep failing before /readyz reports not ready (the data path keeps forwarding)")
	fs.BoolVar(&kf.sidecar, "sidecar", false,
		"with --kubeconfig or --in-cluster: serve one Pod from inside its network namespace: its connections to ClusterIPs, in proxy mode; no peers, no pod routes")
	fs.Var(&kf.cni, "cni-conf-dir", "write the pod network's CNI config ("+cni.FileName+") into `directory` from this node's pod CIDRs; \"\" turns it off (default "+cni.DefaultDir+" with --kubeconfig or --in-cluster, off otherwise)")
	fs.StringVar(&kf.proxyName, "proxy-name", "", "serve Services labelled service.kubernetes.io/service-proxy-name=NAME as well as unlabelled ones")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: vrouter run --config FILE [flags]\n\nRuns the router for this node until SIGINT or SIGTERM. SIGHUP re-reads the config file;\nso does any change to it.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	if *path == "" && !kf.enabled() {
		return usageErrorf("--config is required (or --kubeconfig / --in-cluster with --node-name)")
	}
	if kf.kubeconfig != "" && kf.inCluster {
		return usageErrorf("--kubeconfig and --in-cluster are exclusive")
	}
	if kf.sidecar && kf.cni.String() != "" {
		return usageErrorf("--cni-conf-dir does not apply with --sidecar: a sidecar serves one Pod, not the node's pod network")
	}
	defaultProcs()
	// Catch SIGHUP (reload) and SIGUSR1 (log level) from the start: their
	// default action would kill a router that is still coming up. A
	// SIGHUP that arrives early is kept and served once the watcher runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	signal.Ignore(syscall.SIGUSR1)
	log, level, err := lf.build()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	if kf.enabled() {
		o, err := of.newOps(fs, log, level)
		if err != nil {
			return err
		}
		defer o.close()
		ctx, stop := o.signalContext(context.Background())
		defer stop()
		return runKube(ctx, &kf, *path, *tunFD, log, o)
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		return err
	}
	if *tunFD >= 0 {
		cfg.TUN.FD = *tunFD
	}
	cw := kf.cni.Writer("", log)
	if err := cw.Write(cni.Network{PodCIDRs: cfg.Node.PodCIDRs, MTU: cfg.TUN.MTU}); err != nil {
		return err
	}
	o, err := of.newOps(fs, log, level)
	if err != nil {
		return err
	}
	defer o.close()
	ctx, stop := o.signalContext(context.Background())
	defer stop()
	return runRouter(ctx, *path, cfg, log, o, hup, cw)
}

// defaultProcs runs the router's Go code on one thread at a time
// (GOMAXPROCS 1) unless the GOMAXPROCS environment variable says
// otherwise. The data path is two reader goroutines that spend most of
// their time in system calls, which do the kernel's share of the work in
// the caller's thread; with a second P the scheduler hands goroutines
// between threads, and every hand-off is a wakeup the workload beside
// the router pays for. The bench on 2 CPUs, two A/B pairs of two rounds:
// ClusterIP new connections/s 0.80–0.82× → 0.88–0.93× the kernel's, proxy
// mode 0.53–0.54× → 0.56–0.58×, TCP 1 stream 0.47–0.51× → 0.54×, round
// trips unchanged. Set GOMAXPROCS for a busy proxy-mode router on a large
// node, where gVisor's TCP and the splice goroutines need more CPU.
func defaultProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// dataPath is a node's programmed data path: the router and the load
// balancer over it.
type dataPath struct {
	dev   string
	r     *router.Router
	table *lb.Table
	nat   *lb.NAT
	proxy *lb.Proxy
}

// runRouter brings up the data path for cfg and runs it until ctx is done.
// It owns every goroutine it starts and returns after they exit.
func runRouter(ctx context.Context, path string, cfg *configs.Config, log *zap.Logger, o *ops, hup <-chan os.Signal, cw *cni.Writer) error {
	dp, err := bringUp(cfg, log, o)
	if err != nil {
		return err
	}
	r, table, nat, proxy := dp.r, dp.table, dp.nat, dp.proxy
	rl := &reloader{log: log, r: r, table: table, nat: nat, proxy: proxy, dev: dp.dev, cur: cfg, cni: cw}
	w := configs.NewWatcher(path, log, o.observeApply(rl), configs.WatchOptions{Initial: cfg})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	var routerErr, watchErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		routerErr = dp.run(ctx, o)
		cancel()
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		watchErr = w.Run(ctx)
		if watchErr != nil {
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: re-reading config")
				w.Reload()
			}
		}
	}()
	wg.Wait()
	log.Info("vrouter stopped")
	if watchErr != nil {
		watchErr = fmt.Errorf("watch config: %w", watchErr)
	}
	return errors.Join(routerErr, watchErr)
}

// run runs the data path and the operability servers until ctx is done or
// the router fails, and returns after every goroutine it started exited.
func (dp *dataPath) run(ctx context.Context, o *ops) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var routerErr error
	wg.Add(4)
	go func() {
		defer wg.Done()
		o.run(ctx) // metrics, health and the admin API, until ctx is done
	}()
	go func() {
		defer wg.Done()
		_ = dp.nat.Run(ctx) // returns nil when ctx is done
	}()
	go func() {
		defer wg.Done()
		_ = dp.proxy.Run(ctx) // returns nil when ctx is done, its connections closed
	}()
	go func() {
		defer wg.Done()
		routerErr = dp.r.Run(ctx)
		cancel()
	}()
	wg.Wait()
	return routerErr
}

// bringUp creates and programs the data path for cfg: the TUN (created or
// adopted, configured when cfg says so), the overlay socket, the router,
// the Service table, NAT and proxy. It starts no goroutine; on error it
// releases what it made.
func bringUp(cfg *configs.Config, log *zap.Logger, o *ops) (*dataPath, error) {
	dev, err := openTUN(cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.TUN.Configure {
		if err := tun.Configure(dev.Name(), linkConfig(cfg)); err != nil {
			dev.Close()
			return nil, err
		}
	}
	conn, err := router.ListenUDP(cfg.Overlay.Listen)
	if err != nil {
		dev.Close()
		return nil, err
	}
	r, err := router.New(router.Options{
		Logger:  log.Named("router"),
		TUN:     dev,
		Overlay: conn,
		MTU:     cfg.Overlay.MTU,
		TUNMTU:  cfg.TUN.MTU,
	})
	if err != nil {
		dev.Close()
		conn.Close()
		return nil, err
	}
	if err := r.Set(routerConfig(cfg)); err != nil {
		r.Close()
		return nil, fmt.Errorf("program router: %w", err)
	}
	table, nat, err := newLB(cfg, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.SetHook(nat)
	// The proxy installs its TCP handler in the stack: before the router
	// runs, as the handler slot is not synchronized with the packet path.
	proxy, err := lb.NewProxy(r.Stack(), table, log.Named("lb"), cfg.LB.Proxy)
	if err != nil {
		r.Close()
		return nil, err
	}
	log.Info("vrouter running",
		zap.String("node", cfg.Node.Name),
		zap.String("tun", dev.Name()),
		zap.Stringer("overlay", conn.LocalAddr()),
		zap.Int("mtu", cfg.Overlay.MTU),
		zap.Bool("offload", isOffload(dev)),
		zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)),
		zap.Int("peers", len(cfg.Peers)),
		zap.String("version", versionString()))

	if err := o.attach(r, table, nat, proxy); err != nil {
		r.Close()
		return nil, err
	}
	return &dataPath{dev: dev.Name(), r: r, table: table, nat: nat, proxy: proxy}, nil
}

// newLB builds the Service table from cfg and the nat mode data path over it.
func newLB(cfg *configs.Config, log *zap.Logger) (*lb.Table, *lb.NAT, error) {
	table, err := lb.NewTable(log.Named("lb"), lb.Options{NodeName: cfg.Node.Name, Zone: cfg.Node.Zone})
	if err != nil {
		return nil, nil, err
	}
	if err := table.Set(cfg.Services); err != nil {
		return nil, nil, fmt.Errorf("program Services: %w", err)
	}
	nat, err := lb.NewNAT(table, log.Named("lb"), cfg.LB.NAT)
	if err != nil {
		return nil, nil, err
	}
	nat.SetLocal(cfg.Node.PodCIDRs, cfg.RouterAddresses)
	return table, nat, nil
}

// openTUN creates (or adopts) the TUN. With tun.offload it asks for
// segmentation offload first and falls back to a plain device, with a
// warning, if the kernel refuses it.
func openTUN(cfg *configs.Config, log *zap.Logger) (tun.Device, error) {
	if cfg.TUN.FD > 0 {
		return tun.Adopt(cfg.TUN.FD, cfg.TUN.Name)
	}
	opts := tun.Options{Name: cfg.TUN.Name, MultiQueue: cfg.TUN.MultiQueue}
	if cfg.TUN.Offload {
		o := opts
		o.Offload = true
		dev, err := tun.Open(o)
		if err == nil || !errors.Is(err, tun.ErrOffloadRefused) {
			return dev, err
		}
		log.Warn("TUN segmentation offload refused; opening a plain device (TCP between nodes will be slower)",
			zap.String("tun", cfg.TUN.Name), zap.Error(err))
	}
	return tun.Open(opts)
}

// isOffload reports whether dev carries TSO super-packets.
func isOffload(dev tun.Device) bool {
	_, ok := dev.(tun.OffloadDevice)
	return ok
}

// kernelRoutes are the node kernel's routes into the TUN: the cluster and
// Service CIDRs, and the router's own addresses.
func kernelRoutes(cfg *configs.Config) []netip.Prefix {
	var rs []netip.Prefix
	rs = append(rs, cfg.ClusterCIDRs...)
	rs = append(rs, cfg.ServiceCIDRs...)
	for _, a := range cfg.RouterAddresses {
		rs = append(rs, netip.PrefixFrom(a, a.BitLen()))
	}
	return rs
}

func linkConfig(cfg *configs.Config) tun.LinkConfig {
	return tun.LinkConfig{Addresses: cfg.TUN.Addresses, MTU: cfg.TUN.MTU, Routes: kernelRoutes(cfg)}
}

// routerConfig is the router's desired state from a config file. Its
// ServiceAddresses are the ClusterIPs of proxy-mode Services, which the
// stack terminates.
func routerConfig(cfg *configs.Config) router.Config {
	rc := router.Config{
		PodCIDRs:         slices.Clone(cfg.Node.PodCIDRs),
		Addresses:        slices.Clone(cfg.RouterAddresses),
		ServiceAddresses: proxyVIPs(cfg),
		ClusterCIDRs:     slices.Clone(cfg.ClusterCIDRs),
	}
	for _, p := range cfg.Peers {
		rc.Peers = append(rc.Peers, router.Peer{Name: p.Name, Endpoint: p.Underlay, PodCIDRs: slices.Clone(p.PodCIDRs)})
	}
	return rc
}

// reloader applies config changes to a running router. Its apply runs on
// the config watcher's goroutine, one call at a time.
type reloader struct {
	log   *zap.Logger
	r     *router.Router
	table *lb.Table
	nat   *lb.NAT
	proxy *lb.Proxy
	dev   string
	cur   *configs.Config
	cni   *cni.Writer // --cni-conf-dir: rewritten when node.podCIDRs change
}

func (rl *reloader) apply(next *configs.Config) {
	cur := rl.cur
	if needs := restartNeeded(cur, next); len(needs) > 0 {
		rl.log.Warn("config change needs a restart to take effect; applying the rest",
			zap.Strings("fields", needs))
	}
	// A VIP with open proxied connections stays a stack address while
	// they drain, even if its Service left proxy mode or the file; a
	// stale one only answers SYNs with RST until the next reload.
	rc := routerConfig(next)
	rc.ServiceAddresses = mergeAddrs(rc.ServiceAddresses, rl.proxy.VIPs())
	if err := rl.r.Set(rc); err != nil {
		rl.log.Error("config reload refused; keeping the running config", zap.Error(err))
		return
	}
	rl.nat.SetLocal(next.Node.PodCIDRs, next.RouterAddresses)
	if err := rl.table.Set(next.Services); err != nil {
		rl.log.Error("Service table update refused; keeping the running Services", zap.Error(err))
	}
	// Connections to endpoints that left start draining now.
	rl.proxy.Sync()
	if next.TUN.Configure && !slices.Equal(kernelRoutes(cur), kernelRoutes(next)) {
		lc := linkConfig(next)
		lc.MTU = 0 // the device's MTU is fixed while it runs
		if err := tun.Configure(rl.dev, lc); err != nil {
			rl.log.Error("reconfigure TUN", zap.Error(err))
		} else if err := tun.SyncRoutes(rl.dev, lc.Routes); err != nil {
			rl.log.Error("sync TUN routes", zap.Error(err))
		}
	}
	if err := rl.cni.Write(cni.Network{PodCIDRs: next.Node.PodCIDRs, MTU: next.TUN.MTU}); err != nil {
		rl.log.Error("rewrite the CNI config", zap.Error(err))
	}
	rl.cur = next
	rl.log.Info("config reloaded", zap.Int("peers", len(next.Peers)), zap.Int("services", len(next.Services)))
}

// restartNeeded names the changed fields that only take effect on restart.
func restartNeeded(a, b *configs.Config) []string {
	var out []string
	if !a.TUN.Equal(&b.TUN) {
		out = append(out, "tun")
	}
	if a.Overlay != b.Overlay {
		out = append(out, "overlay")
	}
	if a.Node.Underlay != b.Node.Underlay {
		out = append(out, "node.underlayAddress")
	}
	if a.LB.Proxy != b.LB.Proxy {
		out = append(out, "lb.proxy")
	}
	if a.LB.NAT != b.LB.NAT {
		out = append(out, "lb.nat")
	}
	return out
}
