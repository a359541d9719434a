package kube_test

// These tests run a real kube-apiserver v1.37.2 and etcd (see package doc)
// holding the seed's cluster:
//
//	Nodes      hostgw-master 192.168.31.201 podCIDR 10.244.0.0/24
//	           hostgw-node   192.168.31.202 podCIDR 10.244.1.0/24
//	Services   default/my-service     10.103.92.81 80/TCP → 10.244.0.4, 10.244.1.2, 10.244.1.3
//	           kube-system/kube-dns   10.96.0.10 53/UDP, 53/TCP, 9153/TCP → 10.244.0.2, 10.244.0.3
//	           default/kubernetes     10.96.0.1 443/TCP (the API server's own; no endpoints here)
//
// Nothing but the two processes on 127.0.0.1 is contacted: the addresses
// above are data in the API, never dialed.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/vrouter/vrouter/integration/kube"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	masterNode = "hostgw-master"
	workerNode = "hostgw-node"
	deployDir  = "../../configs/deploy"
	rbac       = deployDir + "/rbac.yaml"
	manifest   = deployDir + "/daemonset.yaml"
	sidecar    = deployDir + "/sidecar.yaml"
)

// strict decodes Kubernetes objects as the API server validates them
// with fieldValidation=Strict: an unknown or duplicate field is an error.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeManifest decodes every document of the YAML file at path, strictly.
func decodeManifest(t *testing.T, path string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// clusterRole is the ClusterRole vrouter of configs/deploy/rbac.yaml.
func clusterRole(t *testing.T) *rbacv1.ClusterRole { return clusterRoleNamed(t, "vrouter") }

func clusterRoleNamed(t *testing.T, name string) *rbacv1.ClusterRole {
	t.Helper()
	for _, obj := range decodeManifest(t, rbac) {
		if cr, ok := obj.(*rbacv1.ClusterRole); ok && cr.Name == name {
			return cr
		}
	}
	t.Fatalf("%s has no ClusterRole %s", rbac, name)
	return nil
}

type grant struct{ group, resource, verb string }

// grants lists what cr grants, one verb on one resource each, sorted.
func grants(t *testing.T, cr *rbacv1.ClusterRole) []grant {
	t.Helper()
	var got []grant
	for _, r := range cr.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("rule %+v: want no resourceNames or nonResourceURLs", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					got = append(got, grant{g, res, v})
				}
			}
		}
	}
	slices.SortFunc(got, func(a, b grant) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return got
}

// TestManifestRole needs no API server: the ClusterRole vrouter grants
// list and watch on nodes, services and endpointslices, and nothing else;
// vrouter-node-key grants patch on nodes, and nothing else (its policy
// narrows it: TestNodeKeyPolicy).
func TestManifestRole(t *testing.T) {
	want := []grant{
		{"", "nodes", "list"}, {"", "nodes", "watch"},
		{"", "services", "list"}, {"", "services", "watch"},
		{"discovery.k8s.io", "endpointslices", "list"}, {"discovery.k8s.io", "endpointslices", "watch"},
	}
	slices.SortFunc(want, func(a, b grant) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	if got := grants(t, clusterRole(t)); !slices.Equal(got, want) {
		t.Errorf("ClusterRole vrouter grants %v, want exactly %v", got, want)
	}
	if got, want := grants(t, clusterRoleNamed(t, "vrouter-node-key")), []grant{{"", "nodes", "patch"}}; !slices.Equal(got, want) {
		t.Errorf("ClusterRole vrouter-node-key grants %v, want exactly %v", got, want)
	}
}

func startCluster(t *testing.T) (*kube.Cluster, kubernetes.Interface) {
	t.Helper()
	c, err := kube.Start(t, kube.Options{})
	if err != nil {
		t.Fatalf("start the control plane: %v", err)
	}
	return c, c.Client(t, c.Admin)
}

// grantVrouter applies the manifest's ClusterRole and binds it to the
// vrouter user.
func grantVrouter(t *testing.T, ctx context.Context, admin kubernetes.Interface) {
	t.Helper()
	cr := clusterRole(t)
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRole %s: %v", cr.Name, err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vrouter-user"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kube.VrouterUser}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRoleBinding: %v", err)
	}
}

