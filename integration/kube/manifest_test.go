package kube_test

// The manifests in configs/deploy as a new user applies them: these tests
// need no API server (TestRBAC dry-runs them against one, and the
// real-cluster test applies them to kubelets). They hold the files to what
// would otherwise fail only on a node: the image, the flags and where
// their values come from, the volumes a read-only root needs, probes the
// kubelet can reach, DNS, tolerations, and the one address to edit.

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
)

const (
	// image is what `make image` builds.
	image = "vrouter:v0.2.0"
	// apiServer is the one value a user edits (the seed's control plane);
	// the real-cluster test replaces exactly this string.
	apiServer     = "https://192.168.31.201:6443"
	apiServerNote = "# set this to your API server"
	// runDir is where vrouter keeps its admin socket.
	runDir = "/run/vrouter"
)

// TestManifestsDecode: every document of every file in configs/deploy is
// a Kubernetes object client-go knows, with no unknown or repeated field.
func TestManifestsDecode(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(deployDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s (%v)", deployDir, err)
	}
	for _, p := range paths {
		if objs := decodeManifest(t, p); len(objs) == 0 {
			t.Errorf("%s holds no object", p)
		}
	}
}

// kinds names the objects of a manifest: "Kind namespace/name", or
// "Kind name" for cluster-scoped ones.
func kinds(t *testing.T, objs []runtime.Object) []string {
	t.Helper()
	var out []string
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			t.Fatal(err)
		}
		name := m.GetName()
		if m.GetNamespace() != "" {
			name = m.GetNamespace() + "/" + name
		}
		out = append(out, reflect.TypeOf(o).Elem().Name()+" "+name)
	}
	return out
}

// TestManifestRBAC: rbac.yaml holds everything the API server needs to let
// vrouter in, and daemonset.yaml none of it, so that a sidecar user
// applies rbac.yaml without the DaemonSet.
func TestManifestRBAC(t *testing.T) {
	want := []string{"ServiceAccount kube-system/vrouter", "ClusterRole vrouter", "ClusterRoleBinding vrouter",
		"ClusterRole vrouter-node-key", "ClusterRoleBinding vrouter-node-key",
		"ValidatingAdmissionPolicy vrouter-node-key", "ValidatingAdmissionPolicyBinding vrouter-node-key"}
	objs := decodeManifest(t, rbac)
	if got := kinds(t, objs); !slices.Equal(got, want) {
		t.Fatalf("%s holds %v, want %v", rbac, got, want)
	}
	wantSubj := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "vrouter", Namespace: "kube-system"}}
	for _, i := range []int{2, 4} {
		crb := objs[i].(*rbacv1.ClusterRoleBinding)
		if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != crb.Name || !slices.Equal(crb.Subjects, wantSubj) {
			t.Errorf("ClusterRoleBinding %s binds %+v to %+v, want ClusterRole %s to %+v", crb.Name, crb.RoleRef, crb.Subjects, crb.Name, wantSubj)
		}
	}
	vapb := objs[6].(*admissionv1.ValidatingAdmissionPolicyBinding)
	if vapb.Spec.PolicyName != "vrouter-node-key" || !slices.Equal(vapb.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("ValidatingAdmissionPolicyBinding %+v, want policy vrouter-node-key with Deny", vapb.Spec)
	}
	if got := kinds(t, decodeManifest(t, manifest)); !slices.Equal(got, []string{"ConfigMap kube-system/vrouter", "DaemonSet kube-system/vrouter"}) {
		t.Errorf("%s holds %v, want only the ConfigMap and the DaemonSet (RBAC is in %s)", manifest, got, rbac)
	}
	// The sidecar binds its own ServiceAccount to rbac.yaml's role.
	// It writes nothing: no key to publish, so not vrouter-node-key.
	for _, o := range decodeManifest(t, sidecar) {
		if b, ok := o.(*rbacv1.ClusterRoleBinding); ok && b.RoleRef.Name != clusterRole(t).Name {
			t.Errorf("%s binds ClusterRole %q, want %q from %s", sidecar, b.RoleRef.Name, clusterRole(t).Name, rbac)
		}
	}
}

// args maps a container's --flag=value arguments.
func args(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, a := range c.Args {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			m[k] = v
		} else {
			m[a] = ""
		}
	}
	return m
}

// mountedAt returns the volume mounted at path in c, and whether the mount
// is writable.
func mountedAt(spec corev1.PodSpec, c corev1.Container, path string) (*corev1.Volume, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath != path {
			continue
		}
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				return &spec.Volumes[i], !m.ReadOnly
			}
		}
	}
	return nil, false
}

