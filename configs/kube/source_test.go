package kube_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/configs/kube/kubetest"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router/wireguard"
)

func node(name, addr string, cidrs ...string) kube.Node {
	n := kube.Node{Name: name}
	if addr != "" {
		n.Address = netip.MustParseAddr(addr)
	}
	for _, c := range cidrs {
		n.PodCIDRs = append(n.PodCIDRs, netip.MustParsePrefix(c))
	}
	return n
}

// testKey is a fixed public key, different for each i.
func testKey(i byte) wireguard.Key {
	var k wireguard.Key
	for j := range k {
		k[j] = i + byte(j)
	}
	return k
}

func withKey(n kube.Node, k wireguard.Key) kube.Node {
	n.PublicKey = k
	return n
}

// TestNodes feeds Nodes to a Source running on the master and checks what
// the Sink is given.
func TestNodes(t *testing.T) {
	master := node(masterNode, "192.168.31.201", "10.244.0.0/24")
	worker := node(workerNode, "192.168.31.202", "10.244.1.0/24")
	tests := []struct {
		name      string
		nodes     []runtime.Object
		wantSet   bool // whether SetNodes is called at all
		wantSelf  kube.Node
		wantPeers []kube.Node
		logged    string
	}{
		{
			name:      "seed cluster",
			nodes:     []runtime.Object{makeNode(masterNode), makeNode(workerNode)},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{worker},
		},
		{
			name: "dual-stack podCIDRs, zone label, peers sorted by name",
			nodes: []runtime.Object{
				makeNode(masterNode, func(n *corev1.Node) {
					n.Spec.PodCIDRs = []string{"10.244.0.0/24", "fd00:10:244::/64"}
					n.Labels = map[string]string{corev1.LabelTopologyZone: "zone-a"}
				}),
				makeNode("z-node", func(n *corev1.Node) {
					n.Spec.PodCIDRs = []string{"10.244.2.0/24"}
					n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.31.203"}}
				}),
				makeNode(workerNode, func(n *corev1.Node) {
					n.Spec.PodCIDRs = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
					n.Labels = map[string]string{corev1.LabelTopologyZone: "zone-b"}
				}),
			},
			wantSet: true,
			wantSelf: func() kube.Node {
				n := node(masterNode, "192.168.31.201", "10.244.0.0/24", "fd00:10:244::/64")
				n.Zone = "zone-a"
				return n
			}(),
			wantPeers: []kube.Node{
				func() kube.Node {
					n := node(workerNode, "192.168.31.202", "10.244.1.0/24", "fd00:10:244:1::/64")
					n.Zone = "zone-b"
					return n
				}(),
				node("z-node", "192.168.31.203", "10.244.2.0/24"),
			},
		},
		{
			name: "spec.podCIDR when spec.podCIDRs is empty, host bits masked",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Spec.PodCIDRs, n.Spec.PodCIDR = nil, "10.244.1.7/24"
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{worker},
		},
		{
			name: "ExternalIP when there is no InternalIP",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: workerNode}, {Type: corev1.NodeExternalIP, Address: "203.0.113.2"}}
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{node(workerNode, "203.0.113.2", "10.244.1.0/24")},
		},
		{
			name: "flannel public-ip annotation wins over InternalIP",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationPublicIP: "192.168.32.202"}
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{node(workerNode, "192.168.32.202", "10.244.1.0/24")},
		},
		{
			name: "flannel public-ip-overwrite wins over public-ip",
			nodes: []runtime.Object{makeNode(masterNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationPublicIPOverwrite: "192.168.33.201"}
			}), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationPublicIP: "192.168.32.202", kube.AnnotationPublicIPOverwrite: "192.168.33.202"}
			})},
			wantSet:   true,
			wantSelf:  node(masterNode, "192.168.33.201", "10.244.0.0/24"),
			wantPeers: []kube.Node{node(workerNode, "192.168.33.202", "10.244.1.0/24")},
		},
		{
			name: "bad public-ip-overwrite logged, public-ip used",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationPublicIP: "192.168.32.202", kube.AnnotationPublicIPOverwrite: "node2.example"}
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{node(workerNode, "192.168.32.202", "10.244.1.0/24")},
			logged:    `annotation flannel.alpha.coreos.com/public-ip-overwrite "node2.example" is not an IP address`,
		},
		{
			name: "WireGuard key annotations read, this node's and its peer's",
			nodes: []runtime.Object{makeNode(masterNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationWireGuardKey: testKey(1).String()}
			}), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationWireGuardKey: " " + testKey(2).String() + "\n"}
			})},
			wantSet:   true,
			wantSelf:  withKey(master, testKey(1)),
			wantPeers: []kube.Node{withKey(worker, testKey(2))},
		},
		{
			name: "bad WireGuard key annotation logged, peer passed without a key",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationWireGuardKey: "not-a-key"}
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{worker},
			logged:    `annotation vrouter.io/wireguard-public-key: "not-a-key" is not a WireGuard key`,
		},
		{
			name: "all-zero WireGuard key annotation logged, peer passed without a key",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Annotations = map[string]string{kube.AnnotationWireGuardKey: wireguard.Key{}.String()}
			})},
			wantSet:   true,
			wantSelf:  master,
			wantPeers: []kube.Node{worker},
			logged:    "all-zero WireGuard key",
		},
		{
			name: "peer without a pod CIDR yet skipped",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil
			})},
			wantSet:  true,
			wantSelf: master,
			logged:   "no pod CIDR yet",
		},
		{
			name: "peer without an address skipped",
			nodes: []runtime.Object{makeNode(masterNode), makeNode(workerNode, func(n *corev1.Node) {
				n.Status.Addresses = nil
			})},
			wantSet:  true,
			wantSelf: master,
			logged:   "no underlay address",
		},
		{
			name: "this node without a pod CIDR yet: nothing set",
			nodes: []runtime.Object{makeNode(masterNode, func(n *corev1.Node) {
				n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil
			}), makeNode(workerNode)},
			logged: "this node has no pod CIDR yet",
		},
		{
			name:   "this node missing: nothing set",
			nodes:  []runtime.Object{makeNode(workerNode)},
			logged: "no Node named hostgw-master",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, kube.Options{}, tt.nodes...).start()
			e.waitSynced()
			self, peers, ok := e.rec.Nodes()
			if ok != tt.wantSet {
				t.Fatalf("SetNodes called = %v, want %v; calls %q", ok, tt.wantSet, e.rec.Calls())
			}
			if !reflect.DeepEqual(self, tt.wantSelf) {
				t.Errorf("SetNodes self = %+v, want %+v", self, tt.wantSelf)
			}
			if len(peers) == 0 {
				peers = nil
			}
			if !reflect.DeepEqual(peers, tt.wantPeers) {
				t.Errorf("SetNodes peers = %+v, want %+v", peers, tt.wantPeers)
			}
			if tt.logged != "" && !e.logged(zapcore.WarnLevel, tt.logged) {
				t.Errorf("no warning containing %q; logs: %v", tt.logged, messages(e))
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	rec := kubetest.NewRecorder()
	if _, err := kube.New(newEnv(t, kube.Options{}).client, rec, kube.Options{}); err == nil {
		t.Errorf("New without NodeName = nil error, want one naming NodeName")
	}
	if _, err := kube.New(nil, rec, kube.Options{NodeName: masterNode}); err == nil {
		t.Errorf("New without a client = nil error, want one")
	}
}