// TestRBAC: with the manifest's ClusterRole the vrouter user can list and
// watch what the Source reads and nothing more; and every object of the
// manifests passes the real API server's validation (server-side dry run).
func TestRBAC(t *testing.T) {
	c, admin := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	createSeedNodes(t, ctx, admin)
	grantVrouter(t, ctx, admin)
	vr := c.Client(t, c.Vrouter)

	// RBAC takes effect through the API server's informers: wait for it.
	waitUntil(t, "the vrouter user may list nodes", func() bool {
		_, err := vr.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err == nil
	})
	allowed := []struct {
		what string
		call func() error
	}{
		{"list nodes", func() error { _, err := vr.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); return err }},
		{"list services", func() error { _, err := vr.CoreV1().Services("").List(ctx, metav1.ListOptions{}); return err }},
		{"list endpointslices", func() error {
			_, err := vr.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"watch nodes", watchOnce(ctx, vr.CoreV1().Nodes().Watch)},
		{"watch services", watchOnce(ctx, vr.CoreV1().Services("").Watch)},
		{"watch endpointslices", watchOnce(ctx, vr.DiscoveryV1().EndpointSlices("").Watch)},
	}
	for _, a := range allowed {
		if err := a.call(); err != nil {
			t.Errorf("vrouter user: %s = %v, want allowed", a.what, err)
		}
	}
	forbidden := []struct {
		what string
		call func() error
	}{
		{"get secrets", func() error {
			_, err := vr.CoreV1().Secrets("kube-system").Get(ctx, "any", metav1.GetOptions{})
			return err
		}},
		{"list secrets", func() error { _, err := vr.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err }},
		{"get a node", func() error { _, err := vr.CoreV1().Nodes().Get(ctx, workerNode, metav1.GetOptions{}); return err }},
		{"update a node", func() error {
			n, err := admin.CoreV1().Nodes().Get(ctx, workerNode, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("admin get: %w", err)
			}
			n.Labels = map[string]string{"pwned": "true"}
			_, err = vr.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		}},
		{"delete a service", func() error {
			return vr.CoreV1().Services("default").Delete(ctx, "kubernetes", metav1.DeleteOptions{})
		}},
		{"create an endpointslice", func() error {
			_, err := vr.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: "x"},
				AddressType: discoveryv1.AddressTypeIPv4,
			}, metav1.CreateOptions{})
			return err
		}},
	}
	for _, f := range forbidden {
		if err := f.call(); !apierrors.IsForbidden(err) {
			t.Errorf("vrouter user: %s = %v, want Forbidden", f.what, err)
		}
	}

	// Server-side dry run of every object in the manifests.
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	for _, path := range []string{rbac, manifest, sidecar} {
		for _, obj := range decodeManifest(t, path) {
			var err error
			switch o := obj.(type) {
			case *corev1.ServiceAccount:
				_, err = admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, dry)
			case *corev1.ConfigMap:
				_, err = admin.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, dry)
			case *rbacv1.ClusterRole:
				o.Name += "-dry-run" // the real one exists
				_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, dry)
			case *rbacv1.ClusterRoleBinding:
				_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, o, dry)
			case *admissionv1.ValidatingAdmissionPolicy:
				_, err = admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, dry)
			case *admissionv1.ValidatingAdmissionPolicyBinding:
				_, err = admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, dry)
			case *appsv1.DaemonSet:
				_, err = admin.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, dry)
			case *appsv1.Deployment:
				_, err = admin.AppsV1().Deployments(o.Namespace).Create(ctx, o, dry)
			default:
				t.Errorf("%s: %T: no dry run for this kind; add one", path, obj)
				continue
			}
			if err != nil {
				t.Errorf("%s: dry-run create %T: %v", path, obj, err)
			}
		}
	}
}

// watchOnce returns a call that starts a watch and stops it.
func watchOnce[W interface{ Stop() }](ctx context.Context, watch func(context.Context, metav1.ListOptions) (W, error)) func() error {
	return func() error {
		w, err := watch(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		w.Stop()
		return nil
	}
}
