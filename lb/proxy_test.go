package lb

// Proxy tests run the proxy in a real gVisor stack in memory. A second
// stack plays the client pod; the two are joined by gVisor's pipe link.
// Backends are loopback listeners of the test process: the proxy dials
// them from the kernel, as it dials pods from the node's kernel.
//
//	client stack 10.244.0.9 ─ pipe ─ proxy stack (VIP 10.103.92.81, 169.254.244.1)
//	                                     │ Proxy: SYN to VIP:80 → dial from the kernel
//	                                     ▼
//	                    backends 127.0.0.1:p1, 127.0.0.2:p2, 127.0.0.3:p3 ("p" named port)

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/pipe"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/vrouter/vrouter/router/packet"
)

var (
	proxyClientAddr = netip.MustParseAddr("10.244.0.9")
	proxyVIP        = netip.MustParseAddrPort("10.103.92.81:80")
	proxyRouterAddr = netip.MustParseAddr("169.254.244.1")
)

// proxyEnv is a client stack, a proxy stack with a running Proxy, and
// the Table the Proxy serves.
type proxyEnv struct {
	t      testing.TB
	client *stack.Stack
	server *stack.Stack
	table  *Table
	p      *Proxy
	cancel context.CancelFunc
	done   chan error
}

func newStack(t testing.TB, ep stack.LinkEndpoint, addrs []netip.Addr, route netip.Prefix) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("CreateNIC: %v", err)
	}
	for _, a := range addrs {
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: packet.TCPIPAddr(a).WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("AddProtocolAddress(%v): %v", a, err)
		}
	}
	sn, err := tcpip.NewSubnet(packet.TCPIPAddr(route.Addr()), tcpip.MaskFromBytes(net.CIDRMask(route.Bits(), 32)))
	if err != nil {
		t.Fatal(err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: sn, NIC: 1}})
	return s
}

// startProxy builds the two stacks, a Table with services and a Proxy
// with opts, and runs the Proxy. Cleanup stops it (failing the test if
// Run does not return) and closes the stacks.
func startProxy(t testing.TB, opts ProxyOptions, services ...Service) *proxyEnv {
	t.Helper()
	a, b := pipe.New("", "", 1500)
	e := &proxyEnv{
		t:      t,
		client: newStack(t, a, []netip.Addr{proxyClientAddr}, netip.MustParsePrefix("0.0.0.0/0")),
		server: newStack(t, b, []netip.Addr{proxyVIP.Addr(), proxyRouterAddr}, netip.MustParsePrefix("10.244.0.0/24")),
		table:  newTable(t, Options{Mode: ModeProxy, Picker: PickRoundRobin, Clock: systemClock{}}),
		done:   make(chan error, 1),
	}
	mustSet(t, e.table, services...)
	p, err := NewProxy(e.server, e.table, nil, opts)
	if err != nil {
		t.Fatalf("NewProxy(%+v): %v", opts, err)
	}
	e.p = p
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- p.Run(ctx) }()
	eventually(t, "Proxy.Run taking connections", p.open.Load)
	t.Cleanup(func() {
		e.stop()
		e.client.Close()
		e.server.Close()
		e.client.Wait()
		e.server.Wait()
	})
	return e
}

// stop cancels Run and waits for it; idempotent.
func (e *proxyEnv) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Proxy.Run() = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Fatalf("Proxy.Run did not return within 10s of its context being cancelled")
	}
}

// dial connects the client stack to to.
func (e *proxyEnv) dial(to netip.AddrPort) (*gonet.TCPConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, e.client, tcpip.FullAddress{Addr: packet.TCPIPAddr(to.Addr()), Port: to.Port()}, ipv4.ProtocolNumber)
}

