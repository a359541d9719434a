package integration

// Shared setup of the Service load-balancing tests (lb_*_test.go): the
// seed's two-node cluster (namespaces "vrlb-<tag>-<random>-…") with one
// `vrouter run` per node in nat mode and the Services each test declares.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32  router address 169.254.244.1
//	 │    cni0 10.244.0.1/24 ─ nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32  router address 169.254.244.1
//	      cni0 10.244.1.1/24 ─ nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
//	default/my-service    10.103.92.81:80/TCP -> 10.244.0.4 (master), 10.244.1.2, 10.244.1.3 (node)
//	kube-system/kube-dns  10.96.0.10:53/UDP   -> 10.244.0.2, 10.244.0.3 (master)
//
// The servers of topology (ServeHTTP, ServeTCPEcho, ServeUDPEcho) answer
// with their pod's name and the client address they saw, so a test tells
// which backend the router picked and whether the client IP survived.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// The seed cluster's nodes and pods as the LB tests use them; startLB
// checks them against topology.Seed.
const (
	lbMaster = "hostgw-master"
	lbWorker = "hostgw-node"
)

// lbPod is a pod of the seed cluster.
type lbPod struct {
	name string
	addr netip.Addr
	node string
}

var (
	lbNginxTh5pz   = lbPod{"nginx-th5pz", netip.MustParseAddr("10.244.0.4"), lbMaster}
	lbCorednsXx6mc = lbPod{"coredns-xx6mc", netip.MustParseAddr("10.244.0.2"), lbMaster}
	lbCoredns8qxfv = lbPod{"coredns-8qxfv", netip.MustParseAddr("10.244.0.3"), lbMaster}
	lbNginx4k7xw   = lbPod{"nginx-4k7xw", netip.MustParseAddr("10.244.1.2"), lbWorker}
	lbNginxJ6zwk   = lbPod{"nginx-j6zwk", netip.MustParseAddr("10.244.1.3"), lbWorker}

	// lbNginx are my-service's backends, lbCoreDNS kube-dns's.
	lbNginx   = []lbPod{lbNginxTh5pz, lbNginx4k7xw, lbNginxJ6zwk}
	lbCoreDNS = []lbPod{lbCorednsXx6mc, lbCoredns8qxfv}

	myServiceVIP = netip.MustParseAddr(harness.MyServiceIP)
	kubeDNSVIP   = netip.MustParseAddr(harness.KubeDNSIP)
	// lbRouterAddr is the router's own address (router.addresses
	// default): the source backends see on hairpin flows.
	lbRouterAddr = netip.MustParseAddr("169.254.244.1")
)

// lbPrefix starts the names of the LB tests' namespaces.
const lbPrefix = "vrlb-"

// lbEnv is the seed cluster with a router per node running a Service
// table. Each node's config file has a directory of its own, as on a real
// node (a router watches its file's directory):
//
//	dir/hostgw-master/hostgw-master.yaml ─▶ vrouter run ─▶ dir/hostgw-master.log
//	dir/hostgw-node/hostgw-node.yaml     ─▶ vrouter run ─▶ dir/hostgw-node.log
type lbEnv struct {
	t       *testing.T
	c       *topology.Cluster
	spec    topology.Spec
	dir     string
	routers map[string]*harness.Router
	// opts are lbOptions of startLBWith.
	opts lbOptions
	// outside are namespaces on the underlay that are not nodes: no
	// router, not a peer (clients from outside the cluster).
	outside []string
}

// startLB builds the seed cluster in namespaces "vrlb-<tag>-<random>-…",
// writes every node's config with services and starts the routers.
// Cleanup (last in, first out) stops the routers, failing the test on an
// unclean exit and printing their logs if it failed, then closes the
// cluster.
//
// The prefix is not testPrefix: TestMain removes every "vrit-" namespace
// when it starts, including those of a test binary already running, and
// a random part keeps two runs of one test apart. A crashed run's
// leftovers go with topology.Cleanup("vrlb-").
//
// outside adds hosts on the underlay that are not nodes (no pod CIDR, no
// router, nobody's peer): clients from outside the cluster.
func startLB(t *testing.T, tag string, services []configs.ServiceSpec, outside ...topology.NodeSpec) *lbEnv {
	t.Helper()
	return startLBWith(t, tag, lbOptions{}, services, outside...)
}

