package integration

// vrouter driven by a real kube-apiserver (v1.37.2) and etcd instead of
// config files, on the seed's cluster:
//
//	host netns:  etcd, kube-apiserver https://127.0.0.1:<port>
//	             (the test relays 127.0.0.1:6443 inside each node
//	             namespace to it: the routers run in the nodes)
//	hostgw-master 192.168.31.201  vrouter run --kubeconfig … --node-name hostgw-master
//	hostgw-node   192.168.31.202  vrouter run --kubeconfig … --node-name hostgw-node
//
// The routers use the vrouter user bound to configs/deploy/rbac.yaml's
// ClusterRole (list and watch nodes, services, endpointslices), not an
// admin. The test creates the Nodes and Services as the controllers
// would, and checks that the data path follows each change.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/kube"
	"github.com/vrouter/vrouter/integration/topology"
)

// relayAPIServer listens on 127.0.0.1:6443 inside node's namespace and
// forwards each connection to the API server in the host namespace. stop
// closes the relay (connections to it are then refused, as to a stopped
// API server); the test's cleanup calls it too.
func relayAPIServer(t *testing.T, e *env, node, target string) (stop func()) {
	t.Helper()
	var ln net.Listener
	if err := e.c.Do(node, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:6443")
		return err
	}); err != nil {
		t.Fatalf("relay in %s: %v", node, err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target) // this goroutine is in the host namespace
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// manifestClusterRole is the ClusterRole of configs/deploy/rbac.yaml.
func manifestClusterRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile("../configs/deploy/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(b, []byte("\n---")) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind != "ClusterRole" {
			continue
		}
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal(doc, &cr); err != nil {
			t.Fatal(err)
		}
		return &cr
	}
	t.Fatal("configs/deploy/rbac.yaml has no ClusterRole")
	return nil
}

func kubeNode(name, cidr, ip string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

func kubeEndpoint(addr, node string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		NodeName:   ptr.To(node),
	}
}

// kubeAPI is a real kube-apiserver and etcd for routers in the test's
// namespaces: the vrouter user holds the manifest's ClusterRole and
// nothing more, and kubeconfig points routers at https://127.0.0.1:6443,
// which relayAPIServer serves inside a namespace.
type kubeAPI struct {
	kc         *kube.Cluster
	admin      kubernetes.Interface
	kubeconfig string
	target     string // the API server's host:port in the test's namespace
}

func startKubeAPI(t *testing.T, ctx context.Context, e *env) *kubeAPI {
	t.Helper()
	kc, err := kube.Start(t, kube.Options{})
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	admin, err := kubernetes.NewForConfig(kc.Admin)
	if err != nil {
		t.Fatal(err)
	}
	cr := manifestClusterRole(t)
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRole: %v", err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vrouter"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kube.VrouterUser}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRoleBinding: %v", err)
	}
	kcfg, err := os.ReadFile(kc.VrouterKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(e.dir, "vrouter.kubeconfig")
	if err := os.WriteFile(kubeconfig, bytes.ReplaceAll(kcfg, []byte(kc.URL), []byte("https://127.0.0.1:6443")), 0o600); err != nil {
		t.Fatal(err)
	}
	return &kubeAPI{kc: kc, admin: admin, kubeconfig: kubeconfig, target: strings.TrimPrefix(kc.URL, "https://")}
}