// TestNodeKeyChanges: a change to a peer's WireGuard key annotation
// alone (published, rotated, removed) reaches the Sink, and other
// annotations do not.
func TestNodeKeyChanges(t *testing.T) {
	e := newEnv(t, kube.Options{}, makeNode(masterNode), makeNode(workerNode)).start()
	e.wait("the first SetNodes", func() bool { _, _, ok := e.rec.Nodes(); return ok })
	nodes := e.client.CoreV1().Nodes()
	peerKey := func() wireguard.Key {
		_, peers, _ := e.rec.Nodes()
		if len(peers) != 1 {
			return wireguard.Key{1}
		}
		return peers[0].PublicKey
	}
	for _, k := range []wireguard.Key{testKey(2), testKey(3), {}} {
		mustUpdate(t, nodes.Update, makeNode(workerNode, func(n *corev1.Node) {
			if !k.IsZero() {
				n.Annotations = map[string]string{kube.AnnotationWireGuardKey: k.String()}
			}
		}))
		e.wait("the worker's key "+k.String(), func() bool { return peerKey() == k })
	}
	sets := count(e.rec.Calls(), "SetNodes")
	// An annotation vrouter does not read, then one more key to wait for.
	mustUpdate(t, nodes.Update, makeNode(workerNode, func(n *corev1.Node) {
		n.Annotations = map[string]string{"example.com/other": "x"}
	}))
	mustUpdate(t, nodes.Update, makeNode(workerNode, func(n *corev1.Node) {
		n.Annotations = map[string]string{"example.com/other": "x", kube.AnnotationWireGuardKey: testKey(4).String()}
	}))
	e.wait("the worker's key after an unrelated annotation", func() bool { return peerKey() == testKey(4) })
	if got := count(e.rec.Calls(), "SetNodes"); got != sets+1 {
		t.Errorf("SetNodes calls after an unrelated annotation and a key = %d, want %d; calls %q", got, sets+1, e.rec.Calls())
	}
}