// checkAPIServer: the manifest names the API server once, in the
// kubeconfig its ConfigMap holds, under the note that says to edit it; and
// the kubeconfig authenticates with the Pod's ServiceAccount.
func checkAPIServer(t *testing.T, path string, objs []runtime.Object) (configMap string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(raw, []byte(apiServer)); n != 1 {
		t.Errorf("%s names %s %d times, want once (the one value to edit)", path, apiServer, n)
	}
	var prev string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, apiServer) && prev != apiServerNote {
			t.Errorf("%s: the line above %q is %q, want %q", path, line, prev, apiServerNote)
		}
		prev = line
	}
	for _, o := range objs {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig"]))
		if err != nil {
			t.Fatalf("%s: ConfigMap %s: kubeconfig: %v", path, cm.Name, err)
		}
		ctx := kc.Contexts[kc.CurrentContext]
		if ctx == nil || kc.Clusters[ctx.Cluster] == nil || kc.AuthInfos[ctx.AuthInfo] == nil {
			t.Fatalf("%s: the kubeconfig's current context %q is incomplete", path, kc.CurrentContext)
		}
		const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
		cl, user := kc.Clusters[ctx.Cluster], kc.AuthInfos[ctx.AuthInfo]
		if cl.Server != apiServer || cl.CertificateAuthority != sa+"ca.crt" || user.TokenFile != sa+"token" {
			t.Errorf("%s: kubeconfig server %q, CA %q, token %q; want %s with the ServiceAccount's CA and token",
				path, cl.Server, cl.CertificateAuthority, user.TokenFile, apiServer)
		}
		return cm.Name
	}
	t.Fatalf("%s has no ConfigMap with the kubeconfig", path)
	return ""
}

// checkRouter holds a vrouter container to what it needs at run time.
func checkRouter(t *testing.T, path string, spec corev1.PodSpec, c corev1.Container, configMap string) map[string]string {
	t.Helper()
	a := args(c)
	if c.Image != image || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("%s: image %q, pull policy %q; want %q (make image), IfNotPresent", path, c.Image, c.ImagePullPolicy, image)
	}
	if len(c.Command) > 0 || len(c.Args) == 0 || c.Args[0] != "run" {
		t.Errorf("%s: command %q, args %q; want the image's entrypoint with args starting with run", path, c.Command, c.Args)
	}
	// The kubeconfig comes from the ConfigMap.
	kcDir := filepath.Dir(a["--kubeconfig"])
	if v, _ := mountedAt(spec, c, kcDir); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != configMap {
		t.Errorf("%s: --kubeconfig=%s: %s is not ConfigMap %s", path, a["--kubeconfig"], kcDir, configMap)
	}
	if a["--node-name"] != "$(NODE_NAME)" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("%s: --node-name=%q, want $(NODE_NAME) from spec.nodeName", path, a["--node-name"])
	}
	// A read-only root: the admin socket's directory and /dev/net/tun
	// are mounts.
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: want readOnlyRootFilesystem", path)
	}
	if v, rw := mountedAt(spec, c, runDir); v == nil || !rw {
		t.Errorf("%s: nothing writable mounted at %s: the admin socket cannot be made", path, runDir)
	}
	if v, _ := mountedAt(spec, c, "/dev/net/tun"); v == nil || v.HostPath == nil || v.HostPath.Path != "/dev/net/tun" {
		t.Errorf("%s: /dev/net/tun is not the node's", path)
	}
	// NET_ADMIN only, as root (no ambient capabilities otherwise).
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("%s: securityContext %+v, want root with NET_ADMIN only", path, sc)
	}
	if _, ok := a["--service-cidr"]; !ok {
		t.Errorf("%s: args %q, want an explicit --service-cidr", path, c.Args)
	}
	checkProbes(t, path, spec, c, a["--health-address"])
	return a
}

// checkProbes: every probe reaches the health server. The kubelet probes
// from the node's network namespace: the `host` field if set, else the
// Pod's IP, which only a server on the unspecified address (or the
// node's, with hostNetwork) answers.
func checkProbes(t *testing.T, path string, spec corev1.PodSpec, c corev1.Container, healthAddr string) {
	t.Helper()
	if healthAddr == "" {
		healthAddr = "127.0.0.1:10256" // vrouter's default
	}
	host, port, err := net.SplitHostPort(healthAddr)
	if err != nil {
		t.Fatalf("%s: --health-address=%q: %v", path, healthAddr, err)
	}
	ip := net.ParseIP(host)
	probes := map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe}
	n := 0
	for name, p := range probes {
		if p == nil {
			continue
		}
		n++
		g := p.HTTPGet
		if g == nil {
			t.Errorf("%s: %s is not an HTTP GET", path, name)
			continue
		}
		if g.Port.String() != port {
			t.Errorf("%s: %s port %s, want the health server's %s", path, name, g.Port.String(), port)
		}
		if g.Path != "/healthz" && g.Path != "/readyz" {
			t.Errorf("%s: %s path %q, want /healthz or /readyz", path, name, g.Path)
		}
		switch {
		case ip.IsUnspecified():
			// Listens on every address: the Pod's IP and, with
			// hostNetwork, the node's loopback.
			if g.Host != "" && !spec.HostNetwork {
				t.Errorf("%s: %s host %q: without hostNetwork the kubelet's %s is not the Pod's", path, name, g.Host, g.Host)
			}
		case g.Host == "":
			t.Errorf("%s: %s has no host, so the kubelet probes the Pod's IP, but health listens on %s only", path, name, healthAddr)
		case !spec.HostNetwork || g.Host != host:
			t.Errorf("%s: %s probes %s, but health listens on %s in the Pod's network namespace", path, name, g.Host, healthAddr)
		}
	}
	if n == 0 {
		t.Errorf("%s: container %s has no probe", path, c.Name)
	}
}