func TestKubernetesControlPlane(t *testing.T) {
	e := newEnv(t, "kube", topology.Seed(), harness.ConfigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The vrouter user gets the manifest's role, nothing more; the routers
	// reach the API server through a relay in their node.
	api := startKubeAPI(t, ctx, e)
	kc, admin, kubeconfig, target := api.kc, api.admin, api.kubeconfig, api.target
	var err error
	routers := map[string]*harness.Router{}
	start := func(node string) {
		t.Helper()
		r, err := harness.Launch(e.c, vrouterBin, node, e.logPath(node),
			"run", "--kubeconfig", kubeconfig, "--node-name", node, "--admin-socket", filepath.Join(e.dir, node+".sock"),
			"--cni-conf-dir", filepath.Join(e.dir, node+"-cni"), "--api-unhealthy-after", "1s",
			"--state-dir", harness.StateDir(e.logPath(node), node))
		if err != nil {
			t.Fatal(err)
		}
		routers[node] = r
		e.routers[node] = r // stopped, and its log shown on failure, by env
	}
	var relays []func()
	for _, n := range []string{masterNode, workerNode} {
		relays = append(relays, relayAPIServer(t, e, n, target))
		start(n)
	}

	// No Node yet: the routers wait, and program nothing.
	time.Sleep(300 * time.Millisecond)
	for n, r := range routers {
		if r.Exited() {
			t.Fatalf("router on %s exited while waiting for its Node", n)
		}
		if ready, _ := harness.Ready(e.c, n); ready {
			t.Fatalf("router on %s is up before its Node exists", n)
		}
	}

	// Create the two Nodes: the routers come up and pods reach each other.
	for _, n := range []*corev1.Node{kubeNode(masterNode, "10.244.0.0/24", "192.168.31.201"), kubeNode(workerNode, "10.244.1.0/24", "192.168.31.202")} {
		created, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create Node %s: %v", n.Name, err)
		}
		created.Status = n.Status
		if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Node %s status: %v", n.Name, err)
		}
	}
	for n, r := range routers {
		if err := r.WaitReady(e.c, 20*time.Second); err != nil {
			t.Fatalf("router on %s: %v", n, err)
		}
	}
	// Each router wrote its node's CNI config from its Node's pod CIDR.
	for n, cidr := range map[string]string{masterNode: "10.244.0.0/24", workerNode: "10.244.1.0/24"} {
		b, err := os.ReadFile(filepath.Join(e.dir, n+"-cni", "10-vrouter.conflist"))
		if err != nil || !bytes.Contains(b, []byte(`"subnet": "`+cidr+`"`)) {
			t.Errorf("router on %s: CNI config %q (%v), want one handing out %s", n, b, err, cidr)
		}
	}
	// Ready means a router programmed its own Node; the other Node's
	// address (its status, written after it was created) may reach it
	// a moment later, by watch: until then the peer's pods are
	// unreachable (CI saw one router ready 200 ms before its peer).
	for _, p := range []struct {
		from string
		to   netip.Addr
	}{{nginxTh5pz.name, nginx4k7xw.addr}, {nginxJ6zwk.name, nginxTh5pz.addr}} {
		eventually(t, 10*time.Second, fmt.Sprintf("%s reaches %v", p.from, p.to), func() error { return e.pingOK(p.from, p.to, 60) })
	}

	// my-service and its EndpointSlice: curl to the ClusterIP works.
	for _, p := range []pod{nginxTh5pz, nginx4k7xw, nginxJ6zwk} {
		srv, err := e.c.ServeHTTP(p.name, netip.AddrPortFrom(p.addr, 80).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.103.92.81",
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}}},
	}
	if _, err := admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service: %v", err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service-x7k2p",
			Labels: map[string]string{discoveryv1.LabelServiceName: "my-service"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](80), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{kubeEndpoint("10.244.0.4", masterNode),
			kubeEndpoint("10.244.1.2", workerNode), kubeEndpoint("10.244.1.3", workerNode)},
	}
	slice, err = admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create EndpointSlice: %v", err)
	}
	url := "http://10.103.92.81/"
	answered := func(from string, n int) (map[string]int, error) {
		got := map[string]int{}
		for range n {
			cctx, c := context.WithTimeout(ctx, 2*time.Second)
			rep, err := e.c.HTTPGet(cctx, from, url)
			c()
			if err != nil {
				return got, err
			}
			got[rep.Server]++
		}
		return got, nil
	}
	// follows checks that the data path follows a change just made, and
	// how soon: from the change to the start of the first check that saw
	// it (a check takes a few dozen requests, which is not the router's
	// time).
	follows := func(what string, cond func() error) {
		t.Helper()
		changed := time.Now()
		var err error
		for {
			attempt := time.Now()
			if err = cond(); err == nil {
				d := attempt.Sub(changed)
				t.Logf("%s: seen %v after the change", what, d.Round(time.Millisecond))
				// A figure, not a gate: on a loaded machine the
				// data path may take longer than its usual
				// fraction of a second; the 5 s bound below is the
				// test.
				if d > time.Second {
					t.Logf("%s: slower than the usual second (a loaded machine?)", what)
				}
				return
			}
			if time.Since(changed) > 5*time.Second {
				t.Fatalf("%s: not within 5s: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	everyBackend := func() error {
		for _, from := range []string{nginxTh5pz.name, nginx4k7xw.name} {
			got, err := answered(from, 15)
			if err != nil {
				return err
			}
			if len(got) != 3 {
				return fmt.Errorf("from %s: answers %v, want all three backends", from, got)
			}
		}
		return nil
	}
	follows("my-service served by every backend", everyBackend)

	// Scale down to one endpoint, then back up.
	slice.Endpoints = slice.Endpoints[:1]
	if slice, err = admin.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	follows("scaled down to nginx-th5pz", func() error {
		got, err := answered(nginx4k7xw.name, 10)
		if err != nil {
			return err
		}
		if got[nginxTh5pz.name] != 10 {
			return fmt.Errorf("answers %v, want only %s", got, nginxTh5pz.name)
		}
		return nil
	})
	slice.Endpoints = append(slice.Endpoints, kubeEndpoint("10.244.1.2", workerNode), kubeEndpoint("10.244.1.3", workerNode))
	if _, err = admin.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	follows("scaled up to three", everyBackend)

	// Delete the Service: its ClusterIP stops answering at once.
	if err := admin.CoreV1().Services("default").Delete(ctx, "my-service", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	follows("my-service gone", func() error {
		cctx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		if _, err := e.c.HTTPGet(cctx, nginx4k7xw.name, url); err == nil {
			return errors.New("the ClusterIP still answers")
		} else if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("timed out instead of a prompt refusal: %v", err)
		}
		return nil
	})

	// Delete a Node: its pods become unreachable from the others.
	if err := admin.CoreV1().Nodes().Delete(ctx, workerNode, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	follows("hostgw-node's routes gone", func() error { return e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable) })

	// Restart hostgw-master's router while objects change: it converges
	// and keeps nothing stale.
	if err := routers[masterNode].Stop(); err != nil {
		t.Errorf("stop hostgw-master's router: %v", err)
	}
	n := kubeNode(workerNode, "10.244.1.0/24", "192.168.31.202")
	created, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = n.Status
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc.ResourceVersion = ""
	svc.Spec.ClusterIP = "10.103.92.82"
	if _, err := admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start(masterNode)
	if err := routers[masterNode].WaitReady(e.c, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, 60)
	eventually(t, 5*time.Second, "the re-created Service served after the restart", func() error {
		cctx, c := context.WithTimeout(ctx, 2*time.Second)
		defer c()
		rep, err := e.c.HTTPGet(cctx, nginxTh5pz.name, "http://10.103.92.82/")
		if err != nil {
			return err
		}
		if rep.Server == "" {
			return errors.New("no answer")
		}
		return nil
	})
	cctx, c := context.WithTimeout(ctx, time.Second)
	defer c()
	if _, err := e.c.HTTPGet(cctx, nginxTh5pz.name, url); err == nil {
		t.Error("the deleted ClusterIP 10.103.92.81 answers after the restart: stale state")
	}

	// The API server goes away: readiness turns false, and the last
	// programmed data path keeps forwarding.
	readyz := func(node string) (int, error) {
		// Dial inside the node's namespace (http.Get would dial from
		// another goroutine, in the test's own namespace).
		var conn net.Conn
		if err := e.c.Do(node, func() error {
			var err error
			conn, err = net.DialTimeout("tcp", "127.0.0.1:10256", time.Second)
			return err
		}); err != nil {
			return 0, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(conn, "GET /readyz HTTP/1.0\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := readyz(workerNode); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz on %s with the API server up = %d, %v; want 200", workerNode, code, err)
	}
	if err := kc.Close(); err != nil {
		t.Logf("stop the API server: %v", err)
	}
	for _, stop := range relays {
		stop()
	}
	eventually(t, 15*time.Second, "not ready without the API server", func() error {
		code, err := readyz(workerNode)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz = %d, want 503", code)
		}
		return nil
	})
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, 60)
	rep, err := e.c.HTTPGet(ctx, nginxTh5pz.name, "http://10.103.92.82/")
	if err != nil || rep.Server == "" {
		t.Errorf("the Service without the API server: %v; want it still served", err)
	}
}
