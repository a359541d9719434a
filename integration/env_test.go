package integration

// The helpers every test uses. An env is one test's cluster plus a router
// per node, all made by the test and removed when it ends:
//
//	t.TempDir()/                                  netns vrit-<pid>-<name>-<node>
//	  hostgw-master/hostgw-master.yaml  ──(--config)──▶ vrouter run   (harness.StartRouter)
//	  hostgw-master.log                 ◀─(stdout+err)─┘
//	  hostgw-node/hostgw-node.yaml      ──(--config)──▶ vrouter run
//	  hostgw-node.log                   ◀──────────────┘
//
// Each config file has a directory of its own, as on a real node: a router
// watches its file's directory, and any event there (another node's file
// being replaced, a log line) makes it read the file again.
//
// Cleanup order (t.Cleanup is last in, first out): routers are stopped
// (their logs printed if the test failed), then the cluster is closed, then
// the directory removed.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// env is one test's cluster with its routers.
type env struct {
	t    *testing.T
	c    *topology.Cluster
	spec topology.Spec
	dir  string // config files and router logs
	// opts shape the config files writeConfig writes.
	opts harness.ConfigOptions
	// logLevel is passed to every router as --log-level.
	logLevel string
	routers  map[string]*harness.Router
}

// newEnv builds spec in namespaces prefixed "vrit-<pid>-<name>-" and writes
// every node's config file with opts. It starts no routers: see startAll.
func newEnv(t *testing.T, name string, spec topology.Spec, opts harness.ConfigOptions) *env {
	t.Helper()
	requireRoot(t)
	spec.Prefix = runPrefix + name + "-"
	if err := topology.Cleanup(spec.Prefix); err != nil {
		t.Fatalf("topology.Cleanup(%q): %v", spec.Prefix, err)
	}
	checkPlan(t, spec)
	e := &env{t: t, spec: spec, dir: t.TempDir(), opts: opts, logLevel: "info", routers: map[string]*harness.Router{}}
	e.c = topology.BuildT(t, spec)
	t.Cleanup(e.stopAll)
	for _, n := range spec.Nodes {
		e.writeConfig(n.Name)
	}
	return e
}

// checkPlan fails t if spec no longer matches the address plan the tests
// are written against.
func checkPlan(t *testing.T, spec topology.Spec) {
	t.Helper()
	for _, p := range []pod{nginxTh5pz, corednsXx6mc, coredns8qxfv, nginx4k7xw, nginxJ6zwk, busybox} {
		sp, n, ok := spec.Pod(p.name)
		if !ok {
			if p.node == thirdNode {
				continue // not in Seed
			}
			t.Fatalf("spec has no pod %s", p.name)
		}
		if sp.Addr != p.addr || n.Name != p.node || n.Underlay != underlay(p.node) || n.Gateway() != gateway(p.node) {
			t.Fatalf("spec pod %s is %v on %s (%v, gateway %v), want %v on %s (%v, gateway %v)",
				p.name, sp.Addr, n.Name, n.Underlay, n.Gateway(), p.addr, p.node, underlay(p.node), gateway(p.node))
		}
	}
}

// configDir is the directory of node's config file.
func (e *env) configDir(nodeName string) string { return filepath.Join(e.dir, nodeName) }

// configPath is node's config file.
func (e *env) configPath(nodeName string) string {
	return filepath.Join(e.configDir(nodeName), nodeName+".yaml")
}

// logPath is node's router log.
func (e *env) logPath(nodeName string) string { return filepath.Join(e.dir, nodeName+".log") }

// writeConfig (re)writes node's config file from e.opts, atomically.
func (e *env) writeConfig(nodeName string) {
	e.t.Helper()
	if err := os.MkdirAll(e.configDir(nodeName), 0o755); err != nil {
		e.t.Fatal(err)
	}
	path, err := harness.WriteConfig(e.configDir(nodeName), e.spec, nodeName, e.opts)
	if err != nil {
		e.t.Fatalf("harness.WriteConfig(%s): %v", nodeName, err)
	}
	if path != e.configPath(nodeName) {
		e.t.Fatalf("harness.WriteConfig(%s) wrote %s, want %s", nodeName, path, e.configPath(nodeName))
	}
}

