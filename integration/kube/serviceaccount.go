package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The DaemonSet's ServiceAccount (configs/deploy/rbac.yaml) as the API
// server names it, and the claim of a Pod-bound token that names the Node
// the Pod runs on (Kubernetes 1.30+).
const (
	ServiceAccountUser = "system:serviceaccount:kube-system:vrouter"
	NodeNameExtra      = "authentication.kubernetes.io/node-name"
)

// ServiceAccountOnNode returns a client configuration, and the same as a
// kubeconfig file in c.Dir, that acts as the vrouter ServiceAccount with a
// token bound to a Pod on the Node named node: what the kubelet gives the
// DaemonSet's Pod there. There is no kubelet here to mint such a token, so
// the admin impersonates it: user, groups and the node-name extra, which
// is all that RBAC and admission see of a token. An empty node leaves the
// extra out (a token not bound to a Pod).
func (c *Cluster) ServiceAccountOnNode(node string) (string, *rest.Config, error) {
	kc, err := clientcmd.LoadFromFile(c.AdminKubeconfig)
	if err != nil {
		return "", nil, fmt.Errorf("load %s: %w", c.AdminKubeconfig, err)
	}
	auth := kc.AuthInfos[kc.Contexts[kc.CurrentContext].AuthInfo]
	auth.Impersonate = ServiceAccountUser
	auth.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}
	if node != "" {
		auth.ImpersonateUserExtra = map[string][]string{NodeNameExtra: {node}}
	}
	name := node
	if name == "" {
		name = "no-node"
	}
	path := filepath.Join(c.Dir, "vrouter-sa-"+name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", nil, fmt.Errorf("write %s: %w", path, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return "", nil, fmt.Errorf("load %s: %w", path, err)
	}
	rc.UserAgent = "vrouter-integration/serviceaccount-" + name
	return path, rc, nil
}

// Apply creates every object of the YAML manifest at path with client, as
// `kubectl create -f` would, for the kinds configs/deploy/rbac.yaml holds.
func Apply(ctx context.Context, client kubernetes.Interface, path string) error {
	objs, err := Decode(path)
	if err != nil {
		return err
	}
	opts := metav1.CreateOptions{FieldValidation: "Strict"}
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			_, err = client.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *admissionv1.ValidatingAdmissionPolicy:
			_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, opts)
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, opts)
		default:
			err = errors.New("no create for this kind here")
		}
		if err != nil {
			return fmt.Errorf("%s: create %T: %w", path, obj, err)
		}
	}
	return nil
}

// Decode decodes every document of the YAML file at path.
func Decode(path string) ([]runtime.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", path, i, err)
		}
		objs = append(objs, obj)
	}
}