// mustDial connects to to or fails the test; cleanup closes the
// connection.
func (e *proxyEnv) mustDial(to netip.AddrPort) *gonet.TCPConn {
	e.t.Helper()
	c, err := e.dial(to)
	if err != nil {
		e.t.Fatalf("dial %v from the client stack: %v", to, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// expectRefused dials to and expects a RST, not a timeout.
func (e *proxyEnv) expectRefused(to netip.AddrPort, why string) {
	e.t.Helper()
	c, err := e.dial(to)
	if err == nil {
		c.Close()
		e.t.Fatalf("dial %v (%s) succeeded, want connection refused", to, why)
	}
	if !strings.Contains(err.Error(), "refused") {
		e.t.Fatalf("dial %v (%s) = %v, want connection refused (RST)", to, why, err)
	}
}

// testBackend is a loopback TCP server; handler runs per connection.
type testBackend struct {
	name string
	ln   *net.TCPListener
	wg   sync.WaitGroup
	done chan struct{} // closed by close: handlers that wait return
	mu   sync.Mutex
	open map[*net.TCPConn]struct{}
}

// newBackend listens on addr:0 and serves each connection with handler
// (echoServer when nil). Cleanup closes it and its connections.
func newBackend(t testing.TB, name, addr string, handler func(b *testBackend, c *net.TCPConn)) *testBackend {
	t.Helper()
	if handler == nil {
		handler = echoServer
	}
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	b := &testBackend{name: name, ln: ln, done: make(chan struct{}), open: map[*net.TCPConn]struct{}{}}
	b.wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.open[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Go(func() {
				defer func() {
					b.mu.Lock()
					delete(b.open, c)
					b.mu.Unlock()
					c.Close()
				}()
				handler(b, c)
			})
		}
	})
	t.Cleanup(b.close)
	return b
}

func (b *testBackend) close() {
	close(b.done)
	b.ln.Close()
	b.mu.Lock()
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *testBackend) addrPort() netip.AddrPort { return b.ln.Addr().(*net.TCPAddr).AddrPort() }

// endpoint is b as a Service endpoint with named port "p".
func (b *testBackend) endpoint() Endpoint {
	return Endpoint{Addr: b.addrPort().Addr(), Ports: []EndpointPort{{Name: "p", Port: b.addrPort().Port()}}, Ready: true, Serving: true}
}

// echoServer greets with "<name> <client ip:port>\n", echoes until the
// client half-closes, then closes.
func echoServer(b *testBackend, c *net.TCPConn) {
	if _, err := fmt.Fprintf(c, "%s %s\n", b.name, c.RemoteAddr()); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	c.CloseWrite()
}

// deadEndpoint is an endpoint at addr where nothing listens.
func deadEndpoint(t testing.TB, addr string) Endpoint {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return Endpoint{Addr: ap.Addr(), Ports: []EndpointPort{{Name: "p", Port: ap.Port()}}, Ready: true, Serving: true}
}

// proxyService is default/my-service at proxyVIP in proxy mode, port 80
// to each endpoint's port "p".
func proxyService(eps []Endpoint, mutate ...func(*Service)) Service {
	s := Service{
		Namespace:  "default",
		Name:       "my-service",
		ClusterIPs: []netip.Addr{proxyVIP.Addr()},
		Ports:      []ServicePort{{Port: proxyVIP.Port(), Proto: TCP, TargetPortName: "p"}},
		Endpoints:  eps,
		Mode:       ModeProxy,
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

// greeting reads an echoServer's greeting line from c.
func greeting(t testing.TB, c net.Conn) (name string, client netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("read greeting (so far %q): %v", line, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	n, a, ok := strings.Cut(string(line), " ")
	ap, err := netip.ParseAddrPort(a)
	if !ok || err != nil {
		t.Fatalf("greeting %q: want \"<name> <ip:port>\"", line)
	}
	return n, ap
}

// echo writes msg on c and reads it back.
func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write %q: %w", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo of %q (got %q): %w", msg, buf, err)
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// eventually polls cond every 10ms until it is true or 5s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitClosed waits up to timeout for the peer to end c (EOF or reset).
func waitClosed(c net.Conn, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("still open after %v", timeout)
		}
		return nil
	}
}

func TestProxySplices(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b1.endpoint()}))

	c := e.mustDial(proxyVIP)
	name, seen := greeting(t, c)
	if name != "b1" {
		t.Errorf("answered by %q, want b1", name)
	}
	// The backend sees the node kernel's address, not the client's: the
	// proxy dials from the kernel.
	if seen.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("backend saw client %v, want the kernel's own 127.0.0.1", seen)
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 200<<10)} {
		if err := echo(c, msg); err != nil {
			t.Fatalf("echo through the proxy: %v", err)
		}
	}
	if got := e.p.Stats(); got.Conns != 1 || got.Active != 1 {
		t.Errorf("Stats() = %+v, want Conns 1, Active 1", got)
	}
	if got := e.p.Conns(); len(got) != 1 || got[0].VIP != proxyVIP || got[0].Backend != b1.addrPort() || got[0].Client.Addr() != proxyClientAddr {
		t.Errorf("Conns() = %+v, want one from %v to %v via %v", got, proxyClientAddr, b1.addrPort(), proxyVIP)
	}
	entry := mustLookup(t, e.table, ServiceKey{VIP: proxyVIP.Addr(), Port: proxyVIP.Port(), Proto: TCP})
	if got := entry.Backends()[0].Active(); got != 1 {
		t.Errorf("backend active count = %d while connected, want 1", got)
	}
	c.Close()
	eventually(t, "Active 0 after the client closed", func() bool { return e.p.Stats().Active == 0 })
	if got := entry.Backends()[0].Active(); got != 0 {
		t.Errorf("backend active count = %d after close, want 0", got)
	}
	if got := e.p.limit.Stats().Active; got != 0 {
		t.Errorf("limiter active = %d after close, want 0", got)
	}
}

