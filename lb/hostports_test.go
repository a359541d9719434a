package lb

// HostPorts tests serve node ports and external addresses on loopback
// sockets of the test process; backends are loopback servers too, which
// the relays dial from the kernel as they dial pods from the node's.
//
//	test client ─▶ 127.0.0.1:np, 127.0.0.3:np (node port addresses)
//	                 │ HostPorts: accept / UDP relay / health HTTP
//	                 │ Proxy.ServeHost (a stack with no NIC: host relays only)
//	                 ▼
//	backends 127.0.0.1:p1, 127.0.0.2:p2 ("p" named port)

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

var (
	nodeAddr1 = netip.MustParseAddr("127.0.0.1")
	nodeAddr2 = netip.MustParseAddr("127.0.0.3")
)

// hostEnv is a Table, a running Proxy and running HostPorts.
type hostEnv struct {
	t     *testing.T
	table *Table
	p     *Proxy
	h     *HostPorts
	logs  *observer.ObservedLogs

	stopH, stopP func()
}

// startHostPorts builds a Table (opts), a Proxy (popts) and HostPorts
// (hopts) serving svcs on the node port addresses nodePort, with local
// the node's addresses, runs them and waits until every socket was tried.
// Cleanup stops them and checks that every socket is closed.
func startHostPorts(t *testing.T, opts Options, popts ProxyOptions, hopts HostPortsOptions, nodePort, local []netip.Addr, svcs ...Service) *hostEnv {
	t.Helper()
	if opts.Picker == PickDefault {
		opts.Picker = PickRoundRobin
	}
	opts.Clock = systemClock{}
	core, logs := observer.New(zapcore.InfoLevel)
	e := &hostEnv{t: t, table: newTable(t, opts), logs: logs}
	mustSet(t, e.table, svcs...)

	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	p, err := NewProxy(s, e.table, nil, popts)
	if err != nil {
		t.Fatalf("NewProxy(%+v): %v", popts, err)
	}
	e.p = p
	h, err := NewHostPorts(e.table, p, zap.New(core), hopts)
	if err != nil {
		t.Fatalf("NewHostPorts(%+v): %v", hopts, err)
	}
	e.h = h
	h.SetAddresses(nodePort, local)
	h.Set(svcs)

	e.stopP = runUntilStopped(t, "Proxy.Run", p.Run)
	eventually(t, "Proxy.Run taking connections", p.open.Load)
	e.stopH = runUntilStopped(t, "HostPorts.Run", h.Run)
	eventually(t, "every host socket tried", func() bool {
		for _, b := range h.Bindings() {
			if b.State == BindPending {
				return false
			}
		}
		return true
	})
	t.Cleanup(func() {
		bs := h.Bindings()
		e.stopH()
		checkSocketsClosed(t, bs, hopts.Binder)
		e.stopP()
		s.Close()
		s.Wait()
	})
	return e
}

// runUntilStopped runs run in a goroutine and returns what stops it: it
// cancels run's context and waits for it to return nil. Idempotent.
func runUntilStopped(t *testing.T, what string, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s() = %v, want nil", what, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not return within 10s of its context being cancelled", what)
			}
		})
	}
}

// checkSocketsClosed binds every address of bs again with binder (when
// not nil: the kernel's): each must be free.
func checkSocketsClosed(t *testing.T, bs []HostBinding, binder Binder) {
	t.Helper()
	if binder == nil {
		binder = KernelBinder{}
	}
	for _, b := range bs {
		if b.State == BindFailed {
			continue // someone else's
		}
		var err error
		if b.Proto == HostUDP {
			var c *net.UDPConn
			if c, err = binder.ListenUDP(b.Addr); err == nil {
				c.Close()
			}
		} else {
			var l *net.TCPListener
			if l, err = binder.ListenTCP(b.Addr); err == nil {
				l.Close()
			}
		}
		if err != nil {
			t.Errorf("after Run returned, %v/%v is still bound: %v", b.Addr, b.Proto, err)
		}
	}
}