// TestNodeChanges follows this node getting its pod CIDR, a peer's address
// change, a heartbeat that changes nothing, and a peer's deletion.
func TestNodeChanges(t *testing.T) {
	e := newEnv(t, kube.Options{}, makeNode(masterNode, func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil }), makeNode(workerNode)).start()
	e.waitSynced()
	if _, _, ok := e.rec.Nodes(); ok {
		t.Fatalf("SetNodes called before this node had a pod CIDR: %q", e.rec.Calls())
	}
	nodes := e.client.CoreV1().Nodes()

	mustUpdate(t, nodes.Update, makeNode(masterNode))
	e.wait("SetNodes once the master has a pod CIDR", func() bool { _, _, ok := e.rec.Nodes(); return ok })

	mustUpdate(t, nodes.Update, makeNode(workerNode, func(n *corev1.Node) {
		n.Annotations = map[string]string{kube.AnnotationPublicIPOverwrite: "192.168.33.202"}
	}))
	e.wait("the worker's new address", func() bool {
		_, peers, _ := e.rec.Nodes()
		return len(peers) == 1 && peers[0].Address == netip.MustParseAddr("192.168.33.202")
	})
	sets := count(e.rec.Calls(), "SetNodes")

	// A heartbeat: conditions change, nothing vrouter reads does. Then a
	// real change, so that there is something to wait for.
	mustUpdate(t, nodes.Update, makeNode(workerNode, func(n *corev1.Node) {
		n.Annotations = map[string]string{kube.AnnotationPublicIPOverwrite: "192.168.33.202"}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	}))
	if err := nodes.Delete(context.Background(), workerNode, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wait("the worker's deletion", func() bool { _, peers, _ := e.rec.Nodes(); return len(peers) == 0 })
	if got := count(e.rec.Calls(), "SetNodes"); got != sets+1 {
		t.Errorf("SetNodes calls after a heartbeat and a deletion = %d, want %d (the heartbeat changes nothing); calls %q", got-sets, 1, e.rec.Calls())
	}
}

// TestWaitsForInformers: while the EndpointSlice list is forbidden the
// informers cannot sync, so nothing is programmed, the Source is not
// ready, and the log says why.
func TestWaitsForInformers(t *testing.T) {
	e := newEnv(t, kube.Options{}, makeNode(masterNode), makeNode(workerNode), makeService("default", "my-service"), mySlice())
	var allowed atomic.Bool
	e.client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if allowed.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "",
			errors.New(`User "system:serviceaccount:kube-system:vrouter" cannot list resource "endpointslices"`))
	})
	e.start()
	e.eventually("a log line saying the list is forbidden", func() bool {
		return e.logged(zapcore.ErrorLevel, "forbidden: these credentials may not list and watch endpointslices")
	})
	if e.src.Synced() || e.src.Ready() {
		t.Errorf("Synced() = %v, Ready() = %v while a list is forbidden, want false, false", e.src.Synced(), e.src.Ready())
	}
	if calls := e.rec.Calls(); len(calls) != 0 {
		t.Errorf("sink calls before the informers synced: %q, want none", calls)
	}
	allowed.Store(true)
	e.waitSynced()
	if calls := e.rec.Calls(); len(calls) != 2 || calls[0] != "SetServices 1" || calls[1] != "SetNodes hostgw-master peers=[hostgw-node]" {
		t.Errorf("sink calls after the sync = %q, want the Service table, then the nodes", calls)
	}
	e.eventually("Ready", e.src.Ready)
	if !e.logged(zapcore.InfoLevel, "list/watch recovered") {
		t.Errorf("no log line saying the list recovered; logs %v", messages(e))
	}
}

