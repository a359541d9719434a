package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/tun"
)

// demoPrefix names the demo's namespaces, so a crashed demo's leftovers are
// found and removed by the next one.
const demoPrefix = "vrdemo-"

// demoDirPattern names the demo's directory in os.TempDir (its configs,
// router logs and admin sockets): os.MkdirTemp replaces the "*".
const demoDirPattern = "vrouter-demo-*"

// demoUserNSEnv marks the demo process re-executed inside a user namespace.
const demoUserNSEnv = "VROUTER_DEMO_USERNS"

func demoCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		keep     = fs.Bool("keep", false, "leave the cluster running after the checks, with commands to explore it, until Ctrl-C, SIGTERM, SIGHUP (its terminal closed) or demo --down")
		down     = fs.Bool("down", false, "stop a kept demo and remove whatever demos left (routers, namespaces "+demoPrefix+"*, directories $TMPDIR/"+demoDirPattern+"), then exit")
		mode     = fs.String("mode", lb.ModeNAT.String(), "the Services' load-balancing mode: nat (kube-proxy's: the router translates addresses) or proxy (the router ends TCP connections and dials the backends)")
		logLevel = fs.String("log-level", "info", "the routers' log level")
		topoFile = fs.String("topology", "", "build the cluster of this YAML `file` (nodes, pod CIDRs, pods, ClusterIP Services; docs/demo-topology.md) instead of the seed's")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter demo [--topology FILE] [--keep] [--mode nat|proxy] [--log-level LEVEL]
       vrouter demo --down

Builds the seed's two-node cluster (flannel host-gw: hostgw-master
192.168.31.201 with pods in 10.244.0.0/24, hostgw-node 192.168.31.202 with
pods in 10.244.1.0/24) in network namespaces on this machine, starts one
vrouter per node from generated config files, checks pod-to-pod ping, TCP
and UDP across the nodes, the Services and a node port, prints a report and
removes everything it made.

With --topology it builds the cluster of FILE instead (docs/demo-topology.md,
an example in docs/examples/demo/three-nodes.yaml) and checks pod-to-pod
traffic between every pair of its nodes (a sample of pairs when they are
many) and each of its Services from a pod on each node, answered by all
its backends.

As root it uses named namespaces (ip netns list shows them while it runs).
Otherwise it re-runs itself inside a new user namespace, rootless; that
needs /dev/net/tun read-write for this user. Rootless, it publishes the node
port on this host's 127.0.0.1, as vrouter publish does. The routers die with
the demo; whatever a killed demo left, --down removes.

