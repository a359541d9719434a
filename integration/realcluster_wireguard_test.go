package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/integration/cluster"
	"github.com/vrouter/vrouter/router/wireguard"
)

// testEncrypt: a user encrypts the overlay of the running cluster with the
// DaemonSet's one flag, --overlay-encryption=wireguard, as a rolling
// update. Each router publishes its public key on its own Node with its
// Pod's ServiceAccount token (the ValidatingAdmissionPolicy of rbac.yaml
// lets it, by the token's node claim, which the kubelet's token carries)
// and picks up the other's; the sessions come up, pods talk across as
// before, and the underlay carries nothing readable. A token bound to the
// worker's router Pod may change that annotation of its own Node only.
func (rc *realCluster) testEncrypt(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	rc.rollOutFlag(ctx, "--overlay-encryption=wireguard")

	// Each Node carries its router's key.
	keys := map[string]string{}
	for _, node := range []string{cluster.Master, cluster.Worker} {
		deadline := time.Now().Add(60 * time.Second)
		for keys[node] == "" {
			n, err := rc.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err == nil {
				if _, perr := wireguard.ParseKey(n.Annotations[kube.AnnotationWireGuardKey]); perr == nil {
					keys[node] = n.Annotations[kube.AnnotationWireGuardKey]
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("60s after the rollout, Node %s has no %s annotation (%v)", node, kube.AnnotationWireGuardKey, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	if keys[cluster.Master] == keys[cluster.Worker] {
		t.Fatalf("both Nodes publish the key %s", keys[cluster.Master])
	}

	// Each router has a session with the other, under the other's key.
	for node, peer := range map[string]string{cluster.Master: cluster.Worker, cluster.Worker: cluster.Master} {
		var last string
		deadline := time.Now().Add(60 * time.Second)
		for !sessionUp(last, peer, keys[peer]) {
			if time.Now().After(deadline) {
				t.Fatalf("60s after the rollout, vrouter peers on %s shows no session with %s under key %s:\n%s", node, peer, keys[peer], last)
			}
			time.Sleep(time.Second)
			last = rc.vrouterCmd(ctx, node, "peers", "-o", "json")
		}
	}
	t.Logf("encrypted: keys published and sessions up %v after the rollout began", time.Since(start).Round(time.Second))

	// Pods talk across as before, and through a ClusterIP.
	rc.testPodToPod(t)
	rc.testClusterIP(t)

	// The underlay carries only WireGuard messages, nothing readable.
	dst := rc.pod(ctx, "default", "client-node")
	marker := strings.Repeat(secretMarker, 20)
	frames, payloads := captureUDP(t, rc.c.Net, cluster.Worker, configs.DefaultOverlayPort, func() {
		out := rc.mustExec(ctx, "client-master", "tcp", net.JoinHostPort(dst.Status.PodIP, "9000"), marker)
		if !strings.Contains(out, marker) {
			t.Errorf("TCP echo of the marker from client-master to client-node: %q", out)
		}
	})
	if frames == 0 {
		t.Fatal("the capture on the worker's underlay saw no overlay datagram while the marker crossed")
	}
	for _, p := range payloads {
		if bytes.Contains(p, []byte(secretMarker)) || !wireguard.IsMessage(p) {
			t.Fatalf("an overlay datagram on the underlay is not an opaque WireGuard message: %q", p[:min(len(p), 64)])
		}
	}

	// Least privilege, with a token the API server binds to the worker's
	// router Pod as it does the kubelet's.
	p := rc.vrouterPod(ctx, cluster.Worker)
	tr, err := rc.cs.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, p.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: new(int64(600)),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", p.Name, err)
	}
	cfg := rest.AnonymousClientConfig(rc.c.Admin)
	cfg.BearerToken = tr.Status.Token
	as, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(node, meta string) error {
		_, err := as.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(`{"metadata":`+meta+`}`), metav1.PatchOptions{})
		return err
	}
	annotate := func(key string) string {
		return fmt.Sprintf(`{"annotations":{%q:%q}}`, kube.AnnotationWireGuardKey, key)
	}
	if err := patch(cluster.Worker, annotate(keys[cluster.Worker])); err != nil {
		t.Errorf("the worker's router token may not set its own Node's key: %v", err)
	}
	for what, tc := range map[string]struct{ node, meta string }{
		"the master's key":        {cluster.Master, annotate(keys[cluster.Worker])},
		"a label of its own Node": {cluster.Worker, `{"labels":{"vrouter.io/test":"x"}}`},
		"another annotation":      {cluster.Worker, `{"annotations":{"vrouter.io/test":"x"}}`},
	} {
		if err := patch(tc.node, tc.meta); err == nil {
			t.Errorf("the worker's router token changed %s", what)
		} else {
			t.Logf("denied, as it should be: %s: %v", what, err)
		}
	}
}

// sessionUp reports whether peersJSON (`vrouter peers -o json`) shows a
// WireGuard session up with peer under key.
func sessionUp(peersJSON, peer, key string) bool {
	var peers []struct {
		Name      string
		PublicKey string
		WireGuard *struct{ Session string }
	}
	if json.Unmarshal([]byte(peersJSON), &peers) != nil {
		return false
	}
	for _, p := range peers {
		if p.Name == peer && p.PublicKey == key && p.WireGuard != nil && p.WireGuard.Session == "up" {
			return true
		}
	}
	return false
}