// start starts node's router from its config file and waits until it is up.
func (e *env) start(nodeName string) *harness.Router {
	e.t.Helper()
	if r := e.routers[nodeName]; r != nil && !r.Exited() {
		e.t.Fatalf("router on %s is already running (pid %d)", nodeName, r.PID())
	}
	r, err := harness.StartRouter(e.c, vrouterBin, nodeName, e.configPath(nodeName), e.logPath(nodeName), "--log-level", e.logLevel,
		"--state-dir", harness.StateDir(e.logPath(nodeName), nodeName))
	if err != nil {
		e.t.Fatalf("harness.StartRouter(%s): %v", nodeName, err)
	}
	e.routers[nodeName] = r
	return r
}

// startAll starts a router on every node.
func (e *env) startAll() {
	e.t.Helper()
	for _, n := range e.spec.Nodes {
		e.start(n.Name)
	}
}

// router returns node's router.
func (e *env) router(nodeName string) *harness.Router {
	e.t.Helper()
	r := e.routers[nodeName]
	if r == nil {
		e.t.Fatalf("no router started on %s", nodeName)
	}
	return r
}

// stopAll stops every router, reporting unclean exits, and prints the
// routers' logs if the test failed.
func (e *env) stopAll() {
	for _, n := range e.spec.Nodes {
		r := e.routers[n.Name]
		if r == nil {
			continue
		}
		if err := r.Stop(); err != nil {
			e.t.Errorf("router on %s (pid %d): Stop: %v", n.Name, r.PID(), err)
		}
	}
	if e.t.Failed() {
		for _, n := range e.spec.Nodes {
			if b, err := os.ReadFile(e.logPath(n.Name)); err == nil {
				e.t.Logf("--- router log of %s ---\n%s", n.Name, b)
			}
		}
	}
}

// logLines counts the lines in node's router log.
func (e *env) logLines(nodeName string) int {
	e.t.Helper()
	b, err := os.ReadFile(e.logPath(nodeName))
	if err != nil {
		e.t.Fatalf("read router log: %v", err)
	}
	return bytes.Count(b, []byte("\n"))
}

// logCount counts the lines in node's router log that contain s.
func (e *env) logCount(nodeName, s string) int {
	e.t.Helper()
	b, err := os.ReadFile(e.logPath(nodeName))
	if err != nil {
		e.t.Fatalf("read router log: %v", err)
	}
	return bytes.Count(b, []byte(s))
}

// eventually calls f until it returns nil, or fails t with f's last error
// once timeout has passed. It returns how long it took.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := f()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v; last attempt: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pingOK pings dst from namespace from and checks that every probe is
// answered with TTL wantTTL.
func (e *env) pingOK(from string, dst netip.Addr, wantTTL int) error {
	res, err := e.c.Ping(from, dst, 2, 2*time.Second)
	if err != nil {
		return err
	}
	if res.Received != res.Sent || res.TTL != wantTTL {
		return fmt.Errorf("Ping(%s -> %v) = %s, want every probe answered with ttl %d", from, dst, res, wantTTL)
	}
	return nil
}

// mustPing is pingOK failing t.
func (e *env) mustPing(from string, dst netip.Addr, wantTTL int) {
	e.t.Helper()
	if err := e.pingOK(from, dst, wantTTL); err != nil {
		e.t.Error(err)
	}
}

// reachable makes one quick probe and reports nil if it was answered.
func (e *env) reachable(from string, dst netip.Addr) error {
	res, err := e.c.Ping(from, dst, 1, 300*time.Millisecond)
	if err != nil {
		return err
	}
	if res.Received != 1 {
		return fmt.Errorf("Ping(%s -> %v) = %s, want an answer", from, dst, res)
	}
	return nil
}

// unreachableWith makes one probe and reports nil if it was answered with
// exactly the ICMP error want (as topology.PingResult.Errors spells it).
func (e *env) unreachableWith(from string, dst netip.Addr, want string) error {
	res, err := e.c.Ping(from, dst, 1, time.Second)
	if err != nil {
		return err
	}
	if res.Received != 0 || !slices.Equal(res.Errors, []string{want}) {
		return fmt.Errorf("Ping(%s -> %v) = %s, want no answer and the error %q", from, dst, res, want)
	}
	return nil
}

// lost makes one probe with a short timeout and reports nil if nothing
// answered it.
func (e *env) lost(from string, dst netip.Addr) error {
	res, err := e.c.Ping(from, dst, 1, 500*time.Millisecond)
	if err != nil {
		return err
	}
	if res.Received != 0 {
		return fmt.Errorf("Ping(%s -> %v) = %s, want no answer", from, dst, res)
	}
	return nil
}

