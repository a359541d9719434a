package integration

// vrouter as the only pod network and Service proxy of a real cluster:
// real kubelets with their own containerd and runc, deployed with
// `kubectl apply` of the shipped manifests (configs/deploy/rbac.yaml and
// daemonset.yaml, only the API server address substituted), its image
// built as `make image` builds it.
//
//	underlay 192.168.31.0/24 (netns "underlay", bridge br0)
//	 ├─ hostgw-master 192.168.31.201  etcd, kube-apiserver :6443, kube-controller-manager
//	 │                                (pod CIDRs from 10.244.0.0/16), kube-scheduler;
//	 │                                containerd + kubelet; vrouter (DaemonSet pod)
//	 ├─ hostgw-node   192.168.31.202  containerd + kubelet; vrouter (DaemonSet pod)
//	 └─ outside       192.168.31.100  a client outside the cluster (node ports)
//	 Service CIDR 10.96.0.0/12; kube-dns 10.96.0.10
//
// Workload: Deployment echo (3 × vrtest serve, spread over the nodes)
// behind Service echo (80/TCP → 8080, 9000/TCP, 9001/UDP); pods
// client-master and client-node pinned to the nodes; a DNS server
// (vrtest dns, listing Services through the kubernetes Service) behind
// kube-system/kube-dns. No route, bridge or iptables rule is added by the
// test: the kubelets' CNI config is the one vrouter writes.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vrouter/vrouter/integration/cluster"
	"github.com/vrouter/vrouter/integration/image"
)

// realClusterImageVersion is the tag of the vrouter image the shipped
// DaemonSet names (vrouter:<version>, as `make image` builds it).
const realClusterImageVersion = "v0.2.0"

// seedAPIServer is the API server address configs/deploy/daemonset.yaml
// ships with: the one value a user edits.
const seedAPIServer = "https://192.168.31.201:6443"

// realClusterWorkload is what the test deploys on top of vrouter.
const realClusterWorkload = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: echo}}}
      containers:
        - name: echo
          image: vrouter.test/vrtest:1
          imagePullPolicy: Never
          args: [serve]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 1
            failureThreshold: 1
            successThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports:
    - {name: http, port: 80, targetPort: 8080, protocol: TCP}
    - {name: tcp-echo, port: 9000, protocol: TCP}
    - {name: udp-echo, port: 9001, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: client-master, namespace: default, labels: {app: client}}
spec:
  nodeName: hostgw-master
  terminationGracePeriodSeconds: 1
  containers:
    - {name: client, image: vrouter.test/vrtest:1, imagePullPolicy: Never, args: [serve]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-node, namespace: default, labels: {app: client}}
spec:
  nodeName: hostgw-node
  terminationGracePeriodSeconds: 1
  containers:
    - {name: client, image: vrouter.test/vrtest:1, imagePullPolicy: Never, args: [serve]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: vrtest-dns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: vrtest-dns}
rules:
  - {apiGroups: [""], resources: [services], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vrtest-dns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: vrtest-dns}
