// Package harness runs vrouter processes on a topology.Cluster: it writes
// each node's config file from the cluster's spec, starts one
// `vrouter run` per node inside the node's network namespace, waits until it
// is up, and stops or restarts it. The demo command and the namespace tests
// in integration/ share it, so the demo shows exactly what the tests check.
package harness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

// OverlayPort is the overlay port every generated config uses.
const OverlayPort = 8285

// ConfigOptions shape the generated config files.
type ConfigOptions struct {
	// ClusterCIDR defaults to 10.244.0.0/16; ServiceCIDR to 10.96.0.0/12.
	ClusterCIDR, ServiceCIDR netip.Prefix
	// Services are added to every node's file.
	Services []configs.ServiceSpec
	// UnderlayMTU, if set, is written as overlay.underlayMTU.
	UnderlayMTU int
	// TunnelMTU, if set, is written as overlay.mtu.
	TunnelMTU int
	// Exclude names nodes left out of every other node's peers.
	Exclude []string
}

func (o ConfigOptions) clusterCIDR() netip.Prefix {
	if o.ClusterCIDR.IsValid() {
		return o.ClusterCIDR
	}
	return netip.MustParsePrefix("10.244.0.0/16")
}

func (o ConfigOptions) serviceCIDR() netip.Prefix {
	if o.ServiceCIDR.IsValid() {
		return o.ServiceCIDR
	}
	return netip.MustParsePrefix("10.96.0.0/12")
}

func podCIDRs(n topology.NodeSpec) []string {
	out := []string{n.PodCIDR.String()}
	if n.PodCIDR6.IsValid() {
		out = append(out, n.PodCIDR6.String())
	}
	return out
}

// NodeFile is the config file of one node of spec: every other node is a
// peer (except those in opts.Exclude).
func NodeFile(spec topology.Spec, node string, opts ConfigOptions) (*configs.File, error) {
	self, ok := spec.Node(node)
	if !ok {
		return nil, fmt.Errorf("node %q is not in the spec", node)
	}
	f := &configs.File{
		APIVersion: configs.APIVersion,
		Kind:       configs.Kind,
		Node: configs.NodeSpec{
			Name:            self.Name,
			PodCIDRs:        podCIDRs(self),
			UnderlayAddress: self.Underlay.String(),
		},
		Overlay:      configs.OverlaySpec{Port: OverlayPort, UnderlayMTU: opts.UnderlayMTU, MTU: opts.TunnelMTU},
		ClusterCIDRs: []string{opts.clusterCIDR().String()},
		ServiceCIDRs: []string{opts.serviceCIDR().String()},
		Services:     opts.Services,
	}
	if self.PodCIDR6.IsValid() {
		f.ClusterCIDRs = append(f.ClusterCIDRs, "fd00:10:244::/48")
		f.ServiceCIDRs = append(f.ServiceCIDRs, "fd00:10:96::/108")
	}
	for _, n := range spec.Nodes {
		if n.Name == node || contains(opts.Exclude, n.Name) {
			continue
		}
		f.Peers = append(f.Peers, configs.PeerSpec{
			Name:            n.Name,
			UnderlayAddress: n.Underlay.String(),
			PodCIDRs:        podCIDRs(n),
		})
	}
	return f, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// WriteConfig writes node's config file into dir and returns its path. The
// file is validated with configs.Load before it is returned.
func WriteConfig(dir string, spec topology.Spec, node string, opts ConfigOptions) (string, error) {
	f, err := NodeFile(spec, node, opts)
	if err != nil {
		return "", err
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("marshal config of %s: %w", node, err)
	}
	path := filepath.Join(dir, node+".yaml")
	header := fmt.Sprintf("# vrouter config for node %s, generated from the cluster spec.\n", node)
	if err := writeFileAtomic(path, append([]byte(header), b...)); err != nil {
		return "", err
	}
	if _, err := configs.Load(path); err != nil {
		return "", fmt.Errorf("generated config of %s is invalid: %w", node, err)
	}
	return path, nil
}

// writeFileAtomic replaces path in one rename, as editors and ConfigMap
// updates do, so a watching router never reads half a file.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Router is one `vrouter run` process inside a node's namespace.
type Router struct {
	Node   string
	Config string
	Log    string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

// StartRouter starts `bin run --config config` in node's namespace with
// its output appended to logPath, and waits until it is up (Ready).
func StartRouter(c *topology.Cluster, bin, node, config, logPath string, args ...string) (*Router, error) {
	r, err := Launch(c, bin, node, logPath, append([]string{"run", "--config", config}, args...)...)
	if err != nil {
		return nil, err
	}
	r.Config = config
	if err := r.WaitReady(c, 10*time.Second); err != nil {
		return nil, err
	}
	return r, nil
}

// WaitReady waits until the router is up (Ready); if it is not within
// timeout, it stops the router and returns why, with its log.
func (r *Router) WaitReady(c *topology.Cluster, timeout time.Duration) error {
	if err := r.waitReady(c, timeout); err != nil {
		r.Stop()
		log, _ := os.ReadFile(r.Log)
		return fmt.Errorf("router on %s did not come up: %w\n--- %s ---\n%s", r.Node, err, r.Log, log)
	}
	return nil
}

// Launch starts `bin argv...` in node's namespace with its output appended
// to logPath, without waiting for it to come up (see WaitReady).
func Launch(c *topology.Cluster, bin, node, logPath string, argv ...string) (*Router, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := c.Command(node, bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The router gets its own process group so a terminal's Ctrl-C goes
	// to the demo, which then stops the routers in order. No Pdeathsig:
	// it fires when the forking OS thread exits, not the process, and the
	// namespace code ends threads it switched; the caller stops routers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start router on %s: %w", node, err)
	}
	r := &Router{Node: node, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	return r, nil
}

// PID is the router's process ID.
func (r *Router) PID() int { return r.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (r *Router) Exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the router.
func (r *Router) Signal(sig os.Signal) error { return r.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to 10 seconds for a clean exit, then
// kills. It returns the process's exit error (nil for exit status 0).
// Stop is idempotent.
func (r *Router) Stop() error {
	if r.Exited() {
		return r.err
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return errors.New("router did not exit within 10s of SIGTERM; killed")
	}
}

// waitReady waits until the router's TUN is up and its overlay socket is
// bound, or the process exits.
func (r *Router) waitReady(c *topology.Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if r.Exited() {
			return fmt.Errorf("exited: %v", r.err)
		}
		ready, err := Ready(c, r.Node)
		if err != nil {
			return err
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ready reports whether node has a router up: the TUN device vr0 exists
// and is up, and the overlay port is bound on the node's underlay address.
func Ready(c *topology.Cluster, node string) (bool, error) {
	n, ok := c.Spec().Node(node)
	if !ok {
		return false, fmt.Errorf("node %q is not in the cluster", node)
	}
	var ready bool
	err := c.Do(node, func() error {
		l, err := netlink.LinkByName("vr0")
		if err != nil || l.Attrs().Flags&net.FlagUp == 0 {
			return nil
		}
		addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.Underlay, OverlayPort))
		probe, err := net.ListenUDP("udp4", addr)
		if err == nil {
			probe.Close()
			return nil
		}
		ready = errors.Is(err, syscall.EADDRINUSE)
		return nil
	})
	return ready, err
}
