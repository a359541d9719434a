package integration

// vrouter as a sidecar: inside one Pod's network namespace, fed by a real
// kube-apiserver, load-balancing that Pod's connections to ClusterIPs while
// the cluster's own network (here the kernel's host-gw routes, as flannel
// would set them) carries pod traffic:
//
//	hostgw-master ── kernel host-gw ── hostgw-node
//	  coredns-xx6mc 10.244.0.2: vrouter run --sidecar --kubeconfig …
//	                            vr0 with 10.96.0.0/12 only
//	  nginx-th5pz 10.244.0.4    nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
// The sidecar terminates the Pod's connection to my-service and dials the
// backend from the Pod's own kernel: backends see the Pod's address.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestKubernetesSidecar(t *testing.T) {
	e := newEnv(t, "sidecar", topology.Seed(), harness.ConfigOptions{})
	if err := e.c.InstallKernelHostGW(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := startKubeAPI(t, ctx, e)
	admin := api.admin
	var err error
	for _, n := range []*corev1.Node{kubeNode(masterNode, "10.244.0.0/24", "192.168.31.201"), kubeNode(workerNode, "10.244.1.0/24", "192.168.31.202")} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// my-service, and a UDP-only Service a sidecar cannot serve (it must
	// not keep the others from being served).
	for _, svc := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service"}, Spec: corev1.ServiceSpec{ClusterIP: "10.103.92.81",
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "udp-only"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.53",
			Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}}}},
	} {
		if _, err := admin.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "my-service-x7k2p",
			Labels: map[string]string{discoveryv1.LabelServiceName: "my-service"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](80), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{kubeEndpoint("10.244.0.4", masterNode),
			kubeEndpoint("10.244.1.2", workerNode), kubeEndpoint("10.244.1.3", workerNode)},
	}
	if slice, err = admin.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []pod{nginxTh5pz, nginx4k7xw, nginxJ6zwk} {
		srv, err := e.c.ServeHTTP(p.name, netip.AddrPortFrom(p.addr, 80).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}

	// The sidecar, in coredns-xx6mc's namespace.
	const podNS = "coredns-xx6mc"
	podAddr := netip.MustParseAddr("10.244.0.2")
	relayAPIServer(t, e, podNS, api.target)
	r, err := harness.Launch(e.c, vrouterBin, podNS, e.logPath(podNS),
		"run", "--sidecar", "--kubeconfig", api.kubeconfig, "--node-name", masterNode,
		"--admin-socket", filepath.Join(e.dir, "sidecar.sock"))
	if err != nil {
		t.Fatal(err)
	}
	e.routers[podNS] = r

	url := "http://10.103.92.81/"
	answers := func(n int) (map[string]int, map[netip.Addr]bool, error) {
		got, clients := map[string]int{}, map[netip.Addr]bool{}
		for range n {
			cctx, c := context.WithTimeout(ctx, 2*time.Second)
			rep, err := e.c.HTTPGet(cctx, podNS, url)
			c()
			if err != nil {
				return got, clients, err
			}
			got[rep.Server]++
			clients[rep.Client.Addr()] = true
		}
		return got, clients, nil
	}
	eventually(t, 20*time.Second, "the sidecar serves my-service", func() error {
		if r.Exited() {
			log, _ := os.ReadFile(e.logPath(podNS))
			t.Fatalf("sidecar exited:\n%s", log)
		}
		got, clients, err := answers(30)
		if err != nil {
			return err
		}
		if len(got) != 3 {
			return fmt.Errorf("answers %v, want all three backends", got)
		}
		if len(clients) != 1 || !clients[podAddr] {
			return fmt.Errorf("backends saw clients %v, want only the Pod's own %v", clients, podAddr)
		}
		return nil
	})

	// The Pod's kernel routes only the Service CIDR (and the router's
	// address) to the sidecar.
	if got := e.vr0Routes(t, podNS); strings.Join(got, ",") != "10.96.0.0/12,169.254.244.1/32" {
		t.Errorf("routes on vr0 in the Pod: %v, want 10.96.0.0/12 and 169.254.244.1/32", got)
	}

	// Endpoint changes are followed.
	slice.Endpoints = slice.Endpoints[1:2]
	if _, err := admin.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "scaled down to nginx-4k7xw", func() error {
		got, _, err := answers(10)
		if err != nil {
			return err
		}
		if got[nginx4k7xw.name] != 10 {
			return fmt.Errorf("answers %v, want only %s", got, nginx4k7xw.name)
		}
		return nil
	})
	if err := r.Stop(); err != nil {
		t.Errorf("sidecar exit: %v", err)
	}
}

// vr0Routes lists the destinations routed to vr0 in namespace ns, sorted.
func (e *env) vr0Routes(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	if err := e.c.Do(ns, func() error {
		l, err := netlink.LinkByName("vr0")
		if err != nil {
			return err
		}
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil {
				out = append(out, r.Dst.String())
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("routes in %s: %v", ns, err)
	}
	slices.Sort(out)
	return out
}