// update applies svcs to the Table, HostPorts and the Proxy, as the
// reconciler does.
func (e *hostEnv) update(svcs ...Service) {
	e.t.Helper()
	mustSet(e.t, e.table, svcs...)
	e.h.Set(svcs)
	e.p.Sync()
}

// binding returns the binding of addr/proto, or fails the test.
func (e *hostEnv) binding(addr netip.AddrPort, proto HostProto) HostBinding {
	e.t.Helper()
	for _, b := range e.h.Bindings() {
		if b.Addr == addr && b.Proto == proto {
			return b
		}
	}
	e.t.Fatalf("Bindings() has no %v/%v: %+v", addr, proto, e.h.Bindings())
	return HostBinding{}
}

// freePort returns a port free for TCP and UDP on every one of addrs.
func freePort(t *testing.T, addrs ...netip.Addr) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addrs[0], 0)))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).AddrPort().Port()
		l.Close()
		ok := true
		for _, a := range addrs {
			ap := netip.AddrPortFrom(a, port)
			l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(ap))
			if err != nil {
				ok = false
				break
			}
			l.Close()
			u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
			if err != nil {
				ok = false
				break
			}
			u.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", addrs)
	return 0
}

// webService is default/web: ClusterIP 10.96.0.80, port "http" 80/TCP
// to each endpoint's port "p" with node port np, then mutations.
func webService(np uint16, eps []Endpoint, mutate ...func(*Service)) Service {
	s := Service{
		Namespace:  "default",
		Name:       "web",
		Type:       TypeNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.80")},
		Ports:      []ServicePort{{Name: "http", Port: 80, Proto: TCP, TargetPortName: "p", NodePort: np}},
		Endpoints:  eps,
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

// dialHost connects to a host socket from the test.
func dialHost(t *testing.T, to netip.AddrPort) (*net.TCPConn, error) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(to))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDialHost(t *testing.T, to netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := dialHost(t, to)
	if err != nil {
		t.Fatalf("dial %v: %v", to, err)
	}
	return c
}

// expectHostReset connects to to and expects a reset: the kernel
// completes the handshake before the relay resets, so the reset may come
// before the dial returns, or on the first read.
func expectHostReset(t *testing.T, to netip.AddrPort, why string) {
	t.Helper()
	c, err := dialHost(t, to)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial %v (%s) = %v, want a reset", to, why, err)
		}
		return
	}
	expectReset(t, c, why)
}

// onNode returns e on node.
func onNode(e Endpoint, node string) Endpoint {
	e.NodeName = node
	return e
}

