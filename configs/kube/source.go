package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/vrouter/vrouter/lb"
)

// Defaults of Options.
const (
	DefaultMinSyncInterval = time.Second
	DefaultRetryInterval   = 10 * time.Second
	DefaultUnhealthyAfter  = 30 * time.Second
)

// Resource names, as the health log lines and Stats name them.
const (
	resNodes     = "nodes"
	resServices  = "services"
	resSlices    = "endpointslices"
	serviceIndex = "service"
)

// Options configure a Source. Zero values are the documented defaults.
type Options struct {
	// NodeName is the name of the Node this router runs on. Required.
	NodeName string
	// ProxyName is this proxy's value of the
	// service.kubernetes.io/service-proxy-name label. Default "": like
	// kube-proxy, serve only Services without the label. Otherwise serve
	// Services without it and those labelled with ProxyName.
	ProxyName string
	// MinSyncInterval is the least time between two syncs, so that a
	// burst of changes (a rollout) is applied in a few batches, like
	// kube-proxy's --iptables-min-sync-period. Default
	// DefaultMinSyncInterval; negative means none (tests).
	MinSyncInterval time.Duration
	// RetryInterval is how long after a Sink error the Source passes the
	// failed state again. Default DefaultRetryInterval.
	RetryInterval time.Duration
	// UnhealthyAfter is how long list/watch of a resource must keep
	// failing before Ready reports false. Default DefaultUnhealthyAfter.
	UnhealthyAfter time.Duration
	// Logger receives the Source's logs and client-go's. Default: none.
	Logger *zap.Logger
	// ObserveLatency, if set, is called from Run's goroutine after each
	// Sink call that applied a change, with the network-programming
	// latency: the time from the newest change the call carries (an
	// EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time,
	// else when the Source saw the event) to the call's return. The
	// initial sync is not measured.
	ObserveLatency func(time.Duration)
}

// Stats are a Source's counters.
type Stats struct {
	// Syncs counts the syncs that called the Sink at least once.
	Syncs uint64
	// NodeSets, ServiceSets, ServiceUpserts and ServiceDeletes count the
	// Sink calls that succeeded; SinkErrors those that failed.
	NodeSets, ServiceSets, ServiceUpserts, ServiceDeletes, SinkErrors uint64
	// SkippedSCTPPorts is the number of SCTP Service ports not served.
	SkippedSCTPPorts int
	// LastLatency is the network-programming latency of the last
	// measured Sink call (see Options.ObserveLatency).
	LastLatency time.Duration
}

// Source derives vrouter's desired state from the API server and passes
// it to a Sink. See the package documentation.
type Source struct {
	log    *zap.Logger
	opts   Options
	client kubernetes.Interface
	sink   Sink
	health *health
	// created bounds the trigger times trusted for latency: older ones
	// come from objects that changed before the Source started.
	created time.Time

	nodes, services, slices cache.SharedIndexInformer
	regs                    []cache.ResourceEventHandlerRegistration

	kick   chan struct{} // cap 1: handlers poke Run's goroutine
	ran    atomic.Bool
	synced atomic.Bool

	// mu guards nodesDirty, nodesAt and dirty: what the handlers marked
	// since Run's goroutine last took them.
	mu         sync.Mutex
	nodesDirty bool
	nodesAt    time.Time                    // newest Node change
	dirty      map[lb.ServiceName]time.Time // newest change per Service

	// statsMu guards stats.
	statsMu sync.Mutex
	stats   Stats

	// The fields below belong to Run's goroutine.
	initialDone bool
	sentSelf    *Node
	sentPeers   []Node
	sent        map[lb.ServiceName]*lb.Service
	retry       map[lb.ServiceName]time.Time // failed Sink calls, by change time
	retryNodes  bool
	problems    map[string][]string // object → problems already logged
	sinkErrs    map[string]string   // object → last Sink error logged
	skips       map[lb.ServiceName]string
	sctp        map[lb.ServiceName]int
}