subjects:
  - {kind: ServiceAccount, name: vrtest-dns, namespace: kube-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: dns, namespace: kube-system}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: vrtest-dns
      dnsPolicy: Default
      terminationGracePeriodSeconds: 1
      containers:
        - name: dns
          image: vrouter.test/vrtest:1
          imagePullPolicy: Never
          # Other names go to the resolver of the outside host, as a
          # cluster DNS forwards to the node's upstream.
          args: [dns, --upstream, "192.168.31.100:53"]
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, protocol: TCP}
`

// realCluster is the running cluster and what the test learned of it.
type realCluster struct {
	t  *testing.T
	c  *cluster.Cluster
	cs kubernetes.Interface
}

func TestRealCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: the real cluster takes minutes")
	}
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	iptablesBefore := hostIPTables(t)
	images := buildClusterImages(t, ctx)
	c := cluster.Start(t, cluster.Options{Images: images})
	rc := &realCluster{t: t, c: c, cs: c.Client(t)}
	t.Cleanup(func() {
		if after := hostIPTables(t); after != iptablesBefore {
			t.Errorf("the host's iptables changed:\n--- before\n%s\n--- after\n%s", iptablesBefore, after)
		}
	})

	rc.deployVrouter(ctx)
	rc.kubectl(ctx, nil, "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")
	rc.apply(ctx, []byte(realClusterWorkload))
	rc.kubectl(ctx, nil, "rollout", "status", "deployment/echo", "--timeout=120s")
	rc.kubectl(ctx, nil, "-n", "kube-system", "rollout", "status", "deployment/dns", "--timeout=120s")
	rc.kubectl(ctx, nil, "wait", "--for=condition=Ready", "pod", "client-master", "client-node", "--timeout=120s")

	// No test-made routes: the nodes' kernels route the pod network to
	// vrouter's TUN and nowhere else.
	for _, n := range c.Nodes {
		out, err := c.Net.Command(n.Name, "ip", "route", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip route in %s: %v: %s", n.Name, err, out)
		}
		t.Logf("routes of %s:\n%s", n.Name, out)
		if !strings.Contains(string(out), "10.244.0.0/16 dev vr0") || !strings.Contains(string(out), "10.96.0.0/12 dev vr0") {
			t.Errorf("routes of %s lack vrouter's cluster and service CIDR routes:\n%s", n.Name, out)
		}
	}

	t.Run("PodToPod", rc.sub(rc.testPodToPod))
	t.Run("ClusterIP", rc.sub(rc.testClusterIP))
	t.Run("APIServerService", rc.sub(rc.testAPIServerService))
	t.Run("DNS", rc.sub(rc.testDNS))
	t.Run("Egress", rc.sub(rc.testEgress))
	t.Run("Readiness", rc.sub(rc.testReadiness))
	t.Run("Scale", rc.sub(rc.testScale))
	t.Run("NodePort", rc.sub(rc.testNodePort))
	t.Run("LoadBalancerLocal", rc.sub(rc.testLoadBalancerLocal))
	t.Run("Operate", rc.sub(rc.testOperate))
	t.Run("Sidecar", rc.sub(rc.testSidecar))
	t.Run("RestartVrouter", rc.sub(rc.testRestartVrouter))
	t.Run("BusyPoll", rc.sub(rc.testBusyPoll))
	t.Run("Encrypt", rc.sub(rc.testEncrypt))
	t.Run("DeleteNode", rc.sub(rc.testDeleteNode))
}

// sub makes test a subtest whose helpers fail it, not the whole test:
// rc's helpers report to rc.t, which is the subtest's t while it runs
// (subtests run one at a time, and no helper registers a cleanup). A
// helper's Fatalf then ends that subtest alone, with its own message,
// and the others still run.
func (rc *realCluster) sub(test func(*testing.T)) func(*testing.T) {
	return func(t *testing.T) {
		parent := rc.t
		rc.t = t
		defer func() { rc.t = parent }()
		test(t)
	}
}

// buildClusterImages builds vrouter's image as `make image` does and the
// test images (pause, vrtest).
func buildClusterImages(t *testing.T, ctx context.Context) []string {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	vr, err := image.BuildVrouter(ctx, filepath.Join(dir, "vrouter.tar"), realClusterImageVersion, image.BuildOptions{})
	if err != nil {
		t.Fatalf("BuildVrouter: %v", err)
	}
	tests, err := image.BuildTestImages(ctx, dir, image.BuildOptions{})
	if err != nil {
		t.Fatalf("BuildTestImages: %v", err)
	}
	paths := []string{vr.Path}
	for _, r := range tests {
		paths = append(paths, r.Path)
	}
	t.Logf("images built in %v: %v", time.Since(start).Round(time.Millisecond), paths)
	return paths
}

// iptablesCounters are iptables-save's packet and byte counters.
var iptablesCounters = regexp.MustCompile(`\[\d+:\d+\]`)

// hostIPTables is the host's iptables and ip6tables rules (filter, nat,
// mangle, raw).
func hostIPTables(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := runCmd(cmd)
		if err != nil {
			t.Logf("%s: %v (not compared)", cmd, err)
			continue
		}
		// Counters and the generated-at comments change by themselves.
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			b.WriteString(iptablesCounters.ReplaceAllString(line, "[0:0]") + "\n")
		}
	}
	return b.String()
}

func runCmd(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// kubectl runs kubectl as the admin or fails the test.
func (rc *realCluster) kubectl(ctx context.Context, stdin []byte, args ...string) string {
	rc.t.Helper()
	out, err := rc.c.Kubectl(ctx, stdin, args...)
	if err != nil {
		rc.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func (rc *realCluster) apply(ctx context.Context, manifest []byte) {
	rc.t.Helper()
	rc.kubectl(ctx, manifest, "apply", "-f", "-")
}

// deployVrouter applies the shipped RBAC and DaemonSet, with the API
// server address the only change, and waits for a ready router on every
// node.
func (rc *realCluster) deployVrouter(ctx context.Context) {
	t := rc.t
	t.Helper()
	root := repoRoot(t)
	rbac, err := os.ReadFile(filepath.Join(root, "configs/deploy/rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := os.ReadFile(filepath.Join(root, "configs/deploy/daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(ds, []byte(seedAPIServer)); n != 1 {
		t.Fatalf("daemonset.yaml names %s %d times, want once (the one value a user edits)", seedAPIServer, n)
	}
	ds = bytes.ReplaceAll(ds, []byte(seedAPIServer), []byte(rc.c.APIServer))
	rc.apply(ctx, rbac)
	rc.apply(ctx, ds)
	rc.kubectl(ctx, nil, "-n", "kube-system", "rollout", "status", "daemonset/vrouter", "--timeout=180s")
}

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// pod returns the named pod in namespace ns.
func (rc *realCluster) pod(ctx context.Context, ns, name string) *corev1.Pod {
	rc.t.Helper()
	p, err := rc.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		rc.t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p
}

// pods lists the pods of namespace ns matching selector that are
// running (not being deleted).
func (rc *realCluster) pods(ctx context.Context, ns, selector string) []corev1.Pod {
	rc.t.Helper()
	l, err := rc.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		rc.t.Fatalf("list pods %s in %s: %v", selector, ns, err)
	}
	var ps []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			ps = append(ps, p)
		}
	}
	return ps
}

// exec runs /vrtest args in pod (namespace default) and returns its
// output; err carries the output of a failed run.
func (rc *realCluster) exec(ctx context.Context, pod string, args ...string) (string, error) {
	return rc.c.Kubectl(ctx, nil, append([]string{"exec", pod, "--", "/vrtest"}, args...)...)
}

func (rc *realCluster) mustExec(ctx context.Context, pod string, args ...string) string {
	rc.t.Helper()
	out, err := rc.exec(ctx, pod, args...)
	if err != nil {
		rc.t.Fatalf("vrtest %s in %s: %v", strings.Join(args, " "), pod, err)
	}
	return out
}

// replyFrom parses vrtest serve's "<hostname> <client ip:port>..." reply.
func replyFrom(t *testing.T, reply string) (host, client string) {
	t.Helper()
	f := strings.Fields(reply)
	if len(f) < 2 {
		t.Fatalf("reply %q: want \"<hostname> <client address> ...\"", reply)
	}
	ip, _, err := net.SplitHostPort(f[1])
	if err != nil {
		t.Fatalf("reply %q: client address %q: %v", reply, f[1], err)
	}
	return f[0], ip
}

// testPodToPod: pods on different nodes reach each other over TCP, UDP
// (single datagrams and a UDP_SEGMENT burst) and ICMP, and the receiver
// sees the sender's pod IP.
func (rc *realCluster) testPodToPod(t *testing.T) {
	ctx := context.Background()
	from, to := rc.pod(ctx, "default", "client-master"), rc.pod(ctx, "default", "client-node")
	if from.Spec.NodeName == to.Spec.NodeName {
		t.Fatalf("client pods on one node %s", from.Spec.NodeName)
	}
	for _, pair := range [][2]*corev1.Pod{{from, to}, {to, from}} {
		src, dst := pair[0], pair[1]
		checks := []struct {
			what string
			args []string
		}{
			{"HTTP", []string{"get", "http://" + net.JoinHostPort(dst.Status.PodIP, "8080") + "/"}},
			{"TCP", []string{"tcp", net.JoinHostPort(dst.Status.PodIP, "9000"), "hello"}},
			{"UDP", []string{"udp", net.JoinHostPort(dst.Status.PodIP, "9001"), "hello"}},
		}
		for _, ch := range checks {
			out := rc.mustExec(ctx, src.Name, ch.args...)
			host, client := replyFrom(t, out)
			if host != dst.Name || client != src.Status.PodIP {
				t.Errorf("%s %s → %s: reply %q, want from %s seeing client %s", ch.what, src.Name, dst.Name, strings.TrimSpace(out), dst.Name, src.Status.PodIP)
			}
		}
		out := rc.mustExec(ctx, src.Name, "ping", dst.Status.PodIP)
		if !strings.Contains(out, "from "+dst.Status.PodIP) {
			t.Errorf("ping %s → %s (%s): %q", src.Name, dst.Name, dst.Status.PodIP, out)
		}
		// A UDP_SEGMENT burst: one UDP super-packet into the sender's
		// router where the kernel has UDP offload on TUN, one run
		// across, and every datagram back intact.
		out = rc.mustExec(ctx, src.Name, "udpburst", net.JoinHostPort(dst.Status.PodIP, "9001"), "--count", "20", "--size", "1000")
		if want := "20 of 20 datagrams echoed by " + dst.Name; strings.TrimSpace(out) != want {
			t.Errorf("udpburst %s → %s: %q, want %q", src.Name, dst.Name, strings.TrimSpace(out), want)
		}
	}
}

// serviceHosts sends n HTTP requests to the echo Service from pod (or,
// with pod "", from node's network namespace) and returns how often each
// backend answered.
func (rc *realCluster) serviceHosts(ctx context.Context, pod, node string, n int) map[string]int {
	rc.t.Helper()
	ip := rc.serviceIP(ctx, "default", "echo")
	hosts := make(map[string]int)
	for range n {
		var out string
		if pod != "" {
			out = rc.mustExec(ctx, pod, "get", "http://"+ip+"/")
		} else {
			out = rc.nodeGet(ctx, node, "http://"+ip+"/")
		}
		host, _ := replyFrom(rc.t, out)
		hosts[host]++
	}
	return hosts
}

// serviceIP is the ClusterIP of Service ns/name.
func (rc *realCluster) serviceIP(ctx context.Context, ns, name string) string {
	rc.t.Helper()
	svc, err := rc.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		rc.t.Fatalf("get service %s/%s: %v", ns, name, err)
	}
	return svc.Spec.ClusterIP
}

// nodeGet does an HTTP GET from node's network namespace.
func (rc *realCluster) nodeGet(ctx context.Context, node, url string) string {
	rc.t.Helper()
	hc := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := rc.c.Net.Do(node, func() error {
				var d net.Dialer
				var err error
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}},
		Timeout: 10 * time.Second,
	}
	resp, err := hc.Get(url)
	if err != nil {
		rc.t.Fatalf("GET %s from node %s: %v", url, node, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		rc.t.Fatalf("GET %s from node %s: %s: %s", url, node, resp.Status, body)
	}
	return string(body)
}

// echoPods is the ready echo pods' names, sorted.
func (rc *realCluster) echoPods(ctx context.Context) []string {
	var names []string
	for _, p := range rc.pods(ctx, "default", "app=echo") {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				names = append(names, p.Name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// testClusterIP: the echo Service answers from pods on both nodes and
// from a node, every replica in turn, over HTTP, TCP and UDP.
func (rc *realCluster) testClusterIP(t *testing.T) {
	ctx := context.Background()
	want := rc.echoPods(ctx)
	if len(want) != 3 {
		t.Fatalf("ready echo pods %v, want 3", want)
	}
	nodes := map[string]bool{}
	for _, p := range rc.pods(ctx, "default", "app=echo") {
		nodes[p.Spec.NodeName] = true
	}
	if len(nodes) != 2 {
		t.Errorf("echo pods on nodes %v, want both", nodes)
	}
	for _, from := range []struct{ pod, node string }{{"client-master", ""}, {"client-node", ""}, {"", cluster.Worker}, {"", cluster.Master}} {
		got := rc.serviceHosts(ctx, from.pod, from.node, 30)
		if !slices.Equal(keys(got), want) {
			t.Errorf("echo Service from %s%s: answered by %v, want all of %v", from.pod, from.node, got, want)
		}
	}
	ip := rc.serviceIP(ctx, "default", "echo")
	client := rc.pod(ctx, "default", "client-node")
	for _, args := range [][]string{{"tcp", ip + ":9000", "hi"}, {"udp", ip + ":9001", "hi"}} {
		out := rc.mustExec(ctx, "client-node", args...)
		host, src := replyFrom(t, out)
		if !slices.Contains(want, host) {
			t.Errorf("%s: reply from %q, want one of %v", strings.Join(args, " "), host, want)
		}
		// nat mode keeps the client's address for backends on other
		// nodes; same-node backends see the router's address.
		if src != client.Status.PodIP && src != "169.254.244.1" {
			t.Errorf("%s: backend saw client %s, want %s (or the router, 169.254.244.1, for a same-node backend)", strings.Join(args, " "), src, client.Status.PodIP)
		}
	}
}

// testAPIServerService: pods reach the API server through the kubernetes
// Service (https://10.96.0.1, verified with the ServiceAccount's CA),
// whose endpoint is the master's own address, not a pod: from the master
// (hairpin through the router) and from the worker (through its kernel).
func (rc *realCluster) testAPIServerService(t *testing.T) {
	ctx := context.Background()
	for _, pod := range []string{"client-master", "client-node"} {
		out, err := rc.exec(ctx, pod, "get", "--cacert", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "https://10.96.0.1/readyz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			t.Errorf("GET https://10.96.0.1/readyz from %s: %q, %v; want ok", pod, out, err)
		}
	}
}

// testDNS: pods resolve Services through kube-dns at 10.96.0.10, over UDP
// and TCP.
func (rc *realCluster) testDNS(t *testing.T) {
	ctx := context.Background()
	echoIP := rc.serviceIP(ctx, "default", "echo")
	for _, pod := range []string{"client-master", "client-node"} {
		for _, tcp := range []bool{false, true} {
			args := []string{"resolve", "echo.default.svc.cluster.local", "--server", cluster.ClusterDNS + ":53"}
			if tcp {
				args = append(args, "--tcp")
			}
			out := rc.mustExec(ctx, pod, args...)
			if strings.TrimSpace(out) != echoIP {
				t.Errorf("%s in %s: %q, want %s", strings.Join(args, " "), pod, out, echoIP)
			}
		}
		// The pod's own resolv.conf (the kubelet's clusterDNS) and search path.
		out := rc.mustExec(ctx, pod, "resolve", "kubernetes.default.svc.cluster.local")
		if strings.TrimSpace(out) != "10.96.0.1" {
			t.Errorf("resolve kubernetes.default.svc.cluster.local in %s: %q, want 10.96.0.1", pod, out)
		}
	}
}

// waitHosts polls the echo Service from client-master until the set of
// backends answering 20 requests in a row is want, and returns how long
// that took.
//
// A request that fails on the way is retried, not fatal: while pods come
// and go, a new connection can still reach a backend whose process has
// stopped before the router (as kube-proxy) has the EndpointSlice that
// removes it. How many rounds failed is logged; the last error is
// reported if the Service never settles.
func (rc *realCluster) waitHosts(ctx context.Context, want []string, timeout time.Duration) time.Duration {
	rc.t.Helper()
	start := time.Now()
	ip := rc.serviceIP(ctx, "default", "echo")
	var got map[string]int
	var lastErr error
	failed := 0
	for time.Since(start) < timeout {
		got, lastErr = rc.tryServiceHosts(ctx, "client-master", ip, 20)
		if lastErr != nil {
			failed++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if slices.Equal(keys(got), want) {
			if failed > 0 {
				rc.t.Logf("echo Service settled on %v after %v; %d round(s) of requests met an error on the way", want, time.Since(start).Round(time.Millisecond), failed)
			}
			return time.Since(start)
		}
	}
	rc.t.Fatalf("echo Service answered by %v after %v, want %v (last error: %v)", got, timeout, want, lastErr)
	return 0
}

// tryServiceHosts sends n HTTP requests to the echo Service at ip from
// pod and returns how often each backend answered, or the first error.
func (rc *realCluster) tryServiceHosts(ctx context.Context, pod, ip string, n int) (map[string]int, error) {
	rc.t.Helper()
	hosts := make(map[string]int)
	for range n {
		out, err := rc.exec(ctx, pod, "get", "http://"+ip+"/")
		if err != nil {
			return hosts, fmt.Errorf("vrtest get http://%s/ in %s: %w", ip, pod, err)
		}
		host, _ := replyFrom(rc.t, out)
		hosts[host]++
	}
	return hosts, nil
}

// testReadiness: a backend whose readiness probe fails leaves the
// Service within the probe period plus vrouter's sync; it returns when
// it passes again.
func (rc *realCluster) testReadiness(t *testing.T) {
	ctx := context.Background()
	all := rc.echoPods(ctx)
	victim := all[0]
	rest := all[1:]
	rc.mustExec(ctx, victim, "unready")
	took := rc.waitHosts(ctx, rest, 30*time.Second)
	t.Logf("%s left the Service %v after its probe began failing", victim, took.Round(time.Millisecond))
	rc.mustExec(ctx, victim, "ready")
	took = rc.waitHosts(ctx, all, 30*time.Second)
	t.Logf("%s back in the Service %v after its probe passed", victim, took.Round(time.Millisecond))
}

// testScale: scaling the Deployment down and up changes the Service's
// backends the same way.
func (rc *realCluster) testScale(t *testing.T) {
	ctx := context.Background()
	rc.kubectl(ctx, nil, "scale", "deployment/echo", "--replicas=1")
	deadline := time.Now().Add(60 * time.Second)
	var left []string
	for time.Now().Before(deadline) {
		if left = rc.echoPods(ctx); len(left) == 1 && len(rc.pods(ctx, "default", "app=echo")) == 1 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(left) != 1 {
		t.Fatalf("after scaling to 1: ready echo pods %v", left)
	}
	rc.waitHosts(ctx, left, 30*time.Second)
	rc.kubectl(ctx, nil, "scale", "deployment/echo", "--replicas=3")
	rc.kubectl(ctx, nil, "rollout", "status", "deployment/echo", "--timeout=120s")
	rc.waitHosts(ctx, rc.echoPods(ctx), 30*time.Second)
}

// vrouterPod is the vrouter DaemonSet pod on node.
func (rc *realCluster) vrouterPod(ctx context.Context, node string) corev1.Pod {
	rc.t.Helper()
	for _, p := range rc.pods(ctx, "kube-system", "app.kubernetes.io/name=vrouter") {
		if p.Spec.NodeName == node {
			return p
		}
	}
	rc.t.Fatalf("no running vrouter pod on %s", node)
	return corev1.Pod{}
}

// vrouterCmd runs `vrouter args` in node's vrouter pod.
func (rc *realCluster) vrouterCmd(ctx context.Context, node string, args ...string) string {
	rc.t.Helper()
	p := rc.vrouterPod(ctx, node)
	return rc.kubectl(ctx, nil, append([]string{"-n", "kube-system", "exec", p.Name, "--", "vrouter"}, args...)...)
}

// realClusterNodePort is a NodePort Service in front of the echo pods,
// and a LoadBalancer Service with externalTrafficPolicy Local (node port
// and health-check node port allocated by the API server).
const realClusterNodePort = `
apiVersion: v1
kind: Service
metadata: {name: echo-np, namespace: default}
spec:
  type: NodePort
  selector: {app: echo}
  ports:
    - {name: http, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30080}
    - {name: udp-echo, port: 9001, protocol: UDP, nodePort: 30091}
