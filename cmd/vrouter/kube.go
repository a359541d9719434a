package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/cni"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/dataplane"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// kubeFlags select the Kubernetes source: Nodes, Services and
// EndpointSlices from the API server instead of peers and Services from
// the config file.
type kubeFlags struct {
	kubeconfig  string
	inCluster   bool
	nodeName    string
	clusterCIDR string
	serviceCIDR string
	proxyName   string
	minSync     time.Duration
	unhealthy   time.Duration
	sidecar     bool
	masquerade  bool        // --masquerade: egress.masquerade on, whatever the tuning file says
	cni         cni.DirFlag // --cni-conf-dir; its default here is cni.DefaultDir
	// --overlay-encryption and --wireguard-key-file: when given, they
	// win over the tuning file's overlay.encryption and
	// overlay.privateKeyFile.
	encryption encryptionFlag
	keyFile    setString
	// --busy-poll: when given, it wins over the tuning file's
	// router.busyPoll.
	busyPoll busyPollFlag
}

// busyPollFlag is --busy-poll: a duration, 0 (off) or 1µs..1s, and
// whether it was given.
type busyPollFlag struct{ setString }

func (f *busyPollFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || (d > 0 && d < time.Microsecond) || d > time.Second {
		return fmt.Errorf("%q is not a busy-polling window (want 0 for off, or 1µs..1s, e.g. 10ms)", s)
	}
	return f.setString.Set(s)
}

// encryptionFlag is --overlay-encryption: none or wireguard, and whether
// it was given.
type encryptionFlag struct{ setString }

func (f *encryptionFlag) Set(s string) error {
	if s != configs.EncryptionNone && s != configs.EncryptionWireGuard {
		return fmt.Errorf("%q is not an encryption (want %s or %s)", s, configs.EncryptionNone, configs.EncryptionWireGuard)
	}
	return f.setString.Set(s)
}

// setString is a string flag that knows whether it was given: a flag
// that overrides a tuning file field only when given.
type setString struct {
	value, def string
	set        bool
}

func (f *setString) String() string {
	if f.set {
		return f.value
	}
	return f.def
}

func (f *setString) Set(s string) error {
	f.value, f.set = s, true
	return nil
}

func (k *kubeFlags) enabled() bool { return k.kubeconfig != "" || k.inCluster }

// sidecarConfig is the config of a sidecar router: one that serves a
// single Pod, inside the Pod's network namespace, where the cluster's own
// network carries pod traffic. It load-balances the Pod's connections to
// Service ClusterIPs and routes nothing else: the kernel sends only the
// Service CIDR to the TUN, the stack answers everything back through it,
// there are no peers (the overlay socket is bound to loopback, unused),
// and every Service is served in proxy mode (dataplane.Options.ProxyOnly):
// the router terminates the Pod's connection and dials the backend from
// the Pod's own kernel, so replies come back to it through the cluster's
// network. (nat mode cannot work here: a backend's reply would reach the
// Pod directly, untranslated.) No file describes it, so it is built here;
// what it leaves zero (lb's tuning) takes lb's defaults.
func (k *kubeFlags) sidecarConfig() (*configs.Config, error) {
	svc, err := netip.ParsePrefix(k.serviceCIDR)
	switch {
	case err != nil:
		return nil, fmt.Errorf("--service-cidr %q: not a CIDR prefix (want e.g. 10.96.0.0/12)", k.serviceCIDR)
	case svc.Masked() != svc:
		return nil, fmt.Errorf("--service-cidr %q: host bits set (want %s)", k.serviceCIDR, svc.Masked())
	}
	return &configs.Config{
		Node: configs.Node{
			Name:     k.nodeName,
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, // replies go back to the Pod
			Underlay: netip.MustParseAddr("127.0.0.1"),
		},
		TUN: configs.TUN{
			Name: configs.DefaultTUNName,
			// No encapsulation: the stack and the Pod's kernel only. No
			// addresses: the kernel sources its connections from the
			// Pod's own address.
			MTU:       1500,
			Configure: true,
			Offload:   true,
		},
		Overlay: configs.Overlay{
			Port:        configs.DefaultOverlayPort,
			Listen:      netip.MustParseAddrPort("127.0.0.1:0"),
			UnderlayMTU: configs.DefaultUnderlayMTU,
			MTU:         1500,
		},
		RouterAddresses: []netip.Addr{configs.DefaultRouterAddresses[0]},
		ServiceCIDRs:    []netip.Prefix{svc},
		LB:              configs.LB{Mode: lb.ModeProxy},
	}, nil
}