// New returns a Source that reads through client and feeds sink. It starts
// nothing; call Run.
func New(client kubernetes.Interface, sink Sink, opts Options) (*Source, error) {
	if client == nil || sink == nil {
		return nil, errors.New("kube: New needs a client and a sink")
	}
	if opts.NodeName == "" {
		return nil, errors.New("kube: Options.NodeName is required (the name of this node's Node object, e.g. from --node-name or the downward API's spec.nodeName)")
	}
	if opts.MinSyncInterval == 0 {
		opts.MinSyncInterval = DefaultMinSyncInterval
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.UnhealthyAfter <= 0 {
		opts.UnhealthyAfter = DefaultUnhealthyAfter
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Source{
		log:      log,
		opts:     opts,
		client:   client,
		sink:     sink,
		health:   newHealth(log, resNodes, resServices, resSlices),
		created:  time.Now(),
		kick:     make(chan struct{}, 1),
		dirty:    map[lb.ServiceName]time.Time{},
		sent:     map[lb.ServiceName]*lb.Service{},
		retry:    map[lb.ServiceName]time.Time{},
		problems: map[string][]string{},
		sinkErrs: map[string]string{},
		skips:    map[lb.ServiceName]string{},
		sctp:     map[lb.ServiceName]int{},
	}

	// Filtered server-side as kube-proxy filters them: no headless
	// Services, no Services of other proxies, no slices of headless
	// Services. With a ProxyName the label cannot be filtered server-side
	// ("absent or ours" is no selector); buildService checks it, and
	// both checks run client-side too.
	svcLabels := labels.NewSelector()
	if opts.ProxyName == "" {
		svcLabels = svcLabels.Add(mustRequirement(LabelServiceProxyName, selection.DoesNotExist))
	}
	svcSelector, svcFields := svcLabels.String(), fields.OneTermNotEqualSelector("spec.clusterIP", corev1.ClusterIPNone).String()
	sliceSelector := labels.NewSelector().Add(mustRequirement(corev1.IsHeadlessService, selection.DoesNotExist)).String()
	svcTweak := func(o *metav1.ListOptions) { o.LabelSelector, o.FieldSelector = svcSelector, svcFields }
	sliceTweak := func(o *metav1.ListOptions) { o.LabelSelector = sliceSelector }

	core, disc := client.CoreV1(), client.DiscoveryV1()
	s.nodes = s.newInformer(resNodes, &corev1.Node{}, trimNode, nil,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return core.Nodes().List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return core.Nodes().Watch(ctx, o)
		})
	s.services = s.newInformer(resServices, &corev1.Service{}, trimService, nil,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			svcTweak(&o)
			return core.Services(metav1.NamespaceAll).List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			svcTweak(&o)
			return core.Services(metav1.NamespaceAll).Watch(ctx, o)
		})
	s.slices = s.newInformer(resSlices, &discoveryv1.EndpointSlice{}, trimSlice,
		cache.Indexers{serviceIndex: sliceServiceIndex},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			sliceTweak(&o)
			return disc.EndpointSlices(metav1.NamespaceAll).List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			sliceTweak(&o)
			return disc.EndpointSlices(metav1.NamespaceAll).Watch(ctx, o)
		})

	for _, h := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{s.nodes, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.markNodes() },
			UpdateFunc: func(o, n any) { s.onNodeUpdate(o, n) },
			DeleteFunc: func(any) { s.markNodes() },
		}},
		{s.services, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { s.onService(nil, o) },
			UpdateFunc: func(o, n any) { s.onService(o, n) },
			DeleteFunc: func(o any) { s.onService(nil, o) },
		}},
		{s.slices, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { s.onSlice(nil, o) },
			UpdateFunc: func(o, n any) { s.onSlice(o, n) },
			DeleteFunc: func(o any) { s.onSlice(nil, o) },
		}},
	} {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return nil, fmt.Errorf("kube: add event handler: %w", err)
		}
		s.regs = append(s.regs, reg)
	}
	return s, nil
}

func mustRequirement(key string, op selection.Operator) labels.Requirement {
	r, err := labels.NewRequirement(key, op, nil)
	if err != nil {
		panic(err) // constant keys
	}
	return *r
}