func TestProxyRetriesDeadBackend(t *testing.T) {
	// Round-robin over a dead backend (127.0.0.1, sorted first) and a live
	// one: every other pick hits the dead one.
	live := newBackend(t, "live", "127.0.0.2", nil)
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{deadEndpoint(t, "127.0.0.1"), live.endpoint()}))
	const n = 20
	for i := range n {
		c, err := e.dial(proxyVIP)
		if err != nil {
			t.Fatalf("connection %d: %v, want every connection to succeed", i, err)
		}
		if name, _ := greeting(t, c); name != "live" {
			t.Errorf("connection %d answered by %q, want live", i, name)
		}
		if err := echo(c, "ping"); err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
		c.Close()
	}
	// Three failures in a row eject the dead backend for 5 s: later
	// connections do not try it (one more failure if the test took
	// longer than that).
	st := e.p.Stats()
	if st.DialFailures < 3 || st.DialFailures > 4 || st.Retries != st.DialFailures || st.RefusedUnreachable != 0 || st.Conns != n {
		t.Errorf("Stats() = %+v, want 3 dial failures (then the dead backend is ejected), as many retries, none unreachable, %d conns", st, n)
	}
	if os := e.table.OutlierStats(); os.Ejections < 1 {
		t.Errorf("OutlierStats() = %+v, want the dead backend ejected", os)
	}
}

func TestProxyAllBackendsDeadRST(t *testing.T) {
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{deadEndpoint(t, "127.0.0.1"), deadEndpoint(t, "127.0.0.2"), deadEndpoint(t, "127.0.0.3")}))
	e.expectRefused(proxyVIP, "every backend dead")
	st := e.p.Stats()
	if st.DialFailures != 3 || st.Retries != 2 || st.RefusedUnreachable != 1 || st.Conns != 0 {
		t.Errorf("Stats() = %+v, want 3 dial failures (each backend once), 2 retries, 1 unreachable, 0 conns", st)
	}
}

