//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/router/wireguard"
)

// mode is one data path under test. Each has its own copy of the seed's
// cluster (its own namespaces), built once and measured in turns.
type mode string

const (
	// modeKernel is the baseline: flannel host-gw routes in the node
	// kernels and kube-proxy's iptables chains for the Services.
	modeKernel mode = "kernel"
	// modeNAT is vrouter with every Service in nat mode (the default).
	modeNAT mode = "vrouter"
	// modeProxy is vrouter with my-service in proxy mode.
	modeProxy mode = "vrouter-proxy"
	// modeKernelWG is the encrypted baseline: the kernel's host-gw
	// routes over a wireguard-go interface on each node (wireguard.go),
	// and kube-proxy's iptables chains for the Services.
	modeKernelWG mode = "kernel-wireguard-go"
	// modeWG is vrouter with overlay.encryption wireguard, every
	// Service in nat mode.
	modeWG mode = "vrouter-wireguard"
	// modeBusyPoll is vrouter with router.busyPoll busyPollWindow (the
	// opt-in low-latency mode), every Service in nat mode: its round
	// trips and what it costs a router, idle and under sparse load.
	modeBusyPoll mode = "vrouter-busypoll"
)

// busyPollWindow is modeBusyPoll's router.busyPoll: longer than the
// sparse echoes' spacing, so that the router polls between them.
const busyPollWindow = "10ms"

// The seed cluster's nodes and the pods the measurements use.
const (
	masterNode = "hostgw-master"
	workerNode = "hostgw-node"
	// clientPod (10.244.0.4, hostgw-master) sends pod-to-pod traffic to
	// serverPod (10.244.1.2, hostgw-node): iperf3, ping, TCP
	// request/response.
	clientPod = "nginx-th5pz"
	serverPod = "nginx-4k7xw"
	// httpClientPod (10.244.0.3, hostgw-master) loads my-service's
	// ClusterIP; it is not one of the Service's backends.
	httpClientPod = "coredns-8qxfv"
	// outsideClient is a host on the underlay that is not a node (no
	// pods, no router, no flannel routes): it loads my-service's node
	// port on masterNode's address, as a client outside the cluster does.
	outsideClient = "outside-client"

	iperfPort = 5201
	rrPort    = 5300
)

var (
	serverAddr = netip.MustParseAddr("10.244.1.2")
	myService  = netip.AddrPortFrom(netip.MustParseAddr(harness.MyServiceIP), 80)
	// outsideClientAddr is outsideClient's address on the underlay.
	outsideClientAddr = netip.MustParseAddr("192.168.31.100")
	// myNodePort is my-service's node port (nodePortServices); the
	// NodePort load goes to masterNode's underlay address.
	myNodePort     uint16 = 30080
	masterNodePort        = netip.AddrPortFrom(nodeAddr(masterNode), myNodePort)
	// httpBackends are my-service's endpoints; each runs nginx on :80
	// (endpoints.go).
	httpBackends = []string{"nginx-th5pz", "nginx-4k7xw", "nginx-j6zwk"}
	clusterCIDR  = netip.MustParsePrefix("10.244.0.0/16")
)

// bed is one mode's cluster with its servers (and routers) running.
type bed struct {
	mode mode
	c    *topology.Cluster
	dir  string // config files, rules and logs

	routers []*harness.Router // vrouter modes: one per node, in spec order
	pids    []int             // the routers' process IDs
	// stateDir is the routers' --state-dir, a tmpfs close unmounts.
	stateDir string
	// busyPoll is the routers' router.busyPoll, if any.
	busyPoll string

	iperf     *exec.Cmd
	iperfDone chan struct{}
	rr        *sockperfServer // the request/response server, in serverPod
	nginx     []*nginxProc    // my-service's backends and the egress server

	// iptablesRestore is the iptables-restore that worked (kernel mode).
	iptablesRestore string

	// nodePorts is set when my-service has a node port on this bed;
	// nodePortErr is why the node port did not answer outsideClient,
	// reported by the NodePort measurements.
	nodePorts   bool
	nodePortErr error

	// egress is set when pods' egress is masqueraded on this bed (see
	// egress.go), with an iperf3 server on outsideClient.
	egress          bool
	egressIperf     *exec.Cmd
	egressIperfDone chan struct{}

	// slirp is the userspace anchor (anchor.go), on the kernel bed when
	// slirp4netns is installed; slirpErr is why it could not be set up
	// (its rows are then n/a: the anchor is optional).
	slirp    *slirp
	slirpErr error

	// wgGo are the wireguard-go processes of the modeKernelWG bed, one
	// per node.
	wgGo []*wgGoProc

	spawn *spawner
}

