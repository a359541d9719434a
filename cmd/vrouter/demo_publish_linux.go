package main

// The rootless demo publishes a node port on the host. Its outer process,
// in the host's network namespace, serves a publish socket (vrouter
// publish's) for the routers inside and checks the node port from the
// host's side through sockets it made there:
//
//	outer process (host netns, this user)              inner process (user+net+mount namespace)
//	  publish.Server  ◀──$TMPDIR/vrouter-demo-*/publish.sock── hostgw-master's router (--publish-socket)
//	  TCP sockets of the host's netns ──fds 3…, unconnected──▶ hostDialer: connect(127.0.0.1:<nodePort>)
//
// A socket is of the network namespace it was made in, wherever its
// descriptor goes: the inner process cannot enter the host's namespace,
// but a connect(2) on a socket made there is the host's connection.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/publish"
	"github.com/vrouter/vrouter/integration/topology"
)

// The environment of the rootless demo's inner process.
const (
	// demoPublishEnv is the publish socket the outer process serves.
	demoPublishEnv = "VROUTER_DEMO_PUBLISH_SOCKET"
	// demoNodePortEnv is the node port the outer process found free on
	// the host (rootless demos run side by side, each with its own).
	demoNodePortEnv = "VROUTER_DEMO_NODE_PORT"
	// demoHostSocketsEnv is how many sockets of the host's network
	// namespace the inner process got, as descriptors 3, 4, ...
	demoHostSocketsEnv = "VROUTER_DEMO_HOST_SOCKETS"
)

// demoNodePort is my-service's node port in a demo as root, where each
// router binds it in its own node's namespace.
const demoNodePort = 30080

// hostRequests is how many requests the demo sends to the node port from
// the host: one socket each.
const hostRequests = 3

// demoPublisher is the outer process's side of a rootless demo.
type demoPublisher struct {
	dir      string // a demo directory (--down finds it), holding the socket
	server   *publish.Server
	cancel   context.CancelFunc
	done     chan error
	nodePort uint16
	sockets  []*os.File // for the inner process; closed here once it has them
}

