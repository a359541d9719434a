package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vrouter/vrouter/integration/kube"
	"github.com/vrouter/vrouter/integration/topology"
)

// Node is one Kubernetes node: a network namespace with its own
// containerd and kubelet.
type Node struct {
	// Name is the Node's name; the network namespace has the same short
	// name in Cluster.Net.
	Name string
	// IP is the node's address on the underlay (its InternalIP).
	IP string
	// Dir holds the node's containerd, kubelet and CNI state.
	Dir string

	c          *Cluster
	cgroupRoot string        // the kubelet's cgroupRoot, e.g. /vrt-3fa2c1-hostgw-node
	proc       *kube.Process // sh → kubelet, with containerd beside it
	socket     string        // containerd's socket
}

// nodeDirs are the node's directories under Node.Dir.
const (
	dirContainerdRoot  = "containerd/root"
	dirContainerdState = "containerd/state"
	dirKubelet         = "kubelet"
	dirPrivate         = "private" // private/<host path> is bind-mounted over the host path
)

// startNode writes the node's containerd and kubelet configuration and
// starts both in a private mount namespace inside the node's network
// namespace.
func (c *Cluster) startNode(ctx context.Context, p *pki, spec topology.NodeSpec, images []string) (*Node, error) {
	n := &Node{
		Name:       spec.Name,
		IP:         spec.Underlay.String(),
		Dir:        filepath.Join(c.Dir, "nodes", spec.Name),
		c:          c,
		cgroupRoot: "/" + c.Net.Prefix() + spec.Name,
	}
	n.socket = filepath.Join(n.Dir, "containerd.sock")
	for _, d := range []string{dirContainerdRoot, dirContainerdState, dirKubelet} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	var mounts strings.Builder
	for _, hostPath := range nodePrivatePaths {
		private := filepath.Join(n.Dir, dirPrivate, hostPath)
		if err := os.MkdirAll(private, 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(&mounts, "mount --bind %q %q\n", private, hostPath)
	}
	if err := c.host.makeCgroupRoot(strings.TrimPrefix(n.cgroupRoot, "/")); err != nil {
		return nil, err
	}
	kubeconfig, err := p.kubeconfig(c.APIServer, "node-"+n.Name, kube.CertSpec{
		CommonName: "system:node:" + n.Name, Organizations: []string{"system:nodes"},
	})
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		"containerd.toml": n.containerdConfig(),
		"kubelet.yaml":    n.kubeletConfig(p),
		"run.sh":          n.runScript(mounts.String(), kubeconfig, images),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	cmd := c.Net.Command(n.Name, c.bins["unshare"], "-m", "--propagation", "slave", "--", "/bin/sh", filepath.Join(n.Dir, "run.sh"))
	if n.proc, err = c.run("node-"+n.Name, cmd); err != nil {
		return nil, err
	}
	// The kubelet's health endpoint answers once it runs; its Node is
	// waited for by waitNodes.
	kubeletUp := func() bool {
		ok := false
		_ = c.Net.Do(n.Name, func() error {
			conn, err := net.DialTimeout("tcp", "127.0.0.1:10248", time.Second)
			if err == nil {
				conn.Close()
				ok = true
			}
			return nil
		})
		return ok
	}
	if err := n.proc.WaitFor(ctx, "the kubelet's health port", kubeletUp); err != nil {
		return n, fmt.Errorf("node %s: %w\n%s\n%s", n.Name, err,
			kube.Tail(filepath.Join(c.logDir(), "containerd-"+n.Name+".log"), 20),
			kube.Tail(filepath.Join(c.logDir(), "kubelet-"+n.Name+".log"), 30))
	}
	return n, nil
}

// containerdConfig is containerd 1.6's configuration (version 2) for n:
// its own root, state, sockets and runc root; the CRI plugin with the
// pause image the test imports, the CNI plugins of CNIBinDir and the
// config directory /etc/cni/net.d (the node's own, see
// nodePrivatePaths), which the pod network writes.
func (n *Node) containerdConfig() string {
	d := func(s string) string { return strconv.Quote(filepath.Join(n.Dir, s)) }
	return `version = 2
root = ` + d(dirContainerdRoot) + `
state = ` + d(dirContainerdState) + `
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = ` + strconv.Quote(n.socket) + `
[ttrpc]
  address = ` + strconv.Quote(n.socket+".ttrpc") + `
[plugins."io.containerd.internal.v1.opt"]
  path = ` + d("containerd/opt") + `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  netns_mounts_under_state_dir = true
  # The host lacks CAP_SYS_RESOURCE: runc cannot set the negative
  # oom_score_adj CRI asks for, so containerd clamps it to its own.
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + strconv.Quote(CNIBinDir) + `
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ` + d(dirContainerdState+"/runc") + `
`
}

// kubeletConfig is n's KubeletConfiguration.
func (n *Node) kubeletConfig(p *pki) string {
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://` + n.socket + `
cgroupDriver: cgroupfs
cgroupRoot: ` + n.cgroupRoot + `
failCgroupV1: false
failSwapOn: false
# The host lacks CAP_SYS_RESOURCE (see containerd's restrict_oom_score_adj).
oomScoreAdj: 0
address: ` + n.IP + `
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: /var/log/pods
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ` + p.path("ca.crt") + `}
authorization:
  mode: Webhook
clusterDomain: ` + ClusterDomain + `
clusterDNS: [` + ClusterDNS + `]
resolvConf: /etc/resolv.conf
registerNode: true
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
`
}

// runScript is what runs in the node's mount namespace: the bind mounts,
// containerd, the image imports and then (exec) the kubelet.
func (n *Node) runScript(mounts, kubeconfig string, images []string) string {
	c := n.c
	logs := c.logDir()
	var imports strings.Builder
	for _, img := range images {
		fmt.Fprintf(&imports, "%q --address %q -n k8s.io images import %q >>%q 2>&1 || { echo \"import %s failed\"; exit 1; }\n",
			c.bins["ctr"], n.socket, img, filepath.Join(logs, "import-"+n.Name+".log"), filepath.Base(img))
	}
	return `#!/bin/sh
# Node ` + n.Name + `: runs in its own mount namespace (slave propagation:
# nothing mounted here reaches the host).
set -eu
` + mounts + `
PATH=` + filepath.Dir(c.bins["runc"]) + `:` + filepath.Dir(c.bins["containerd"]) + `:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
` + strconv.Quote(c.bins["containerd"]) + ` --config ` + strconv.Quote(filepath.Join(n.Dir, "containerd.toml")) + ` >>` + strconv.Quote(filepath.Join(logs, "containerd-"+n.Name+".log")) + ` 2>&1 &
echo $! >` + strconv.Quote(filepath.Join(n.Dir, "containerd.pid")) + `
i=0
while [ ! -S ` + strconv.Quote(n.socket) + ` ]; do
	i=$((i+1)); [ $i -lt 300 ] || { echo "containerd did not start"; exit 1; }
	sleep 0.1
done
` + imports.String() + `
exec ` + strconv.Quote(c.bins["kubelet"]) + ` --config=` + strconv.Quote(filepath.Join(n.Dir, "kubelet.yaml")) +
		` --kubeconfig=` + strconv.Quote(kubeconfig) +
		` --root-dir=` + strconv.Quote(filepath.Join(n.Dir, dirKubelet)) +
		` --cert-dir=` + strconv.Quote(filepath.Join(n.Dir, "kubelet-pki")) +
		` --hostname-override=` + n.Name + ` --node-ip=` + n.IP + ` --v=1 >>` + strconv.Quote(filepath.Join(logs, "kubelet-"+n.Name+".log")) + ` 2>&1
`
}

// stop stops the kubelet, kills every pod process of the node (its
// cgroup tree) and containerd's shims, stops containerd and removes
// nothing else: the mount namespace goes with its last process.
func (n *Node) stop() error {
	if n == nil || n.proc == nil {
		return nil
	}
	var errs []error
	// The kubelet first (SIGTERM to it alone), so it does not restart
	// what the rest of stop kills.
	if !n.proc.Exited() {
		_ = syscall.Kill(n.proc.Cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-n.proc.Done():
		case <-time.After(stopTimeout):
		}
	}
	for range 3 {
		pids := append(cgroupPIDs(strings.TrimPrefix(n.cgroupRoot, "/")), n.shims()...)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	errs = append(errs, n.proc.Stop(stopTimeout)) // the process group: containerd, and the kubelet if it still runs
	if b, err := os.ReadFile(filepath.Join(n.Dir, "containerd.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if left := n.shims(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("node %s: shims %v still run", n.Name, left))
	}
	return errors.Join(errs...)
}

// shims lists the containerd-shim processes of n's containerd: they
// leave its process group (setsid) and its cgroup.
func (n *Node) shims() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		for _, a := range args {
			if a == n.socket {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// waitNodes waits until every node is registered and has a pod CIDR.
func (c *Cluster) waitNodes(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := []string{}
		for _, n := range c.Nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			switch {
			case err != nil:
				missing = append(missing, n.Name+": "+err.Error())
			case node.Spec.PodCIDR == "":
				missing = append(missing, n.Name+": no pod CIDR yet")
			}
			if n.proc.Exited() {
				return fmt.Errorf("node %s: kubelet exited: %v\n%s", n.Name, n.proc.Err(),
					kube.Tail(filepath.Join(c.logDir(), "kubelet-"+n.Name+".log"), 30))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes not registered: %s: %w", strings.Join(missing, "; "), ctx.Err())
		case <-tick.C:
		}
	}
}
