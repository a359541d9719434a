package kube_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/configs/kube/kubetest"
	"github.com/vrouter/vrouter/lb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The seed's cluster (DESIGN.md, "Reference topology"): the tests run as
// the router on hostgw-master.
const (
	masterNode = "hostgw-master" // 192.168.31.201, podCIDR 10.244.0.0/24
	workerNode = "hostgw-node"   // 192.168.31.202, podCIDR 10.244.1.0/24
)

// makeNode returns a Node shaped like the seed's: pod CIDR and InternalIP
// by name, then applies each mutation.
func makeNode(name string, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	switch name {
	case masterNode:
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.0.0/24", []string{"10.244.0.0/24"}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.31.201"}, {Type: corev1.NodeHostName, Address: name}}
	case workerNode:
		n.Spec.PodCIDR, n.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.31.202"}, {Type: corev1.NodeHostName, Address: name}}
	}
	for _, m := range mutate {
		m(n)
	}
	return n
}

// makeService returns a Service shaped like the seed's default/my-service
// (ClusterIP 10.103.92.81, one unnamed port 80/TCP → targetPort 80), then
// applies each mutation.
func makeService(namespace, name string, mutate ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  "10.103.92.81",
			ClusterIPs: []string{"10.103.92.81"},
			Ports:      []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}},
		},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

// makeKubeDNS returns the seed's kube-system/kube-dns: 10.96.0.10, ports
// dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP.
func makeKubeDNS(mutate ...func(*corev1.Service)) *corev1.Service {
	return makeService("kube-system", "kube-dns", append([]func(*corev1.Service){func(s *corev1.Service) {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.0.10", []string{"10.96.0.10"}
		s.Spec.Ports = []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
		}
	}}, mutate...)...)
}

// makeSlice returns an IPv4 EndpointSlice of service with one unnamed
// port 80/TCP and the given endpoints, then applies each mutation.
func makeSlice(namespace, name, service string, eps []discoveryv1.Endpoint, mutate ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{slicePort("", 80, corev1.ProtocolTCP)},
		Endpoints:   eps,
	}
	for _, m := range mutate {
		m(es)
	}
	return es
}

func slicePort(name string, port int32, proto corev1.Protocol) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(proto)}
}

// endpoint returns a ready endpoint at addr on node (as the EndpointSlice
// controller writes one: all three conditions set), then applies each
// mutation.
func endpoint(addr, node string, mutate ...func(*discoveryv1.Endpoint)) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To(node),
	}
	for _, m := range mutate {
		m(&e)
	}
	return e
}

// mySlice is the seed's my-service slice: nginx on 10.244.0.4 (master),
// 10.244.1.2 and 10.244.1.3 (worker).
func mySlice(mutate ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	return makeSlice("default", "my-service-abcde", "my-service", []discoveryv1.Endpoint{
		endpoint("10.244.0.4", masterNode), endpoint("10.244.1.2", workerNode), endpoint("10.244.1.3", workerNode),
	}, mutate...)
}

// dnsSlice is the seed's kube-dns slice: coredns on 10.244.0.2 and
// 10.244.0.3.
func dnsSlice(mutate ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	return makeSlice("kube-system", "kube-dns-fghij", "kube-dns", []discoveryv1.Endpoint{
		endpoint("10.244.0.2", masterNode), endpoint("10.244.0.3", masterNode),
	}, func(es *discoveryv1.EndpointSlice) {
		es.Ports = []discoveryv1.EndpointPort{
			slicePort("dns", 53, corev1.ProtocolUDP), slicePort("dns-tcp", 53, corev1.ProtocolTCP), slicePort("metrics", 9153, corev1.ProtocolTCP),
		}
	}, func(es *discoveryv1.EndpointSlice) {
		for _, m := range mutate {
			m(es)
		}
	})
}

// unnamed is the TargetPortName the Source gives an unnamed Service port.
const unnamed = "<unnamed>"