// kubeConfig is the config the data path starts from in Kubernetes mode:
// the tuning file (--config, checked by configs.LoadTuning) if given,
// else the defaults with --cluster-cidr and --service-cidr; with this
// Node in place of the node section. --overlay-encryption and
// --wireguard-key-file, when given, replace the file's overlay.encryption
// and overlay.privateKeyFile before the config is computed, so that the
// tunnel MTU (and the CNI config's, which follows it) leaves room for
// WireGuard's header.
func (k *kubeFlags) kubeConfig(tuning *configs.File, self kube.Node) (*configs.Config, error) {
	f := &configs.File{
		ClusterCIDRs: []string{k.clusterCIDR},
		ServiceCIDRs: []string{k.serviceCIDR},
	}
	if tuning != nil {
		c := *tuning // the caller's stays as loaded
		f = &c
	}
	if k.encryption.set {
		f.Overlay.Encryption = k.encryption.value
	}
	if k.keyFile.set {
		f.Overlay.PrivateKeyFile = k.keyFile.value
	}
	if k.busyPoll.set {
		f.Router.BusyPoll = k.busyPoll.value
	}
	cfg, err := f.ForNode(configs.Node{Name: self.Name, Zone: self.Zone, Underlay: self.Address, PodCIDRs: self.PodCIDRs})
	if err != nil {
		return nil, fmt.Errorf("config for node %s from the API server: %w", self.Name, err)
	}
	if k.masquerade {
		cfg.Egress.Masquerade = true
	}
	return cfg, nil
}

