package kube_test

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	kubesource "github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/configs/kube/kubetest"
	"github.com/vrouter/vrouter/lb"
)

// createSeedNodes creates the seed's two Nodes with their pod CIDRs and
// InternalIPs (status, so a second call).
func createSeedNodes(t *testing.T, ctx context.Context, admin kubernetes.Interface) {
	t.Helper()
	for _, n := range []struct{ name, cidr, ip string }{
		{masterNode, "10.244.0.0/24", "192.168.31.201"},
		{workerNode, "10.244.1.0/24", "192.168.31.202"},
	} {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelHostname: n.name}},
			Spec:       corev1.NodeSpec{PodCIDR: n.cidr, PodCIDRs: []string{n.cidr}},
		}
		created, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create Node %s: %v", n.name, err)
		}
		created.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.ip},
			{Type: corev1.NodeHostName, Address: n.name},
		}
		if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("set Node %s's addresses: %v", n.name, err)
		}
	}
}

func readyEndpoint(addr, node string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To(node),
	}
}

func slicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(proto)}
}

// mySlice is my-service's EndpointSlice with the given nginx pods.
func mySlice(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service-x7k2p", Labels: map[string]string{
			discoveryv1.LabelServiceName: "my-service", discoveryv1.LabelManagedBy: "vrouter-integration",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{slicePort("", 80, corev1.ProtocolTCP)},
		Endpoints:   eps,
	}
}

// createSeedServices creates my-service and kube-dns with their
// EndpointSlices, as the EndpointSlice controller would write them.
func createSeedServices(t *testing.T, ctx context.Context, admin kubernetes.Interface) {
	t.Helper()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace kube-system: %v", err)
	}
	svcs := []*corev1.Service{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service"},
			Spec: corev1.ServiceSpec{
				Selector:  map[string]string{"app": "nginx"},
				ClusterIP: "10.103.92.81",
				Ports:     []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
			Spec: corev1.ServiceSpec{
				Selector:  map[string]string{"k8s-app": "kube-dns"},
				ClusterIP: "10.96.0.10",
				Ports: []corev1.ServicePort{
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
					{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
					{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
				},
			},
		},
	}
	for _, s := range svcs {
		if _, err := admin.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Service %s/%s: %v", s.Namespace, s.Name, err)
		}
	}
	slices := []*discoveryv1.EndpointSlice{
		mySlice(readyEndpoint("10.244.0.4", masterNode), readyEndpoint("10.244.1.2", workerNode), readyEndpoint("10.244.1.3", workerNode)),
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-9qd4w", Labels: map[string]string{
				discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "vrouter-integration",
			}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{
				slicePort("dns", 53, corev1.ProtocolUDP), slicePort("dns-tcp", 53, corev1.ProtocolTCP), slicePort("metrics", 9153, corev1.ProtocolTCP),
			},
			Endpoints: []discoveryv1.Endpoint{readyEndpoint("10.244.0.2", masterNode), readyEndpoint("10.244.0.3", masterNode)},
		},
	}
	for _, es := range slices {
		if _, err := admin.DiscoveryV1().EndpointSlices(es.Namespace).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create EndpointSlice %s/%s: %v", es.Namespace, es.Name, err)
		}
	}
}

func wantEndpoint(addr, node string, ports ...lb.EndpointPort) lb.Endpoint {
	return lb.Endpoint{Addr: netip.MustParseAddr(addr), NodeName: node, Ready: true, Serving: true, Ports: ports}
}

// wantServices is the desired state of the seed's Services.
func wantServices() []lb.Service {
	p80 := lb.EndpointPort{Name: "<unnamed>", Port: 80, Proto: lb.TCP}
	dns := []lb.EndpointPort{{Name: "dns", Port: 53, Proto: lb.UDP}, {Name: "dns-tcp", Port: 53, Proto: lb.TCP}, {Name: "metrics", Port: 9153, Proto: lb.TCP}}
	return []lb.Service{
		{
			Namespace: "default", Name: "kubernetes",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")},
			Ports:      []lb.ServicePort{{Name: "https", Port: 443, Proto: lb.TCP, TargetPortName: "https"}},
		},
		{
			Namespace: "default", Name: "my-service",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.103.92.81")},
			Ports:      []lb.ServicePort{{Port: 80, Proto: lb.TCP, TargetPortName: "<unnamed>"}},
			Endpoints: []lb.Endpoint{
				wantEndpoint("10.244.0.4", masterNode, p80), wantEndpoint("10.244.1.2", workerNode, p80), wantEndpoint("10.244.1.3", workerNode, p80),
			},
		},
		{
			Namespace: "kube-system", Name: "kube-dns",
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
			Ports: []lb.ServicePort{
				{Name: "dns", Port: 53, Proto: lb.UDP, TargetPortName: "dns"},
				{Name: "dns-tcp", Port: 53, Proto: lb.TCP, TargetPortName: "dns-tcp"},
				{Name: "metrics", Port: 9153, Proto: lb.TCP, TargetPortName: "metrics"},
			},
			Endpoints: []lb.Endpoint{wantEndpoint("10.244.0.2", masterNode, dns...), wantEndpoint("10.244.0.3", masterNode, dns...)},
		},
	}
}