func TestHostPortsNodePortTCP(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	b2 := newBackend(t, "b2", "127.0.0.2", nil)
	np := freePort(t, nodeAddr1, nodeAddr2)
	svc := webService(np, []Endpoint{b1.endpoint(), b2.endpoint()})
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{},
		[]netip.Addr{nodeAddr1, nodeAddr2, netip.MustParseAddr("::1")}, nil, svc)

	// One socket per node port address of the Service's family: none on
	// ::1, as the Service has no IPv6 ClusterIP.
	bs := e.h.Bindings()
	if len(bs) != 2 {
		t.Fatalf("Bindings() = %+v, want 2 (node port %d/TCP on %v and %v)", bs, np, nodeAddr1, nodeAddr2)
	}
	want := NodePortKey(np, TCP, true)
	for _, b := range bs {
		if b.State != BindListening || b.Key != want || b.Proto != HostTCP || b.Service != (ServicePortName{ServiceName{"default", "web"}, "http"}) {
			t.Errorf("binding %+v, want listening, key %v, TCP, default/web:http", b, want)
		}
	}

	// Round-robin across both addresses: the Entry is one.
	var got []string
	for i, addr := range []netip.Addr{nodeAddr1, nodeAddr2, nodeAddr1, nodeAddr2} {
		c := mustDialHost(t, netip.AddrPortFrom(addr, np))
		name, _ := greeting(t, c)
		if err := echo(c, fmt.Sprint("request ", i)); err != nil {
			t.Fatalf("echo through %v:%d: %v", addr, np, err)
		}
		got = append(got, name)
	}
	if fmt.Sprint(got) != "[b1 b2 b1 b2]" {
		t.Errorf("node port connections answered by %v, want [b1 b2 b1 b2] (round-robin)", got)
	}
	if st := e.h.Stats(); st.TCPConns != 4 || st.TCPActive != 4 || st.Listening != 2 || st.Failed != 0 {
		t.Errorf("Stats() = %+v, want TCPConns 4, TCPActive 4, Listening 2", st)
	}
	if b := e.binding(netip.AddrPortFrom(nodeAddr1, np), HostTCP); b.Conns != 2 || b.Active != 2 {
		t.Errorf("binding %v: Conns %d, Active %d; want 2 and 2", b.Addr, b.Conns, b.Active)
	}
	host := 0
	for _, c := range e.p.Conns() {
		if c.Host {
			host++
		}
	}
	if host != 4 {
		t.Errorf("Proxy.Conns() lists %d host relays, want 4", host)
	}

	// No endpoints: reset, counted.
	e.update(webService(np, nil))
	expectHostReset(t, netip.AddrPortFrom(nodeAddr1, np), "node port without endpoints")
	if b := e.binding(netip.AddrPortFrom(nodeAddr1, np), HostTCP); b.RefusedNoEndpoints != 1 {
		t.Errorf("binding %v: RefusedNoEndpoints %d, want 1", b.Addr, b.RefusedNoEndpoints)
	}
}

// TestHostPortsUDP: request and response through a UDP node port, from
// the address asked; a backend that leaves takes its flows; idle flows end
// at the UDP timeout.
func TestHostPortsUDP(t *testing.T) {
	b1 := newUDPBackend(t, "b1", "127.0.0.1")
	b2 := newUDPBackend(t, "b2", "127.0.0.2")
	np := freePort(t, nodeAddr1, nodeAddr2)
	svc := func(eps ...Endpoint) Service {
		return udpService(eps, func(s *Service) { s.Ports[0].NodePort = np })
	}
	const timeout = 300 * time.Millisecond
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{UDPTimeout: timeout},
		[]netip.Addr{nodeAddr1, nodeAddr2}, nil, svc(b1.endpoint(), b2.endpoint()))
	to1, to2 := netip.AddrPortFrom(nodeAddr1, np), netip.AddrPortFrom(nodeAddr2, np)
	if b := e.binding(to1, HostUDP); b.State != BindListening || b.Key != NodePortKey(np, UDP, true) {
		t.Fatalf("binding %+v, want listening for %v", b, NodePortKey(np, UDP, true))
	}

	c1, c2 := newUDPClient(t), newUDPClient(t)
	if got := c1.mustAsk(to1, "one"); got != "b1" {
		t.Errorf("first flow answered by %s, want b1", got)
	}
	if got := c2.mustAsk(to2, "two"); got != "b2" {
		t.Errorf("second flow answered by %s, want b2", got)
	}
	if st := e.h.Stats(); st.UDPFlows != 2 || st.UDPActive != 2 {
		t.Errorf("Stats() = %+v, want UDPFlows 2, UDPActive 2", st)
	}

	// b1 leaves: its flow ends with the update, and the client's next
	// datagram goes to b2.
	e.update(svc(b2.endpoint()))
	if b := e.binding(to1, HostUDP); b.Active != 0 {
		t.Errorf("binding %v: %d flows after b1 left, want 0", to1, b.Active)
	}
	if got := c1.mustAsk(to1, "moved"); got != "b2" {
		t.Errorf("first client after b1 left answered by %s, want b2", got)
	}

	// Both flows go idle and end at the timeout.
	idleFrom := time.Now()
	eventually(t, "idle flows ended", func() bool { return e.h.Stats().UDPActive == 0 })
	if took := time.Since(idleFrom); took < timeout/2 {
		t.Errorf("idle flows ended after %v, want about the timeout %v", took, timeout)
	}
	if st := e.h.Stats(); st.UDPIdleClosed != 2 {
		t.Errorf("Stats().UDPIdleClosed = %d, want 2", st.UDPIdleClosed)
	}
	if got := e.h.udpLimit.Stats().Active; got != 0 {
		t.Errorf("UDP limiter active = %d with no flow, want 0", got)
	}
}