// lbOptions shape startLBWith's cluster beyond its Services.
type lbOptions struct {
	// LB is every node's lb section.
	LB configs.LBSpec
	// RouterArgs are added to every `vrouter run`.
	RouterArgs []string
}

// startLBWith is startLB with every node's lb section and more router
// flags.
func startLBWith(t *testing.T, tag string, opts lbOptions, services []configs.ServiceSpec, outside ...topology.NodeSpec) *lbEnv {
	t.Helper()
	requireRoot(t)
	spec := topology.Seed()
	spec.Nodes = append(spec.Nodes, outside...)
	var rnd [3]byte
	rand.Read(rnd[:])
	spec.Prefix = fmt.Sprintf("%s%s-%x-", lbPrefix, tag, rnd)
	for _, p := range append(slices.Clone(lbNginx), lbCoreDNS...) {
		if sp, n, ok := spec.Pod(p.name); !ok || sp.Addr != p.addr || n.Name != p.node {
			t.Fatalf("topology.Seed() pod %s is %v on %s, want %v on %s", p.name, sp.Addr, n.Name, p.addr, p.node)
		}
	}
	e := &lbEnv{t: t, c: topology.BuildT(t, spec), spec: spec, dir: t.TempDir(), routers: map[string]*harness.Router{}, opts: opts}
	for _, n := range outside {
		e.outside = append(e.outside, n.Name)
	}
	e.setServices(services...)
	t.Cleanup(e.stop)
	for _, n := range spec.Nodes {
		if slices.Contains(e.outside, n.Name) {
			continue
		}
		e.startRouter(n.Name)
	}
	return e
}

// startRouter starts node's router and waits until it is up. Its flow
// file lives in the test's directory (harness.StateDir), so a router
// started again on the node adopts it.
func (e *lbEnv) startRouter(node string) *harness.Router {
	e.t.Helper()
	args := append([]string{"--state-dir", harness.StateDir(e.logPath(node), node)}, e.opts.RouterArgs...)
	r, err := harness.StartRouter(e.c, vrouterBin, node, e.configPath(node), e.logPath(node), args...)
	if err != nil {
		e.t.Fatalf("harness.StartRouter(%s): %v", node, err)
	}
	e.routers[node] = r
	return r
}

func (e *lbEnv) configPath(node string) string {
	return filepath.Join(e.dir, node, node+".yaml")
}

func (e *lbEnv) logPath(node string) string { return filepath.Join(e.dir, node+".log") }

// setServices (re)writes every node's config file with services. Running
// routers see the change and apply it within about 100 ms.
func (e *lbEnv) setServices(services ...configs.ServiceSpec) {
	e.t.Helper()
	for _, n := range e.spec.Nodes {
		if slices.Contains(e.outside, n.Name) {
			continue
		}
		dir := filepath.Dir(e.configPath(n.Name))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			e.t.Fatal(err)
		}
		if _, err := harness.WriteConfig(dir, e.spec, n.Name, harness.ConfigOptions{Services: services, Exclude: e.outside, LB: e.opts.LB}); err != nil {
			e.t.Fatalf("harness.WriteConfig(%s): %v", n.Name, err)
		}
	}
}

// stop stops the routers and prints their logs if the test failed.
func (e *lbEnv) stop() {
	for _, n := range e.spec.Nodes {
		r := e.routers[n.Name]
		if r == nil {
			continue
		}
		if err := r.Stop(); err != nil {
			e.t.Errorf("router on %s (pid %d): Stop: %v", n.Name, r.PID(), err)
		}
		if e.t.Failed() {
			if b, err := os.ReadFile(r.Log); err == nil {
				e.t.Logf("--- router log of %s ---\n%s", n.Name, b)
			}
		}
	}
}