// runSource runs a Source as node hostgw-master with cfg's credentials
// until the test ends.
func runSource(t *testing.T, cfg *rest.Config, opts kubesource.Options) (*kubesource.Source, *kubetest.Recorder, *observer.ObservedLogs) {
	t.Helper()
	client, err := kubesource.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	rec := kubetest.NewRecorder()
	opts.NodeName = masterNode
	opts.Logger = zap.New(core)
	src, err := kubesource.New(client, rec, opts)
	if err != nil {
		t.Fatalf("kube.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return src, rec, logs
}

// TestSource runs the Kubernetes source with the vrouter user's
// credentials against the seed's cluster: forbidden until the manifest's
// role is bound, then the whole desired state, an endpoint scale-down
// within a second, and a node deletion.
func TestSource(t *testing.T) {
	c, admin := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createSeedNodes(t, ctx, admin)
	createSeedServices(t, ctx, admin)

	// The vrouter user's kubeconfig file, as `vrouter run --kubeconfig`
	// would load it.
	cfg, err := kubesource.RESTConfig(c.VrouterKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	src, rec, logs := runSource(t, cfg, kubesource.Options{})
	waitUntil(t, "a log line saying vrouter may not list", func() bool {
		return logged(logs, zapcore.ErrorLevel, "forbidden: these credentials may not list and watch")
	})
	if src.Synced() || src.Ready() || len(rec.Calls()) > 0 {
		t.Fatalf("without RBAC: Synced() = %v, Ready() = %v, calls %q; want false, false, none", src.Synced(), src.Ready(), rec.Calls())
	}

	grantVrouter(t, ctx, admin)
	waitUntil(t, "the initial sync", src.Synced)
	t.Logf("synced: calls %q", rec.Calls())
	if got, want := rec.Services(), wantServices(); !reflect.DeepEqual(got, want) {
		t.Errorf("Services:\n got %+v\nwant %+v", got, want)
	}
	self, peers, ok := rec.Nodes()
	wantSelf := kubesource.Node{Name: masterNode, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, Address: netip.MustParseAddr("192.168.31.201")}
	wantPeers := []kubesource.Node{{Name: workerNode, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, Address: netip.MustParseAddr("192.168.31.202")}}
	if !ok || !reflect.DeepEqual(self, wantSelf) || !reflect.DeepEqual(peers, wantPeers) {
		t.Errorf("SetNodes(%+v, %+v) (called: %v), want (%+v, %+v)", self, peers, ok, wantSelf, wantPeers)
	}
	waitUntil(t, "Ready", src.Ready)

	// Scale my-service down to two pods. The Source syncs at most once a
	// second (MinSyncInterval's default); let that second pass since the
	// initial sync, as in a quiet cluster, so that what is measured is
	// the watch and the sync.
	time.Sleep(1100 * time.Millisecond)
	start := time.Now()
	down := mySlice(readyEndpoint("10.244.0.4", masterNode), readyEndpoint("10.244.1.2", workerNode))
	down.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: start.UTC().Format(time.RFC3339Nano)}
	if _, err := admin.DiscoveryV1().EndpointSlices("default").Update(ctx, withVersion(t, ctx, admin, down), metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scale my-service down: %v", err)
	}
	waitUntil(t, "my-service with two endpoints", func() bool {
		s, _ := rec.Service("default", "my-service")
		return len(s.Endpoints) == 2
	})
	took := time.Since(start)
	t.Logf("scale-down applied %v after the update was sent; the Source measured %v from the slice's last-change-trigger-time",
		took, src.Stats().LastLatency)
	if took > time.Second {
		t.Errorf("scale-down applied after %v, want within a second", took)
	}
	if s, _ := rec.Service("default", "my-service"); s.Endpoints[1].Addr != netip.MustParseAddr("10.244.1.2") {
		t.Errorf("my-service endpoints after the scale-down = %+v, want 10.244.0.4 and 10.244.1.2", s.Endpoints)
	}

	if err := admin.CoreV1().Nodes().Delete(ctx, workerNode, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete Node %s: %v", workerNode, err)
	}
	waitUntil(t, "the worker's deletion", func() bool {
		_, peers, _ := rec.Nodes()
		return len(peers) == 0
	})
	if !src.Ready() {
		t.Errorf("Ready() = false at the end, want true")
	}
}

// TestSourceBadCredentials: a token the API server does not accept is
// logged as such, and the Source stays not ready and applies nothing.
func TestSourceBadCredentials(t *testing.T) {
	c, _ := startCluster(t)
	bad := rest.AnonymousClientConfig(c.Vrouter)
	bad.BearerToken = "expired-or-revoked"
	src, rec, logs := runSource(t, bad, kubesource.Options{})
	waitUntil(t, "a log line saying the credentials were rejected", func() bool {
		return logged(logs, zapcore.ErrorLevel, "rejected the credentials")
	})
	if src.Synced() || src.Ready() || len(rec.Calls()) > 0 {
		t.Errorf("with a bad token: Synced() = %v, Ready() = %v, calls %q; want false, false, none", src.Synced(), src.Ready(), rec.Calls())
	}
}

// withVersion sets es's resourceVersion to the stored one, for Update.
func withVersion(t *testing.T, ctx context.Context, admin kubernetes.Interface, es *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	t.Helper()
	cur, err := admin.DiscoveryV1().EndpointSlices(es.Namespace).Get(ctx, es.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.ResourceVersion = cur.ResourceVersion
	return es
}

// waitUntil polls cond for up to a minute.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logged reports whether a line at level or above mentions substr in its
// message or error.
func logged(logs *observer.ObservedLogs, level zapcore.Level, substr string) bool {
	for _, l := range logs.All() {
		if l.Level < level {
			continue
		}
		if strings.Contains(l.Message, substr) {
			return true
		}
		for _, f := range l.Context {
			if err, ok := f.Interface.(error); ok && strings.Contains(err.Error(), substr) {
				return true
			}
		}
	}
	return false
}