func TestManifestDaemonSet(t *testing.T) {
	objs := decodeManifest(t, manifest)
	cm := checkAPIServer(t, manifest, objs)
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		if d, ok := o.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	if ds == nil {
		t.Fatalf("%s has no DaemonSet", manifest)
	}
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want vrouter alone", manifest, len(spec.Containers))
	}
	c := spec.Containers[0]
	a := checkRouter(t, manifest, spec, c, cm)
	checkResources(t, manifest, c)

	if spec.ServiceAccountName != "vrouter" || !spec.HostNetwork {
		t.Errorf("%s: serviceAccountName %q, hostNetwork %v; want rbac.yaml's vrouter, true", manifest, spec.ServiceAccountName, spec.HostNetwork)
	}
	if spec.DNSPolicy != corev1.DNSDefault {
		t.Errorf("%s: dnsPolicy %q, want Default (the cluster's DNS is a ClusterIP vrouter serves)", manifest, spec.DNSPolicy)
	}
	for _, effect := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
		if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
			return tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == effect && tol.TolerationSeconds == nil
		}) {
			t.Errorf("%s: tolerations %+v, want every %s taint tolerated (control plane, not-ready nodes)", manifest, spec.Tolerations, effect)
		}
	}
	for flag, want := range map[string]string{
		"--cluster-cidr":    "10.244.0.0/16",
		"--service-cidr":    "10.96.0.0/12",
		"--metrics-address": "127.0.0.1:10249",
		"--health-address":  "127.0.0.1:10256",
		"--cni-conf-dir":    "/etc/cni/net.d",
		"--kubeconfig":      "/etc/vrouter/kubeconfig",
		// Pods' outside traffic masqueraded, as kube-flannel.yml's --ip-masq.
		"--masquerade": "",
	} {
		if got, ok := a[flag]; !ok || got != want {
			t.Errorf("%s: %s=%q, want %q", manifest, flag, got, want)
		}
	}
	// The WireGuard key is kept on the node's disk, where the default
	// --wireguard-key-file puts it; encryption is off until a user
	// uncomments the one flag shown.
	if _, ok := a["--overlay-encryption"]; ok {
		t.Errorf("%s: --overlay-encryption is on; want it off by default, shown commented out", manifest)
	}
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("\n            # - --overlay-encryption=wireguard\n")) {
		t.Errorf("%s: no commented-out --overlay-encryption=wireguard among the args", manifest)
	}
	if _, ok := a["--wireguard-key-file"]; ok {
		t.Errorf("%s: --wireguard-key-file given; want the default, %s", manifest, configs.DefaultWireGuardKeyFile)
	}
	keyDir := filepath.Dir(configs.DefaultWireGuardKeyFile)
	if v, rw := mountedAt(spec, c, keyDir); v == nil || !rw || v.HostPath == nil || v.HostPath.Path != keyDir ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("%s: %s is not the node's %s (hostPath, DirectoryOrCreate, writable): the WireGuard key would not survive a restart", manifest, keyDir, keyDir)
	}
	// The admin socket and the CNI config are the node's.
	for _, dir := range []string{runDir, a["--cni-conf-dir"]} {
		if dir == "" {
			continue // reported above
		}
		v, rw := mountedAt(spec, c, dir)
		if v == nil || !rw || v.HostPath == nil || v.HostPath.Path != dir ||
			v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("%s: %s is not the node's %s (hostPath, DirectoryOrCreate, writable)", manifest, dir, dir)
		}
	}
}

// What the router's memory is made of, as docs/operations.md ("Memory")
// measured it: resident bytes, the Go runtime's overhead included.
const (
	routerIdle   = 48 << 20  // no flow: the binary, the stacks, the tables
	natFlowBytes = 1024 + 96 // a nat flow, its two map entries, its limiter share; its flow file record
	tcpConnBytes = 32 << 10  // a proxied or egress TCP connection: stack endpoint, node socket, two goroutines
	udpFlowBytes = 12 << 10  // an egress UDP or ICMP echo flow, a node-port UDP flow: a socket and goroutines
)