// TestCoalescesBursts: a burst of EndpointSlice updates within
// MinSyncInterval reaches the Sink as one or two upserts, not one per
// update, and the last state wins.
func TestCoalescesBursts(t *testing.T) {
	e := newEnv(t, kube.Options{MinSyncInterval: 2 * time.Second}, makeNode(masterNode), makeService("default", "my-service"), mySlice()).start()
	e.waitSynced()
	slicesAPI := e.client.DiscoveryV1().EndpointSlices("default")
	const updates = 10
	for i := range updates {
		mustUpdate(t, slicesAPI.Update, mySlice(func(es *discoveryv1.EndpointSlice) {
			es.Endpoints = append(es.Endpoints, endpoint(netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)}).String(), workerNode))
		}))
	}
	e.wait("the last update", func() bool {
		s, _ := e.rec.Service("default", "my-service")
		return len(s.Endpoints) == 4 && s.Endpoints[3].Addr == netip.MustParseAddr("10.244.1.19")
	})
	if n := count(e.rec.Calls(), "UpsertService"); n > 2 {
		t.Errorf("%d updates within MinSyncInterval made %d UpsertService calls, want 1 or 2; calls %q", updates, n, e.rec.Calls())
	}
}

// TestDeletes follows the seed's my-service losing its slice, then being
// deleted, and a Service of another proxy.
func TestDeletes(t *testing.T) {
	e := newEnv(t, kube.Options{}, makeNode(masterNode), makeNode(workerNode),
		makeService("default", "my-service"), mySlice(), makeKubeDNS(), dnsSlice()).start()
	e.waitSynced()
	ctx := context.Background()

	if err := e.client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "my-service-abcde", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wait("my-service without endpoints", func() bool {
		s, ok := e.rec.Service("default", "my-service")
		return ok && len(s.Endpoints) == 0
	})
	if err := e.client.CoreV1().Services("default").Delete(ctx, "my-service", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wait("DeleteService default/my-service", func() bool { return slices.Contains(e.rec.Calls(), "DeleteService default/my-service") })

	// kube-dns handed to another proxy: gone; back: there again.
	mustUpdate(t, e.client.CoreV1().Services("kube-system").Update, makeKubeDNS(func(s *corev1.Service) {
		s.Labels = map[string]string{kube.LabelServiceProxyName: "other-proxy"}
	}))
	e.wait("DeleteService kube-system/kube-dns", func() bool { _, ok := e.rec.Service("kube-system", "kube-dns"); return !ok })
	mustUpdate(t, e.client.CoreV1().Services("kube-system").Update, makeKubeDNS())
	e.wait("kube-dns back", func() bool {
		s, ok := e.rec.Service("kube-system", "kube-dns")
		return ok && s.Equal(ptrTo(wantKubeDNS()))
	})
	if got := e.rec.Services(); len(got) != 1 {
		t.Errorf("Services = %s, want only kube-dns", dump(got))
	}
}

func ptrTo[T any](v T) *T { return &v }

// breakableWatch passes a fake clientset's watch on until Break, which
// ends it the way an API server ends a watch whose resource version is
// too old: the reflector then re-lists.
type breakableWatch struct {
	inner watch.Interface
	out   chan watch.Event
	brk   chan struct{}
	stop  chan struct{}
	once  sync.Once
}

func newBreakableWatch(inner watch.Interface) *breakableWatch {
	w := &breakableWatch{inner: inner, out: make(chan watch.Event), brk: make(chan struct{}, 1), stop: make(chan struct{})}
	go w.run()
	return w
}

func (w *breakableWatch) run() {
	defer close(w.out)
	defer w.inner.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-w.brk:
			gone := &metav1.Status{Status: metav1.StatusFailure, Code: 410, Reason: metav1.StatusReasonExpired, Message: "too old resource version"}
			select {
			case w.out <- watch.Event{Type: watch.Error, Object: gone}:
			case <-w.stop:
			}
			return
		case ev, ok := <-w.inner.ResultChan():
			if !ok {
				return
			}
			select {
			case w.out <- ev:
			case <-w.stop:
				return
			}
		}
	}
}

func (w *breakableWatch) ResultChan() <-chan watch.Event { return w.out }
func (w *breakableWatch) Stop()                          { w.once.Do(func() { close(w.stop) }) }
func (w *breakableWatch) Break() {
	select {
	case w.brk <- struct{}{}:
	default:
	}
}

// watches makes every watch of resource breakable and counts its lists.
type watches struct {
	mu      sync.Mutex
	current *breakableWatch
	lists   atomic.Int32
}

