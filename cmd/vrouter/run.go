package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/cni"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/dataplane"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/tun"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		path  = fs.String("config", "", "path of the router's config file: required unless --kubeconfig or --in-cluster, where it is an optional tuning file (no node, peers or services)")
		tunFD = fs.Int("tun-fd", -1, "adopt this already-open TUN file descriptor instead of creating the device")
		state = fs.String("state-dir", admin.SocketDir, "keep the nat flow table in a file here (<tun name>.netns-<inode>.flows), which the next router adopts, so that established nat connections survive a restart or a crash; use tmpfs; \"\" turns it off")
		lf    logFlags
		of    opsFlags
		kf    kubeFlags
		nf    nodePortFlags
	)
	lf.register(fs)
	of.register(fs)
	nf.register(fs)
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
	fs.BoolVar(&kf.masquerade, "masquerade", false,
		"with --kubeconfig or --in-cluster: pods' traffic to destinations outside the cluster and Service CIDRs leaves the node with the node's address, re-originated from its own sockets, as flannel's --ip-masq (the tuning file's egress.masquerade; docs/egress.md)")
	fs.Var(&kf.cni, "cni-conf-dir", "write the pod network's CNI config ("+cni.FileName+") into `directory` from this node's pod CIDRs; \"\" turns it off (default "+cni.DefaultDir+" with --kubeconfig or --in-cluster, off otherwise)")
	kf.encryption.def, kf.keyFile.def = configs.EncryptionNone, configs.DefaultWireGuardKeyFile
	fs.Var(&kf.encryption, "overlay-encryption",
		"with --kubeconfig or --in-cluster: none, or wireguard to authenticate and encrypt the overlay with WireGuard; each router publishes its public key on its Node (annotation vrouter.io/wireguard-public-key) and reads its peers' from theirs; every node must agree. Given, it wins over the tuning file's overlay.encryption (docs/wireguard.md)")
	fs.Var(&kf.keyFile, "wireguard-key-file",
		"with --overlay-encryption=wireguard: this router's private key, generated there (mode 0600) if missing; SIGHUP re-reads it and publishes the new public key. Given, it wins over the tuning file's overlay.privateKeyFile")
	kf.busyPoll.def = "0s"
	fs.Var(&kf.busyPoll, "busy-poll",
		"with --kubeconfig or --in-cluster: after each packet keep reading the TUN and overlay socket without sleeping for this `duration` (e.g. 10ms; 0 off): round trips wake no router thread, for up to a core while packets keep coming, none at rest. Given, it wins over the tuning file's router.busyPoll (docs/operations.md, \"CPU\")")
	fs.StringVar(&kf.proxyName, "proxy-name", "", "serve Services labelled service.kubernetes.io/service-proxy-name=NAME as well as unlabelled ones")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter run --config FILE [flags]
       vrouter run --kubeconfig FILE|--in-cluster --node-name NAME [--config TUNING-FILE] [flags]

Runs the router for this node until SIGINT or SIGTERM. From a config file,
SIGHUP re-reads the file; so does any change to it. With --kubeconfig or
--in-cluster, Nodes, Services and EndpointSlices come from the API server
and --config, if given, tunes the rest (vrouter validate --tuning checks it);
SIGHUP then re-reads the WireGuard key file.

Flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
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
	if err := nf.check(); err != nil {
		return err
	}
	if kf.sidecar && (nf.socket != "" || nf.addrs != "") {
		return usageErrorf("--nodeport-addresses and --publish-socket do not apply with --sidecar: a sidecar serves no node ports")
	}
	if kf.masquerade && (!kf.enabled() || kf.sidecar) {
		return usageErrorf("--masquerade applies with --kubeconfig or --in-cluster, not with --sidecar; from a config file, set egress.masquerade")
	}
	if (kf.encryption.set || kf.keyFile.set) && (!kf.enabled() || kf.sidecar) {
		return usageErrorf("--overlay-encryption and --wireguard-key-file apply with --kubeconfig or --in-cluster, not with --sidecar; from a config file, set overlay.encryption and overlay.privateKeyFile")
	}
	if kf.busyPoll.set && (!kf.enabled() || kf.sidecar) {
		return usageErrorf("--busy-poll applies with --kubeconfig or --in-cluster, not with --sidecar; from a config file, set router.busyPoll")
	}
	if kf.sidecar && kf.cni.String() != "" {
		return usageErrorf("--cni-conf-dir does not apply with --sidecar: a sidecar serves one Pod, not the node's pod network")
	}
	// A tuning file is checked before anything starts, so that a broken
	// one fails the start at once rather than once the API server has
	// answered.
	var tuning *configs.File
	if kf.enabled() && !kf.sidecar && *path != "" {
		t, err := configs.LoadTuning(*path)
		if err != nil {
			return invalidFile("tuning file", err)
		}
		tuning = t
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
		return runKube(ctx, &kf, &nf, tuning, *tunFD, *state, log, o, hup)
	}
	cfg, err := configs.Load(*path)
	if err != nil {
		return invalidFile("config file", err)
	}
	fo := fileOverrides{tunFD: *tunFD, nf: &nf}
	fo.apply(cfg)
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
	return runRouter(ctx, *path, cfg, fo, *state, log, o, hup, cw)
}