// TestHostPortsLocalPolicy: with externalTrafficPolicy Local only this
// node's endpoints serve, traffic is refused (counted apart) when it has
// none, and the health-check node port says so.
func TestHostPortsLocalPolicy(t *testing.T) {
	const node = "here"
	local := newBackend(t, "local", "127.0.0.1", nil)
	remote := newBackend(t, "remote", "127.0.0.2", nil)
	ulocal := newUDPBackend(t, "ulocal", "127.0.0.1")
	np := freePort(t, nodeAddr1)
	unp := freePort(t, nodeAddr1)
	hc := freePort(t, nodeAddr1)
	svc := func(eps ...Endpoint) Service {
		return webService(np, eps, func(s *Service) {
			s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = TypeLoadBalancer, PolicyLocal, hc
			s.Ports = append(s.Ports, ServicePort{Name: "dns", Port: 53, Proto: UDP, TargetPortName: "u", NodePort: unp})
		})
	}
	uep := onNode(Endpoint{Addr: ulocal.addrPort().Addr(), Ports: []EndpointPort{{Name: "u", Port: ulocal.addrPort().Port()}}, Ready: true, Serving: true}, node)
	e := startHostPorts(t, Options{NodeName: node}, ProxyOptions{}, HostPortsOptions{},
		[]netip.Addr{nodeAddr1}, nil, svc(onNode(local.endpoint(), node), onNode(remote.endpoint(), "there"), uep))
	health := fmt.Sprintf("http://%v/healthz", netip.AddrPortFrom(nodeAddr1, hc))
	// local and ulocal are one address on this node: one endpoint.
	checkHealth(t, health, "default", "web", 1)

	for i := range 4 {
		c := mustDialHost(t, netip.AddrPortFrom(nodeAddr1, np))
		if name, _ := greeting(t, c); name != "local" {
			t.Errorf("connection %d answered by %q, want local (externalTrafficPolicy Local)", i, name)
		}
	}

	// The local endpoints go: connections are reset and datagrams
	// dropped, counted as no local endpoints; the health check fails.
	elsewhere := onNode(remote.endpoint(), "there")
	elsewhere.Ports = append(elsewhere.Ports, EndpointPort{Name: "u", Port: 9})
	e.update(svc(elsewhere))
	expectHostReset(t, netip.AddrPortFrom(nodeAddr1, np), "Local policy without local endpoints")
	u := newUDPClient(t)
	u.conn.WriteToUDPAddrPort([]byte("dropped"), netip.AddrPortFrom(nodeAddr1, unp))
	eventually(t, "the UDP drop counted", func() bool { return e.h.Stats().RefusedNoLocalEndpoints == 2 })
	if st := e.h.Stats(); st.RefusedNoEndpoints != 0 {
		t.Errorf("Stats() = %+v, want RefusedNoEndpoints 0 (the Service has endpoints, elsewhere)", st)
	}
	checkHealth(t, health, "default", "web", 0)

	e.update(svc(onNode(local.endpoint(), node), onNode(remote.endpoint(), "there")))
	checkHealth(t, health, "default", "web", 1)
	if st := e.h.Stats(); st.HealthRequests != 3 {
		t.Errorf("Stats().HealthRequests = %d, want 3", st.HealthRequests)
	}

	// Cluster policy: no health-check node port.
	cluster := svc(onNode(local.endpoint(), node))
	cluster.ExternalTrafficPolicy = PolicyCluster
	e.update(cluster)
	if _, err := dialHost(t, netip.AddrPortFrom(nodeAddr1, hc)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial the health-check port with policy Cluster = %v, want connection refused", err)
	}
}