func TestProxyRefusals(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{},
		proxyService(nil),
		// A nat-mode Service on the router address: not the proxy's.
		proxyService([]Endpoint{b1.endpoint()}, func(s *Service) {
			s.Name, s.ClusterIPs, s.Mode = "nat-service", []netip.Addr{proxyRouterAddr}, ModeNAT
		}))
	e.expectRefused(proxyVIP, "Service without endpoints")
	if st := e.p.Stats(); st.RefusedNoEndpoints != 1 {
		t.Errorf("Stats().RefusedNoEndpoints = %d, want 1", st.RefusedNoEndpoints)
	}
	e.expectRefused(netip.AddrPortFrom(proxyVIP.Addr(), 81), "no Service port 81")
	e.expectRefused(netip.AddrPortFrom(proxyRouterAddr, 80), "nat-mode Service")
	if st := e.p.Stats(); st.RefusedNotProxy != 2 {
		t.Errorf("Stats().RefusedNotProxy = %d, want 2", st.RefusedNotProxy)
	}

	// Endpoints added later are used at once.
	mustSet(t, e.table, proxyService([]Endpoint{b1.endpoint()}))
	c := e.mustDial(proxyVIP)
	if name, _ := greeting(t, c); name != "b1" {
		t.Errorf("answered by %q, want b1", name)
	}
}

// TestProxyHalfClose closes each direction in turn while the other keeps
// carrying data.
func TestProxyHalfClose(t *testing.T) {
	conns := make(chan *net.TCPConn, 2)
	b := newBackend(t, "b", "127.0.0.1", func(b *testBackend, c *net.TCPConn) {
		conns <- c
		<-b.done // the test drives c
	})
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}))

	t.Run("client first", func(t *testing.T) {
		c := e.mustDial(proxyVIP)
		bc := <-conns
		c.Write([]byte("request"))
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("client CloseWrite: %v", err)
		}
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(bc)
		if err != nil || string(got) != "request" {
			t.Fatalf("backend read %q, %v; want \"request\" then EOF", got, err)
		}
		// The backend's side is still open: it answers after the EOF.
		if _, err := bc.Write([]byte("response")); err != nil {
			t.Fatalf("backend write after the client's half-close: %v", err)
		}
		bc.CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(c)
		if err != nil || string(got) != "response" {
			t.Fatalf("client read %q, %v; want \"response\" then EOF", got, err)
		}
	})
	t.Run("backend first", func(t *testing.T) {
		c := e.mustDial(proxyVIP)
		bc := <-conns
		bc.Write([]byte("banner"))
		bc.CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "banner" {
			t.Fatalf("client read %q, %v; want \"banner\" then EOF", got, err)
		}
		if _, err := c.Write([]byte("late")); err != nil {
			t.Fatalf("client write after the backend's half-close: %v", err)
		}
		c.CloseWrite()
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err = io.ReadAll(bc)
		if err != nil || string(got) != "late" {
			t.Fatalf("backend read %q, %v; want \"late\" then EOF", got, err)
		}
	})
	eventually(t, "both connections ended", func() bool { return e.p.Stats().Active == 0 })
}

func TestProxyIdleTimeout(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1", nil)
	const idle = 300 * time.Millisecond
	e := startProxy(t, ProxyOptions{IdleTimeout: idle}, proxyService([]Endpoint{b.endpoint()}))

	busy := e.mustDial(proxyVIP)
	greeting(t, busy)
	quiet := e.mustDial(proxyVIP)
	greeting(t, quiet)
	// Traffic resets the timer: busy talks for 4 idle timeouts.
	for end := time.Now().Add(4 * idle); time.Now().Before(end); {
		if err := echo(busy, "tick"); err != nil {
			t.Fatalf("busy connection, %v after it opened: %v (want it kept open by its traffic)", time.Since(end.Add(-4*idle)), err)
		}
		time.Sleep(idle / 6)
	}
	if err := waitClosed(quiet, 5*time.Second); err != nil {
		t.Fatalf("quiet connection: %v, want it closed after %v idle", err, idle)
	}
	if err := waitClosed(busy, 5*time.Second); err != nil {
		t.Fatalf("busy connection after it fell silent: %v, want it closed after %v idle", err, idle)
	}
	if st := e.p.Stats(); st.IdleClosed != 2 {
		t.Errorf("Stats().IdleClosed = %d, want 2", st.IdleClosed)
	}
}

