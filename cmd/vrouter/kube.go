package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/cni"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
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
	cni         cni.DirFlag // --cni-conf-dir; its default here is cni.DefaultDir
}

func (k *kubeFlags) enabled() bool { return k.kubeconfig != "" || k.inCluster }

// sidecarFile is the config of a sidecar router: one that serves a single
// Pod, inside the Pod's network namespace, where the cluster's own network
// carries pod traffic. It load-balances the Pod's connections to Service
// ClusterIPs and routes nothing else: the kernel sends only the Service
// CIDR to the TUN, the stack answers everything back through it, there are
// no peers (the overlay socket is bound to loopback, unused), and every
// Service is served in proxy mode: the router terminates the Pod's
// connection and dials the backend from the Pod's own kernel, so replies
// come back to it through the cluster's network. (nat mode cannot work
// here: a backend's reply would reach the Pod directly, untranslated.)
func (k *kubeFlags) sidecarFile() (*configs.Config, error) {
	// Parse a minimal file for every default (its placeholder pod range is
	// replaced below), then make it a sidecar's.
	base := fmt.Sprintf("apiVersion: %s\nkind: %s\nnode: {name: sidecar, podCIDRs: [198.18.0.0/24], underlayAddress: 127.0.0.1}\nclusterCIDRs: [198.18.0.0/24]\nserviceCIDRs: [%s]\nlb: {mode: proxy}\n",
		configs.APIVersion, configs.Kind, k.serviceCIDR)
	cfg, err := configs.Parse([]byte(base))
	if err != nil {
		return nil, fmt.Errorf("--service-cidr %q: %w", k.serviceCIDR, err)
	}
	cfg.Node.Name = k.nodeName
	cfg.Node.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} // replies go back to the Pod
	cfg.ClusterCIDRs = nil
	cfg.TUN.Addresses = nil // the kernel sources its connections from the Pod's own address
	cfg.TUN.MTU = 1500      // no encapsulation: the stack and the Pod's kernel only
	cfg.Overlay.MTU = 1500
	cfg.Overlay.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	return cfg, nil
}

// kubeFile is the config the data path starts from in Kubernetes mode: the
// --config file if given (its node is filled in from this Node; it must
// not list peers or Services, which come from the API server), else the
// defaults with --cluster-cidr and --service-cidr.
func (k *kubeFlags) kubeFile(path string, self kube.Node) (*configs.Config, error) {
	f := configs.File{
		APIVersion:   configs.APIVersion,
		Kind:         configs.Kind,
		ClusterCIDRs: []string{k.clusterCIDR},
		ServiceCIDRs: []string{k.serviceCIDR},
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("load config: %w", err)
		}
		f = configs.File{}
		if err := yaml.UnmarshalStrict(b, &f); err != nil {
			return nil, fmt.Errorf("load config %s: %w", path, err)
		}
		if len(f.Peers) > 0 || len(f.Services) > 0 {
			return nil, fmt.Errorf("config %s: peers and services come from the API server with --kubeconfig; remove them from the file", path)
		}
	}
	f.Node.Name = self.Name
	f.Node.Zone = self.Zone
	f.Node.UnderlayAddress = self.Address.String()
	f.Node.PodCIDRs = nil
	for _, p := range self.PodCIDRs {
		f.Node.PodCIDRs = append(f.Node.PodCIDRs, p.String())
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return nil, err
	}
	cfg, err := configs.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config for node %s from the API server: %w", self.Name, err)
	}
	return cfg, nil
}

// runKube runs the router fed by the API server: it waits until this Node
// has a pod CIDR and the informers have synced, brings up the data path,
// and then keeps it equal to the cluster's state.
func runKube(ctx context.Context, k *kubeFlags, path string, tunFD int, log *zap.Logger, o *ops) error {
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
	sink := &kubeSink{log: log.Named("kube"), first: make(chan struct{})}
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
		cfg, err = k.sidecarFile()
	} else {
		cfg, err = k.kubeFile(path, self)
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
	dp, err := bringUp(cfg, log, o)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	if err := sink.start(dp, cfg); err != nil {
		log.Error("program the first state from the API server", zap.Error(err))
	}
	dpErr = dp.run(ctx, o)
	cancel()
	wg.Wait()
	log.Info("vrouter stopped")
	return errors.Join(dpErr, srcErr)
}

// kubeSink applies the Kubernetes source's desired state. Until the data
// path exists it only records it; start programs what was recorded, and
// later calls apply directly. Its methods run on the Source's goroutine.
type kubeSink struct {
	log *zap.Logger

	// mu guards everything below.
	mu       sync.Mutex
	sidecar  bool          // serve only this Pod: no peers, every Service in proxy mode
	first    chan struct{} // closed once this node and the Services are known
	closed   bool
	self     kube.Node
	haveSelf bool
	haveSvcs bool
	peers    []kube.Node
	svcs     map[lb.ServiceName]lb.Service
	dp       *dataPath
	cfg      *configs.Config
}