// runKube runs the router fed by the API server: it waits until this Node
// has a pod CIDR and the informers have synced, brings up the data path,
// and then keeps it equal to the cluster's state.
//
// Over an encrypted overlay it publishes the router's WireGuard public key
// on its own Node (kube.KeyPublisher) once the overlay listens, and again
// after SIGHUP re-read a rotated key file; over a plain one it removes a
// key it published before. Peers' keys come from their Nodes.
func runKube(ctx context.Context, k *kubeFlags, nf *nodePortFlags, tuning *configs.File, tunFD int, stateDir string, log *zap.Logger, o *ops, hup <-chan os.Signal) error {
	if k.nodeName == "" {
		return usageErrorf("--node-name (or NODE_NAME) is required with --kubeconfig or --in-cluster")
	}
	restCfg, err := kube.RESTConfig(k.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kube.NewClient(restCfg)
	if err != nil {
		return err
	}
	sink := &kubeSink{log: log.Named("kube"), first: make(chan struct{}),
		refused: func(err error) { o.reloaded(time.Now(), err) }}
	if !k.sidecar { // a sidecar has no overlay: nothing to publish
		sink.pub = kube.NewKeyPublisher(client, k.nodeName, kube.PublisherOptions{Logger: log.Named("kube")})
	}
	src, err := kube.New(client, sink, kube.Options{
		NodeName:        k.nodeName,
		ProxyName:       k.proxyName,
		MinSyncInterval: k.minSync,
		UnhealthyAfter:  k.unhealthy,
		Logger:          log.Named("kube"),
		ObserveLatency:  o.observeProgramming,
	})
	if err != nil {
		return err
	}
	o.health.SetSource(src.Ready)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var srcErr, dpErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		srcErr = src.Run(ctx)
		cancel()
	}()
	if sink.pub != nil {
		wg.Go(func() { _ = sink.pub.Run(ctx) }) // nil: each failed patch is logged
	}
	defer wg.Wait()

	sink.sidecar = k.sidecar
	if k.sidecar {
		log.Info("sidecar: waiting for the API server's Services", zap.String("node", k.nodeName))
	} else {
		log.Info("waiting for the API server: informers to sync and this Node to have a pod CIDR", zap.String("node", k.nodeName))
	}
	select {
	case <-ctx.Done():
		wg.Wait()
		return srcErr
	case <-sink.first:
	}
	self := sink.selfNode()
	var cfg *configs.Config
	if k.sidecar {
		cfg, err = k.sidecarConfig()
	} else {
		cfg, err = k.kubeConfig(tuning, self)
		if err == nil {
			// The pods' last mile, from the pod CIDRs the router starts
			// with (SetNodes logs a change to them as needing a restart).
			err = k.cni.Writer(cni.DefaultDir, log).Write(cni.Network{PodCIDRs: cfg.Node.PodCIDRs, MTU: cfg.TUN.MTU})
		}
	}
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	if tunFD >= 0 {
		cfg.TUN.FD = tunFD
	}
	opts := dataplane.Options{ProxyOnly: k.sidecar}
	if !k.sidecar {
		nf.config(cfg)
		err = nf.options(&opts)
	}
	var dp *dataplane.DataPlane
	if err == nil {
		dp, err = bringUp(cfg, dataplane.FromConfig(cfg), opts, log, o)
	}
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	if err := sink.start(dp, cfg); err != nil {
		log.Error("program the first state from the API server", zap.Error(err))
	}
	stopFlows := func() {}
	if !k.sidecar { // a sidecar proxies: no nat flows
		stopFlows = persistFlows(dp, stateDir, cfg.TUN.Name, log)
		// The overlay listens: peers may learn its key.
		sink.pub.Set(overlayKey(dp.Overlay()))
		wg.Go(func() { serveKeyReloads(ctx, hup, dp.Overlay(), cfg.Overlay.PrivateKeyFile, sink.pub, log) })
	}
	dpErr = runDataPath(ctx, dp, o)
	stopFlows()
	cancel()
	wg.Wait()
	log.Info("vrouter stopped")
	return errors.Join(dpErr, srcErr)
}

// overlayKey is the public key of an encrypted overlay, zero for a plain
// one.
func overlayKey(conn router.Conn) wireguard.Key {
	if wg, ok := conn.(*wireguard.Conn); ok {
		return wg.PublicKey()
	}
	return wireguard.Key{}
}

// serveKeyReloads re-reads the WireGuard key file at each SIGHUP until ctx
// is done, and has pub publish the key the overlay then has: a rotated
// key reaches the peers through this Node. (In Kubernetes mode nothing
// else is re-read: the API server's objects are watched, and a tuning
// file change needs a restart.)
func serveKeyReloads(ctx context.Context, hup <-chan os.Signal, conn router.Conn, path string, pub *kube.KeyPublisher, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if _, ok := conn.(*wireguard.Conn); !ok {
			log.Info("SIGHUP: nothing to re-read (the overlay is not encrypted; Nodes, Services and EndpointSlices are watched)")
			continue
		}
		log.Info("SIGHUP: re-reading the WireGuard key file", zap.String("file", path))
		if err := reloadKey(conn, path, log); err != nil {
			log.Error("reload the WireGuard key", zap.Error(err))
		}
		pub.Set(overlayKey(conn))
	}
}

// kubeSink hands the Kubernetes source's desired state to the data path.
// Until the data path exists it only records it; start applies what was
// recorded, and later calls go to the data path as they come. Its methods
// run on the Source's goroutine.
type kubeSink struct {
	log *zap.Logger
	// refused is told each change the data path refused (vrouter
	// status's last reload); nil: nobody.
	refused func(error)
	// pub is told the key this Node carries at each SetNodes; nil for a
	// sidecar.
	pub *kube.KeyPublisher

	// mu guards everything below.
	mu       sync.Mutex
	sidecar  bool          // serve only this Pod: no Nodes, no peers
	first    chan struct{} // closed once this node and the Services are known
	closed   bool
	self     kube.Node
	haveSelf bool
	haveSvcs bool
	peers    []kube.Node
	svcs     map[lb.ServiceName]lb.Service // until start
	dp       *dataplane.DataPlane
	port     uint16 // the peers' overlay port
}

