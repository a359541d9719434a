package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vrouter/vrouter/integration/kube"
	"github.com/vrouter/vrouter/integration/topology"
)

// The cluster's fixed plan (see the package documentation).
const (
	ClusterCIDR = "10.244.0.0/16"
	ServiceCIDR = "10.96.0.0/12"
	// ClusterDNS is the kubelets' clusterDNS: the kube-dns Service's
	// ClusterIP, as in the seed's cluster.
	ClusterDNS = "10.96.0.10"
	// ClusterDomain is the kubelets' clusterDomain.
	ClusterDomain = "cluster.local"
	// APIServerPort is kube-apiserver's secure port on the master's
	// address.
	APIServerPort = 6443
	// Master and Worker are the Node names.
	Master = "hostgw-master"
	Worker = "hostgw-node"
	// Outside is a host on the underlay that is not a node (no kubelet,
	// no router): a client from outside the cluster, at OutsideIP.
	Outside   = "outside"
	OutsideIP = "192.168.31.100"
)

// The binaries Start looks for, by the environment variable that can
// name each; see kube.Binary.
var programs = []struct{ env, name string }{
	{kube.EnvAPIServer, "kube-apiserver"},
	{kube.EnvEtcd, "etcd"},
	{"KUBELET", "kubelet"},
	{"KUBE_CONTROLLER_MANAGER", "kube-controller-manager"},
	{"KUBE_SCHEDULER", "kube-scheduler"},
	{"KUBECTL", "kubectl"},
	{"CONTAINERD", "containerd"},
	{"CTR", "ctr"},
	{"RUNC", "runc"},
	{"NSENTER", "nsenter"},
	{"UNSHARE", "unshare"},
}

// CNIBinDir is where the CNI plugins are looked for (Debian's
// containernetworking-plugins).
const CNIBinDir = "/usr/lib/cni"

// Options configure Start. Zero values are the documented defaults.
type Options struct {
	// Images are OCI or Docker image archives imported into every node's
	// containerd (namespace k8s.io) before its kubelet starts. The pause
	// image registry.k8s.io/pause:3.10 (containerd's sandbox image) must
	// be among them: nothing is pulled.
	Images []string
	// StartTimeout bounds the control plane's and the nodes' start.
	// Default 3 minutes.
	StartTimeout time.Duration
}

// Cluster is a running control plane and its nodes.
type Cluster struct {
	// Net is the namespaces the cluster runs in.
	Net *topology.Cluster
	// Dir holds certificates, kubeconfigs, etcd's data, the nodes' state
	// and every log (logs/); Close removes it.
	Dir string
	// APIServer is https://192.168.31.201:6443, reachable from the nodes
	// (and from the test through Admin, which dials inside the master).
	APIServer string
	// Admin is a system:masters client configuration; AdminKubeconfig
	// the same as a kubeconfig file.
	Admin           *rest.Config
	AdminKubeconfig string
	// CA is the cluster's certificate authority (PEM).
	CA []byte
	// Nodes in order: Master, Worker.
	Nodes []*Node

	bins map[string]string
	host *hostState
	cp   []*kube.Process // control plane, in start order

	closeOnce sync.Once
	closeErr  error
}