func (s *kubeSink) selfNode() kube.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.self
}

func (s *kubeSink) servicesLocked() []lb.Service {
	out := make([]lb.Service, 0, len(s.svcs))
	for _, svc := range s.svcs {
		out = append(out, svc)
	}
	slices.SortFunc(out, func(a, b lb.Service) int {
		if c := cmpString(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return cmpString(a.Name, b.Name)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *kubeSink) maybeReadyLocked() {
	if (s.haveSelf || s.sidecar) && s.haveSvcs && !s.closed {
		s.closed = true
		close(s.first)
	}
}

// start programs the recorded state into dp and makes later calls apply
// directly.
func (s *kubeSink) start(dp *dataPath, cfg *configs.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dp, s.cfg = dp, cfg
	return errors.Join(s.applyNodesLocked(), s.applyServicesLocked())
}

func (s *kubeSink) SetNodes(self kube.Node, peers []kube.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.haveSelf && s.dp != nil && !self.Equal(&s.self) {
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
	return s.applyNodesLocked()
}

func (s *kubeSink) SetServices(svcs []lb.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svcs = make(map[lb.ServiceName]lb.Service, len(svcs))
	for _, svc := range svcs {
		if svc, ok := s.adapt(svc); ok {
			s.svcs[lb.ServiceName{Namespace: svc.Namespace, Name: svc.Name}] = svc
		}
	}
	s.haveSvcs = true
	s.maybeReadyLocked()
	if s.dp == nil {
		return nil
	}
	return s.applyServicesLocked()
}

func (s *kubeSink) UpsertService(svc lb.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	svc, ok := s.adapt(svc)
	if !ok {
		// Nothing a sidecar serves is left of it.
		return s.deleteLocked(svc.Namespace, svc.Name)
	}
	if s.svcs == nil {
		s.svcs = map[lb.ServiceName]lb.Service{}
	}
	s.svcs[lb.ServiceName{Namespace: svc.Namespace, Name: svc.Name}] = svc
	if s.dp == nil {
		return nil
	}
	if err := s.dp.table.Upsert(svc); err != nil {
		return err
	}
	return s.afterServicesLocked()
}

func (s *kubeSink) DeleteService(namespace, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteLocked(namespace, name)
}

func (s *kubeSink) deleteLocked(namespace, name string) error {
	delete(s.svcs, lb.ServiceName{Namespace: namespace, Name: name})
	if s.dp == nil {
		return nil
	}
	s.dp.table.Delete(namespace, name)
	return s.afterServicesLocked()
}

// adapt makes a Service a sidecar can serve: proxy mode, TCP ports only
// (a sidecar cannot translate UDP: replies would bypass it). It reports
// false when no port is left.
func (s *kubeSink) adapt(svc lb.Service) (lb.Service, bool) {
	if !s.sidecar {
		return svc, true
	}
	svc.Mode = lb.ModeProxy
	var ports []lb.ServicePort
	for _, p := range svc.Ports {
		if p.Proto == lb.TCP {
			ports = append(ports, p)
		}
	}
	if len(ports) < len(svc.Ports) {
		s.log.Debug("sidecar: UDP ports not served", zap.String("service", svc.Namespace+"/"+svc.Name))
	}
	svc.Ports = ports
	return svc, len(ports) > 0
}

func (s *kubeSink) applyServicesLocked() error {
	if err := s.dp.table.Set(s.servicesLocked()); err != nil {
		return err
	}
	return s.afterServicesLocked()
}

// afterServicesLocked updates what depends on the Service table: the
// proxy-mode VIPs the stack terminates, and the drain of removed endpoints.
func (s *kubeSink) afterServicesLocked() error {
	err := s.applyNodesLocked()
	s.dp.proxy.Sync()
	return err
}

// applyNodesLocked sets the router's peers and addresses from the recorded
// Nodes and Services.
func (s *kubeSink) applyNodesLocked() error {
	rc := router.Config{
		PodCIDRs:     slices.Clone(s.cfg.Node.PodCIDRs),
		Addresses:    slices.Clone(s.cfg.RouterAddresses),
		ClusterCIDRs: slices.Clone(s.cfg.ClusterCIDRs),
	}
	port := uint16(s.cfg.Overlay.Port)
	for _, p := range s.peers {
		if s.sidecar {
			break
		}
		if !p.Address.IsValid() || len(p.PodCIDRs) == 0 {
			continue
		}
		rc.Peers = append(rc.Peers, router.Peer{Name: p.Name, Endpoint: netip.AddrPortFrom(p.Address, port), PodCIDRs: slices.Clone(p.PodCIDRs)})
	}
	var vips []netip.Addr
	for _, svc := range s.svcs {
		if svc.Mode == lb.ModeProxy {
			vips = append(vips, svc.ClusterIPs...)
		}
	}
	rc.ServiceAddresses = mergeAddrs(vips, s.dp.proxy.VIPs())
	return s.dp.r.Set(rc)
}