Flags:`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	if *mode != lb.ModeNAT.String() && *mode != lb.ModeProxy.String() {
		return usageErrorf("--mode %q: want %s or %s", *mode, lb.ModeNAT, lb.ModeProxy)
	}
	if *down {
		if *keep || *topoFile != "" {
			return usageErrorf("--down stops a demo; it takes no other flag")
		}
		return demoDown(stdout)
	}
	var top *demoTopology
	if *topoFile != "" {
		var err error
		if top, err = loadDemoTopology(*topoFile); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 && os.Getenv(demoUserNSEnv) == "" {
		if err := checkTUN(); err != nil {
			return err
		}
		return reexecRootless(args, top == nil, stdout, stderr)
	}
	// A closed terminal (SIGHUP) tears the demo down like Ctrl-C does.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	d := &demo{out: stdout, keep: *keep, mode: *mode, logLevel: *logLevel, nodePort: demoNodePort, top: top}
	if err := d.takeOuter(); err != nil {
		return err
	}
	if d.host != nil {
		defer d.host.Close()
	}
	return d.run(ctx)
}

// reexecRootless runs the demo again in a new user, mount and network
// namespace where this user is root, as `unshare -Urnm` would. The child
// dies with this process (SIGTERM, on which it tears down), and the
// signals that stop a demo are passed on to it, so that it always tears
// down before this process exits. With nodePort (the seed's cluster) this
// process publishes my-service's node port on the host for it.
func reexecRootless(args []string, nodePort bool, stdout, stderr io.Writer) (err error) {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Not root: running the demo rootless, inside a new user namespace.")
	cmd := exec.Command(self, append([]string{"demo"}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.Env = append(os.Environ(), demoUserNSEnv+"=1")
	pub := &demoPublisher{}
	if nodePort {
		if pub, err = startPublisher(); err != nil {
			return fmt.Errorf("publish the demo's node port on the host: %w", err)
		}
		defer func() {
			err = errors.Join(err, pub.stop())
		}()
		cmd.Env = append(cmd.Env, pub.env()...)
		cmd.ExtraFiles = pub.sockets
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGTERM,
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done, err := startTied(cmd)
	if err != nil {
		return fmt.Errorf("start rootless demo: %w (user namespaces may be disabled: check /proc/sys/kernel/unprivileged_userns_clone or run as root)", err)
	}
	pub.closeSockets() // the inner process has them
	for {
		select {
		case sig := <-sigs:
			// From a terminal the child gets its own copy too; a second
			// one during its teardown changes nothing.
			_ = cmd.Process.Signal(sig)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return fmt.Errorf("rootless demo failed (%v)", ee)
			}
			return err
		}
	}
}

type demo struct {
	out      io.Writer
	keep     bool
	mode     string // the Services' lb mode, "nat" or "proxy"
	logLevel string

	// nodePort is my-service's node port. A rootless demo's outer
	// process chose it and serves publishSocket, on which
	// hostgw-master's router publishes it on the host; host dials from
	// the host's namespace. Both are unset as root.
	nodePort      uint16
	publishSocket string
	host          *hostDialer

	// top is the --topology file's cluster; nil for the seed's.
	top *demoTopology

	c       *topology.Cluster
	dir     string
	routers map[string]*harness.Router
	passed  int
	failed  int
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

func (d *demo) run(ctx context.Context) (err error) {
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	// Root in a user namespace of its own (the rootless re-run, or
	// unshare -Urnm) has no say over a device that real root owns.
	if err := checkTUN(); err != nil {
		return err
	}
	lock, err := lockDemo(bin)
	if err != nil {
		return err
	}
	if lock != nil {
		defer lock.Close() // after teardown, which the next defer runs
	}
	if mayHaveLeftovers() {
		if err := topology.Cleanup(demoPrefix); err != nil {
			return fmt.Errorf("remove a previous demo's namespaces: %w", err)
		}
	}
	d.dir, err = os.MkdirTemp("", demoDirPattern)
	if err != nil {
		return err
	}
	d.routers = map[string]*harness.Router{}
	defer func() {
		err = errors.Join(err, d.teardown())
	}()
	if err := os.WriteFile(filepath.Join(d.dir, demoPIDFile), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return err
	}
	spec := topology.Seed()
	what := "the seed's cluster"
	var opts harness.ConfigOptions
	if d.top != nil {
		spec, what = d.top.Spec, "the cluster of "+d.top.Path
		opts.ClusterCIDR, opts.ServiceCIDR = d.top.ClusterCIDR, d.top.ServiceCIDR
		opts.Services = slices.Clone(d.top.Services)
	} else {
		opts.Services = harness.SeedServices("")
		opts.Services[0].Type = configs.ServiceTypeNodePort // my-service
		opts.Services[0].Ports[0].NodePort = int(d.nodePort)
	}
	for i := range opts.Services {
		opts.Services[i].Mode = d.mode
	}
	spec.Prefix = demoPrefix
	d.printf("Building %s in network namespaces (prefix %q)...\n", what, demoPrefix)
	d.c, err = topology.Build(spec)
	if err != nil {
		return fmt.Errorf("build the cluster: %w", err)
	}

	for i, n := range spec.Nodes {
		cfg, err := harness.WriteConfig(d.dir, spec, n.Name, opts)
		if err != nil {
			return err
		}
		// The admin socket and the flow file in the demo's directory, which
		// teardown removes: nothing of the demo stays in /run/vrouter.
		args := []string{"--log-level", d.logLevel, "--admin-socket", filepath.Join(d.dir, n.Name+".sock"),
			"--state-dir", d.dir}
		if i == 0 && d.publishSocket != "" && d.top == nil {
			// One router publishes on the host: a second would find
			// the host's 127.0.0.1:<nodePort> taken.
			args = append(args, publishRunFlags(d.publishSocket)...)
		}
		r, err := harness.StartRouter(d.c, bin, n.Name, cfg, filepath.Join(d.dir, n.Name+".log"), args...)
		if err != nil {
			return err
		}
		d.routers[n.Name] = r
	}
	d.printTopology(spec)
	if ctx.Err() != nil {
		return d.interrupted(ctx)
	}

	servers, err := d.startServers(spec)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	if d.top != nil {
		d.printf("\nChecks\n")
		d.topologyChecks(ctx, spec)
		d.printf("\nService load balancing (%s)\n", d.serviceHeading())
		d.topologyServiceChecks(ctx, spec)
	} else {
		d.printf("\nChecks\n")
		d.checks(ctx, spec)
		d.printf("\nService load balancing (%s)\n", d.serviceHeading())
		d.serviceChecks(ctx, spec)
		d.printf("\nNode port (%s)\n", d.nodePortHeading(spec))
		d.nodePortChecks(ctx, spec)
	}
	if ctx.Err() != nil {
		return d.interrupted(ctx)
	}
	d.printf("\n%d passed, %d failed\n", d.passed, d.failed)
	if d.keep {
		d.printKeep(spec)
		<-ctx.Done()
		d.printf("\nTearing down (%v)...\n", context.Cause(ctx))
	}
	if d.failed > 0 {
		return fmt.Errorf("%d check(s) failed", d.failed)
	}
	return nil
}

// mayHaveLeftovers reports whether a previous demo may have left namespaces
// named demoPrefix* that this one should remove. A rootless demo's are in
// its own mount namespace (a tmpfs on /run/netns) or unnamed, and vanish
// with it; what it finds in a /run/netns it cannot write is a demo's as
// root, perhaps running, which is not its to remove.
func mayHaveLeftovers() bool {
	if os.Getenv(demoUserNSEnv) == "" {
		return true
	}
	return unix.Access(topology.DefaultNetnsDir, unix.W_OK) == nil
}

// interrupted ends a run that a signal cut short: its checks are not
// worth reading, so teardown removes everything.
func (d *demo) interrupted(ctx context.Context) error {
	d.failed = 0
	d.printf("\nInterrupted (%v): tearing down...\n", context.Cause(ctx))
	return fmt.Errorf("interrupted before the checks finished (%v)", context.Cause(ctx))
}

func (d *demo) printTopology(spec topology.Spec) {
	d.printf("\n  underlay %s (a bridge in namespace %sunderlay)\n", spec.Underlay, demoPrefix)
	for i, n := range spec.Nodes {
		branch := "├─"
		if i == len(spec.Nodes)-1 {
			branch = "└─"
		}
		var pods []string
		for _, p := range n.Pods {
			pods = append(pods, fmt.Sprintf("%s %s", p.Name, p.Addr))
		}
		d.printf("  %s %-14s %s  pods %s  vrouter pid %d\n", branch, n.Name, n.Underlay, n.PodCIDR, d.routers[n.Name].PID())
		d.printf("  %s   %s\n", map[bool]string{true: "│ ", false: "  "}[i < len(spec.Nodes)-1], strings.Join(pods, ", "))
	}
	for _, n := range spec.Nodes {
		routes, err := d.kernelRoutes(n.Name)
		if err != nil {
			d.printf("\n  routes of %s: %v\n", n.Name, err)
			continue
		}
		d.printf("\n  Kernel routes vrouter added on %s (all via its TUN; no iptables rules):\n", n.Name)
		for _, r := range routes {
			d.printf("    %s\n", r)
		}
	}
}

// kernelRoutes lists the node kernel's routes that vrouter installed.
func (d *demo) kernelRoutes(node string) ([]string, error) {
	var out []string
	err := d.c.Do(node, func() error {
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: tun.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			out = append(out, fmt.Sprintf("%s dev %s", r.Dst, tun.DefaultName))
		}
		return nil
	})
	return out, err
}

func (d *demo) startServers(spec topology.Spec) ([]*topology.Server, error) {
	var servers []*topology.Server
	for _, n := range spec.Nodes {
		for _, p := range n.Pods {
			for _, sp := range d.top.servicePorts(p.Name) {
				start := d.c.ServeHTTP
				switch {
				case sp.udp:
					start = d.c.ServeUDPEcho
				case sp.port == 7:
					start = d.c.ServeTCPEcho
				}
				s, err := start(p.Name, netip.AddrPortFrom(p.Addr, sp.port).String())
				if err != nil {
					return servers, err
				}
				servers = append(servers, s)
			}
			for _, start := range []func(string, string) (*topology.Server, error){d.c.ServeTCPEcho, d.c.ServeUDPEcho} {
				s, err := start(p.Name, netip.AddrPortFrom(p.Addr, 7).String())
				if err != nil {
					return servers, err
				}
				servers = append(servers, s)
			}
			s, err := d.c.ServeHTTP(p.Name, netip.AddrPortFrom(p.Addr, 80).String())
			if err != nil {
				return servers, err
			}
			servers = append(servers, s)
			if s, err = d.c.ServeUDPEcho(p.Name, netip.AddrPortFrom(p.Addr, 53).String()); err != nil {
				return servers, err
			}
			servers = append(servers, s)
		}
	}
	return servers, nil
}

func (d *demo) check(name, detail string, err error) {
	if err != nil {
		d.failed++
		d.printf("  FAIL  %-58s %v\n", name, err)
		return
	}
	d.passed++
	d.printf("  ok    %-58s %s\n", name, detail)
}

func (d *demo) checks(ctx context.Context, spec topology.Spec) {
	a, b := spec.Nodes[0], spec.Nodes[1]
	pa, pb, pb2 := a.Pods[0], b.Pods[0], b.Pods[1]
	pairs := []struct {
		from, to topology.PodSpec
	}{{pa, pb}, {pb2, pa}}
	for _, pr := range pairs {
		name := fmt.Sprintf("ping %s %s -> %s %s", pr.from.Name, pr.from.Addr, pr.to.Name, pr.to.Addr)
		res, err := d.c.Ping(pr.from.Name, pr.to.Addr, 3, 2*time.Second)
		if err == nil && res.Received != res.Sent {
			err = fmt.Errorf("%s", res)
		}
		d.check(name, res.String(), err)
	}
	for _, pr := range pairs {
		name := fmt.Sprintf("tcp  %s -> %s:7", pr.from.Name, pr.to.Addr)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := d.c.TCPExchange(cctx, pr.from.Name, netip.AddrPortFrom(pr.to.Addr, 7), []byte("hello over tcp"))
		cancel()
		d.check(name, replyDetail(rep, pr.to.Name, pr.from.Addr, &err), err)
	}
	for _, pr := range pairs {
		name := fmt.Sprintf("udp  %s -> %s:7", pr.from.Name, pr.to.Addr)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := d.c.UDPExchange(cctx, pr.from.Name, netip.AddrPortFrom(pr.to.Addr, 7), []byte("hello over udp"))
		cancel()
		d.check(name, replyDetail(rep, pr.to.Name, pr.from.Addr, &err), err)
	}
	{
		name := fmt.Sprintf("http %s -> http://%s/", pa.Name, pb2.Addr)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := d.c.HTTPGet(cctx, pa.Name, fmt.Sprintf("http://%s/", pb2.Addr))
		cancel()
		d.check(name, replyDetail(rep, pb2.Name, pa.Addr, &err), err)
	}
	{
		name := fmt.Sprintf("ping node %s -> %s %s", a.Name, pb.Name, pb.Addr)
		res, err := d.c.Ping(a.Name, pb.Addr, 2, 2*time.Second)
		if err == nil && res.Received != res.Sent {
			err = fmt.Errorf("%s", res)
		}
		d.check(name, res.String(), err)
	}
	d.unroutedCheck(pa.Name, netip.MustParseAddr("10.244.9.9"))
}

// unroutedCheck pings unrouted, a cluster address no node owns, from pod
// from: the router must refuse it at once with an ICMP unreachable.
func (d *demo) unroutedCheck(from string, unrouted netip.Addr) {
	name := fmt.Sprintf("ping %s -> %s (no node owns it)", from, unrouted)
	res, err := d.c.Ping(from, unrouted, 1, time.Second)
	detail := ""
	if err == nil {
		if len(res.Errors) == 0 {
			err = fmt.Errorf("want an ICMP unreachable from the router, got %s", res)
		} else {
			detail = "refused at once: " + res.Errors[0]
		}
	}
	d.check(name, detail, err)
}

// replyDetail checks who answered and which client address it saw.
func replyDetail(rep topology.Reply, wantServer string, wantClient netip.Addr, err *error) string {
	if *err != nil {
		return ""
	}
	if rep.Server != wantServer {
		*err = fmt.Errorf("answered by %q, want %q", rep.Server, wantServer)
		return ""
	}
	if rep.Client.IsValid() && rep.Client.Addr() != wantClient {
		*err = fmt.Errorf("server saw client %s, want %s", rep.Client, wantClient)
		return ""
	}
	return fmt.Sprintf("answered by %s, which saw client %s", rep.Server, rep.Client.Addr())
}

func (d *demo) printKeep(spec topology.Spec) {
	bin := selfPath()
	d.printf("\nThe cluster keeps running until Ctrl-C here, SIGTERM or SIGHUP to pid %d, or `%s demo --down`. To explore it:\n", os.Getpid(), bin)
	enter := func(ns string) string {
		p, _ := d.c.Path(ns)
		return "nsenter --net=" + p + " "
	}
	if os.Getenv(demoUserNSEnv) != "" {
		d.printf("  (rootless: first join the demo's namespaces: nsenter --preserve-credentials -U -m -t %d)\n", os.Getpid())
	}
	a, b := spec.Nodes[0], spec.Nodes[1]
	sock := filepath.Join(d.dir, a.Name+".sock")
	var cmds [][2]string
	if to, ok := firstPod(b); ok {
		cmds = append(cmds, [2]string{fmt.Sprintf("%sping %s", enter(clientOf(a)), to.Addr), "pod to pod across nodes"})
	}
	if d.top == nil {
		cmds = append(cmds, [2]string{fmt.Sprintf("%scurl http://%s/", enter(b.Pods[0].Name), harness.MyServiceIP), "my-service, " + d.mode + " mode"})
	} else if url, name, ok := d.top.httpService(); ok {
		cmds = append(cmds, [2]string{fmt.Sprintf("%scurl %s", enter(clientOf(b)), url), name + ", " + d.mode + " mode"})
	}
	cmds = append(cmds, [2]string{enter(a.Name) + "ip route", "the node's routes: only vr0's"})
	if d.top == nil {
		cmds = append(cmds, d.nodePortCommand(enter(a.Name)))
	}
	cmds = append(cmds,
		[2]string{fmt.Sprintf("%stcpdump -ni eth0 udp port %d", enter(b.Name), harness.OverlayPort), "overlay datagrams"},
		[2]string{fmt.Sprintf("%s routes --socket %s", bin, sock), "the router's table"},
		[2]string{fmt.Sprintf("%s services --socket %s", bin, sock), "Services, endpoints, connections"},
	)
	width := 0
	for _, c := range cmds {
		width = max(width, len(c[0]))
	}
	for _, c := range cmds {
		d.printf("  %-*s  # %s\n", width, c[0], c[1])
	}
	d.printf("  configs and router logs: %s\n", d.dir)
}

// teardown stops the routers, deletes the namespaces and removes the
// demo's directory, unless a check failed or a router did not stop
// cleanly: then the directory stays for its logs, and the error says
// where it is. It copes with a run that stopped anywhere after the
// directory was made.
func (d *demo) teardown() error {
	var errs []error
	for name, r := range d.routers {
		if err := r.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("router on %s: %w", name, err))
		}
	}
	if d.c != nil {
		if err := d.c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.failed > 0 || len(errs) > 0 {
		errs = append(errs, fmt.Errorf("configs and router logs are in %s (`%s demo --down` removes it)", d.dir, selfPath()))
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return fmt.Errorf("remove the demo's directory: %w", err)
	}
	return nil
}

// judgeBackends reports, for a Service's requests from client from that
// counts and seen recorded (answers, and the client addresses each
// backend saw), each backend's answers and what it saw, and the first
// problem: err (the requests' own failure) if set, else a backend that
// never answered or saw another client address than mode gives it.
func (d *demo) judgeBackends(spec topology.Spec, from string, backends []string, counts map[string]int, seen map[string]map[netip.Addr]bool, mode string, err error) (string, error) {
	var parts []string
	for _, b := range backends {
		var saw []string
		for a := range seen[b] {
			saw = append(saw, a.String())
		}
		slices.Sort(saw)
		parts = append(parts, fmt.Sprintf("%s %d (saw %s)", b, counts[b], strings.Join(saw, " ")))
		if err != nil {
			continue
		}
		if counts[b] == 0 {
			err = fmt.Errorf("backend %s never answered: %v", b, counts)
			continue
		}
		want, why, werr := d.wantClient(spec, from, b, mode)
		if werr != nil {
			err = werr
			continue
		}
		if len(seen[b]) != 1 || !seen[b][want] {
			err = fmt.Errorf("backend %s saw client %s, want %s (%s mode: %s)", b, strings.Join(saw, " "), want, mode, why)
		}
	}
	return strings.Join(parts, ", "), err
}

// serviceChecks curls the seed's my-service from pods on both nodes and
// from a node, as the seed does, and resolves through kube-dns over UDP.
// Every backend must answer, and must see the client address that the
// Services' mode gives it (docs/load-balancing.md): that is what shows
// the mode asked for is the one at work.
func (d *demo) serviceChecks(ctx context.Context, spec topology.Spec) {
	const requests = 30
	url := "http://" + harness.MyServiceIP + "/"
	backends := []string{"nginx-th5pz", "nginx-4k7xw", "nginx-j6zwk"}
	for _, from := range []string{spec.Nodes[0].Pods[0].Name, spec.Nodes[1].Pods[0].Name, spec.Nodes[0].Name} {
		counts := map[string]int{}
		seen := map[string]map[netip.Addr]bool{}
		var err error
		for range requests {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep, gerr := d.c.HTTPGet(cctx, from, url)
			cancel()
			if gerr != nil {
				err = gerr
				break
			}
			counts[rep.Server]++
			if seen[rep.Server] == nil {
				seen[rep.Server] = map[netip.Addr]bool{}
			}
			seen[rep.Server][rep.Client.Addr()] = true
		}
		detail, err := d.judgeBackends(spec, from, backends, counts, seen, d.mode, err)
		d.check(fmt.Sprintf("curl %s x%d from %s", url, requests, from), detail, err)
	}
	{
		// UDP goes by nat mode in both modes; coredns runs on the other
		// node, so it sees the client pod's own address.
		from, _, _ := spec.Pod(spec.Nodes[1].Pods[0].Name)
		vip := netip.AddrPortFrom(netip.MustParseAddr(harness.KubeDNSIP), 53)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, err := d.c.UDPExchange(cctx, from.Name, vip, []byte("query"))
		cancel()
		detail := ""
		if err == nil {
			switch {
			case !strings.HasPrefix(rep.Server, "coredns-"):
				err = fmt.Errorf("answered by %q, want a coredns pod", rep.Server)
			case rep.Client.Addr() != from.Addr:
				err = fmt.Errorf("%s saw client %s, want %s (the client's own address)", rep.Server, rep.Client.Addr(), from.Addr)
			default:
				detail = "answered by " + rep.Server + ", which saw client " + rep.Client.Addr().String()
			}
		}
		d.check(fmt.Sprintf("udp  %s -> kube-dns %s", from.Name, vip), detail, err)
	}
}

// serviceHeading says what the Services' mode does, as the checks expect it.
func (d *demo) serviceHeading() string {
	if d.mode == lb.ModeProxy.String() {
		return "proxy mode, picker random: the router ends each TCP connection and dials the backend from the client's node; UDP as in nat mode"
	}
	return "nat mode, picker random, as kube-proxy: backends on other nodes see the client, those on its node the router address"
}

// wantClient is the source address backend must see for a connection to
// a ClusterIP from client (a pod or a node), and why, in mode (nat or
// proxy; UDP goes by nat in both).
func (d *demo) wantClient(spec topology.Spec, client, backend, mode string) (netip.Addr, string, error) {
	_, bnode, _ := spec.Pod(backend)
	cnode, isNode := spec.Node(client)
	var caddr netip.Addr
	if isNode {
		a, err := d.tunAddr(cnode.Name)
		if err != nil {
			return netip.Addr{}, "", err
		}
		caddr = a // a node's connections through vr0 come from vr0's address
	} else {
		var p topology.PodSpec
		p, cnode, _ = spec.Pod(client)
		caddr = p.Addr
	}
	local := bnode.Name == cnode.Name
	switch {
	case mode == lb.ModeProxy.String() && local:
		return cnode.Gateway(), "the router dials a backend on its own node from cni0's address", nil
	case mode == lb.ModeProxy.String():
		a, err := d.tunAddr(cnode.Name)
		return a, "the router dials a backend on another node from vr0's address", err
	case local:
		return configs.DefaultRouterAddresses[0], "a backend on the client's node sees the router address", nil
	default:
		return caddr, "a backend on another node sees the client's own address", nil
	}
}

// tunAddr is the IPv4 address of node's TUN, vr0.
func (d *demo) tunAddr(node string) (netip.Addr, error) {
	var out netip.Addr
	err := d.c.Do(node, func() error {
		l, err := netlink.LinkByName(tun.DefaultName)
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) == 0 {
			return fmt.Errorf("no IPv4 address on %s", tun.DefaultName)
		}
		out, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		return nil
	})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address of %s on %s: %w", tun.DefaultName, node, err)
	}
	return out, nil
}

// tunDevice is the device every router opens to create its TUN.
const tunDevice = "/dev/net/tun"

// checkTUN opens the TUN device read-write, as each router will, so that
// a demo that cannot work says why before it builds anything.
func checkTUN() error {
	f, err := os.OpenFile(tunDevice, os.O_RDWR, 0)
	if err == nil {
		return f.Close()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist, and every router of the demo opens it: load the tun module (sudo modprobe tun) or, in a container, pass the device in (docker run --device %s)", tunDevice, tunDevice)
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("%s exists but the tun driver is not loaded: sudo modprobe tun", tunDevice)
	case errors.Is(err, fs.ErrPermission):
		return tunPermissionError()
	}
	return fmt.Errorf("open %s, which every router of the demo opens: %w", tunDevice, err)
}

// tunPermissionError says how to make the TUN device usable without root.
func tunPermissionError() error {
	mode := "its mode"
	if fi, err := os.Stat(tunDevice); err == nil {
		mode = fmt.Sprintf("mode %04o", fi.Mode().Perm())
	}
	who := fmt.Sprintf("uid %d", os.Getuid())
	if os.Getuid() == 0 {
		who = "root of this user namespace, which has no say over real root's devices,"
	}
	return fmt.Errorf(`%s cannot open %s read-write (%s), and every router of the demo opens it.
Run the demo as real root (sudo), or make the device read-write for everyone, as udev does by default:
  now, until reboot:   sudo chmod 0666 %[2]s
  for good:            udev's default rule sets it (50-udev-default.rules: KERNEL=="tun", MODE="0666");
                       0600 means udev does not run there or a local rule overrides it.
    Debian, Ubuntu:    sudo apt-get install udev
    Fedora:            sudo dnf install systemd-udev
    Arch:              udev comes with systemd: check that systemd-udevd runs
    any, by a rule:    echo 'KERNEL=="tun", MODE="0666"' | sudo tee /etc/udev/rules.d/99-tun.rules  (from the next boot)
    a container:       no udev there; chmod in its entrypoint, or give it a 0666 device
0666 is safe: a user who opens the device can create TUN devices only in network namespaces
where it has CAP_NET_ADMIN, such as its own user namespaces`, who, tunDevice, mode)
}