// Start builds the cluster for tb and registers Close with tb.Cleanup.
// It returns once every Node is registered with the API server and has
// a pod CIDR. Missing programs skip tb (fail it with
// VROUTER_REQUIRE_KUBE=1).
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: a real cluster needs root")
	}
	bins, err := findPrograms()
	if err != nil {
		if os.Getenv(kube.EnvRequireKube) == "1" {
			tb.Fatalf("%v (%s=1 makes this an error)", err, kube.EnvRequireKube)
		}
		tb.Skipf("skipping: %v", err)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 3 * time.Minute
	}
	dir, err := os.MkdirTemp("", "vrouter-cluster-")
	if err != nil {
		tb.Fatalf("make the cluster's directory: %v", err)
	}
	c := &Cluster{Dir: dir, bins: bins}
	tb.Cleanup(func() {
		if tb.Failed() {
			c.dumpLogs(tb)
		}
		if err := c.Close(); err != nil {
			tb.Errorf("stop the cluster: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	if err := c.start(ctx, tb, opts); err != nil {
		tb.Fatalf("start the cluster: %v", err)
	}
	return c
}

// findPrograms finds every program the cluster runs.
func findPrograms() (map[string]string, error) {
	bins := make(map[string]string)
	var missing []string
	for _, p := range programs {
		path, err := kube.Binary(p.env, p.name)
		if err != nil {
			missing = append(missing, err.Error())
			continue
		}
		bins[p.name] = path
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, plugin)); err != nil {
			missing = append(missing, "CNI plugin "+filepath.Join(CNIBinDir, plugin))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("real-cluster programs not found: %s (make kube-tools builds the Kubernetes ones into .cache/bin and installs the rest: containerd, runc, containernetworking-plugins, etcd-server)",
			strings.Join(missing, ", "))
	}
	return bins, nil
}

func (c *Cluster) start(ctx context.Context, tb testing.TB, opts Options) error {
	if err := os.MkdirAll(c.logDir(), 0o755); err != nil {
		return err
	}
	host, err := prepareHost()
	c.host = host
	if err != nil {
		return err
	}
	spec := topology.Spec{
		Underlay: netip.MustParsePrefix("192.168.31.0/24"),
		Nodes: []topology.NodeSpec{
			{Name: Master, Underlay: netip.MustParseAddr(masterIP)},
			{Name: Worker, Underlay: netip.MustParseAddr("192.168.31.202")},
			{Name: Outside, Underlay: netip.MustParseAddr(OutsideIP)},
		},
	}
	if c.Net, err = topology.Build(spec); err != nil {
		return err
	}
	tb.Logf("cluster: namespaces %s*, files in %s", c.Net.Prefix(), c.Dir)
	pki, err := c.writePKI()
	if err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}
	if err := c.startControlPlane(ctx, pki); err != nil {
		return err
	}
	for _, n := range spec.Nodes {
		if n.Name == Outside {
			continue
		}
		node, err := c.startNode(ctx, pki, n, opts.Images)
		if node != nil {
			c.Nodes = append(c.Nodes, node) // Close stops what it started, also after an error
		}
		if err != nil {
			return err
		}
	}
	return c.waitNodes(ctx)
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Client returns a clientset of the admin user.
func (c *Cluster) Client(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		tb.Fatalf("kubernetes.NewForConfig: %v", err)
	}
	return cs
}

// dialIn returns a dialer whose connections are made inside namespace ns:
// the test process stays in its own namespace and reaches the cluster's
// addresses through it.
func (c *Cluster) dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := c.Net.Do(ns, func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// Kubectl runs kubectl as the admin, inside the master's network
// namespace, with stdin as its input (nil for none), and returns its
// standard output; the error carries standard error.
func (c *Cluster) Kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := c.Net.CommandContext(ctx, Master, c.bins["kubectl"], append([]string{"--kubeconfig=" + c.AdminKubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// logDir is where every process of the cluster logs.
func (c *Cluster) logDir() string { return filepath.Join(c.Dir, "logs") }

// dumpLogs writes the tail of every log to tb.
func (c *Cluster) dumpLogs(tb testing.TB) {
	entries, _ := os.ReadDir(c.logDir())
	for _, e := range entries {
		tb.Logf("%s", kube.Tail(filepath.Join(c.logDir(), e.Name()), 25))
	}
}

// Close stops the nodes, then the control plane (kube-apiserver before
// etcd), removes the namespaces, cgroups and mount points it made,
// restores the sysctls the kubelets changed and removes Dir. It is
// idempotent and reports everything it could not undo.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i := len(c.Nodes) - 1; i >= 0; i-- {
			errs = append(errs, c.Nodes[i].stop())
		}
		for i := len(c.cp) - 1; i >= 0; i-- {
			errs = append(errs, c.cp[i].Stop(stopTimeout))
		}
		if c.Net != nil {
			errs = append(errs, c.Net.Close())
		}
		errs = append(errs, c.host.restore())
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// stopTimeout is how long a process gets after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// run starts cmd as process name of the cluster, its output in
// <logs>/<name>.log.
func (c *Cluster) run(name string, cmd *exec.Cmd) (*kube.Process, error) {
	return kube.StartProcess(name, cmd, filepath.Join(c.logDir(), name+".log"))
}