// checkResources: the router has a memory limit that its caps' defaults,
// all full at once, fit in with a fifth to spare, a GOMEMLIMIT between
// the two, a CPU request and no CPU limit.
func checkResources(t *testing.T, path string, c corev1.Container) {
	t.Helper()
	r := c.Resources
	limit, request := r.Limits.Memory().Value(), r.Requests.Memory().Value()
	if limit == 0 || request == 0 || request > limit {
		t.Fatalf("%s: memory request %v, limit %v; want both, the request within the limit", path, r.Requests.Memory(), r.Limits.Memory())
	}
	if r.Requests.Cpu().IsZero() {
		t.Errorf("%s: no CPU request", path)
	}
	if cpu, ok := r.Limits[corev1.ResourceCPU]; ok {
		t.Errorf("%s: CPU limit %v; want none (a throttled router delays every packet of its node)", path, &cpu)
	}
	worst := int64(routerIdle +
		2*lb.DefaultNATMaxFlows*natFlowBytes + // lb.nat.maxFlows, TCP and UDP
		lb.DefaultProxyMaxConns*tcpConnBytes + // proxy mode
		lb.DefaultProxyMaxConns*tcpConnBytes + 2*lb.DefaultProxyMaxConns*udpFlowBytes + // egress.maxFlows: TCP, UDP, ICMP
		lb.DefaultHostMaxUDPFlows*udpFlowBytes) // node-port UDP
	t.Logf("%s: every cap full takes about %d MiB; memory limit %d MiB", path, worst>>20, limit>>20)
	if worst > limit*4/5 {
		t.Errorf("%s: memory limit %d MiB; the caps' defaults full take about %d MiB: want a fifth to spare (docs/operations.md, \"Memory\")", path, limit>>20, worst>>20)
	}
	var goLimit int64
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		for suffix, unit := range map[string]int64{"MiB": 1 << 20, "GiB": 1 << 30} {
			if v, ok := strings.CutSuffix(e.Value, suffix); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					goLimit = n * unit
				}
			}
		}
	}
	if goLimit < worst || goLimit >= limit {
		t.Errorf("%s: GOMEMLIMIT %d MiB; want one between the caps' worst case %d MiB and the limit %d MiB", path, goLimit>>20, worst>>20, limit>>20)
	}
}

func TestManifestSidecar(t *testing.T) {
	objs := decodeManifest(t, sidecar)
	cm := checkAPIServer(t, sidecar, objs)
	var dep *appsv1.Deployment
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			dep = d
		}
	}
	if dep == nil {
		t.Fatalf("%s has no Deployment", sidecar)
	}
	spec := dep.Spec.Template.Spec
	if spec.HostNetwork {
		t.Fatalf("%s: the sidecar's Pod has hostNetwork", sidecar)
	}
	var routers []corev1.Container
	for _, c := range spec.InitContainers {
		if c.Image == image || c.Name == "vrouter" {
			routers = append(routers, c)
		}
	}
	if len(routers) != 1 {
		t.Fatalf("%s: %d vrouter init containers, want one", sidecar, len(routers))
	}
	c := routers[0]
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: vrouter is not a native sidecar (restartPolicy Always)", sidecar)
	}
	if c.StartupProbe == nil {
		t.Errorf("%s: no startup probe: the app would start before the Service table is programmed", sidecar)
	}
	a := checkRouter(t, sidecar, spec, c, cm)
	if _, ok := a["--sidecar"]; !ok {
		t.Errorf("%s: args %q, want --sidecar", sidecar, c.Args)
	}
	if _, ok := a["--cni-conf-dir"]; ok {
		t.Errorf("%s: a sidecar writes no CNI config", sidecar)
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p != nil && p.HTTPGet != nil && p.HTTPGet.Host != "" {
			t.Errorf("%s: a probe with host %q: the kubelet would probe its own network namespace", sidecar, p.HTTPGet.Host)
		}
	}
	if v, _ := mountedAt(spec, c, runDir); v == nil || v.EmptyDir == nil {
		t.Errorf("%s: %s is not an emptyDir: a sidecar keeps nothing on the node", sidecar, runDir)
	}
	if spec.DNSConfig == nil || !slices.ContainsFunc(spec.DNSConfig.Options, func(o corev1.PodDNSConfigOption) bool { return o.Name == "use-vc" }) {
		t.Errorf("%s: no use-vc DNS option: the app's DNS over UDP would reach the sidecar, which serves TCP only", sidecar)
	}
}