// countingBinder is a Binder that counts the attempts per address and
// maps addresses (a test cannot bind non-loopback ones).
type countingBinder struct {
	mu       sync.Mutex
	attempts map[netip.AddrPort]int
	mapTo    map[netip.Addr]netip.Addr
}

func (b *countingBinder) addr(a netip.AddrPort) netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.attempts == nil {
		b.attempts = make(map[netip.AddrPort]int)
	}
	b.attempts[a]++
	if to, ok := b.mapTo[a.Addr()]; ok {
		return netip.AddrPortFrom(to, a.Port())
	}
	return a
}

func (b *countingBinder) tries(a netip.AddrPort) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempts[a]
}

func (b *countingBinder) ListenTCP(a netip.AddrPort) (*net.TCPListener, error) {
	return KernelBinder{}.ListenTCP(b.addr(a))
}

func (b *countingBinder) ListenUDP(a netip.AddrPort) (*net.UDPConn, error) {
	return KernelBinder{}.ListenUDP(b.addr(a))
}

// TestHostPortsBindFailure: a port already taken is reported failed and
// counted once however often it is retried, the other addresses work,
// and it opens once freed.
func TestHostPortsBindFailure(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	np := freePort(t, nodeAddr1, nodeAddr2)
	taken := netip.AddrPortFrom(nodeAddr1, np)
	squatter, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(taken))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	binder := &countingBinder{}
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{Binder: binder, RetryInterval: 20 * time.Millisecond},
		[]netip.Addr{nodeAddr1, nodeAddr2}, nil, webService(np, []Endpoint{b1.endpoint()}))

	eventually(t, "three attempts at the taken port", func() bool { return binder.tries(taken) >= 3 })
	b := e.binding(taken, HostTCP)
	if b.State != BindFailed || !errors.Is(errFromText(b.Err), syscall.EADDRINUSE) || b.RetryAt.IsZero() {
		t.Errorf("binding of the taken port = %+v, want failed with address in use and a retry time", b)
	}
	if st := e.h.Stats(); st.BindFailures != 1 || st.Failed != 1 || st.Listening != 1 {
		t.Errorf("Stats() = %+v after %d attempts, want BindFailures 1 (once per socket), Failed 1, Listening 1", st, binder.tries(taken))
	}
	if n := e.logs.FilterMessage("cannot open host socket; retrying").Len(); n != 1 {
		t.Errorf("bind failure logged %d times, want once", n)
	}
	c := mustDialHost(t, netip.AddrPortFrom(nodeAddr2, np))
	if name, _ := greeting(t, c); name != "b1" {
		t.Errorf("the other address answered by %q, want b1", name)
	}

	squatter.Close()
	eventually(t, "the freed port opens", func() bool { return e.binding(taken, HostTCP).State == BindListening })
	c = mustDialHost(t, taken)
	if name, _ := greeting(t, c); name != "b1" {
		t.Errorf("the freed port answered by %q, want b1", name)
	}
	if b := e.binding(taken, HostTCP); b.Err != "" || !b.RetryAt.IsZero() {
		t.Errorf("binding once open = %+v, want no error nor retry time", b)
	}
	if st := e.h.Stats(); st.BindFailures != 1 || st.Failed != 0 || st.Listening != 2 {
		t.Errorf("Stats() = %+v, want BindFailures 1, Failed 0, Listening 2", st)
	}
}

// errFromText maps a socket error's text back to its errno, for
// HostBinding.Err.
func errFromText(s string) error {
	for _, errno := range []syscall.Errno{syscall.EADDRINUSE, syscall.EACCES, syscall.EADDRNOTAVAIL} {
		if len(s) >= len(errno.Error()) && s[len(s)-len(errno.Error()):] == errno.Error() {
			return errno
		}
	}
	return errors.New(s)
}