// TestProxyDrain removes the backend of an open connection: the
// connection keeps working until DrainTimeout, then is reset, while new
// connections go to the backends that remain. A backend that comes back
// before the timeout keeps its connections.
func TestProxyDrain(t *testing.T) {
	bs := []*testBackend{
		newBackend(t, "b1", "127.0.0.1", nil),
		newBackend(t, "b2", "127.0.0.2", nil),
		newBackend(t, "b3", "127.0.0.3", nil),
	}
	eps := func(skip string) []Endpoint {
		var out []Endpoint
		for _, b := range bs {
			if b.name != skip {
				out = append(out, b.endpoint())
			}
		}
		return out
	}
	const drain = 500 * time.Millisecond
	e := startProxy(t, ProxyOptions{DrainTimeout: drain}, proxyService(eps("")))

	// Round-robin: the first connection goes to b1, the second to b2.
	c1 := e.mustDial(proxyVIP)
	if name, _ := greeting(t, c1); name != "b1" {
		t.Fatalf("first connection answered by %q, want b1 (round-robin)", name)
	}
	c2 := e.mustDial(proxyVIP)
	if name, _ := greeting(t, c2); name != "b2" {
		t.Fatalf("second connection answered by %q, want b2 (round-robin)", name)
	}

	mustSet(t, e.table, proxyService(eps("b1")))
	e.p.Sync()
	removed := time.Now()
	if st := e.p.Stats(); st.Draining != 1 {
		t.Errorf("Stats().Draining = %d after b1 left, want 1", st.Draining)
	}
	if err := echo(c1, "still here"); err != nil {
		t.Fatalf("connection to b1 right after b1 left: %v, want it to work until the drain timeout", err)
	}
	for i := range 6 {
		c := e.mustDial(proxyVIP)
		if name, _ := greeting(t, c); name == "b1" {
			t.Errorf("new connection %d went to b1, which left the Service", i)
		}
		c.Close()
	}

	// b2 leaves and comes back before its drain timeout: c2 stays.
	mustSet(t, e.table, proxyService(eps("b2")))
	e.p.Sync()
	mustSet(t, e.table, proxyService(eps("b1")))
	e.p.Sync()

	if err := waitClosed(c1, 5*time.Second); err != nil {
		t.Fatalf("connection to b1: %v, want it reset %v after b1 left", err, drain)
	}
	if took := time.Since(removed); took < drain {
		t.Errorf("connection to b1 ended %v after b1 left, want after the drain timeout %v", took, drain)
	}
	if err := echo(c2, "b2 came back"); err != nil {
		t.Errorf("connection to b2, whose backend left and came back: %v", err)
	}
	eventually(t, "Stats().Draining back to 0", func() bool { return e.p.Stats().Draining == 0 })
	if st := e.p.Stats(); st.Drained != 1 {
		t.Errorf("Stats() = %+v, want Drained 1", st)
	}
}

// TestProxyDrainDeletedService: Run's own sync notices a deleted Service
// without a Sync call.
func TestProxyDrainDeletedService(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{DrainTimeout: 200 * time.Millisecond}, proxyService([]Endpoint{b.endpoint()}))
	c := e.mustDial(proxyVIP)
	greeting(t, c)
	if got := e.p.VIPs(); !slices.Equal(got, []netip.Addr{proxyVIP.Addr()}) {
		t.Errorf("VIPs() = %v with a connection open, want [%v]", got, proxyVIP.Addr())
	}
	mustSet(t, e.table)
	if err := waitClosed(c, 5*time.Second); err != nil {
		t.Fatalf("connection of a deleted Service: %v, want it reset after the drain timeout", err)
	}
	eventually(t, "no VIPs after the last connection ended", func() bool { return len(e.p.VIPs()) == 0 })
}