// newInformer builds a shared informer whose list and watch calls report
// to s.health, so that Ready sees a recovery as soon as a watch starts,
// and whose reflector reports watch errors there too.
func (s *Source) newInformer(resource string, obj runtime.Object, trim cache.TransformFunc, idx cache.Indexers,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) cache.SharedIndexInformer {
	lw := &cache.ListWatch{
		// A list that works is not yet health: the informer is live
		// once its watch runs.
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			out, err := list(ctx, o)
			if err != nil {
				s.health.fail(resource, err)
			}
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := watchFn(ctx, o)
			if err != nil {
				s.health.fail(resource, err)
			} else {
				s.health.ok(resource)
			}
			return w, err
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.client), obj,
		cache.SharedIndexInformerOptions{Indexers: idx})
	// Neither fails before Run.
	_ = inf.SetTransform(trim)
	_ = inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { s.health.fail(resource, err) })
	return inf
}

// sliceServiceIndex indexes EndpointSlices by their Service's
// namespace/name (the kubernetes.io/service-name label).
func sliceServiceIndex(obj any) ([]string, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{es.Namespace + "/" + name}, nil
}

// Run starts the informers, waits until they have synced, hands the whole
// desired state to the Sink, and then passes on each change until ctx is
// done. It returns nil after every goroutine it started has exited; it may
// be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("kube: Source.Run called twice")
	}
	ctx = klog.NewContext(ctx, zapr.NewLogger(s.log.Named("client-go")))
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, inf := range []cache.SharedIndexInformer{s.nodes, s.services, s.slices} {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	synced := make([]cache.InformerSynced, 0, len(s.regs))
	for _, r := range s.regs {
		synced = append(synced, r.HasSynced)
	}
	s.log.Info("waiting for the informers to sync", zap.String("node", s.opts.NodeName))
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx done
	}
	s.log.Info("informers synced",
		zap.Int("nodes", len(s.nodes.GetStore().ListKeys())),
		zap.Int("services", len(s.services.GetStore().ListKeys())),
		zap.Int("endpointSlices", len(s.slices.GetStore().ListKeys())))
	s.loop(ctx)
	return nil
}