---
apiVersion: v1
kind: Service
metadata: {name: echo-lb, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports:
    - {name: http, port: 80, targetPort: 8080, protocol: TCP}
`

// outsideGet does an HTTP GET from the outside host (not a node) and
// returns the status and body.
func (rc *realCluster) outsideGet(ctx context.Context, url string) (int, string, error) {
	hc := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := rc.c.Net.Do(cluster.Outside, func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				var err error
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}},
		Timeout: 5 * time.Second,
	}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// outsideHosts GETs url from outside n times (retrying for up to 10 s
// while the node port comes up) and counts the echo pods that answered.
func (rc *realCluster) outsideHosts(ctx context.Context, t *testing.T, url string, n int) map[string]int {
	t.Helper()
	hosts := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for len(hosts) == 0 || sum(hosts) < n {
		code, body, err := rc.outsideGet(ctx, url)
		if err != nil || code != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s from outside: status %d, %v: %s", url, code, err, body)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		host, client := replyFrom(t, body)
		if client == cluster.OutsideIP {
			t.Errorf("GET %s: %s saw the outside client's address; a relay's endpoint sees the node", url, host)
		}
		hosts[host]++
	}
	return hosts
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// echoPodsOn is the ready echo pods on node, sorted.
func (rc *realCluster) echoPodsOn(ctx context.Context, node string) []string {
	ready := rc.echoPods(ctx)
	var out []string
	for _, p := range rc.pods(ctx, "default", "app=echo") {
		if p.Spec.NodeName == node && slices.Contains(ready, p.Name) {
			out = append(out, p.Name)
		}
	}
	sort.Strings(out)
	return out
}

// testNodePort: a NodePort Service answers on both nodes' addresses from
// a host outside the cluster over TCP (every echo pod, from either node)
// and UDP, and on 127.0.0.1 from the nodes; vrouter services shows it.
func (rc *realCluster) testNodePort(t *testing.T) {
	ctx := context.Background()
	rc.apply(ctx, []byte(realClusterNodePort))
	want := rc.echoPods(ctx)
	for _, n := range rc.c.Nodes {
		url := fmt.Sprintf("http://%s:30080/", n.IP)
		if got := rc.outsideHosts(ctx, t, url, 30); !slices.Equal(keys(got), want) {
			t.Errorf("GET %s x30 from outside: answered by %v, want all of %v", url, got, want)
		}
		// UDP from outside.
		var reply string
		err := rc.c.Net.Do(cluster.Outside, func() error {
			conn, err := net.Dial("udp4", net.JoinHostPort(n.IP, "30091"))
			if err != nil {
				return err
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			for range 20 {
				conn.Write([]byte("hi"))
				conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				if k, err := conn.Read(buf); err == nil {
					reply = string(buf[:k])
					return nil
				}
			}
			return fmt.Errorf("no answer in 20 tries")
		})
		if err != nil {
			t.Errorf("UDP %s:30091 from outside: %v", n.IP, err)
		} else if host, _ := replyFrom(t, reply); !slices.Contains(want, host) {
			t.Errorf("UDP %s:30091 from outside: reply from %q, want one of %v", n.IP, host, want)
		}
		// Localhost node port, from the node itself.
		host, _ := replyFrom(t, rc.nodeGet(ctx, n.Name, "http://127.0.0.1:30080/"))
		if !slices.Contains(want, host) {
			t.Errorf("GET 127.0.0.1:30080 on %s: reply from %q, want one of %v", n.Name, host, want)
		}
		if svcs := rc.vrouterCmd(ctx, n.Name, "services"); !strings.Contains(svcs, "80:30080/TCP") ||
			!strings.Contains(svcs, n.IP+":30080") {
			t.Errorf("vrouter services on %s does not show node port 30080 and its socket on %s:\n%s", n.Name, n.IP, svcs)
		}
	}
}

// testLoadBalancerLocal: a LoadBalancer Service with
// externalTrafficPolicy Local, whose ingress IP a load-balancer
// controller (here the test) sets in its status: from outside, each node
// sends its node port's traffic only to its own echo pods, and its
// health-check node port answers 200 with their count; pods reach the
// ingress IP through the router, with every echo pod.
func (rc *realCluster) testLoadBalancerLocal(t *testing.T) {
	ctx := context.Background()
	svc, err := rc.cs.CoreV1().Services("default").Get(ctx, "echo-lb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const ingressIP = "198.51.100.20"
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ingressIP}}
	if svc, err = rc.cs.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set echo-lb's ingress IP: %v", err)
	}
	nodePort, hcPort := svc.Spec.Ports[0].NodePort, svc.Spec.HealthCheckNodePort
	if nodePort == 0 || hcPort == 0 {
		t.Fatalf("echo-lb: nodePort %d, healthCheckNodePort %d; want both allocated", nodePort, hcPort)
	}
	for _, n := range rc.c.Nodes {
		local := rc.echoPodsOn(ctx, n.Name)
		url := fmt.Sprintf("http://%s:%d/", n.IP, nodePort)
		got := rc.outsideHosts(ctx, t, url, 20)
		if !slices.Equal(keys(got), local) {
			t.Errorf("GET %s x20 from outside (externalTrafficPolicy Local): answered by %v, want only %s's echo pods %v", url, got, n.Name, local)
		}
		hc := fmt.Sprintf("http://%s:%d/", n.IP, hcPort)
		code, body, err := rc.outsideGet(ctx, hc)
		wantBody := fmt.Sprintf(`"localEndpoints":%d`, len(local))
		if err != nil || code != http.StatusOK || !strings.Contains(body, wantBody) {
			t.Errorf("health check %s: status %d, %v, body %s; want 200 with %s", hc, code, err, body, wantBody)
		}
	}
	all := rc.echoPods(ctx)
	hosts := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for sum(hosts) < 30 {
		out, err := rc.exec(ctx, "client-master", "get", "http://"+ingressIP+"/")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s from client-master: %v", ingressIP, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		host, _ := replyFrom(t, out)
		hosts[host]++
	}
	if !slices.Equal(keys(hosts), all) {
		t.Errorf("GET http://%s/ x30 from client-master: answered by %v, want all of %v (pods reach a load-balancer IP with every endpoint)", ingressIP, hosts, all)
	}
}

// serveOutsideDNS answers every A query on conn with addr until conn is
// closed: the outside world's resolver.
func serveOutsideDNS(conn net.PacketConn, addr netip.Addr) {
	buf := make([]byte, 512)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		h.Response, h.Authoritative = true, true
		b := dnsmessage.NewBuilder(nil, h)
		b.StartQuestions()
		b.Question(q)
		b.StartAnswers()
		if q.Type == dnsmessage.TypeA {
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: addr.As4()})
		}
		if msg, err := b.Finish(); err == nil {
			conn.WriteTo(msg, from)
		}
	}
}

// testOperate: the status commands, /readyz and /metrics work inside the
// DaemonSet's pods, as an operator uses them.
func (rc *realCluster) testOperate(t *testing.T) {
	ctx := context.Background()
	nodes, err := rc.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidr := map[string]string{}
	for _, n := range nodes.Items {
		cidr[n.Name] = n.Spec.PodCIDR
	}
	for _, n := range rc.c.Nodes {
		svcs := rc.vrouterCmd(ctx, n.Name, "services")
		for _, want := range []string{"default/echo", "kube-system/kube-dns", "default/kubernetes"} {
			if !strings.Contains(svcs, want) {
				t.Errorf("vrouter services on %s lacks %s:\n%s", n.Name, want, svcs)
			}
		}
		routes := rc.vrouterCmd(ctx, n.Name, "routes")
		other := rc.c.Nodes[0]
		if other == n {
			other = rc.c.Nodes[1]
		}
		if want := cidr[other.Name] + " via " + other.IP; !strings.Contains(routes, want) {
			t.Errorf("vrouter routes on %s lacks %q:\n%s", n.Name, want, routes)
		}
		if want := cidr[n.Name] + " dev vr0"; !strings.Contains(routes, want) {
			t.Errorf("vrouter routes on %s lacks %q:\n%s", n.Name, want, routes)
		}
		if out := rc.nodeGet(ctx, n.Name, "http://127.0.0.1:10256/readyz"); out == "" {
			t.Errorf("/readyz on %s: empty", n.Name)
		}
		metrics := rc.nodeGet(ctx, n.Name, "http://127.0.0.1:10249/metrics")
		for _, want := range []string{"vrouter_", "vrouter_network_programming_duration_seconds"} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics on %s lacks %s", n.Name, want)
			}
		}
	}
}

// testSidecar: the shipped sidecar manifest (its example app replaced by
// vrtest, the API server address substituted) runs: the kubelet's startup
// probe reaches the sidecar's health port on the Pod's IP, the app starts
// after it, and the app's connections to a ClusterIP go through the
// sidecar (its own counters show them), not only through the node's
// router.
func (rc *realCluster) testSidecar(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "configs/deploy/sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ old, new string }{
		{seedAPIServer, rc.c.APIServer},
		{"image: nginx:1.27", "image: vrouter.test/vrtest:1\n          imagePullPolicy: Never\n          args: [serve]"},
	} {
		if n := bytes.Count(b, []byte(r.old)); n != 1 {
			t.Fatalf("sidecar.yaml has %q %d times, want once", r.old, n)
		}
		b = bytes.ReplaceAll(b, []byte(r.old), []byte(r.new))
	}
	rc.apply(ctx, b)
	rc.kubectl(ctx, nil, "rollout", "status", "deployment/app-with-vrouter", "--timeout=120s")
	t.Cleanup(func() {
		rc.kubectl(context.Background(), nil, "delete", "deployment/app-with-vrouter", "--wait=true")
	})
	pods := rc.pods(ctx, "default", "app.kubernetes.io/name=app-with-vrouter")
	if len(pods) != 1 {
		t.Fatalf("app-with-vrouter pods: %d, want 1", len(pods))
	}
	pod := pods[0].Name
	ip := rc.serviceIP(ctx, "default", "echo")
	const n = 10
	for range n {
		out, err := rc.c.Kubectl(ctx, nil, "exec", pod, "-c", "app", "--", "/vrtest", "get", "http://"+ip+"/")
		if err != nil {
			t.Fatalf("GET the echo Service from the app: %v", err)
		}
		if _, client := replyFrom(t, out); client != pods[0].Status.PodIP {
			t.Errorf("backend saw client %s, want the app Pod's address %s (the sidecar dials from it)", client, pods[0].Status.PodIP)
		}
	}
	svcs := rc.kubectl(ctx, nil, "exec", pod, "-c", "vrouter", "--", "vrouter", "services")
	conns := 0
	for _, line := range strings.Split(svcs, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "default/echo:http" {
			var c int
			if _, err := fmt.Sscan(f[len(f)-1], &c); err == nil {
				conns += c
			}
		}
	}
	if conns < n {
		t.Errorf("the sidecar counts %d connections to default/echo:http, want at least %d:\n%s", conns, n, svcs)
	}
}

// testRestartVrouter: deleting the worker's vrouter pod (the DaemonSet
// makes a new one) loses no established connection that crosses it:
// forwarding between pods keeps no state in the router, and a nat-mode
// ClusterIP connection from a pod on the worker keeps its translation,
// which the new router adopts from the flow file the old one left in the
// node's /run/vrouter.
func (rc *realCluster) testRestartVrouter(t *testing.T) {
	ctx := context.Background()
	dst := rc.pod(ctx, "default", "client-node")
	svc := net.JoinHostPort(rc.serviceIP(ctx, "default", "echo"), "9000")
	old := rc.vrouterPod(ctx, cluster.Worker)
	var wg sync.WaitGroup
	var holdOut, svcOut string
	var holdErr, svcErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		holdOut, holdErr = rc.exec(ctx, "client-master", "hold", net.JoinHostPort(dst.Status.PodIP, "9000"), "--duration", "40s", "--timeout", "30s")
	}()
	go func() {
		defer wg.Done()
		svcOut, svcErr = rc.exec(ctx, "client-node", "hold", svc, "--duration", "40s", "--timeout", "30s")
	}()
	time.Sleep(3 * time.Second) // the connection is established and busy
	rc.kubectl(ctx, nil, "-n", "kube-system", "delete", "pod", old.Name, "--wait=true")
	rc.kubectl(ctx, nil, "-n", "kube-system", "rollout", "status", "daemonset/vrouter", "--timeout=120s")
	if p := rc.vrouterPod(ctx, cluster.Worker); p.Name == old.Name {
		t.Errorf("vrouter pod %s was not replaced", old.Name)
	}
	wg.Wait()
	if holdErr != nil {
		t.Fatalf("connection client-master → client-node across the restart: %v\n%s", holdErr, holdOut)
	}
	t.Logf("across the restart: %s", strings.TrimSpace(holdOut))
	if svcErr != nil {
		t.Errorf("ClusterIP connection client-node → echo %s through the restarted router: %v\n%s", svc, svcErr, svcOut)
	} else {
		t.Logf("ClusterIP connection across the restart: %s", strings.TrimSpace(svcOut))
	}
	// And new connections work through the new router.
	rc.testPodToPod(t)
}

// testDeleteNode: deleting a Node removes its routes on the other
// router.
func (rc *realCluster) testDeleteNode(t *testing.T) {
	ctx := context.Background()
	worker, err := rc.cs.CoreV1().Nodes().Get(ctx, cluster.Worker, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := worker.Spec.PodCIDR + " via "
	if routes := rc.vrouterCmd(ctx, cluster.Master, "routes"); !strings.Contains(routes, want) {
		t.Fatalf("before: vrouter routes on %s lacks %q:\n%s", cluster.Master, want, routes)
	}
	rc.kubectl(ctx, nil, "delete", "node", cluster.Worker, "--wait=true")
	deadline := time.Now().Add(30 * time.Second)
	for {
		routes := rc.vrouterCmd(ctx, cluster.Master, "routes")
		if !strings.Contains(routes, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after deleting %s, vrouter routes on %s still has %q:\n%s", cluster.Worker, cluster.Master, want, routes)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// testEgress: with the DaemonSet's --masquerade, pods on both nodes
// reach a server on the outside host (which has no route to the pod
// network), and it sees their node's address; the nodes hold vrouter's
// egress rules, and no iptables rule does it. (Still to add once the
// cluster DNS forwards names it does not own to a resolver on the outside
// host: the same request by name.)
func (rc *realCluster) testEgress(t *testing.T) {
	ctx := context.Background()
	var ln net.Listener
	if err := rc.c.Net.Do(cluster.Outside, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(cluster.OutsideIP, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen on the outside host: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "outside %s\n", r.RemoteAddr)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	// A resolver on the outside host answers outside.example with its own
	// address; the cluster DNS forwards names outside cluster.local to it,
	// through egress like any pod's traffic.
	var dnsConn net.PacketConn
	if err := rc.c.Net.Do(cluster.Outside, func() error {
		var err error
		dnsConn, err = net.ListenPacket("udp4", net.JoinHostPort(cluster.OutsideIP, "53"))
		return err
	}); err != nil {
		t.Fatalf("listen on the outside host's port 53: %v", err)
	}
	dnsDone := make(chan struct{})
	go func() {
		defer close(dnsDone)
		serveOutsideDNS(dnsConn, netip.MustParseAddr(cluster.OutsideIP))
	}()
	defer func() {
		dnsConn.Close()
		<-dnsDone
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	byName := "http://outside.example:" + port + "/"
	url := "http://" + ln.Addr().String() + "/"
	for i, pod := range []string{"client-master", "client-node"} {
		node := rc.c.Nodes[i]
		out, err := rc.exec(ctx, pod, "get", url, "--timeout", "5s")
		if err != nil {
			t.Errorf("GET %s from %s: %v", url, pod, err)
			continue
		}
		if _, client := replyFrom(t, out); client != node.IP {
			t.Errorf("GET %s from %s: the outside server saw %s, want %s's address %s", url, pod, client, node.Name, node.IP)
		}
		out, err = rc.exec(ctx, pod, "get", byName, "--timeout", "10s")
		if err != nil {
			t.Errorf("GET %s from %s (the name through the cluster DNS and its upstream): %v", byName, pod, err)
		} else if _, client := replyFrom(t, out); client != node.IP {
			t.Errorf("GET %s from %s: the outside server saw %s, want %s's address %s", byName, pod, client, node.Name, node.IP)
		}
		rules, err := rc.c.Net.Command(node.Name, "ip", "rule", "show").CombinedOutput()
		if err != nil || !strings.Contains(string(rules), "lookup 118") {
			t.Errorf("ip rule on %s: %v, want vrouter's egress rules (lookup 118):\n%s", node.Name, err, rules)
		}
	}
}