func TestProxyProtocolV2(t *testing.T) {
	hdrs := make(chan []byte, 1)
	b := newBackend(t, "pp", "127.0.0.1", func(_ *testBackend, c *net.TCPConn) {
		h := make([]byte, 28)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadFull(c, h)
		hdrs <- h[:n]
		c.SetReadDeadline(time.Time{})
		io.Copy(c, c)
	})
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}, func(s *Service) { s.ProxyProtocol = true }))
	c := e.mustDial(proxyVIP)
	if err := echo(c, "after the header"); err != nil {
		t.Fatal(err)
	}
	cp := netip.MustParseAddrPort(c.LocalAddr().String()).Port()
	want := []byte{
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
		0x21,       // version 2, PROXY
		0x11,       // TCP over IPv4
		0x00, 0x0C, // 12 bytes of addresses
		10, 244, 0, 9, // client
		10, 103, 92, 81, // VIP
		byte(cp >> 8), byte(cp), // client port
		0, 80, // VIP port
	}
	if got := <-hdrs; !bytes.Equal(got, want) {
		t.Errorf("backend got header\n% x\nwant\n% x", got, want)
	}
}

func TestAppendProxyV2IPv6(t *testing.T) {
	got := appendProxyV2(nil, netip.MustParseAddrPort("[fd00:10:244::9]:40000"), netip.MustParseAddrPort("[fd00:10:96::5c51]:443"))
	want := []byte{
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
		0x21, 0x21, 0x00, 0x24, // version 2 PROXY, TCP over IPv6, 36 bytes
		0xfd, 0, 0, 0x10, 0x02, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09,
		0xfd, 0, 0, 0x10, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0x5c, 0x51,
		0x9c, 0x40, // 40000
		0x01, 0xbb, // 443
	}
	if !bytes.Equal(got, want) {
		t.Errorf("appendProxyV2(IPv6) =\n% x\nwant\n% x", got, want)
	}
}

// TestProxyRunReturnsNoLeaks stops a Proxy with connections open: Run
// returns, the connections end, and no goroutine is left.
func TestProxyRunReturnsNoLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("run", func(t *testing.T) {
		b := newBackend(t, "b", "127.0.0.1", nil)
		e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}))
		var cs []*gonet.TCPConn
		for range 3 {
			c := e.mustDial(proxyVIP)
			greeting(t, c)
			cs = append(cs, c)
		}
		e.stop()
		for i, c := range cs {
			if err := waitClosed(c, 5*time.Second); err != nil {
				t.Errorf("connection %d after Run returned: %v, want it closed", i, err)
			}
		}
		if st := e.p.Stats(); st.Active != 0 {
			t.Errorf("Stats().Active = %d after Run returned, want 0", st.Active)
		}
		e.expectRefused(proxyVIP, "Run has returned")
	})
}

// TestProxyForwarderSlots refuses many connections in the handler (every
// backend dead; over the connection cap) with MaxInFlight 2: every
// refusal must give back its in-flight slot, or the good connection at
// the end would hang.
func TestProxyForwarderSlots(t *testing.T) {
	const inFlight = 2
	good := newBackend(t, "good", "127.0.0.1", nil)
	dead := proxyService([]Endpoint{deadEndpoint(t, "127.0.0.2")}, func(s *Service) {
		s.Name, s.ClusterIPs = "dead", []netip.Addr{proxyRouterAddr}
	})
	e := startProxy(t, ProxyOptions{MaxInFlight: inFlight, MaxConns: 1}, proxyService([]Endpoint{good.endpoint()}), dead)

	for i := range 2 * inFlight {
		e.expectRefused(netip.AddrPortFrom(proxyRouterAddr, 80), fmt.Sprintf("dead backend, attempt %d", i))
	}
	held := e.mustDial(proxyVIP)
	greeting(t, held)
	for i := range 2 * inFlight {
		e.expectRefused(proxyVIP, fmt.Sprintf("over MaxConns 1, attempt %d", i))
	}
	held.Close()
	eventually(t, "the held connection ended", func() bool { return e.p.Stats().Active == 0 })
	c := e.mustDial(proxyVIP)
	greeting(t, c)
	if err := echo(c, "still accepting"); err != nil {
		t.Fatalf("connection after %d refusals: %v", 4*inFlight, err)
	}
	st := e.p.Stats()
	if st.RefusedUnreachable != 2*inFlight || st.RefusedCap != 2*inFlight || st.InFlightDrops != 0 {
		t.Errorf("Stats() = %+v, want %d unreachable, %d over the cap, no in-flight drops", st, 2*inFlight, 2*inFlight)
	}
}