func (s *kubeSink) selfNode() kube.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.self
}

func (s *kubeSink) maybeReadyLocked() {
	if (s.haveSelf || s.sidecar) && s.haveSvcs && !s.closed {
		s.closed = true
		close(s.first)
	}
}

// start applies the recorded state, on the node part of cfg, to dp and
// makes later calls go to dp.
func (s *kubeSink) start(dp *dataplane.DataPlane, cfg *configs.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dp, s.port = dp, uint16(cfg.Overlay.Port)
	d := dataplane.FromConfig(cfg)
	d.Peers = s.routerPeersLocked()
	d.Services = make([]lb.Service, 0, len(s.svcs))
	for _, svc := range s.svcs {
		d.Services = append(d.Services, svc)
	}
	slices.SortFunc(d.Services, func(a, b lb.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	s.svcs = nil // the Table holds them now
	return dp.Apply(d)
}

func (s *kubeSink) SetNodes(self kube.Node, peers []kube.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub != nil {
		s.pub.Observe(self.PublicKey)
	}
	if s.haveSelf && s.dp != nil && !sameNodeState(self, s.self) {
		s.log.Warn("this Node's pod CIDRs or address changed; restart vrouter to take them into account",
			zap.Stringers("podCIDRs", self.PodCIDRs), zap.Stringer("address", self.Address))
	}
	if !s.haveSelf || s.dp == nil {
		s.self = self
	}
	s.haveSelf = true
	s.peers = slices.Clone(peers)
	s.maybeReadyLocked()
	if s.dp == nil {
		return nil
	}
	return s.refusal(s.dp.SetPeers(s.routerPeersLocked()))
}

// sameNodeState reports whether a and b differ at most in their WireGuard
// key, which this router publishes rather than reads.
func sameNodeState(a, b kube.Node) bool {
	a.PublicKey = b.PublicKey
	return a.Equal(&b)
}

func (s *kubeSink) SetServices(svcs []lb.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.haveSvcs = true
	s.maybeReadyLocked()
	if s.dp != nil {
		return s.refusal(s.dp.SetServices(svcs))
	}
	s.svcs = make(map[lb.ServiceName]lb.Service, len(svcs))
	for _, svc := range svcs {
		s.svcs[svc.Key()] = svc
	}
	return nil
}

func (s *kubeSink) UpsertService(svc lb.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dp != nil {
		return s.refusal(s.dp.UpsertService(svc))
	}
	if s.svcs == nil {
		s.svcs = map[lb.ServiceName]lb.Service{}
	}
	s.svcs[svc.Key()] = svc
	return nil
}

func (s *kubeSink) DeleteService(namespace, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dp != nil {
		return s.refusal(s.dp.DeleteService(namespace, name))
	}
	delete(s.svcs, lb.ServiceName{Namespace: namespace, Name: name})
	return nil
}

// refusal passes err on, after telling refused of it.
func (s *kubeSink) refusal(err error) error {
	if err != nil && s.refused != nil {
		s.refused(err)
	}
	return err
}

// routerPeersLocked are the recorded peer Nodes as the router's peers: none
// for a sidecar, and none without an address or a pod CIDR. A peer without
// a WireGuard key is passed on: the router counts it and, over an
// encrypted overlay, does not route to it.
func (s *kubeSink) routerPeersLocked() []router.Peer {
	if s.sidecar {
		return nil
	}
	var out []router.Peer
	for _, p := range s.peers {
		if !p.Address.IsValid() || len(p.PodCIDRs) == 0 {
			continue
		}
		out = append(out, router.Peer{Name: p.Name, Endpoint: netip.AddrPortFrom(p.Address, s.port), PodCIDRs: slices.Clone(p.PodCIDRs), PublicKey: p.PublicKey})
	}
	return out
}