// loop syncs whenever something is dirty, at most once per
// MinSyncInterval, until ctx is done.
func (s *Source) loop(ctx context.Context) {
	var retry <-chan time.Time
	for {
		start := time.Now()
		if s.sync() {
			retry = time.After(s.opts.RetryInterval)
		} else {
			retry = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-retry:
		}
		if wait := s.opts.MinSyncInterval - time.Since(start); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// Synced reports whether the informers have synced and the Sink has taken
// the initial state.
func (s *Source) Synced() bool { return s.synced.Load() }

// Ready reports whether the Source is synced and every list/watch works:
// it turns false once one has failed for Options.UnhealthyAfter (API
// server unreachable, credentials rejected, verbs forbidden) without a
// watch starting since, and true again when a watch starts. The last good
// state stays applied meanwhile.
func (s *Source) Ready() bool {
	return s.synced.Load() && len(s.health.failing(s.opts.UnhealthyAfter)) == 0
}

// Stats returns a copy of the Source's counters.
func (s *Source) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

// poke wakes Run's goroutine; a wake-up already pending covers this one.
func (s *Source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Source) markNodes() {
	now := time.Now()
	s.mu.Lock()
	s.nodesDirty, s.nodesAt = true, now
	s.mu.Unlock()
	s.poke()
}

// onNodeUpdate skips updates that change nothing vrouter reads: with the
// cache trimmed (trimNode), only status heartbeats.
func (s *Source) onNodeUpdate(oldObj, newObj any) {
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if ok1 && ok2 && reflect.DeepEqual(o.Spec, n.Spec) && maps.Equal(o.Labels, n.Labels) &&
		maps.Equal(o.Annotations, n.Annotations) && slices.Equal(o.Status.Addresses, n.Status.Addresses) {
		return
	}
	s.markNodes()
}

func (s *Source) markService(name lb.ServiceName, at time.Time) {
	s.mu.Lock()
	if t, ok := s.dirty[name]; !ok || at.After(t) {
		s.dirty[name] = at
	}
	s.mu.Unlock()
	s.poke()
}

// onService marks a Service dirty; oldObj is nil for adds and deletes.
func (s *Source) onService(oldObj, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	if o, ok := oldObj.(*corev1.Service); ok && sameVersion(&o.ObjectMeta, &svc.ObjectMeta) {
		return // a re-list replaying an object we have
	}
	s.markService(lb.ServiceName{Namespace: svc.Namespace, Name: svc.Name}, time.Now())
}

// sameVersion reports whether an update event carries the object the
// cache had: a re-list replays every object as an update. Objects without
// a resourceVersion (fake clients) always count as changed.
func sameVersion(old, cur *metav1.ObjectMeta) bool {
	return cur.ResourceVersion != "" && old.ResourceVersion == cur.ResourceVersion
}

// onSlice marks the Service of an EndpointSlice dirty, with the slice's
// trigger time when the change carries a new one.
func (s *Source) onSlice(oldObj, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	old, _ := oldObj.(*discoveryv1.EndpointSlice)
	if old != nil && sameVersion(&old.ObjectMeta, &es.ObjectMeta) {
		return
	}
	at := s.changeTime(old, es)
	if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
		s.markService(lb.ServiceName{Namespace: es.Namespace, Name: name}, at)
	}
	if old != nil {
		if name := old.Labels[discoveryv1.LabelServiceName]; name != "" && name != es.Labels[discoveryv1.LabelServiceName] {
			s.markService(lb.ServiceName{Namespace: old.Namespace, Name: name}, at)
		}
	}
}

// changeTime is when the change from old to es happened: the slice's
// last-change-trigger-time if this change set it (and it is neither from
// before the Source started nor in the future), else now.
func (s *Source) changeTime(old, es *discoveryv1.EndpointSlice) time.Time {
	now := time.Now()
	v := es.Annotations[corev1.EndpointsLastChangeTriggerTime]
	if v == "" || (old != nil && old.Annotations[corev1.EndpointsLastChangeTriggerTime] == v) {
		return now
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || t.Before(s.created) || t.After(now) {
		return now
	}
	return t
}

// sync passes everything dirty to the Sink and reports whether a Sink call
// failed (and is to be retried).
func (s *Source) sync() (failed bool) {
	// A wake-up pending now is for changes this sync takes below: drop
	// it, so that it does not cost the next change a MinSyncInterval.
	// A handler that marks something after this pokes again.
	select {
	case <-s.kick:
	default:
	}
	s.mu.Lock()
	dirty := s.dirty
	s.dirty = make(map[lb.ServiceName]time.Time, len(dirty))
	nodesDirty, nodesAt := s.nodesDirty, s.nodesAt
	s.nodesDirty = false
	s.mu.Unlock()

	if !s.initialDone {
		return s.syncInitial()
	}
	for name, t := range s.retry {
		if d, ok := dirty[name]; !ok || t.After(d) {
			dirty[name] = t
		}
	}
	clear(s.retry)
	if s.retryNodes && !nodesDirty {
		nodesDirty, nodesAt = true, time.Now()
	}
	calls := 0
	if nodesDirty {
		calls += s.syncNodes(nodesAt, true)
	}
	calls += s.syncServices(dirty)
	if calls > 0 {
		s.statsMu.Lock()
		s.stats.Syncs++
		s.statsMu.Unlock()
	}
	return len(s.retry) > 0 || s.retryNodes
}

// syncInitial hands the whole state to the Sink, once, after the informers
// synced.
func (s *Source) syncInitial() (failed bool) {
	var svcs []lb.Service
	sent := map[lb.ServiceName]*lb.Service{}
	for _, key := range s.services.GetStore().ListKeys() {
		ns, name, _ := strings.Cut(key, "/")
		n := lb.ServiceName{Namespace: ns, Name: name}
		if svc := s.build(n); svc != nil {
			svcs = append(svcs, *svc)
			sent[n] = svc
		}
	}
	slices.SortFunc(svcs, func(a, b lb.Service) int { return compareNames(a.Key(), b.Key()) })
	if err := s.sink.SetServices(svcs); err != nil {
		s.sinkError("services", "initial Service table refused; retrying", err, zap.Int("services", len(svcs)))
		return true
	}
	delete(s.sinkErrs, "services")
	s.count(func(st *Stats) { st.ServiceSets++; st.Syncs++ })
	s.sent = sent
	s.initialDone = true
	s.syncNodes(time.Time{}, false)
	s.synced.Store(true)
	s.log.Info("initial state applied", zap.Int("services", len(svcs)), zap.Int("peers", len(s.sentPeers)),
		zap.Bool("nodeReady", s.sentSelf != nil))
	return s.retryNodes
}

// syncNodes passes this node and its peers to the Sink if they changed,
// and returns the number of Sink calls made.
func (s *Source) syncNodes(at time.Time, measure bool) int {
	s.retryNodes = false
	var self *Node
	var peers []Node
	seen := map[string]bool{}
	for _, obj := range s.nodes.GetStore().List() {
		kn, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		n, problems := nodeFrom(kn)
		key := "node " + kn.Name
		seen[key] = true
		switch {
		case kn.Name == s.opts.NodeName:
			self = &n
			if len(n.PodCIDRs) == 0 {
				problems = append(problems, "this node has no pod CIDR yet (spec.podCIDRs); waiting for one before programming routes")
			}
		case len(n.PodCIDRs) == 0:
			problems = append(problems, "no pod CIDR yet (spec.podCIDRs); not a peer until it has one")
		case !n.Address.IsValid():
			problems = append(problems, "no underlay address (no InternalIP or ExternalIP, no flannel public-ip annotation); not a peer until it has one")
		default:
			peers = append(peers, n)
		}
		s.logProblems(key, problems, zap.String("node", kn.Name))
	}
	selfKey := "node " + s.opts.NodeName
	if self == nil {
		seen[selfKey] = true
		msg := "no Node named " + s.opts.NodeName + " (is the node name right?); waiting for it"
		if s.sentSelf != nil {
			msg = "this node's Node object is gone; keeping its last state"
		}
		s.logProblems(selfKey, []string{msg}, zap.String("node", s.opts.NodeName))
	}
	for key := range s.problems {
		if strings.HasPrefix(key, "node ") && !seen[key] {
			delete(s.problems, key)
		}
	}
	if self == nil || len(self.PodCIDRs) == 0 {
		if s.sentSelf == nil {
			return 0
		}
		self = s.sentSelf // keep routing with the last good state
	}
	slices.SortFunc(peers, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	if s.sentSelf != nil && s.sentSelf.Equal(self) && nodesEqual(s.sentPeers, peers) {
		return 0
	}
	if err := s.sink.SetNodes(*self, peers); err != nil {
		s.retryNodes = true
		s.sinkError("nodes", "nodes refused; retrying", err, zap.Int("peers", len(peers)))
		return 1
	}
	delete(s.sinkErrs, "nodes")
	s.sentSelf, s.sentPeers = self, peers
	s.observe(at, measure, func(st *Stats) { st.NodeSets++ })
	s.log.Debug("nodes applied", zap.String("node", self.Name), zap.Stringers("podCIDRs", self.PodCIDRs), zap.Int("peers", len(peers)))
	return 1
}

// syncServices passes the changed Services among dirty to the Sink,
// deletions first so that a ClusterIP that moved is free before its new
// owner claims it, and returns the number of Sink calls made.
func (s *Source) syncServices(dirty map[lb.ServiceName]time.Time) int {
	type change struct {
		name lb.ServiceName
		svc  *lb.Service
		at   time.Time
	}
	var dels, ups []change
	for _, name := range slices.SortedFunc(maps.Keys(dirty), compareNames) {
		svc := s.build(name)
		prev := s.sent[name]
		switch {
		case svc == nil && prev == nil:
		case svc == nil:
			dels = append(dels, change{name, nil, dirty[name]})
		case prev != nil && prev.Equal(svc):
		default:
			ups = append(ups, change{name, svc, dirty[name]})
		}
	}
	for _, c := range dels {
		if err := s.sink.DeleteService(c.name.Namespace, c.name.Name); err != nil {
			s.failed(c.name, c.at, err)
			continue
		}
		delete(s.sent, c.name)
		delete(s.sinkErrs, "service "+c.name.String())
		s.observe(c.at, true, func(st *Stats) { st.ServiceDeletes++ })
		s.log.Debug("Service deleted", zap.Stringer("service", c.name))
	}
	for _, c := range ups {
		if err := s.sink.UpsertService(*c.svc); err != nil {
			s.failed(c.name, c.at, err)
			continue
		}
		s.sent[c.name] = c.svc
		delete(s.sinkErrs, "service "+c.name.String())
		s.observe(c.at, true, func(st *Stats) { st.ServiceUpserts++ })
		s.log.Debug("Service applied", zap.Stringer("service", c.name), zap.Int("endpoints", len(c.svc.Endpoints)))
	}
	return len(dels) + len(ups)
}

func compareNames(a, b lb.ServiceName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func (s *Source) failed(name lb.ServiceName, at time.Time, err error) {
	s.retry[name] = at
	s.sinkError("service "+name.String(), "Service refused; retrying", err, zap.Stringer("service", name))
}

// sinkError counts a Sink error and logs it, at Error the first time the
// object fails this way and at Debug while the retries fail alike.
func (s *Source) sinkError(key, msg string, err error, field zap.Field) {
	s.count(func(st *Stats) { st.SinkErrors++ })
	level := zap.ErrorLevel
	if s.sinkErrs[key] == err.Error() {
		level = zap.DebugLevel
	}
	s.sinkErrs[key] = err.Error()
	s.log.Log(level, msg, field, zap.Error(err))
}

// build returns the desired state of the Service name from the informers'
// caches, or nil if it is not to be load-balanced, and logs what it had to
// leave out, once.
func (s *Source) build(name lb.ServiceName) *lb.Service {
	key := name.Namespace + "/" + name.Name
	obj, exists, _ := s.services.GetIndexer().GetByKey(key)
	svc, ok := obj.(*corev1.Service)
	if !exists || !ok {
		s.forget(name)
		return nil
	}
	var eps []*discoveryv1.EndpointSlice
	objs, _ := s.slices.GetIndexer().ByIndex(serviceIndex, key)
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, es)
		}
	}
	b := buildService(svc, eps, s.opts.ProxyName)
	s.logProblems("service "+key, b.problems, zap.Stringer("service", name))
	if b.skip != s.skips[name] {
		if b.skip != "" {
			s.log.Debug("Service not load-balanced", zap.Stringer("service", name), zap.String("reason", b.skip))
			s.skips[name] = b.skip
		} else {
			delete(s.skips, name)
		}
	}
	old := s.sctp[name]
	if b.sctpPorts == 0 {
		delete(s.sctp, name)
	} else {
		s.sctp[name] = b.sctpPorts
	}
	if d := b.sctpPorts - old; d != 0 {
		s.count(func(st *Stats) { st.SkippedSCTPPorts += d })
	}
	return b.svc
}

// forget drops what was logged and counted for a Service that is gone.
func (s *Source) forget(name lb.ServiceName) {
	delete(s.problems, "service "+name.Namespace+"/"+name.Name)
	delete(s.skips, name)
	if n := s.sctp[name]; n != 0 {
		delete(s.sctp, name)
		s.count(func(st *Stats) { st.SkippedSCTPPorts -= n })
	}
}

// logProblems logs each problem of an object that was not logged for it
// already, and remembers the object's current problems.
func (s *Source) logProblems(key string, problems []string, field zap.Field) {
	prev := s.problems[key]
	for _, p := range problems {
		if !slices.Contains(prev, p) {
			s.log.Warn(p, field)
		}
	}
	if len(problems) == 0 {
		delete(s.problems, key)
	} else {
		s.problems[key] = problems
	}
}

// observe counts a Sink call that applied a change and, if measure,
// records its latency from at.
func (s *Source) observe(at time.Time, measure bool, count func(*Stats)) {
	measure = measure && !at.IsZero()
	var d time.Duration
	if measure {
		d = time.Since(at)
	}
	s.count(func(st *Stats) {
		count(st)
		if measure {
			st.LastLatency = d
		}
	})
	if measure && s.opts.ObserveLatency != nil {
		s.opts.ObserveLatency(d)
	}
}

func (s *Source) count(f func(*Stats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}
