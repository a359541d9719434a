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
		checkSocketsClosed(t, bs)
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

// checkSocketsClosed binds every address of bs again: each must be free.
func checkSocketsClosed(t *testing.T, bs []HostBinding) {
	t.Helper()
	for _, b := range bs {
		if b.State == BindFailed {
			continue // someone else's
		}
		var err error
		if b.Proto == HostUDP {
			var c *net.UDPConn
			if c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(b.Addr)); err == nil {
				c.Close()
			}
		} else {
			var l *net.TCPListener
			if l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(b.Addr)); err == nil {
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
	c := mustDialHost(t, netip.AddrPortFrom(nodeAddr1, np))
	expectReset(t, c, "node port without endpoints")
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
	c := mustDialHost(t, netip.AddrPortFrom(nodeAddr1, np))
	expectReset(t, c, "Local policy without local endpoints")
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