func breakable(e *env, resource string) *watches {
	ws := &watches{}
	e.client.PrependReactor("list", resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		ws.lists.Add(1)
		return false, nil, nil
	})
	e.client.PrependWatchReactor(resource, func(a k8stesting.Action) (bool, watch.Interface, error) {
		inner, err := e.client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		w := newBreakableWatch(inner)
		ws.mu.Lock()
		ws.current = w
		ws.mu.Unlock()
		return true, w, nil
	})
	return ws
}

func (ws *watches) Break() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.current != nil {
		ws.current.Break()
	}
}

// TestRelist: when watches break and the informers re-list, objects that
// did not change reach the Sink as nothing, and a deletion missed while
// no watch ran is still applied.
func TestRelist(t *testing.T) {
	e := newEnv(t, kube.Options{}, makeNode(masterNode), makeNode(workerNode),
		makeService("default", "my-service"), mySlice(), makeKubeDNS(), dnsSlice())
	svcWatch, sliceWatch := breakable(e, "services"), breakable(e, "endpointslices")
	e.start()
	e.waitSynced()
	before := len(e.rec.Calls())

	svcWatch.Break()
	e.eventually("the Services re-list", func() bool { return svcWatch.lists.Load() >= 2 })
	sliceWatch.Break()
	if err := e.client.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), "my-service-abcde", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.wait("my-service without endpoints", func() bool {
		s, ok := e.rec.Service("default", "my-service")
		return ok && len(s.Endpoints) == 0
	})
	// A sentinel after the re-lists: once it is applied, the replayed
	// objects have been through the sync too.
	mustCreate(t, e.client.CoreV1().Services("default").Create, makeService("default", "sentinel", func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.9.9", []string{"10.96.9.9"}
	}))
	e.wait("the sentinel", func() bool { _, ok := e.rec.Service("default", "sentinel"); return ok })
	want := []string{"UpsertService default/my-service", "UpsertService default/sentinel"}
	if got := e.rec.Calls()[before:]; !slices.Equal(got, want) {
		t.Errorf("sink calls across two re-lists = %q, want %q", got, want)
	}
	if e.logged(zapcore.ErrorLevel, "list/watch failed") {
		t.Errorf("an expired watch was logged as a failure: %v", messages(e))
	}
}

// TestReadyFollowsFailures: when re-lists fail for UnhealthyAfter the
// Source turns not ready and keeps the state it applied; when they work
// again it is ready again.
func TestReadyFollowsFailures(t *testing.T) {
	e := newEnv(t, kube.Options{UnhealthyAfter: 100 * time.Millisecond},
		makeNode(masterNode), makeNode(workerNode), makeService("default", "my-service"), mySlice())
	var down atomic.Bool
	e.client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api/v1/services",
				Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
		}
		return false, nil, nil
	})
	svcWatch := breakable(e, "services")
	e.start()
	e.waitSynced()
	e.eventually("Ready", e.src.Ready)
	before := e.rec.Calls()

	down.Store(true)
	svcWatch.Break()
	e.eventually("not Ready", func() bool { return !e.src.Ready() })
	if !e.logged(zapcore.ErrorLevel, "cannot reach the API server") {
		t.Errorf("no log line saying the API server is unreachable; logs %v", messages(e))
	}
	down.Store(false)
	e.eventually("Ready again", e.src.Ready)
	if got := e.rec.Calls(); !slices.Equal(got, before) {
		t.Errorf("sink calls while the API server was unreachable: %q, want none (the last state stays)", got[len(before):])
	}
	if s, ok := e.rec.Service("default", "my-service"); !ok || len(s.Endpoints) != 3 {
		t.Errorf("my-service after the outage = %+v, %v; want it as before", s, ok)
	}
}