// checkReply checks who answered an exchange and which client address it
// saw: the client pod's own address, as no NAT is on the way.
func checkReply(rep topology.Reply, to, from pod) error {
	if rep.Server != to.name {
		return fmt.Errorf("answered by %q, want %q", rep.Server, to.name)
	}
	if rep.Client.Addr() != from.addr {
		return fmt.Errorf("server %s saw client %v, want %v", rep.Server, rep.Client, from.addr)
	}
	return nil
}

// tcpEcho exchanges a message with the TCP echo server of pod to on port
// and checks the answer.
func (e *env) tcpEcho(from, to pod, port uint16) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := fmt.Sprintf("tcp %s -> %s", from.name, to.name)
	rep, err := e.c.TCPExchange(ctx, from.name, netip.AddrPortFrom(to.addr, port), []byte(msg))
	if err != nil {
		return err
	}
	if string(rep.Payload) != msg {
		return fmt.Errorf("tcp %s -> %s: echoed %q, want %q", from.name, to.name, rep.Payload, msg)
	}
	return checkReply(rep, to, from)
}

// udpEcho exchanges a datagram with the UDP echo server of pod to on port
// and checks the answer. A lost datagram is tried again, twice.
func (e *env) udpEcho(from, to pod, port uint16) error {
	msg := fmt.Sprintf("udp %s -> %s", from.name, to.name)
	var err error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var rep topology.Reply
		rep, err = e.c.UDPExchange(ctx, from.name, netip.AddrPortFrom(to.addr, port), []byte(msg))
		cancel()
		if err != nil {
			continue
		}
		if string(rep.Payload) != msg {
			return fmt.Errorf("udp %s -> %s: echoed %q, want %q", from.name, to.name, rep.Payload, msg)
		}
		return checkReply(rep, to, from)
	}
	return err
}

// serve starts a TCP echo server, a UDP echo server (both on port 7) and an
// HTTP server (port 80) on each pod.
func (e *env) serve(pods ...pod) {
	e.t.Helper()
	for _, p := range pods {
		for _, start := range []func(string, string) (*topology.Server, error){e.c.ServeTCPEcho, e.c.ServeUDPEcho} {
			if _, err := start(p.name, netip.AddrPortFrom(p.addr, 7).String()); err != nil {
				e.t.Fatalf("start echo server on %s: %v", p.name, err)
			}
		}
		if _, err := e.c.ServeHTTP(p.name, netip.AddrPortFrom(p.addr, 80).String()); err != nil {
			e.t.Fatalf("start HTTP server on %s: %v", p.name, err)
		}
	}
}

// session is a long-lived TCP connection to a ServeTCPEcho server.
type session struct {
	conn net.Conn
	r    *bufio.Reader
	desc string
}

// openSession connects from pod from to the echo server of pod to on port
// and checks the server's greeting.
func (e *env) openSession(from, to pod, port uint16) *session {
	e.t.Helper()
	addr := netip.AddrPortFrom(to.addr, port)
	var conn net.Conn
	err := e.c.Do(from.name, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
		return err
	})
	if err != nil {
		e.t.Fatalf("dial %v from %s: %v", addr, from.name, err)
	}
	e.t.Cleanup(func() { conn.Close() })
	s := &session{conn: conn, r: bufio.NewReader(conn), desc: fmt.Sprintf("tcp %s -> %s %v", from.name, to.name, addr)}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	greeting, err := s.r.ReadString('\n')
	if err != nil {
		e.t.Fatalf("%s: read greeting: %v", s.desc, err)
	}
	want := fmt.Sprintf("%s %s\n", to.name, conn.LocalAddr())
	if greeting != want {
		e.t.Fatalf("%s: greeting %q, want %q (server identity and this client's address)", s.desc, greeting, want)
	}
	return s
}

// echo sends one line and waits up to timeout for it to come back.
func (s *session) echo(line string, timeout time.Duration) error {
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.conn, "%s\n", line); err != nil {
		return fmt.Errorf("%s: send %q: %w", s.desc, line, err)
	}
	got, err := s.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: read echo of %q: %w", s.desc, line, err)
	}
	if got != line+"\n" {
		return fmt.Errorf("%s: echoed %q, want %q", s.desc, got, line+"\n")
	}
	return nil
}

// command runs name in namespace ns and returns its combined output and
// the error of running it (an *exec.ExitError for a non-zero exit).
func (e *env) command(ns, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := e.c.CommandContext(ctx, ns, name, args...).CombinedOutput()
	return string(out), err
}
