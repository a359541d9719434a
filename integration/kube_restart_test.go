package integration

// A router fed by the API server is killed (SIGKILL) and started again
// under established nat-mode ClusterIP connections: the new router must
// learn the Services from the API server before it adopts the flow file,
// or it would drop every flow as belonging to no Service and reset the
// connections.
//
//	kube-apiserver + etcd (host) ◀── relay in each node ── vrouter --kubeconfig
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter: running → SIGKILL → started
//	 │    coredns-xx6mc 10.244.0.2  client
//	 │    nginx-th5pz 10.244.0.4    backend (hairpin)
//	 └─ hostgw-node   eth0 .202  vrouter
//	      nginx-4k7xw 10.244.1.2    backend
//
//	default/restart-echo  10.103.92.84:7/TCP -> 10.244.0.4, 10.244.1.2 (EndpointSlice)

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestKubeRestartKeepsNATConnections(t *testing.T) {
	e := newEnv(t, "kuberestart", topology.Seed(), harness.ConfigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := startKubeAPI(t, ctx, e)
	start := func(node string) *harness.Router {
		t.Helper()
		r, err := harness.Launch(e.c, vrouterBin, node, e.logPath(node),
			"run", "--kubeconfig", api.kubeconfig, "--node-name", node, "--admin-socket", filepath.Join(e.dir, node+".sock"),
			"--cni-conf-dir", "", "--state-dir", harness.StateDir(e.logPath(node), node))
		if err != nil {
			t.Fatal(err)
		}
		e.routers[node] = r // stopped, and its log shown on failure, by env
		return r
	}
	for _, n := range []string{masterNode, workerNode} {
		relayAPIServer(t, e, n, api.target)
		start(n)
	}
	for _, n := range []*corev1.Node{kubeNode(masterNode, "10.244.0.0/24", "192.168.31.201"), kubeNode(workerNode, "10.244.1.0/24", "192.168.31.202")} {
		created, err := api.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create Node %s: %v", n.Name, err)
		}
		created.Status = n.Status
		if _, err := api.admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Node %s status: %v", n.Name, err)
		}
	}
	for n, r := range e.routers {
		if err := r.WaitReady(e.c, 20*time.Second); err != nil {
			t.Fatalf("router on %s: %v", n, err)
		}
	}
	e.serve(nginxTh5pz, nginx4k7xw)
	vip := netip.MustParseAddrPort("10.103.92.84:7")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "restart-echo"},
		Spec: corev1.ServiceSpec{ClusterIP: vip.Addr().String(),
			Ports: []corev1.ServicePort{{Port: 7, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(7)}}},
	}
	if _, err := api.admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service: %v", err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "restart-echo-q8z4d",
			Labels: map[string]string{discoveryv1.LabelServiceName: "restart-echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](7), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{kubeEndpoint("10.244.0.4", masterNode), kubeEndpoint("10.244.1.2", workerNode)},
	}
	if _, err := api.admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EndpointSlice: %v", err)
	}

	type vipConn struct {
		conn    net.Conn
		r       *bufio.Reader
		backend string
	}
	dial := func() (*vipConn, error) {
		var conn net.Conn
		err := e.c.Do(corednsXx6mc.name, func() error {
			var err error
			conn, err = net.DialTimeout("tcp4", vip.String(), time.Second)
			return err
		})
		if err != nil {
			return nil, err
		}
		c := &vipConn{conn: conn, r: bufio.NewReader(conn)}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		greeting, err := c.r.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("read greeting: %w", err)
		}
		c.backend, _, _ = strings.Cut(greeting, " ")
		return c, nil
	}
	var conns []*vipConn
	eventually(t, 10*time.Second, "restart-echo reachable from coredns-xx6mc", func() error {
		c, err := dial()
		if err == nil {
			conns = append(conns, c)
		}
		return err
	})
	for len(conns) < 8 {
		c, err := dial()
		if err != nil {
			t.Fatalf("connect coredns-xx6mc -> %v: %v", vip, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.conn.Close()
		}
	})
	echo := func(c *vipConn, line string) error {
		c.conn.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := fmt.Fprintf(c.conn, "%s\n", line); err != nil {
			return err
		}
		got, err := c.r.ReadString('\n')
		if err == nil && got != line+"\n" {
			err = fmt.Errorf("echoed %q, want %q", got, line+"\n")
		}
		return err
	}
	backends := map[string]int{}
	for i, c := range conns {
		if err := echo(c, fmt.Sprintf("before %d", i)); err != nil {
			t.Fatalf("connection %d to %s before the crash: %v", i, c.backend, err)
		}
		backends[c.backend]++
	}

	r := e.routers[masterNode]
	killed := time.Now()
	if err := r.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.Stop() // reaps it; the error is the kill's
	start(masterNode)
	if err := e.routers[masterNode].WaitReady(e.c, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for i, c := range conns {
		if err := echo(c, fmt.Sprintf("after %d", i)); err != nil {
			t.Errorf("connection %d to %s after the crash: %v", i, c.backend, err)
			continue
		}
		kept++
	}
	t.Logf("kube mode, crash (SIGKILL): %d/%d connections kept (backends %v), all answered %v after the kill",
		kept, len(conns), backends, time.Since(killed).Round(time.Millisecond))
	log, _ := os.ReadFile(e.logPath(masterNode))
	if !strings.Contains(string(log), fmt.Sprintf(`"restored": %d,`, len(conns))) {
		t.Errorf("router log on %s does not show %d flows restored:\n%s", masterNode, len(conns), lastLines(string(log), 20))
	}
}