// requireRouters fails the test if a router has exited.
func (e *lbEnv) requireRouters() {
	e.t.Helper()
	for _, n := range e.spec.Nodes {
		if r := e.routers[n.Name]; r != nil && r.Exited() {
			e.t.Fatalf("router on %s (pid %d) exited: %v", n.Name, r.PID(), r.Stop())
		}
	}
}

// serveOn starts one server per pod with start (c.ServeHTTP, ServeTCPEcho
// or ServeUDPEcho) on the pod's address and port. The cluster closes them.
func (e *lbEnv) serveOn(start func(ns, addr string) (*topology.Server, error), port uint16, pods ...lbPod) {
	e.t.Helper()
	for _, p := range pods {
		if _, err := start(p.name, netip.AddrPortFrom(p.addr, port).String()); err != nil {
			e.t.Fatalf("serve %s:%d on %s: %v", p.addr, port, p.name, err)
		}
	}
}

// sourceFor returns the source address the kernel of namespace ns uses
// towards dst: a pod's own address, or for a node the address of its vr0.
func (e *lbEnv) sourceFor(ns string, dst netip.Addr) netip.Addr {
	e.t.Helper()
	var src netip.Addr
	err := e.c.Do(ns, func() error {
		rs, err := netlink.RouteGet(dst.AsSlice())
		if err != nil {
			return err
		}
		if len(rs) == 0 || rs[0].Src == nil {
			return fmt.Errorf("no route with a source address to %v", dst)
		}
		src, _ = netip.AddrFromSlice(rs[0].Src.To4())
		return nil
	})
	if err != nil {
		e.t.Fatalf("ip route get %v in %s: %v", dst, ns, err)
	}
	return src
}

// nodeOf returns the node of namespace ns (a pod or a node).
func (e *lbEnv) nodeOf(ns string) string {
	if _, ok := e.spec.Node(ns); ok {
		return ns
	}
	_, n, _ := e.spec.Pod(ns)
	return n.Name
}

// httpGet runs c.HTTPGet with a 5 s timeout.
func (e *lbEnv) httpGet(from, url string) (topology.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.c.HTTPGet(ctx, from, url)
}

// exchange runs c.TCPExchange with a 5 s timeout and checks the echo.
func (e *lbEnv) exchange(from string, to netip.AddrPort, payload string) (topology.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := e.c.TCPExchange(ctx, from, to, []byte(payload))
	if err == nil && string(rep.Payload) != payload {
		err = fmt.Errorf("tcp exchange %s -> %v: echo %q, want %q", from, to, rep.Payload, payload)
	}
	return rep, err
}

// udpExchange runs c.UDPExchange with a timeout and checks the echo.
func (e *lbEnv) udpExchange(from string, to netip.AddrPort, payload string, timeout time.Duration) (topology.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep, err := e.c.UDPExchange(ctx, from, to, []byte(payload))
	if err == nil && string(rep.Payload) != payload {
		err = fmt.Errorf("udp exchange %s -> %v: echo %q, want %q", from, to, rep.Payload, payload)
	}
	return rep, err
}

// dialTCP connects from namespace ns to addr and returns the connection
// and how long connect(2) took.
func (e *lbEnv) dialTCP(ns string, addr netip.AddrPort, timeout time.Duration) (*net.TCPConn, time.Duration, error) {
	var (
		conn net.Conn
		took time.Duration
	)
	err := e.c.Do(ns, func() error {
		d := net.Dialer{Timeout: timeout}
		start := time.Now()
		var err error
		conn, err = d.Dial("tcp4", addr.String())
		took = time.Since(start)
		return err
	})
	if err != nil {
		return nil, took, err
	}
	return conn.(*net.TCPConn), took, nil
}