// bedOptions are what newBed needs beyond the mode.
type bedOptions struct {
	prefix   string // namespace name prefix
	dir      string // where to write configs and logs
	vrouter  string // the vrouter binary
	services []configs.ServiceSpec
	spawn    *spawner // starts the routers and servers (see spawner)
	args     []string // extra `vrouter run` arguments
	// nodePorts says that services give my-service node port myNodePort,
	// to be checked from outsideClient.
	nodePorts bool
	// egress masquerades pods' egress (egress.go).
	egress bool
	// slirp sets up the slirp4netns anchor (anchor.go); needs egress.
	slirp bool
	// wireguardGo is the wireguard-go binary (modeKernelWG).
	wireguardGo string
	// busyPoll is router.busyPoll for the routers, if any.
	busyPoll string
}

// nodeAddr is node's underlay address.
func nodeAddr(node string) netip.Addr {
	n, ok := benchSpec().Node(node)
	if !ok {
		panic("no node " + node + " in the bench's cluster")
	}
	return n.Underlay
}

// benchSpec is the seed's cluster plus outsideClient on the underlay: a
// topology node without a pod CIDR (so without cni0 or pods), which no
// router and no other node's config knows about.
func benchSpec() topology.Spec {
	spec := topology.Seed()
	spec.Nodes = append(spec.Nodes, topology.NodeSpec{Name: outsideClient, Underlay: outsideClientAddr})
	return spec
}

// newBed builds the seed's cluster for m, programs its data path, starts
// the servers and checks that pods reach each other and my-service. On
// error it removes what it made.
func newBed(ctx context.Context, m mode, o bedOptions) (_ *bed, err error) {
	spec := benchSpec()
	spec.Prefix = o.prefix
	c, err := topology.Build(spec)
	if err != nil {
		return nil, err
	}
	b := &bed{mode: m, c: c, dir: o.dir, spawn: o.spawn, nodePorts: o.nodePorts, egress: o.egress, busyPoll: o.busyPoll}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("set up %s: %w", m, err), b.close())
		}
	}()
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	if err := b.sysctls(); err != nil {
		return nil, err
	}
	switch m {
	case modeKernel:
		if err := b.setupKernel(ctx, o.services); err != nil {
			return nil, err
		}
	case modeKernelWG:
		if err := b.setupWireGuardGo(ctx, o.wireguardGo, o.services); err != nil {
			return nil, err
		}
	default:
		if err := b.startRouters(o.vrouter, o.services, o.args); err != nil {
			return nil, err
		}
	}
	if err := b.startServers(); err != nil {
		return nil, err
	}
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if b.egress {
		if err := b.setupEgress(ctx); err != nil {
			return nil, err
		}
		if o.slirp {
			if b.slirpErr = b.setupSlirp(ctx); b.slirpErr != nil {
				b.slirpErr = fmt.Errorf("the slirp4netns anchor: %w", b.slirpErr)
				progress("%v", b.slirpErr)
			}
		}
	}
	if b.nodePorts {
		// A node port that does not answer fails the NodePort
		// measurements, not the bed: the rest is still worth measuring.
		if b.nodePortErr = b.checkNodePorts(ctx); b.nodePortErr != nil {
			progress("%v", b.nodePortErr)
		}
	}
	return b, nil
}

// sysctls sets what a Kubernetes node has: bridged pod traffic seen by
// iptables (br_netfilter; kube-proxy needs it for same-node Service
// replies) on both nodes, and the full ephemeral port range in the
// client pods so connection-rate runs do not wrap ports quickly. Both
// modes get the same settings.
func (b *bed) sysctls() error {
	set := func(ns, name, value string) error {
		return b.c.Do(ns, func() error {
			if err := os.WriteFile("/proc/sys/"+name, []byte(value+"\n"), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", name, value, ns, err)
			}
			return nil
		})
	}
	for _, n := range []string{masterNode, workerNode} {
		if err := set(n, "net/bridge/bridge-nf-call-iptables", "1"); err != nil {
			return err
		}
	}
	for _, p := range []string{clientPod, httpClientPod, outsideClient} {
		if err := set(p, "net/ipv4/ip_local_port_range", "1024 65535"); err != nil {
			return err
		}
	}
	return nil
}