// startPublisher serves a publish socket in a demo directory of its own,
// whose demo.pid names this process, so that --down stops it (and through
// it the inner demo) or, if it was killed, removes the directory. It
// also picks a free node port on the host and makes the host's sockets
// for the checks.
func startPublisher() (_ *demoPublisher, err error) {
	p := &demoPublisher{}
	p.dir, err = os.MkdirTemp("", demoDirPattern)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	if err := os.WriteFile(filepath.Join(p.dir, demoPIDFile), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return p, err
	}
	if p.nodePort, err = freeHostNodePort(); err != nil {
		return p, err
	}
	// The host's node port only: the helper publishes nothing else.
	p.server, err = publish.Listen(filepath.Join(p.dir, "publish.sock"), zap.NewNop(),
		publish.Options{Ports: []publish.PortRange{{Min: p.nodePort, Max: p.nodePort}}})
	if err != nil {
		return p, err
	}
	for range hostRequests {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return p, fmt.Errorf("host socket: %w", err)
		}
		p.sockets = append(p.sockets, os.NewFile(uintptr(fd), "host socket"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() { p.done <- p.server.Serve(ctx) }()
	return p, nil
}

// env is the inner process's environment for p; its ExtraFiles are
// p.sockets.
func (p *demoPublisher) env() []string {
	return []string{
		demoPublishEnv + "=" + p.server.Path(),
		fmt.Sprintf("%s=%d", demoNodePortEnv, p.nodePort),
		fmt.Sprintf("%s=%d", demoHostSocketsEnv, len(p.sockets)),
	}
}

// closeSockets closes this process's copies of the host's sockets, once
// the inner process has its own.
func (p *demoPublisher) closeSockets() {
	for _, f := range p.sockets {
		f.Close()
	}
	p.sockets = nil
}

// stop stops serving and removes the directory. The sockets the routers
// got stay theirs: they close with them.
func (p *demoPublisher) stop() error {
	p.closeSockets()
	var errs []error
	if p.cancel != nil {
		p.cancel()
		errs = append(errs, <-p.done)
	} else if p.server != nil {
		errs = append(errs, p.server.Close())
	}
	if p.dir != "" {
		errs = append(errs, os.RemoveAll(p.dir))
	}
	return errors.Join(errs...)
}

// freeHostNodePort returns a port of the node-port range free on the
// host's loopback, from 30080 up.
func freeHostNodePort() (uint16, error) {
	r := publish.NodePortRange
	for port := uint16(demoNodePort); port <= r.Max; port++ {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d on 127.0.0.1 for the demo's node port", demoNodePort, r.Max)
}

// hostDialer dials from the host's network namespace with the sockets
// the outer process made there, one connection each. It is the inner
// process's; takeHostSockets makes it.
type hostDialer struct {
	// mu guards files.
	mu    sync.Mutex
	files []*os.File
}

// takeHostSockets takes the descriptors the outer process passed (3, 4,
// ...), and marks them close-on-exec so that no router or nsenter the
// demo starts inherits them. It runs before the demo starts anything.
func takeHostSockets() (*hostDialer, error) {
	v := os.Getenv(demoHostSocketsEnv)
	if v == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("%s=%q: want a count of descriptors", demoHostSocketsEnv, v)
	}
	h := &hostDialer{}
	for i := range n {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		h.files = append(h.files, os.NewFile(uintptr(fd), "host socket"))
	}
	return h, nil
}

// DialContext connects one of the host's sockets to addr, an IPv4
// address and port, within 5 seconds.
func (h *hostDialer) DialContext(_ context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || network != "tcp" || !ap.Addr().Is4() {
		return nil, fmt.Errorf("dial %s %s from the host: want tcp to an IPv4 address and port", network, addr)
	}
	h.mu.Lock()
	if len(h.files) == 0 {
		h.mu.Unlock()
		return nil, fmt.Errorf("dial %s from the host: no socket of the host's left", addr)
	}
	f := h.files[0]
	h.files = h.files[1:]
	h.mu.Unlock()
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cerr error
	err = rc.Control(func(fd uintptr) {
		// Blocking: a connect to loopback is answered at once; the
		// timeout only bounds a full backlog.
		tv := syscall.NsecToTimeval((5 * time.Second).Nanoseconds())
		if cerr = syscall.SetsockoptTimeval(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); cerr != nil {
			return
		}
		cerr = syscall.Connect(int(fd), &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	})
	if err = errors.Join(err, cerr); err != nil {
		return nil, fmt.Errorf("dial %s from the host: %w", addr, err)
	}
	return net.FileConn(f)
}

// Close closes the sockets left.
func (h *hostDialer) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.files {
		f.Close()
	}
	h.files = nil
}

// takeOuter takes what a rootless demo's outer process passed: the
// publish socket, the node port and the host's sockets.
func (d *demo) takeOuter() error {
	if os.Getenv(demoUserNSEnv) == "" {
		return nil
	}
	d.publishSocket = os.Getenv(demoPublishEnv)
	if v := os.Getenv(demoNodePortEnv); v != "" {
		port, err := strconv.ParseUint(v, 10, 16)
		if err != nil || port == 0 {
			return fmt.Errorf("%s=%q: want a port", demoNodePortEnv, v)
		}
		d.nodePort = uint16(port)
	}
	h, err := takeHostSockets()
	d.host = h
	return err
}

// nodePortChecks curls my-service's node port on 127.0.0.1: in a rootless
// demo from the host, where hostgw-master's router published it through
// the outer process's publish socket; as root from hostgw-master's
// namespace, where its router bound it. Either way the router relays each
// connection to a backend, which sees the node, not the client.
func (d *demo) nodePortChecks(ctx context.Context, spec topology.Spec) {
	url := fmt.Sprintf("http://127.0.0.1:%d/", d.nodePort)
	node := spec.Nodes[0].Name
	where := "on " + node
	get := func(ctx context.Context) (topology.Reply, error) { return d.c.HTTPGet(ctx, node, url) }
	if d.host != nil {
		where = "from the host"
		get = func(ctx context.Context) (topology.Reply, error) { return httpGetVia(ctx, d.host.DialContext, url) }
	}
	counts := map[string]int{}
	var saw []string
	var err error
	for range hostRequests {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rep, gerr := get(cctx)
		cancel()
		if gerr != nil {
			err = gerr
			break
		}
		if !strings.HasPrefix(rep.Server, "nginx-") {
			err = fmt.Errorf("answered by %q, want a backend of my-service", rep.Server)
			break
		}
		counts[rep.Server]++
		if a := rep.Client.Addr().String(); !slices.Contains(saw, a) {
			saw = append(saw, a)
		}
	}
	var parts []string
	for _, b := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", b, counts[b]))
	}
	slices.Sort(saw)
	detail := fmt.Sprintf("%s (saw %s: the node)", strings.Join(parts, ", "), strings.Join(saw, " "))
	d.check(fmt.Sprintf("curl %s x%d %s", url, hostRequests, where), detail, err)
}

// httpGetVia is topology's HTTPGet through dial.
func httpGetVia(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), url string) (topology.Reply, error) {
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return topology.Reply{}, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return topology.Reply{}, fmt.Errorf("http get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return topology.Reply{}, fmt.Errorf("http get %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return topology.Reply{}, fmt.Errorf("http get %s: status %s, body %q", url, resp.Status, body)
	}
	r := topology.Reply{Server: strings.TrimSpace(string(body)), Payload: body}
	r.Client, _ = netip.ParseAddrPort(resp.Header.Get(topology.ClientAddrHeader))
	return r, nil
}

// publishRunFlags are the flags of `vrouter run` that publish its node
// ports through the helper at socket, on the host's loopback.
func publishRunFlags(socket string) []string {
	return []string{"--publish-socket", socket, "--publish-address", "127.0.0.1"}
}

// nodePortHeading says where the node port is served, as the check
// expects it.
func (d *demo) nodePortHeading(spec topology.Spec) string {
	if d.host != nil {
		return fmt.Sprintf("my-service's node port %d: %s's router published it on the host's 127.0.0.1 through this demo's outer process (vrouter publish) and relays each connection; backends see the node", d.nodePort, spec.Nodes[0].Name)
	}
	return fmt.Sprintf("my-service's node port %d: each router listens on its node's addresses and 127.0.0.1 and relays each connection; backends see the node", d.nodePort)
}

// nodePortCommand is printKeep's command to reach the node port, and
// what it shows; enter joins the first node's namespace.
func (d *demo) nodePortCommand(enter string) [2]string {
	if d.host != nil {
		return [2]string{fmt.Sprintf("curl http://127.0.0.1:%d/", d.nodePort), "my-service's node port, on this host (no nsenter: published here)"}
	}
	return [2]string{fmt.Sprintf("%scurl http://127.0.0.1:%d/", enter, d.nodePort), "my-service's node port"}
}
