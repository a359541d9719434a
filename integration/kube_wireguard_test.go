package integration

// The encrypted overlay in Kubernetes mode, against a real kube-apiserver
// (v1.37.2) and etcd, on the seed's cluster:
//
//	host netns:  etcd, kube-apiserver https://127.0.0.1:<port>
//	             (relayed to 127.0.0.1:6443 inside each node namespace)
//	hostgw-master 192.168.31.201  vrouter run --kubeconfig … --overlay-encryption=wireguard
//	   nginx-th5pz 10.244.0.4        key file <dir>/hostgw-master.key
//	        ║ WireGuard, UDP 8285 on the underlay 192.168.31.0/24
//	hostgw-node   192.168.31.202  vrouter run --kubeconfig … --overlay-encryption=wireguard
//	   nginx-4k7xw 10.244.1.2        key file <dir>/hostgw-node.key
//
// Each router runs as configs/deploy/rbac.yaml's ServiceAccount with a
// token bound to a Pod on its own Node (impersonated: there is no kubelet
// here to mint one; Cluster.ServiceAccountOnNode), so the manifest's
// roles and its ValidatingAdmissionPolicy hold it to the one annotation of
// its own Node. Each publishes its key there and routes to the other
// with the other's; a Node that loses its annotation is not routed to
// until it has one again; a key rotated at SIGHUP is published and used.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/kube"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/router/wireguard"
)

const wireGuardKeyAnnotation = "vrouter.io/wireguard-public-key"

// nodeKey returns Node node's WireGuard key annotation, "" without one.
func nodeKey(ctx context.Context, admin kubernetes.Interface, node string) (string, error) {
	n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return n.Annotations[wireGuardKeyAnnotation], nil
}

// publicKeyIn is the public key of the private key file at path.
func publicKeyIn(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	k, err := wireguard.ParseKey(string(b))
	if err != nil {
		return "", err
	}
	return k.Public().String(), nil
}

// notDelivered makes one probe and reports nil if no echo reply came
// back (an ICMP error or nothing at all).
func (e *env) notDelivered(from string, dst pod) error {
	res, err := e.c.Ping(from, dst.addr, 1, 500*time.Millisecond)
	if err != nil {
		return err
	}
	if res.Received != 0 {
		return fmt.Errorf("Ping(%s -> %s %v) = %s, want no answer", from, dst.name, dst.addr, res)
	}
	return nil
}

