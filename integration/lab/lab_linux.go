package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// DefaultTimeout bounds each client call (Ping excepted, see Netns.Ping)
// when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Options shape a Lab. The zero value runs one router per node, built
// from the module, with harness's default config and no Services.
type Options struct {
	// Vrouter is the path of the vrouter binary (or a name looked up in
	// PATH). Empty means $VROUTER_BIN, and if that is empty too, a binary
	// built from the module (BuildVrouter).
	Vrouter string
	// Config shapes every node's config file: cluster and Service CIDRs,
	// Services, MTUs, egress (harness.ConfigOptions).
	Config harness.ConfigOptions
	// Args are extra `vrouter run` flags for every router, such as
	// "--log-level", "debug".
	Args []string
	// Stopped names nodes whose router New does not start; Node.Start
	// starts it.
	Stopped []string
	// Timeout bounds each client call: TCPExchange, UDPExchange, HTTPGet.
	// Zero means DefaultTimeout.
	Timeout time.Duration
}

// Lab is a cluster in network namespaces with a vrouter on each node,
// owned by one test. Its methods are safe for concurrent use, except that
// Node and Pod fail the test for an unknown name and so belong on the
// test's goroutine.
type Lab struct {
	t       testing.TB
	c       *topology.Cluster
	spec    topology.Spec // with Prefix and the defaults filled in
	dir     string
	bin     string
	opts    Options
	timeout time.Duration

	// Written only by New.
	nodes  []*Node
	pods   []*Pod
	byName map[string]any // *Node or *Pod
}

// New builds spec's namespaces, writes a config file for each node from
// spec and opts.Config, starts a router on each node but those in
// opts.Stopped, and waits until they are up. It skips t when the process
// may not create network namespaces or open /dev/net/tun, and fails it
// when anything else goes wrong, such as a vrouter binary that is missing.
// When t ends, its cleanup stops the routers (printing their logs if t
// failed) and removes the namespaces and files. New must be called from
// the test's goroutine.
func New(t testing.TB, spec topology.Spec, opts Options) *Lab {
	t.Helper()
	if err := topology.CanBuild(); err != nil {
		t.Skipf("lab: %v", err)
	}
	if err := canOpenTUN(); err != nil {
		t.Skipf("lab: %v", err)
	}
	if err := spec.Validate(); err != nil {
		t.Fatalf("lab: %v", err)
	}
	bin, err := vrouterFor(t, opts.Vrouter)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	l := &Lab{t: t, dir: t.TempDir(), bin: bin, opts: opts, timeout: opts.Timeout, byName: map[string]any{}}
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout
	}
	l.c = topology.BuildT(t, spec)
	l.spec = l.c.Spec()
	for _, ns := range l.spec.Nodes {
		n := &Node{Netns: Netns{l: l, name: ns.Name}, spec: ns}
		l.nodes = append(l.nodes, n)
		l.byName[ns.Name] = n
		for _, ps := range ns.Pods {
			p := &Pod{Netns: Netns{l: l, name: ps.Name}, spec: ps, node: n}
			l.pods = append(l.pods, p)
			l.byName[ps.Name] = p
		}
	}
	for _, n := range l.nodes {
		if err := os.MkdirAll(filepath.Dir(n.ConfigPath()), 0o755); err != nil {
			t.Fatalf("lab: %v", err)
		}
		if err := n.WriteConfig(opts.Config); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	// Cleanups run last first: this one, registered after BuildT's, stops
	// the routers before the namespaces go.
	t.Cleanup(l.stopAll)
	for _, n := range l.nodes {
		if contains(opts.Stopped, n.name) {
			continue
		}
		if err := n.Start(); err != nil {
			t.Fatalf("lab: %v", err)
		}
	}
	return l
}

// canOpenTUN checks that this process may open /dev/net/tun, which every
// router does.
func canOpenTUN() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("cannot open /dev/net/tun (%w): the routers need it read-write; as root, chmod 0666 /dev/net/tun (docs/operations.md, Rootless)", err)
		}
		return fmt.Errorf("cannot open /dev/net/tun: %w", err)
	}
	return f.Close()
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// stopAll stops every router and, if the test failed, logs their output.
func (l *Lab) stopAll() {
	for _, n := range l.nodes {
		if err := n.Stop(); err != nil {
			l.t.Errorf("lab: router on %s: %v", n.name, err)
		}
	}
	if l.t.Failed() {
		for _, n := range l.nodes {
			if b, err := os.ReadFile(n.LogPath()); err == nil {
				l.t.Logf("--- vrouter log of %s (%s) ---\n%s", n.name, n.LogPath(), b)
			}
		}
	}
}