func TestNewProxyRejectsNegativeOptions(t *testing.T) {
	s := stack.New(stack.Options{NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol}, TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol}})
	defer func() { s.Close(); s.Wait() }()
	table := newTable(t, Options{})
	for _, opts := range []ProxyOptions{{DialTimeout: -1}, {IdleTimeout: -time.Second}, {DrainTimeout: -1}, {MaxInFlight: -1}, {MaxConns: -1}, {MaxPerClient: -1}, {ReceiveWindow: -1}} {
		if _, err := NewProxy(s, table, nil, opts); err == nil {
			t.Errorf("NewProxy(%+v) = nil error, want one", opts)
		}
	}
}

// TestNATLeavesProxyTCPToTheStack: the NAT passes TCP to a proxy-mode
// Service untouched (the stack terminates it) but translates the
// Service's UDP ports as in nat mode.
func TestNATLeavesProxyTCPToTheStack(t *testing.T) {
	n, _, _ := newTestNAT(t, NATOptions{}, makeKubeDNS(func(s *Service) { s.Mode = ModeProxy }))
	syn := tcp4(clientA, dnsVIP, header.TCPFlagSyn, "")
	orig := slices.Clone(syn)
	if pass, reply := ingress(t, n, true, syn); !pass || reply != nil || !bytes.Equal(syn, orig) {
		t.Errorf("NAT.Ingress(SYN to proxy-mode %v) = %v, reply %v, changed %v; want passed untouched", dnsVIP, pass, reply != nil, !bytes.Equal(syn, orig))
	}
	q := udp4(clientA, dnsVIP, "query")
	if pass, _ := ingress(t, n, true, q); !pass {
		t.Fatalf("NAT.Ingress(UDP to proxy-mode %v) dropped", dnsVIP)
	}
	if _, dst := tuple(t, q); dst.Addr() == dnsVIP.Addr() {
		t.Errorf("UDP to proxy-mode %v went to %v, want it translated to a backend", dnsVIP, dst)
	}
}

// TestProxyHandshakeFirst sets HandshakeFirstAt to 1: every client
// completes its handshake before a backend is dialed. Connections work as
// before; with every backend dead the client is reset after its handshake
// instead of refused in answer to its SYN.
func TestProxyHandshakeFirst(t *testing.T) {
	live := newBackend(t, "live", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{HandshakeFirstAt: 1}, proxyService([]Endpoint{live.endpoint()}))
	const n = 5
	for i := range n {
		c := e.mustDial(proxyVIP)
		if name, _ := greeting(t, c); name != "live" {
			t.Errorf("connection %d answered by %q, want live", i, name)
		}
		if err := echo(c, "ping"); err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
		c.Close()
	}
	if st := e.p.Stats(); st.HandshakeFirst != n || st.Conns != n || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want %d handshake-first connections, %d conns, none in flight", st, n, n)
	}

	mustSet(t, e.table, proxyService([]Endpoint{deadEndpoint(t, "127.0.0.2")}))
	// The reset follows the handshake at once: it may reach the client
	// before its dial returns (a reset, not a refusal of its SYN), or
	// after (its first read).
	c, err := e.dial(proxyVIP)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "reset") {
		t.Errorf("a connection whose backend is dead, handshake first: %v, want it reset after its handshake", err)
	}
	if st := e.p.Stats(); st.RefusedUnreachable != 1 {
		t.Errorf("Stats().RefusedUnreachable = %d, want 1", st.RefusedUnreachable)
	}
}