// invalidFile introduces the problems of an invalid file, one per line as
// vrouter validate prints them; other errors (a file that cannot be read)
// pass unchanged.
func invalidFile(what string, err error) error {
	var fe *configs.FileError
	if !errors.As(err, &fe) {
		return err
	}
	check := "vrouter validate"
	if what == "tuning file" {
		check += " --tuning"
	}
	return fmt.Errorf("%s %s is invalid (%s checks it):\n%w", what, fe.Path, check, err)
}

// defaultProcs runs the router's Go code on one thread at a time
// (GOMAXPROCS 1) unless the GOMAXPROCS environment variable says
// otherwise. The data path is two reader goroutines that spend most of
// their time in system calls, which do the kernel's share of the work in
// the caller's thread; with a second P the scheduler hands goroutines
// between threads, and every hand-off is a wakeup the workload beside
// the router pays for, in ClusterIP new connections/s (NAT and proxy
// mode) and single-stream TCP throughput, not in round trips; `make bench`
// (integration/bench) prints those figures against the kernel's. Set
// GOMAXPROCS for a busy proxy-mode router on a large node, where gVisor's
// TCP and the splice goroutines need more CPU.
func defaultProcs() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}

// runRouter brings up the data path for cfg and runs it until ctx is done,
// fed by the config file's watcher. It owns every goroutine it starts and
// returns after they exit.
func runRouter(ctx context.Context, path string, cfg *configs.Config, fo fileOverrides, stateDir string, log *zap.Logger, o *ops, hup <-chan os.Signal, cw *cni.Writer) error {
	var opts dataplane.Options
	if err := fo.nf.options(&opts); err != nil {
		return err
	}
	dp, err := bringUp(cfg, dataplane.FromConfig(cfg), opts, log, o)
	if err != nil {
		return err
	}
	stopFlows := persistFlows(dp, stateDir, cfg.TUN.Name, log)
	defer stopFlows() // after the goroutines below, the data path's included, exited
	rl := &reloader{log: log, dp: dp, cur: cfg, cni: cw}
	w := newWatcher(path, cfg, fo, log, o, rl)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	var routerErr, watchErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		routerErr = runDataPath(ctx, dp, o)
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
				if err := reloadKey(dp.Overlay(), cfg.Overlay.PrivateKeyFile, log); err != nil {
					log.Error("reload the WireGuard key", zap.Error(err))
				}
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

// newWatcher returns the watcher of the config file at path, which cfg
// was loaded from (fo applied): it applies fo to each config it reads and
// hands each new one to rl, and the metrics count both the configs rl
// applies or refuses and the files the watcher refuses before rl sees
// them.
func newWatcher(path string, cfg *configs.Config, fo fileOverrides, log *zap.Logger, o *ops, rl *reloader) *configs.Watcher {
	return configs.NewWatcher(path, log, o.observeApply(rl), configs.WatchOptions{Initial: cfg, Refused: o.observeRefused, Override: fo.apply})
}

// fileOverrides are the run flags that override fields of the config
// file.
type fileOverrides struct {
	tunFD int            // --tun-fd; -1 without
	nf    *nodePortFlags // --nodeport-addresses
}

// apply sets cfg's overridden fields: as the file is loaded and, through
// the watcher, on every read after, so that a file read again differs
// from the running config only where the file changed (a router on
// --tun-fd would otherwise find its tun section changed at every read,
// and log that it needs a restart).
func (f fileOverrides) apply(cfg *configs.Config) {
	if f.tunFD >= 0 {
		cfg.TUN.FD = f.tunFD
	}
	if f.nf != nil {
		f.nf.config(cfg)
	}
}

// runDataPath runs the data path and the operability servers until ctx is
// done or the router fails, and returns after every goroutine it started
// exited.
func runDataPath(ctx context.Context, dp *dataplane.DataPlane, o *ops) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { o.run(ctx) }) // metrics, health and the admin API, until ctx is done
	err := dp.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

