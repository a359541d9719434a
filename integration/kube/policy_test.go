package kube_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vrouter/vrouter/integration/kube"
)

// Two WireGuard public keys in the annotation's form.
const (
	keyA = "bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk="
	keyB = "d29ya2VyLWtleS13b3JrZXIta2V5LXdvcmtlci1rZXk="
)

const (
	keyAnnotation = "vrouter.io/wireguard-public-key"
	onlyKey       = "vrouter may change only the annotation vrouter.io/wireguard-public-key of its Node"
)

// TestNodeKeyPolicy: with rbac.yaml applied to a real API server, the
// DaemonSet's ServiceAccount, its token bound to a Pod on hostgw-master,
// may set and remove the WireGuard key annotation of hostgw-master and do
// nothing else to any Node; without the node claim it may write nothing.
// (The token is impersonated: see Cluster.ServiceAccountOnNode.)
func TestNodeKeyPolicy(t *testing.T) {
	c, admin := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	createSeedNodes(t, ctx, admin)
	if err := kube.Apply(ctx, admin, rbac); err != nil {
		t.Fatal(err)
	}
	client := func(node string) kubernetes.Interface {
		_, cfg, err := c.ServiceAccountOnNode(node)
		if err != nil {
			t.Fatal(err)
		}
		return c.Client(t, cfg)
	}
	sa, noClaim := client(masterNode), client("")
	patch := func(cs kubernetes.Interface, node, body string) error {
		_, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	annotate := func(value string) string {
		if value == "null" {
			return `{"metadata":{"annotations":{"` + keyAnnotation + `":null}}}`
		}
		return `{"metadata":{"annotations":{"` + keyAnnotation + `":"` + value + `"}}}`
	}
	// RBAC and the policy take effect through the API server's informers:
	// wait until its own key is allowed and another Node's denied (a
	// removal of what is not there: a no-op should the policy not be in
	// effect yet).
	waitUntil(t, "RBAC and the policy in effect", func() bool {
		return patch(sa, masterNode, annotate(keyA)) == nil && apierrors.IsForbidden(patch(sa, workerNode, annotate("null")))
	})

	allowed := []struct{ what, node, body string }{
		{"publish its key", masterNode, annotate(keyB)},
		{"rotate it", masterNode, annotate(keyA)},
		{"remove it", masterNode, annotate("null")},
		{"remove it when absent", masterNode, annotate("null")},
		{"publish it again", masterNode, annotate(keyA)},
	}
	for _, a := range allowed {
		if err := patch(sa, a.node, a.body); err != nil {
			t.Errorf("ServiceAccount on %s: %s = %v, want allowed", masterNode, a.what, err)
		}
	}
	denied := []struct {
		what   string
		client kubernetes.Interface
		node   string
		body   string
		check  func(error) bool
		msg    string // the policy's message for it
	}{
		{"set another Node's key", sa, workerNode, annotate(keyB), apierrors.IsForbidden, "only patch the Node its Pod runs on (its token names Node hostgw-master)"},
		{"remove another Node's key", sa, workerNode, annotate("null"), apierrors.IsForbidden, "only patch the Node its Pod runs on"},
		{"label its own Node", sa, masterNode, `{"metadata":{"labels":{"pwned":"true"}}}`, apierrors.IsForbidden, onlyKey},
		{"change its own Node's hostname label", sa, masterNode, `{"metadata":{"labels":{"kubernetes.io/hostname":"x"}}}`, apierrors.IsForbidden, onlyKey},
		{"another annotation on its own Node", sa, masterNode, `{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip-overwrite":"203.0.113.9"}}}`, apierrors.IsForbidden, onlyKey},
		{"its key and a label at once", sa, masterNode, `{"metadata":{"labels":{"pwned":"true"},"annotations":{"` + keyAnnotation + `":"` + keyB + `"}}}`, apierrors.IsForbidden, onlyKey},
		{"taint its own Node", sa, masterNode, `{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}`, apierrors.IsForbidden, onlyKey},
		{"cordon its own Node", sa, masterNode, `{"spec":{"unschedulable":true}}`, apierrors.IsForbidden, onlyKey},
		{"publish something that is not a key", sa, masterNode, annotate("not-a-key"), apierrors.IsInvalid, "must be a WireGuard public key"},
		{"publish its key without the node claim", noClaim, masterNode, annotate(keyB), apierrors.IsForbidden, "(its token names no Node)"},
	}
	for _, d := range denied {
		if err := patch(d.client, d.node, d.body); !d.check(err) || !strings.Contains(err.Error(), d.msg) {
			t.Errorf("ServiceAccount: %s = %v, want refused with %q", d.what, err, d.msg)
		}
	}
	// RBAC refuses the rest before admission.
	if _, err := sa.CoreV1().Nodes().Get(ctx, masterNode, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("ServiceAccount: get its Node = %v, want Forbidden (list and watch only)", err)
	}
	if err := sa.CoreV1().Nodes().Delete(ctx, masterNode, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("ServiceAccount: delete its Node = %v, want Forbidden", err)
	}

	// What the admin sees: its own key, every other field as it was.
	for _, n := range []struct{ name, key string }{{masterNode, keyA}, {workerNode, ""}} {
		node, err := admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tainted := slices.ContainsFunc(node.Spec.Taints, func(t corev1.Taint) bool { return t.Key == "x" })
		if got := node.Annotations[keyAnnotation]; got != n.key || node.Labels["pwned"] != "" || node.Spec.Unschedulable || tainted {
			t.Errorf("Node %s: key %q, labels %v, spec %+v; want key %q and nothing else changed", n.name, got, node.Labels, node.Spec, n.key)
		}
	}
	// The policy binds only that ServiceAccount: the admin is not held
	// to it.
	if err := patch(admin, workerNode, `{"metadata":{"labels":{"zone":"b"}}}`); err != nil {
		t.Errorf("admin: label %s = %v, want allowed", workerNode, fmt.Sprint(err))
	}
}