// TestHostPortsDeleteDrains: deleting a Service closes its sockets (new
// connections are refused) while a relayed connection keeps working
// until the Proxy drains it.
func TestHostPortsDeleteDrains(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	np := freePort(t, nodeAddr1)
	const drain = 300 * time.Millisecond
	svc := webService(np, []Endpoint{b1.endpoint()})
	e := startHostPorts(t, Options{}, ProxyOptions{DrainTimeout: drain}, HostPortsOptions{},
		[]netip.Addr{nodeAddr1}, nil, svc)
	to := netip.AddrPortFrom(nodeAddr1, np)
	c := mustDialHost(t, to)
	greeting(t, c)

	if !e.table.Delete(svc.Namespace, svc.Name) {
		t.Fatal("Table.Delete: not there")
	}
	e.h.Delete(svc.Key())
	e.p.Sync()
	deleted := time.Now()
	if _, err := dialHost(t, to); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %v after Delete = %v, want connection refused", to, err)
	}
	if bs := e.h.Bindings(); len(bs) != 0 {
		t.Errorf("Bindings() after Delete = %+v, want none", bs)
	}
	if err := echo(c, "still relayed"); err != nil {
		t.Fatalf("relayed connection right after Delete: %v, want it to work until drained", err)
	}
	if err := waitClosed(c, 5*time.Second); err != nil {
		t.Fatalf("relayed connection of a deleted Service: %v, want it reset after the drain timeout", err)
	}
	if took := time.Since(deleted); took < drain {
		t.Errorf("relayed connection ended %v after Delete, want after the drain timeout %v", took, drain)
	}
	eventually(t, "TCPActive back to 0", func() bool { return e.h.Stats().TCPActive == 0 })
}

// TestHostPortsExternalIPs: external and load-balancer IPs are served
// from outside where they are local, with their External keys, and stop
// being served when they no longer are.
func TestHostPortsExternalIPs(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	extIP, lbIP, elsewhere := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.11")
	hostExt, hostLB := netip.MustParseAddr("127.0.0.5"), netip.MustParseAddr("127.0.0.6")
	port := freePort(t, hostExt, hostLB)
	binder := &countingBinder{mapTo: map[netip.Addr]netip.Addr{extIP: hostExt, lbIP: hostLB}}
	svc := webService(0, []Endpoint{b1.endpoint()}, func(s *Service) {
		s.Type = TypeLoadBalancer
		s.Ports[0].Port = port
		s.ExternalIPs = []netip.Addr{extIP, elsewhere}
		s.LoadBalancerIPs = []netip.Addr{lbIP}
	})
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{Binder: binder},
		[]netip.Addr{nodeAddr1}, []netip.Addr{nodeAddr1, extIP, lbIP}, svc)

	bs := e.h.Bindings()
	if len(bs) != 2 {
		t.Fatalf("Bindings() = %+v, want 2 (%v and %v, not %v, which is not local)", bs, extIP, lbIP, elsewhere)
	}
	for _, ip := range []netip.Addr{extIP, lbIP} {
		b := e.binding(netip.AddrPortFrom(ip, port), HostTCP)
		want := ServiceKey{VIP: ip, Port: port, Proto: TCP, External: true}
		if b.State != BindListening || b.Key != want {
			t.Errorf("binding %+v, want listening for %v", b, want)
		}
	}
	c := mustDialHost(t, netip.AddrPortFrom(hostExt, port))
	if name, _ := greeting(t, c); name != "b1" {
		t.Errorf("external IP answered by %q, want b1", name)
	}

	// The load-balancer IP is no longer local: its socket closes.
	e.h.SetAddresses([]netip.Addr{nodeAddr1}, []netip.Addr{nodeAddr1, extIP})
	if _, err := dialHost(t, netip.AddrPortFrom(hostLB, port)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial the load-balancer IP's socket once not local = %v, want connection refused", err)
	}
	if bs := e.h.Bindings(); len(bs) != 1 || bs[0].Addr.Addr() != extIP {
		t.Errorf("Bindings() = %+v, want only %v's", bs, extIP)
	}
}