// wantService returns the lb.Service the Source derives from makeService
// and mySlice, then applies each mutation.
func wantService(namespace, name string, mutate ...func(*lb.Service)) lb.Service {
	s := lb.Service{
		Namespace:  namespace,
		Name:       name,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.103.92.81")},
		Ports:      []lb.ServicePort{{Port: 80, Proto: lb.TCP, TargetPortName: unnamed}},
		Endpoints: []lb.Endpoint{
			wantEndpoint("10.244.0.4", masterNode, lb.EndpointPort{Name: unnamed, Port: 80, Proto: lb.TCP}),
			wantEndpoint("10.244.1.2", workerNode, lb.EndpointPort{Name: unnamed, Port: 80, Proto: lb.TCP}),
			wantEndpoint("10.244.1.3", workerNode, lb.EndpointPort{Name: unnamed, Port: 80, Proto: lb.TCP}),
		},
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

func wantEndpoint(addr, node string, ports ...lb.EndpointPort) lb.Endpoint {
	return lb.Endpoint{Addr: netip.MustParseAddr(addr), NodeName: node, Ready: true, Serving: true, Ports: ports}
}

// wantKubeDNS is the lb.Service of makeKubeDNS and dnsSlice.
func wantKubeDNS() lb.Service {
	ports := []lb.EndpointPort{{Name: "dns", Port: 53, Proto: lb.UDP}, {Name: "dns-tcp", Port: 53, Proto: lb.TCP}, {Name: "metrics", Port: 9153, Proto: lb.TCP}}
	return lb.Service{
		Namespace:  "kube-system",
		Name:       "kube-dns",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Ports: []lb.ServicePort{
			{Name: "dns", Port: 53, Proto: lb.UDP, TargetPortName: "dns"},
			{Name: "dns-tcp", Port: 53, Proto: lb.TCP, TargetPortName: "dns-tcp"},
			{Name: "metrics", Port: 9153, Proto: lb.TCP, TargetPortName: "metrics"},
		},
		Endpoints: []lb.Endpoint{wantEndpoint("10.244.0.2", masterNode, ports...), wantEndpoint("10.244.0.3", masterNode, ports...)},
	}
}

// env is a Source on a fake clientset feeding a Recorder.
type env struct {
	t      *testing.T
	client *fake.Clientset
	rec    *kubetest.Recorder
	src    *kube.Source
	logs   *observer.ObservedLogs
	ctx    context.Context
}

// newEnv builds the Source; start runs it. opts.NodeName defaults to the
// master and opts.MinSyncInterval to none.
func newEnv(t *testing.T, opts kube.Options, objs ...runtime.Object) *env {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	e := &env{t: t, client: fake.NewClientset(objs...), rec: kubetest.NewRecorder(), logs: logs}
	if opts.NodeName == "" {
		opts.NodeName = masterNode
	}
	if opts.MinSyncInterval == 0 {
		opts.MinSyncInterval = -1
	}
	opts.Logger = zap.New(core)
	var err error
	if e.src, err = kube.New(e.client, e.rec, opts); err != nil {
		t.Fatalf("kube.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.ctx = ctx
	t.Cleanup(cancel)
	return e
}

// start runs the Source until the test ends.
func (e *env) start() *env {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.src.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run = %v, want nil", err)
		}
	})
	return e
}

// wait waits until cond holds, failing the test with what after 10s.
func (e *env) wait(what string, cond func() bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if err := e.rec.Wait(ctx, cond); err != nil {
		e.t.Fatalf("waiting for %s: %v; sink calls: %q", what, err, e.rec.Calls())
	}
}

func (e *env) waitSynced() {
	e.t.Helper()
	e.eventually("the initial sync", e.src.Synced)
}

// eventually polls cond, for state that no Sink call signals.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: timed out; sink calls: %q", what, e.rec.Calls())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logged reports whether a log line at level or above contains substr.
func (e *env) logged(level zapcore.Level, substr string) bool {
	for _, l := range e.logs.All() {
		if l.Level >= level && strings.Contains(l.Message, substr) {
			return true
		}
		for _, f := range l.Context {
			if l.Level >= level && f.Type == zapcore.ErrorType && strings.Contains(f.Interface.(error).Error(), substr) {
				return true
			}
		}
	}
	return false
}

// count returns how many calls start with prefix.
func count(calls []string, prefix string) int {
	n := 0
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func mustCreate[T runtime.Object](t *testing.T, create func(context.Context, T, metav1.CreateOptions) (T, error), obj T) {
	t.Helper()
	if _, err := create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
}

func mustUpdate[T runtime.Object](t *testing.T, update func(context.Context, T, metav1.UpdateOptions) (T, error), obj T) {
	t.Helper()
	if _, err := update(context.Background(), obj, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update %T: %v", obj, err)
	}
}