// setupKernel installs flannel's host-gw routes and, on each node,
// kube-proxy's chains for svcs.
func (b *bed) setupKernel(ctx context.Context, svcs []configs.ServiceSpec) error {
	if err := b.c.InstallKernelHostGW(); err != nil {
		return err
	}
	// InstallKernelHostGW treats every topology node as a flannel node;
	// outsideClient is not one, and keeps only its connected route, as
	// it does with vrouter.
	if err := b.c.Do(outsideClient, removeGatewayRoutes); err != nil {
		return fmt.Errorf("remove host-gw routes from %s: %w", outsideClient, err)
	}
	return b.installKubeProxy(ctx, svcs)
}

// installKubeProxy installs kube-proxy's chains for svcs on each node.
func (b *bed) installKubeProxy(ctx context.Context, svcs []configs.ServiceSpec) error {
	ports, err := kpPorts(svcs)
	if err != nil {
		return err
	}
	rules := kubeProxyRules(clusterCIDR, ports)
	if err := os.WriteFile(filepath.Join(b.dir, "iptables-rules.txt"), []byte(rules), 0o644); err != nil {
		return err
	}
	for _, n := range []string{masterNode, workerNode} {
		prog, err := iptablesRestore(ctx, b.c, n, rules, b.iptablesRestore)
		if err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
		b.iptablesRestore = prog
	}
	return nil
}

// restorePrograms are tried in order; the first that works in a
// namespace is used from then on. iptables-restore is whatever the
// system's alternatives pick (nf_tables on Debian 12).
var restorePrograms = []string{"iptables-restore", "iptables-nft-restore", "iptables-legacy-restore"}

// iptablesRestore feeds rules to iptables-restore (with extra arguments,
// such as --noflush) in namespace ns and returns the program that took
// them. prefer, when set, is the only program tried.
func iptablesRestore(ctx context.Context, c *topology.Cluster, ns, rules, prefer string, args ...string) (string, error) {
	progs := restorePrograms
	if prefer != "" {
		progs = []string{prefer}
	}
	var errs []error
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			errs = append(errs, err)
			continue
		}
		cmd := c.CommandContext(ctx, ns, p, args...)
		cmd.Stdin = strings.NewReader(rules)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return p, nil
		}
		errs = append(errs, fmt.Errorf("%s %s: %w: %s", p, strings.Join(args, " "), err, firstLines(out, 5)))
	}
	return "", errors.Join(errs...)
}