// dialFrom connects from local (bound with SO_REUSEADDR, so that several
// connections may share it) in namespace ns to a ServeTCPEcho server at
// addr, and reads the server's greeting.
func (e *lbEnv) dialFrom(ns string, local, addr netip.AddrPort, timeout time.Duration) (net.Conn, topology.Reply, error) {
	var conn net.Conn
	err := e.c.Do(ns, func() error {
		d := net.Dialer{
			Timeout:   timeout,
			LocalAddr: net.TCPAddrFromAddrPort(local),
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				})
				return errors.Join(err, serr)
			},
		}
		var err error
		conn, err = d.Dial("tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, topology.Reply{}, err
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	server, client, err := readGreeting(conn)
	if err != nil {
		conn.Close()
		return nil, topology.Reply{}, err
	}
	return conn, topology.Reply{Server: server, Client: client}, nil
}

// readGreeting reads the "<identity> <client ip:port>\n" line a
// ServeTCPEcho server sends on accept, a byte at a time so that nothing
// after it is consumed.
func readGreeting(conn net.Conn) (server string, client netip.AddrPort, err error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := conn.Read(b); err != nil {
			return "", client, fmt.Errorf("read greeting (so far %q): %w", line, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	id, c, ok := strings.Cut(string(line), " ")
	client, err = netip.ParseAddrPort(c)
	if !ok || err != nil {
		return "", client, fmt.Errorf("greeting %q: want \"<identity> <client ip:port>\"", line)
	}
	return id, client, nil
}

// lbEcho sends msg on a connection to a ServeTCPEcho server and waits up
// to 5 s for the echo.
func lbEcho(conn net.Conn, msg string) error {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("%v -> %v: write %q: %w", conn.LocalAddr(), conn.RemoteAddr(), msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return fmt.Errorf("%v -> %v: read echo of %q (got %q): %w", conn.LocalAddr(), conn.RemoteAddr(), msg, buf, err)
	}
	if string(buf) != msg {
		return fmt.Errorf("%v -> %v: echoed %q, want %q", conn.LocalAddr(), conn.RemoteAddr(), buf, msg)
	}
	return nil
}

// udpSocket opens a UDP socket in namespace ns bound to local (port 0:
// any) and connected to remote. The test's cleanup closes it.
func (e *lbEnv) udpSocket(ns string, local, remote netip.AddrPort) *net.UDPConn {
	e.t.Helper()
	var conn *net.UDPConn
	err := e.c.Do(ns, func() error {
		var err error
		conn, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
		return err
	})
	if err != nil {
		e.t.Fatalf("udp socket %v -> %v in %s: %v", local, remote, ns, err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// udpListen opens an unconnected UDP socket in namespace ns bound to
// local. The test's cleanup closes it.
func (e *lbEnv) udpListen(ns string, local netip.AddrPort) *net.UDPConn {
	e.t.Helper()
	return listenUDPIn(e.t, e.c, ns, local)
}

// lbQuery sends payload on conn, a UDP socket connected to a ServeUDPEcho
// server or a VIP in front of some, and waits up to timeout for the
// answer to it (answers to earlier payloads are skipped). It returns the
// identity of the server that answered.
func lbQuery(conn *net.UDPConn, payload string, timeout time.Duration) (string, error) {
	if _, err := conn.Write([]byte(payload)); err != nil {
		return "", err
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return "", err
		}
		line, got, ok := strings.Cut(string(buf[:n]), "\n")
		id, _, ok2 := strings.Cut(line, " ")
		if !ok || !ok2 {
			return "", fmt.Errorf("udp answer %q: want \"<identity> <client>\\n<payload>\"", buf[:n])
		}
		if got == payload {
			return id, nil
		}
	}
}

// lbParallel runs fn(0) … fn(n-1) on workers goroutines and returns how
// many failed, with the first few errors.
func lbParallel(workers, n int, fn func(i int) error) (failed int, errs []error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					failed++
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return failed, errs
}

// lbCounter counts answers per backend; safe for concurrent use.
type lbCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *lbCounter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *lbCounter) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// podNames lists the names of pods.
func podNames(pods []lbPod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.name)
	}
	return out
}

// checkUniform fails t unless counts, of n draws, name only backends and
// give each a count within 5 standard deviations of a uniform pick's
// n/len(backends). A fair picker fails this about once in 1.7 million
// runs per backend.
func checkUniform(t *testing.T, what string, counts map[string]int, n int, backends []lbPod) {
	t.Helper()
	k := float64(len(backends))
	mean := float64(n) / k
	sigma := math.Sqrt(float64(n) * (1 / k) * (1 - 1/k))
	lo, hi := int(math.Ceil(mean-5*sigma)), int(math.Floor(mean+5*sigma))
	names := podNames(backends)
	for b := range counts {
		if !slices.Contains(names, b) {
			t.Errorf("%s: answered by %q, want only %v; counts %v", what, b, names, counts)
		}
	}
	for _, b := range names {
		if c := counts[b]; c < lo || c > hi {
			t.Errorf("%s: %s answered %d of %d, want %d..%d (n/%d ± 5σ, σ = %.1f); counts %v", what, b, c, n, lo, hi, len(backends), sigma, counts)
		}
	}
}

// Service builders: every Service the LB tests use is one of these,
// changed by the test's functions (myService(func(s *configs.ServiceSpec){...})).

// myService is the seed's default/my-service: 10.103.92.81:80/TCP, picker
// random, backends the three nginx pods.
func myService(mods ...func(*configs.ServiceSpec)) configs.ServiceSpec {
	s := harness.SeedServices("")[0]
	s.Endpoints = slices.Clone(s.Endpoints)
	for _, m := range mods {
		m(&s)
	}
	return s
}

// kubeDNS is the seed's kube-system/kube-dns: 10.96.0.10, 53/UDP, 53/TCP
// and 9153/TCP, backends the two coredns pods.
func kubeDNS(mods ...func(*configs.ServiceSpec)) configs.ServiceSpec {
	s := harness.SeedServices("")[1]
	s.Endpoints = slices.Clone(s.Endpoints)
	for _, m := range mods {
		m(&s)
	}
	return s
}

// dualService returns Service default/name at vip with ports 80/TCP
// ("tcp") and 53/UDP ("udp"), with pods as ready endpoints, changed by
// mods.
func dualService(name string, vip netip.Addr, pods []lbPod, mods ...func(*configs.ServiceSpec)) configs.ServiceSpec {
	s := configs.ServiceSpec{
		Namespace:  "default",
		Name:       name,
		ClusterIPs: []string{vip.String()},
		Ports: []configs.ServicePortSpec{
			{Name: "tcp", Port: 80, Protocol: "TCP"},
			{Name: "udp", Port: 53, Protocol: "UDP"},
		},
		Endpoints: lbEndpoints(pods...),
	}
	for _, m := range mods {
		m(&s)
	}
	return s
}

// lbEndpoints lists pods as ready endpoints on their nodes.
func lbEndpoints(pods ...lbPod) []configs.EndpointSpec {
	out := []configs.EndpointSpec{}
	for _, p := range pods {
		out = append(out, configs.EndpointSpec{Addresses: []string{p.addr.String()}, NodeName: p.node})
	}
	return out
}

// withEndpoints makes pods a Service's endpoints (none: no endpoints).
func withEndpoints(pods ...lbPod) func(*configs.ServiceSpec) {
	return func(s *configs.ServiceSpec) { s.Endpoints = lbEndpoints(pods...) }
}

// withConditions sets the EndpointSlice conditions of every endpoint.
func withConditions(ready, serving, terminating bool) func(*configs.ServiceSpec) {
	return func(s *configs.ServiceSpec) {
		for i := range s.Endpoints {
			ep := &s.Endpoints[i]
			ep.Ready, ep.Serving, ep.Terminating = &ready, &serving, terminating
		}
	}
}
