package lb

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// hostConn dials ln from the test and returns the client's end and the
// connection ln accepted.
func hostConn(t *testing.T, ln *net.TCPListener) (client, accepted *net.TCPConn) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatalf("dial %v: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept on %v: %v", ln.Addr(), err)
	}
	return c, a
}

func hostListener(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// expectReset reads c and expects the peer's RST.
func expectReset(t *testing.T, c net.Conn, why string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from a connection (%s) = %v, want connection reset", why, err)
	}
}

// TestProxyServeHost relays host connections of a nat-mode Service's node
// port (the host relay works whatever the mode), lists them as host
// relays, drains them when their backend leaves, and resets what it
// cannot serve, counted by reason.
func TestProxyServeHost(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	nodePort := func(np uint16, eps []Endpoint, mutate ...func(*Service)) Service {
		return proxyService(eps, append([]func(*Service){func(s *Service) {
			s.Mode, s.Type = ModeNAT, TypeNodePort
			s.Ports[0].NodePort = np
		}}, mutate...)...)
	}
	e := startProxy(t, ProxyOptions{DrainTimeout: 100 * time.Millisecond}, nodePort(30080, []Endpoint{b1.endpoint()}))
	key := NodePortKey(30080, TCP, true)
	ln := hostListener(t)

	c, a := hostConn(t, ln)
	if !e.p.ServeHost(a, key) {
		t.Fatalf("ServeHost(%v) = false while Run runs, want true", key)
	}
	if name, _ := greeting(t, c); name != "b1" {
		t.Errorf("host connection answered by %q, want b1", name)
	}
	if err := echo(c, "through the host relay"); err != nil {
		t.Fatal(err)
	}
	to := ln.Addr().(*net.TCPAddr).AddrPort()
	if got := e.p.Conns(); len(got) != 1 || !got[0].Host || got[0].VIP != to || got[0].Backend != b1.addrPort() {
		t.Errorf("Conns() = %+v, want one host relay to %v via %v", got, b1.addrPort(), to)
	}
	if got := e.p.VIPs(); len(got) != 0 {
		t.Errorf("VIPs() = %v with only a host relay open, want none", got)
	}
	if st := e.p.Stats(); st.Conns != 1 || st.HostConns != 1 || st.Active != 1 {
		t.Errorf("Stats() = %+v, want Conns 1, HostConns 1, Active 1", st)
	}

	// The backend leaves: the relay drains, then is reset.
	mustSet(t, e.table, nodePort(30080, nil))
	e.p.Sync()
	if st := e.p.Stats(); st.Draining != 1 {
		t.Errorf("Stats().Draining = %d after the backend left, want 1", st.Draining)
	}
	if err := waitClosed(c, 5*time.Second); err != nil {
		t.Fatalf("host relay whose backend left: %v, want it reset after the drain timeout", err)
	}
	eventually(t, "Active 0 after the drain", func() bool { return e.p.Stats().Active == 0 })

	// No endpoints: reset.
	c, a = hostConn(t, ln)
	e.p.ServeHost(a, key)
	expectReset(t, c, "node port without endpoints")
	// No key at all: reset.
	c, a = hostConn(t, ln)
	e.p.ServeHost(a, NodePortKey(30999, TCP, true))
	expectReset(t, c, "node port of no Service")
	// externalTrafficPolicy Local, no endpoint on this node: reset,
	// counted apart.
	mustSet(t, e.table, nodePort(30080, []Endpoint{b1.endpoint()}, func(s *Service) { s.ExternalTrafficPolicy = PolicyLocal }))
	c, a = hostConn(t, ln)
	e.p.ServeHost(a, key)
	expectReset(t, c, "node port with no local endpoint")
	if st := e.p.Stats(); st.RefusedNoEndpoints != 2 || st.RefusedNoLocalEndpoints != 1 || st.HostConns != 1 {
		t.Errorf("Stats() = %+v, want RefusedNoEndpoints 2, RefusedNoLocalEndpoints 1, HostConns 1", st)
	}

	// After Run: refused at once.
	e.stop()
	c, a = hostConn(t, ln)
	if e.p.ServeHost(a, key) {
		t.Errorf("ServeHost after Run returned = true, want false")
	}
	expectReset(t, c, "after Run returned")
}

// TestProxyServeHostProxyProtocol: the PROXY v2 header of a host relay
// names the client and the address it connected to.
func TestProxyServeHostProxyProtocol(t *testing.T) {
	hdrs := make(chan []byte, 1)
	b := newBackend(t, "pp", "127.0.0.1", func(_ *testBackend, c *net.TCPConn) {
		h := make([]byte, 28)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadFull(c, h)
		hdrs <- h[:n]
		c.SetReadDeadline(time.Time{})
		io.Copy(c, c)
	})
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}, func(s *Service) {
		s.ProxyProtocol, s.Type = true, TypeNodePort
		s.Ports[0].NodePort = 30080
	}))
	ln := hostListener(t)
	c, a := hostConn(t, ln)
	e.p.ServeHost(a, NodePortKey(30080, TCP, true))
	if err := echo(c, "after the header"); err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	to := ln.Addr().(*net.TCPAddr).AddrPort()
	want := appendProxyV2(nil, client, to)
	if got := <-hdrs; string(got) != string(want) {
		t.Errorf("PROXY header = %x, want %x (from %v to %v)", got, want, client, to)
	}
}

// TestProxyServeHostCapAndIdle: host relays count against the caps and
// are closed by the idle timeout, as connections to VIPs are.
func TestProxyServeHostCapAndIdle(t *testing.T) {
	b1 := newBackend(t, "b1", "127.0.0.1", nil)
	const idle = 300 * time.Millisecond
	e := startProxy(t, ProxyOptions{MaxConns: 1, IdleTimeout: idle}, proxyService([]Endpoint{b1.endpoint()}, func(s *Service) {
		s.Type = TypeNodePort
		s.Ports[0].NodePort = 30080
	}))
	key := NodePortKey(30080, TCP, true)
	ln := hostListener(t)
	c, a := hostConn(t, ln)
	e.p.ServeHost(a, key)
	greeting(t, c)
	opened := time.Now()

	c2, a2 := hostConn(t, ln)
	e.p.ServeHost(a2, key)
	expectReset(t, c2, "over MaxConns")
	if st := e.p.Stats(); st.RefusedCap != 1 {
		t.Errorf("Stats().RefusedCap = %d, want 1", st.RefusedCap)
	}

	if err := waitClosed(c, 5*time.Second); err != nil {
		t.Fatalf("idle host relay: %v, want it closed after the idle timeout", err)
	}
	if took := time.Since(opened); took < idle {
		t.Errorf("idle host relay closed after %v, want after the idle timeout %v", took, idle)
	}
	eventually(t, "IdleClosed 1", func() bool { return e.p.Stats().IdleClosed == 1 })
}