// startRouters writes each node's config (the seed's Services as given)
// and starts `vrouter run` on each node, serving /metrics on the node's
// loopback (conn-mem reads it; args may move it).
func (b *bed) startRouters(bin string, svcs []configs.ServiceSpec, args []string) error {
	spec := b.c.Spec()
	// The flow file goes to a tmpfs of the bed's own, as a node's
	// /run/vrouter is on tmpfs: on a disk the kernel writes the file's
	// pages back, and a new flow may wait for that. Not the host's
	// /run/vrouter, which need not be tmpfs where the bench runs.
	state := filepath.Join(b.dir, "run")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", state, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m,mode=0755"); err != nil {
		return fmt.Errorf("mount a tmpfs for the routers' flow files on %s: %w", state, err)
	}
	b.stateDir = state
	args = append([]string{"--metrics-address", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--state-dir", state}, args...)
	opts := harness.ConfigOptions{Services: svcs, Exclude: []string{outsideClient}}
	opts.Egress.Masquerade = b.egress
	opts.BusyPoll = b.busyPoll
	if b.mode == modeWG {
		opts.WireGuard = map[string]wireguard.Key{}
		for _, n := range []string{masterNode, workerNode} {
			k, err := wireguard.GenerateKey()
			if err != nil {
				return err
			}
			opts.WireGuard[n] = k
		}
	}
	for _, n := range []string{masterNode, workerNode} {
		path, err := harness.WriteConfig(b.dir, spec, n, opts)
		if err != nil {
			return err
		}
		var r *harness.Router
		err = b.spawn.do(func() error {
			var err error
			r, err = harness.StartRouter(b.c, bin, n, path, filepath.Join(b.dir, n+".log"), args...)
			return err
		})
		if err != nil {
			return err
		}
		b.routers = append(b.routers, r)
		pid := r.PID()
		if comm := procComm(pid); comm != "vrouter" {
			return fmt.Errorf("router on %s: process %d is %q, want vrouter (nsenter should exec it)", n, pid, comm)
		}
		b.pids = append(b.pids, pid)
	}
	return nil
}

// startServers starts iperf3 and the request/response server in
// serverPod, and nginx on :80 in each of my-service's backends.
func (b *bed) startServers() error {
	logf, err := os.Create(filepath.Join(b.dir, "iperf3-server.log"))
	if err != nil {
		return err
	}
	cmd := b.c.Command(serverPod, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(cmd.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start iperf3 server in %s: %w", serverPod, err)
	}
	b.iperf, b.iperfDone = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(b.iperfDone)
	}()
	for _, p := range httpBackends {
		if err := b.startNginx(p, netip.AddrPortFrom(netip.IPv4Unspecified(), 80)); err != nil {
			return err
		}
	}
	if err := b.startSockperf(serverPod, rrPort); err != nil {
		return err
	}
	return b.waitListening(serverPod, iperfPort, 5*time.Second)
}

// nsPath is the namespace file of ns: a topology namespace, or the
// anchor's pod (slirpPod).
func (b *bed) nsPath(ns string) (string, error) {
	if ns == slirpPod {
		if b.slirp == nil {
			return "", fmt.Errorf("no %s on the %s bed", slirpPod, b.mode)
		}
		return b.slirp.netns, nil
	}
	return b.c.Path(ns)
}

// waitListening waits until a TCP socket listens on port in namespace ns.
func (b *bed) waitListening(ns string, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := b.c.Do(ns, func() error {
			ok = listening(port)
			return nil
		})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-b.iperfDone:
			return fmt.Errorf("iperf3 server in %s exited; see %s", ns, filepath.Join(b.dir, "iperf3-server.log"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on TCP port %d in %s after %v", port, ns, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening reports whether a TCP socket listens on port in the calling
// thread's network namespace.
func listening(port int) bool {
	want := fmt.Sprintf(":%04X ", port)
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local_address rem_address st ...; st 0A is LISTEN.
			if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "0A" {
				fh.Close()
				return true
			}
		}
		fh.Close()
	}
	return false
}

// check makes sure the data path works before anything is measured: a
// pod reaches a pod on the other node, and my-service answers.
func (b *bed) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for ctx.Err() == nil {
		errs = errs[:0]
		if res, err := b.c.Ping(clientPod, serverAddr, 1, time.Second); err != nil || res.Received == 0 {
			errs = append(errs, fmt.Errorf("ping %s -> %v: %v %v", clientPod, serverAddr, res, err))
		}
		if _, err := b.c.HTTPGet(ctx, httpClientPod, "http://"+myService.String()+"/"); err != nil {
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("data path check: %w", errors.Join(errs...))
}

// removeGatewayRoutes deletes the IPv4 routes via a gateway from the
// calling thread's network namespace.
func removeGatewayRoutes() error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Gw == nil {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			return fmt.Errorf("delete route %v via %v: %w", r.Dst, r.Gw, err)
		}
	}
	return nil
}

// close stops the routers and servers and removes the namespaces.
func (b *bed) close() error {
	var errs []error
	for _, r := range b.routers {
		if err := r.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop router on %s: %w", r.Node, err))
		}
	}
	if b.stateDir != "" {
		if err := unix.Unmount(b.stateDir, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount the flow files' tmpfs %s: %w", b.stateDir, err))
		}
	}
	if b.iperf != nil && b.iperf.Process != nil {
		b.iperf.Process.Kill()
		<-b.iperfDone
	}
	if b.egressIperf != nil && b.egressIperf.Process != nil {
		b.egressIperf.Process.Kill()
		<-b.egressIperfDone
	}
	if b.rr != nil {
		b.rr.stop()
	}
	for _, p := range b.nginx {
		p.stop()
	}
	if b.slirp != nil {
		b.slirp.close()
	}
	for _, p := range b.wgGo {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.c.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// routersCPU is the routers' summed user+system CPU seconds.
func (b *bed) routersCPU() (float64, error) {
	var sum float64
	for _, pid := range b.pids {
		s, err := procCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// linkCounters are a link's transmit counters.
type linkCounters struct{ packets, bytes uint64 }

// uplinkTX reads the transmit counters of hostgw-master's underlay link
// (eth0), which carries the pod-to-pod traffic to the other node in both
// modes: as routed packets (kernel) or inside overlay datagrams (vrouter).
func (b *bed) uplinkTX() (linkCounters, error) {
	var c linkCounters
	err := b.c.Do(masterNode, func() error {
		l, err := netlink.LinkByName(topology.NodeUplink)
		if err != nil {
			return err
		}
		st := l.Attrs().Statistics
		if st == nil {
			return fmt.Errorf("%s has no statistics", topology.NodeUplink)
		}
		c = linkCounters{st.TxPackets, st.TxBytes}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("read %s counters on %s: %w", topology.NodeUplink, masterNode, err)
	}
	return c, nil
}

// firstLines returns up to n lines of b, for error messages.
func firstLines(b []byte, n int) string {
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}