// Cluster is the topology the lab runs on, for what the Lab does not
// offer itself.
func (l *Lab) Cluster() *topology.Cluster { return l.c }

// Spec is the spec the lab was built from, with Prefix and the defaults
// filled in.
func (l *Lab) Spec() topology.Spec { return l.c.Spec() }

// Dir is the directory holding the routers' config files, logs, admin
// sockets and state; t.TempDir, removed when the test ends.
func (l *Lab) Dir() string { return l.dir }

// Vrouter is the path of the vrouter binary the routers run.
func (l *Lab) Vrouter() string { return l.bin }

// Nodes returns every node, in the spec's order.
func (l *Lab) Nodes() []*Node { return append([]*Node(nil), l.nodes...) }

// Pods returns every pod, node by node, in the spec's order.
func (l *Lab) Pods() []*Pod { return append([]*Pod(nil), l.pods...) }

// Node returns the node with the given short name, or fails the test.
func (l *Lab) Node(name string) *Node {
	l.t.Helper()
	n, ok := l.byName[name].(*Node)
	if !ok {
		l.t.Fatalf("lab: no node %q (nodes: %s)", name, names(l.nodes))
	}
	return n
}

// Pod returns the pod with the given short name, or fails the test.
func (l *Lab) Pod(name string) *Pod {
	l.t.Helper()
	p, ok := l.byName[name].(*Pod)
	if !ok {
		l.t.Fatalf("lab: no pod %q (pods: %s)", name, names(l.pods))
	}
	return p
}

func names[T interface{ Name() string }](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.Name()
	}
	return strings.Join(s, ", ")
}

// Netns is one namespace of the lab, a node's or a pod's; its methods act
// inside it. They are safe for concurrent use; their contexts end with
// the test (testing.TB.Context).
type Netns struct {
	l    *Lab
	name string
}

// Name is the namespace's short name: the node's or pod's name.
func (n *Netns) Name() string { return n.name }

// Command returns a command that runs program name inside the namespace
// (nsenter --net); it is killed when the test ends. Only the network
// namespace changes: files and users are the test's.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return n.l.c.CommandContext(n.l.t.Context(), n.name, name, args...)
}

// Exec runs program name inside the namespace and returns its combined
// output; an error includes the output.
func (n *Netns) Exec(name string, args ...string) (string, error) {
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w\n%s", strings.Join(append([]string{name}, args...), " "), n.name, err, out)
	}
	return string(out), nil
}

// Do runs fn on a thread inside the namespace (topology.Cluster.Do):
// sockets fn makes stay in the namespace.
func (n *Netns) Do(fn func() error) error { return n.l.c.Do(n.name, fn) }

// Ping sends count ICMP echo requests to dst, waiting up to a second for
// each answer (topology.Cluster.Ping). Lost probes are not an error: see
// PingResult.Received.
func (n *Netns) Ping(dst netip.Addr, count int) (topology.PingResult, error) {
	return n.l.c.Ping(n.name, dst, count, time.Second)
}

func (n *Netns) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.l.t.Context(), n.l.timeout)
}

// TCPExchange sends payload to a TCP echo server (ServeTCPEcho) and returns
// its answer: who answered and the client address it saw.
func (n *Netns) TCPExchange(addr netip.AddrPort, payload []byte) (topology.Reply, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	return n.l.c.TCPExchange(ctx, n.name, addr, payload)
}

// UDPExchange sends payload in one datagram to a UDP echo server
// (ServeUDPEcho) and returns its answer. A lost datagram is not retried.
func (n *Netns) UDPExchange(addr netip.AddrPort, payload []byte) (topology.Reply, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	return n.l.c.UDPExchange(ctx, n.name, addr, payload)
}

// HTTPGet fetches url; from a ServeHTTP server, Reply.Server is its name.
func (n *Netns) HTTPGet(url string) (topology.Reply, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	return n.l.c.HTTPGet(ctx, n.name, url)
}