// TestLatency: the latency of an EndpointSlice change is measured from its
// last-change-trigger-time.
func TestLatency(t *testing.T) {
	got := make(chan time.Duration, 16)
	e := newEnv(t, kube.Options{ObserveLatency: func(d time.Duration) { got <- d }},
		makeNode(masterNode), makeService("default", "my-service"), mySlice()).start()
	e.waitSynced()
	if len(got) != 0 {
		t.Errorf("the initial sync observed a latency, want none")
	}
	// The Source ignores trigger times from before it was created: let
	// it age past the trigger time.
	time.Sleep(1600 * time.Millisecond)
	trigger := time.Now().Add(-1500 * time.Millisecond)
	mustUpdate(t, e.client.DiscoveryV1().EndpointSlices("default").Update, mySlice(func(es *discoveryv1.EndpointSlice) {
		es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.UTC().Format(time.RFC3339Nano)}
		es.Endpoints = es.Endpoints[:2]
	}))
	select {
	case d := <-got:
		if d < 1500*time.Millisecond {
			t.Errorf("latency of a change triggered 1.5s before it was applied = %v, want at least 1.5s", d)
		}
		if s := e.src.Stats(); s.LastLatency != d || s.ServiceUpserts != 1 || s.ServiceSets != 1 {
			t.Errorf("Stats() = %+v, want LastLatency %v, 1 upsert, 1 set", s, d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no latency observed; calls %q", e.rec.Calls())
	}
}

// TestSinkErrorRetried: a change the Sink refuses is passed again after
// RetryInterval.
func TestSinkErrorRetried(t *testing.T) {
	e := newEnv(t, kube.Options{RetryInterval: 50 * time.Millisecond}, makeNode(masterNode), makeService("default", "my-service"), mySlice())
	var failed atomic.Bool
	e.rec.Fail = func(call string) error {
		if call == "UpsertService default/my-service" && failed.CompareAndSwap(false, true) {
			return errors.New("clusterIP 10.103.92.81:80/TCP is already taken")
		}
		return nil
	}
	e.start()
	e.waitSynced()
	mustUpdate(t, e.client.DiscoveryV1().EndpointSlices("default").Update, mySlice(func(es *discoveryv1.EndpointSlice) { es.Endpoints = es.Endpoints[:1] }))
	e.wait("the retried upsert", func() bool {
		s, _ := e.rec.Service("default", "my-service")
		return len(s.Endpoints) == 1
	})
	want := []string{"UpsertService default/my-service (failed)", "UpsertService default/my-service"}
	if got := e.rec.Calls()[2:]; !slices.Equal(got, want) {
		t.Errorf("calls = %q, want %q", got, want)
	}
	if s := e.src.Stats(); s.SinkErrors != 1 {
		t.Errorf("Stats().SinkErrors = %d, want 1", s.SinkErrors)
	}
	if !e.logged(zapcore.ErrorLevel, "Service refused; retrying") {
		t.Errorf("the refusal was not logged; logs %v", messages(e))
	}
}

// TestLoadBalancerStatus: a load-balancer controller publishes the ingress
// IP with a status-only update (the spec and its generation unchanged, a
// new resourceVersion), which reaches the Sink, as does its withdrawal; a
// status update that changes nothing vrouter reads (a condition) reaches
// it as nothing.
func TestLoadBalancerStatus(t *testing.T) {
	lbService := func(rv string, mutate func(*corev1.Service), ingress ...string) *corev1.Service {
		return makeService("default", "my-service", func(s *corev1.Service) {
			s.ResourceVersion, s.Generation = rv, 1
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30080
			for _, ip := range ingress {
				s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
			}
			if mutate != nil {
				mutate(s)
			}
		})
	}
	e := newEnv(t, kube.Options{}, makeNode(masterNode), lbService("1", nil), mySlice()).start()
	e.waitSynced()
	if s, ok := e.rec.Service("default", "my-service"); !ok || s.Type != lb.TypeLoadBalancer || len(s.LoadBalancerIPs) != 0 {
		t.Fatalf("Service before the load balancer is ready = %+v, %v; want a LoadBalancer Service without LB IPs", s, ok)
	}
	svcs := e.client.CoreV1().Services("default")

	mustUpdate(t, svcs.UpdateStatus, lbService("2", nil, "203.0.113.20"))
	e.wait("the ingress IP", func() bool {
		s, _ := e.rec.Service("default", "my-service")
		return slices.Equal(s.LoadBalancerIPs, []netip.Addr{netip.MustParseAddr("203.0.113.20")})
	})
	before := len(e.rec.Calls())
	mustUpdate(t, svcs.UpdateStatus, lbService("3", func(s *corev1.Service) {
		s.Status.Conditions = []metav1.Condition{{Type: "LoadBalancerReady", Status: metav1.ConditionTrue, Reason: "Provisioned", LastTransitionTime: metav1.Now()}}
	}, "203.0.113.20"))
	mustUpdate(t, svcs.UpdateStatus, lbService("4", nil))
	e.wait("the ingress IP withdrawn", func() bool {
		s, _ := e.rec.Service("default", "my-service")
		return len(s.LoadBalancerIPs) == 0
	})
	if got, want := e.rec.Calls()[before:], []string{"UpsertService default/my-service"}; !slices.Equal(got, want) {
		t.Errorf("sink calls for a condition, then the ingress withdrawn = %q, want %q", got, want)
	}
}