// TestHostPortsShared: two Services wanting one socket: the first keeps
// it, and the second gets it when the first leaves.
func TestHostPortsShared(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	b2 := newBackend(t, "b2", "127.0.0.2", nil)
	extIP, host := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("127.0.0.5")
	np := freePort(t, host)
	binder := &countingBinder{mapTo: map[netip.Addr]netip.Addr{extIP: host}}
	// web's node port on extIP (a node port address) is other's
	// external IP and port.
	web := webService(np, []Endpoint{b1.endpoint()})
	other := webService(0, []Endpoint{b2.endpoint()}, func(s *Service) {
		s.Name, s.ClusterIPs = "other", []netip.Addr{netip.MustParseAddr("10.96.0.81")}
		s.Ports[0].Port, s.ExternalIPs = np, []netip.Addr{extIP}
	})
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{Binder: binder},
		[]netip.Addr{extIP}, []netip.Addr{extIP}, web)
	e.update(web, other)
	to := netip.AddrPortFrom(host, np)
	if name, _ := greeting(t, mustDialHost(t, to)); name != "b1" {
		t.Errorf("shared socket answered by %q, want b1 (web claimed it first)", name)
	}
	e.update(other)
	eventually(t, "the socket reopened for other", func() bool {
		bs := e.h.Bindings()
		return len(bs) == 1 && bs[0].Service.Name == "other" && bs[0].State == BindListening
	})
	if name, _ := greeting(t, mustDialHost(t, to)); name != "b2" {
		t.Errorf("shared socket answered by %q after web left, want b2", name)
	}
}

func TestHostPortsRunOnce(t *testing.T) {
	table := newTable(t, Options{})
	s := stack.New(stack.Options{TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol}})
	defer s.Wait()
	defer s.Close()
	p, err := NewProxy(s, table, nil, ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewHostPorts(table, p, nil, HostPortsOptions{UDPTimeout: -time.Second}); err == nil {
		t.Errorf("NewHostPorts with a negative UDP timeout = nil error, want one")
	}
	h, err := NewHostPorts(table, p, nil, HostPortsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Run(ctx); err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	if err := h.Run(context.Background()); err == nil {
		t.Errorf("second Run() = nil, want an error")
	}
}

// TestHostPortsDualStack: a dual-stack Service's node port is served on
// the node port addresses of both families, each with its family's key
// and endpoints.
func TestHostPortsDualStack(t *testing.T) {
	b4 := newBackend(t, "b4", "127.0.0.1", nil)
	ln6, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln6.Close()
	wg.Go(func() {
		for {
			c, err := ln6.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "b6 %s\n", c.RemoteAddr())
			c.Close()
		}
	})
	ap6 := ln6.Addr().(*net.TCPAddr).AddrPort()
	v6 := netip.MustParseAddr("::1")
	np := freePort(t, nodeAddr1)
	svc := webService(np, []Endpoint{
		b4.endpoint(),
		{Addr: ap6.Addr(), Ports: []EndpointPort{{Name: "p", Port: ap6.Port()}}, Ready: true, Serving: true},
	}, func(s *Service) { s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr("fd00::80")) })
	e := startHostPorts(t, Options{}, ProxyOptions{}, HostPortsOptions{}, []netip.Addr{nodeAddr1, v6}, nil, svc)

	for _, tc := range []struct {
		addr netip.Addr
		key  ServiceKey
		want string
	}{{nodeAddr1, NodePortKey(np, TCP, true), "b4"}, {v6, NodePortKey(np, TCP, false), "b6"}} {
		to := netip.AddrPortFrom(tc.addr, np)
		if b := e.binding(to, HostTCP); b.State != BindListening || b.Key != tc.key {
			t.Errorf("binding %+v, want listening for %v", b, tc.key)
			continue
		}
		if name, _ := greeting(t, mustDialHost(t, to)); name != tc.want {
			t.Errorf("node port on %v answered by %q, want %s", to, name, tc.want)
		}
	}
}