// bringUp opens the TUN (created or adopted; its addresses and MTU set
// when cfg says so, and then its routes kept by the data path) and the
// overlay socket, builds the data path for cfg over them, programs d and
// attaches the operability endpoints. It starts no goroutine; on error it
// releases what it made.
func bringUp(cfg *configs.Config, d dataplane.Desired, opts dataplane.Options, log *zap.Logger, o *ops) (*dataplane.DataPlane, error) {
	dev, err := openTUN(cfg, log)
	if err != nil {
		return nil, err
	}
	if cfg.TUN.Configure {
		if err := tun.Configure(dev.Name(), tun.LinkConfig{Addresses: cfg.TUN.Addresses, MTU: cfg.TUN.MTU}); err != nil {
			dev.Close()
			return nil, err
		}
		opts.Link = dataplane.KernelLink(dev.Name())
	}
	conn, err := listenOverlay(cfg, log)
	if err != nil {
		dev.Close()
		return nil, err
	}
	opts.Logger = log
	dp, err := dataplane.New(dev, conn, cfg, opts)
	if err != nil {
		return nil, err
	}
	if err := dp.Apply(d); err != nil {
		dp.Close()
		return nil, err
	}
	batchIO, why := tun.BatchIO(dev)
	if !batchIO && dev.Offload() {
		log.Info("TUN I/O one packet per system call", zap.NamedError("reason", why))
	}
	log.Info("vrouter running",
		zap.String("node", cfg.Node.Name),
		zap.String("tun", dev.Name()),
		zap.Stringer("overlay", conn.LocalAddr()),
		zap.Int("mtu", cfg.Overlay.MTU),
		zap.Bool("offload", dev.Offload()),
		zap.Bool("udpOffload", dev.UDPOffload()),
		zap.Bool("batchIO", batchIO),
		zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)),
		zap.Int("peers", len(d.Peers)),
		zap.String("version", versionString()))

	if err := o.attach(dp.Router(), dp.Table(), dp.NAT(), dp.Proxy(), dp.HostPorts(), dp.Egress(), dp.Overlay()); err != nil {
		dp.Close()
		return nil, err
	}
	return dp, nil
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

// reloader hands each new config from the file to the data path. Its
// apply runs on the config watcher's goroutine, one call at a time.
type reloader struct {
	log *zap.Logger
	dp  *dataplane.DataPlane
	cur *configs.Config // the config last applied
	cni *cni.Writer     // --cni-conf-dir: rewritten when node.podCIDRs change
}

// apply applies next (the run flags that override the file already
// applied, see fileOverrides), or logs why it did not and keeps the
// running config.
func (rl *reloader) apply(next *configs.Config) error {
	if needs := restartNeeded(rl.cur, next); len(needs) > 0 {
		rl.log.Warn("config change needs a restart to take effect; applying the rest",
			zap.Strings("fields", needs))
	}
	// A rotated WireGuard key is taken at any reload and on SIGHUP: the
	// key file is not watched, the config file is.
	if err := reloadKey(rl.dp.Overlay(), rl.cur.Overlay.PrivateKeyFile, rl.log); err != nil {
		rl.log.Error("reload the WireGuard key", zap.Error(err))
	}
	if err := rl.dp.Apply(dataplane.FromConfig(next)); err != nil {
		rl.log.Error("config reload refused; keeping the running config", zap.Error(err))
		return err
	}
	if err := rl.cni.Write(cni.Network{PodCIDRs: next.Node.PodCIDRs, MTU: next.TUN.MTU}); err != nil {
		rl.log.Error("rewrite the CNI config", zap.Error(err))
	}
	rl.cur = next
	rl.log.Info("config reloaded", zap.Int("peers", len(next.Peers)), zap.Int("services", len(next.Services)))
	return nil
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
	if a.BusyPoll != b.BusyPoll {
		out = append(out, "router.busyPoll")
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
	if a.Egress.Masquerade != b.Egress.Masquerade || a.Egress.MaxFlows != b.Egress.MaxFlows || a.Egress.MaxFlowsPerPod != b.Egress.MaxFlowsPerPod {
		out = append(out, "egress (but nonMasqueradeCIDRs)")
	}
	return out
}