// ServeTCPEcho starts a TCP echo server on addr (":80", "10.244.1.2:0")
// that answers with its namespace's name; it stops when the test ends, or
// on Close.
func (n *Netns) ServeTCPEcho(addr string) (*topology.Server, error) {
	return n.l.c.ServeTCPEcho(n.name, addr)
}

// ServeUDPEcho starts a UDP echo server on addr, as ServeTCPEcho.
func (n *Netns) ServeUDPEcho(addr string) (*topology.Server, error) {
	return n.l.c.ServeUDPEcho(n.name, addr)
}

// ServeHTTP starts an HTTP server on addr that answers every request with
// its namespace's name, as ServeTCPEcho.
func (n *Netns) ServeHTTP(addr string) (*topology.Server, error) {
	return n.l.c.ServeHTTP(n.name, addr)
}

// Pod is a pod of the lab: a namespace behind its node's cni0.
type Pod struct {
	Netns
	spec topology.PodSpec
	node *Node
}

// Addr is the pod's IPv4 address.
func (p *Pod) Addr() netip.Addr { return p.spec.Addr }

// Addr6 is the pod's IPv6 address, if the spec gives it one.
func (p *Pod) Addr6() netip.Addr { return p.spec.Addr6 }

// Node is the node the pod is on.
func (p *Pod) Node() *Node { return p.node }

// Node is a node of the lab: a namespace on the underlay, with cni0 and a
// vrouter.
type Node struct {
	Netns
	spec topology.NodeSpec

	// mu guards router.
	mu     sync.Mutex
	router *harness.Router
}

// Spec is the node's part of the lab's spec: its underlay address and pod
// CIDRs.
func (n *Node) Spec() topology.NodeSpec { return n.spec }

// ConfigPath is the node's config file; the router re-reads it on change.
func (n *Node) ConfigPath() string {
	return filepath.Join(n.l.dir, n.name, n.name+".yaml")
}

// LogPath is the file the node's router writes its log to.
func (n *Node) LogPath() string { return filepath.Join(n.l.dir, n.name+".log") }

// AdminSocket is the node's router's admin socket.
func (n *Node) AdminSocket() string { return filepath.Join(n.l.dir, n.name+".sock") }

// WriteConfig replaces the node's config file with one made from opts,
// atomically: a running router applies it live.
func (n *Node) WriteConfig(opts harness.ConfigOptions) error {
	_, err := harness.WriteConfig(filepath.Dir(n.ConfigPath()), n.l.spec, n.name, opts)
	return err
}

// Start starts the node's router from its config file, with Options.Args
// and then args, and waits until it is up. The router's log, admin socket
// and state stay in Lab.Dir. It is an error if the router runs.
func (n *Node) Start(args ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.router != nil && !n.router.Exited() {
		return fmt.Errorf("router on %s is already running (pid %d)", n.name, n.router.PID())
	}
	argv := append([]string{"--admin-socket", n.AdminSocket(),
		"--state-dir", harness.StateDir(n.LogPath(), n.name)}, n.l.opts.Args...)
	r, err := harness.StartRouter(n.l.c, n.l.bin, n.name, n.ConfigPath(), n.LogPath(), append(argv, args...)...)
	if err != nil {
		return err
	}
	n.router = r
	return nil
}

// Stop stops the node's router (SIGTERM, then SIGKILL after 10 s) and
// returns its exit error; nil if it exited cleanly or was not running.
func (n *Node) Stop() error {
	n.mu.Lock()
	r := n.router
	n.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.Stop()
}

// Router is the node's router process, or nil before the first Start.
func (n *Node) Router() *harness.Router {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.router
}

// Vrouter runs `vrouter command --socket ADMIN-SOCKET args...` for one of
// the commands that ask a running router (status, ping, routes, peers,
// services, conns), and returns its output.
func (n *Node) Vrouter(command string, args ...string) (string, error) {
	argv := append([]string{command, "--socket", n.AdminSocket()}, args...)
	out, err := exec.CommandContext(n.l.t.Context(), n.l.bin, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vrouter %s on %s: %w\n%s", strings.Join(argv, " "), n.name, err, out)
	}
	return string(out), nil
}