func TestKubeWireGuard(t *testing.T) {
	e := newEnv(t, "kwg", topology.Seed(), harness.ConfigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kc, err := kube.Start(t, kube.Options{})
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	admin, err := kubernetes.NewForConfig(kc.Admin)
	if err != nil {
		t.Fatal(err)
	}
	target := strings.TrimPrefix(kc.URL, "https://")
	// The manifest's ServiceAccount, roles and policy, as a user applies
	// them; then the Nodes, as the kubelets register them.
	if err := kube.Apply(ctx, admin, "../configs/deploy/rbac.yaml"); err != nil {
		t.Fatal(err)
	}
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

	keyFile := func(node string) string { return filepath.Join(e.dir, node+".key") }
	relays := map[string]func(){}
	for _, node := range []string{masterNode, workerNode} {
		path, _, err := kc.ServiceAccountOnNode(node)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig := filepath.Join(e.dir, node+".kubeconfig")
		if err := os.WriteFile(kubeconfig, bytes.ReplaceAll(b, []byte(kc.URL), []byte("https://127.0.0.1:6443")), 0o600); err != nil {
			t.Fatal(err)
		}
		relays[node] = relayAPIServer(t, e, node, target)
		r, err := harness.Launch(e.c, vrouterBin, node, e.logPath(node),
			"run", "--kubeconfig", kubeconfig, "--node-name", node, "--admin-socket", filepath.Join(e.dir, node+".sock"),
			"--cni-conf-dir", filepath.Join(e.dir, node+"-cni"), "--state-dir", harness.StateDir(e.logPath(node), node),
			"--overlay-encryption=wireguard", "--wireguard-key-file", keyFile(node))
		if err != nil {
			t.Fatal(err)
		}
		e.routers[node] = r // stopped, and its log shown on failure, by env
	}
	for node, r := range e.routers {
		if err := r.WaitReady(e.c, 30*time.Second); err != nil {
			t.Fatalf("router on %s: %v", node, err)
		}
	}

	// Each router made its key file and published its public key on its
	// own Node; the CNI config's MTU leaves room for WireGuard.
	published := func(node string) func() error {
		return func() error {
			want, err := publicKeyIn(keyFile(node))
			if err != nil {
				return err
			}
			got, err := nodeKey(ctx, admin, node)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("Node %s annotation %s = %q, want the public key of %s, %q", node, wireGuardKeyAnnotation, got, keyFile(node), want)
			}
			return nil
		}
	}
	for _, node := range []string{masterNode, workerNode} {
		eventually(t, 10*time.Second, node+"'s key published", published(node))
		b, err := os.ReadFile(filepath.Join(e.dir, node+"-cni", "10-vrouter.conflist"))
		if err != nil || !bytes.Contains(b, []byte(`"mtu": 1440`)) {
			t.Errorf("router on %s: CNI config %q (%v), want MTU 1440 (1500 less 28 for IPv4/UDP and 32 for WireGuard)", node, b, err)
		}
	}

	// Pods reach each other, across the encrypted overlay: the underlay
	// carries WireGuard messages only, none with the payload in it.
	e.serve(nginxTh5pz, nginx4k7xw)
	across := func() error {
		if err := e.reachable(nginxTh5pz.name, nginx4k7xw.addr); err != nil {
			return err
		}
		if err := e.reachable(nginx4k7xw.name, nginxTh5pz.addr); err != nil {
			return err
		}
		return e.tcpEcho(nginxTh5pz, nginx4k7xw, 7)
	}
	// The first packet each way waits for a handshake (WireGuard retries
	// one lost to a simultaneous start after 5 s).
	took := eventually(t, 20*time.Second, "pods reach each other across the encrypted overlay", across)
	t.Logf("pods reach each other across the encrypted overlay after %v", took.Round(time.Millisecond))
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, 60)
	if err := e.udpEcho(nginx4k7xw, nginxTh5pz, 7); err != nil {
		t.Error(err)
	}
	var sendErr error
	n, payloads := e.captureOverlay(t, masterNode, func() { sendErr = e.sendMarker(nginxTh5pz, nginx4k7xw) })
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	if n == 0 {
		t.Fatalf("captured no overlay datagram on %s's underlay while pods talked", masterNode)
	}
	for _, p := range payloads {
		if !wireguard.IsMessage(p) {
			t.Errorf("an overlay datagram on the underlay is no WireGuard message: % x", p[:min(len(p), 32)])
			break
		}
		if bytes.Contains(p, []byte(secretMarker)) {
			t.Errorf("the pods' payload %q crossed the underlay in clear", secretMarker)
			break
		}
	}

	// hostgw-node loses its annotation while its router cannot reach the
	// API server (else it would put it back at once): hostgw-master no
	// longer routes to it, and says why.
	relays[workerNode]()
	if err := across(); err != nil {
		t.Fatalf("pods across, hostgw-node's router cut off from the API server: %v; want the data path unchanged", err)
	}
	if _, err := admin.CoreV1().Nodes().Patch(ctx, workerNode, types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+wireGuardKeyAnnotation+`":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("remove %s's key annotation: %v", workerNode, err)
	}
	took = eventually(t, 10*time.Second, "hostgw-node not routed to without its key", func() error {
		return e.notDelivered(nginxTh5pz.name, nginx4k7xw)
	})
	t.Logf("hostgw-node not routed to %v after its key annotation was removed", took.Round(time.Millisecond))
	if e.logCount(masterNode, "peer has no WireGuard public key") == 0 {
		t.Errorf("hostgw-master's router did not log that hostgw-node has no key")
	}
	if err := e.notDelivered(nginx4k7xw.name, nginxTh5pz); err != nil {
		t.Errorf("hostgw-node -> hostgw-master without hostgw-node's key at hostgw-master: %v", err)
	}
	// Back in touch, its router publishes its key again, and traffic
	// crosses again.
	relays[workerNode] = relayAPIServer(t, e, workerNode, target)
	took = eventually(t, 60*time.Second, "hostgw-node's key published again", published(workerNode))
	t.Logf("hostgw-node's router put its key back %v after it could reach the API server again", took.Round(time.Millisecond))
	eventually(t, 20*time.Second, "pods reach each other with the key back", across)

	// The key rotated on disk: SIGHUP publishes the new one, and the
	// peer handshakes with it.
	old, err := nodeKey(ctx, admin, workerNode)
	if err != nil {
		t.Fatal(err)
	}
	k, err := wireguard.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile(workerNode), []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.router(workerNode).Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rotated key published", func() error {
		if err := published(workerNode)(); err != nil {
			return err
		}
		if got, _ := nodeKey(ctx, admin, workerNode); got == old {
			return fmt.Errorf("Node %s still carries the old key", workerNode)
		}
		return nil
	})
	eventually(t, 20*time.Second, "pods reach each other with the rotated key", across)
	// Published at start, after the removal and after the rotation.
	if n := e.logCount(workerNode, "WireGuard public key published on this Node"); n != 3 {
		t.Errorf("hostgw-node's router logged %d publications, want 3 (start, key removed, key rotated)", n)
	}
}
