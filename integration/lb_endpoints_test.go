package integration

// Endpoint changes in nat mode, made by rewriting the config files of
// running routers: Services without usable endpoints refuse at once, TCP
// connections to a removed endpoint carry on (as kube-proxy keeps their
// conntrack entries), UDP flows to one move to a remaining endpoint.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32, router 169.254.244.1
//	 │    nginx-th5pz 10.244.0.4    TCP echo :80, UDP echo :53
//	 │    coredns-xx6mc 10.244.0.2  UDP echo :53 (kube-dns); client
//	 │    coredns-8qxfv 10.244.0.3  UDP echo :53 (kube-dns); client
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32, router 169.254.244.1
//	      nginx-4k7xw 10.244.1.2    TCP echo :80, UDP echo :53; client
//	      nginx-j6zwk 10.244.1.3    TCP echo :80, UDP echo :53
//
//	default/my-service       10.103.92.81:80/TCP        -> the nginx pods
//	kube-system/kube-dns     10.96.0.10:53/UDP          -> 10.244.0.2, 10.244.0.3
//	default/empty            10.96.100.10 80/TCP 53/UDP  no endpoints
//	default/not-ready        10.96.100.11 80/TCP 53/UDP  nginx pods ready: false, serving: false
//	default/term-serving     10.96.100.12 80/TCP 53/UDP  nginx pods terminating, serving
//	default/term-not-serving 10.96.100.13 80/TCP 53/UDP  nginx pods terminating, not serving
//	default/no-server        10.96.100.14 80/TCP 53/UDP  nginx pods, target port 9: nothing listens
//
// A router reloads its file about 100 ms after it changes; the tests poll
// with new connections and allow reloadWait for that.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

const (
	// reloadWait bounds how long a config change may take to reach the
	// packet path: 100 ms of watcher debounce plus the reload itself.
	reloadWait = 2 * time.Second
	// refuseWithin bounds how long a refusal may take: an ICMP error
	// straight from the client's own router, no retransmission.
	refuseWithin = 100 * time.Millisecond
)

// refusedTCP connects from ns to addr and reports nil if connect failed
// with ECONNREFUSED within refuseWithin.
func (e *lbEnv) refusedTCP(ns string, addr netip.AddrPort) error {
	conn, took, err := e.dialTCP(ns, addr, 2*time.Second)
	if err == nil {
		rep := readGreetingLine(conn)
		conn.Close()
		return fmt.Errorf("tcp %s -> %v: connected in %v (answered by %s), want ECONNREFUSED", ns, addr, took, rep)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("tcp %s -> %v: %v after %v, want ECONNREFUSED", ns, addr, err, took)
	}
	if took > refuseWithin {
		return fmt.Errorf("tcp %s -> %v: ECONNREFUSED after %v, want within %v", ns, addr, took, refuseWithin)
	}
	return nil
}

// readGreetingLine describes the echo server's greeting, for messages.
func readGreetingLine(conn net.Conn) string {
	conn.SetReadDeadline(time.Now().Add(time.Second))
	server, client, err := readGreeting(conn)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s, which saw %v", server, client)
}

// refusedUDP sends a datagram from ns to addr on a connected socket and
// reports nil if the socket's read failed with ECONNREFUSED (an ICMP port
// unreachable arrived) within refuseWithin.
func (e *lbEnv) refusedUDP(ns string, addr netip.AddrPort) error {
	conn := e.udpSocket(ns, netip.AddrPort{}, addr)
	defer conn.Close()
	start := time.Now()
	server, err := lbQuery(conn, "anybody?", time.Second)
	took := time.Since(start)
	if err == nil {
		return fmt.Errorf("udp %s -> %v: answered by %s in %v, want ECONNREFUSED", ns, addr, server, took)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("udp %s -> %v: %v after %v, want ECONNREFUSED (ICMP port unreachable)", ns, addr, err, took)
	}
	if took > refuseWithin {
		return fmt.Errorf("udp %s -> %v: ECONNREFUSED after %v, want within %v", ns, addr, took, refuseWithin)
	}
	return nil
}

// servedBy reports nil if a TCP and a UDP exchange from ns with vip are
// answered by one of backends.
func (e *lbEnv) servedBy(ns string, vip netip.Addr, backends []lbPod) error {
	names := podNames(backends)
	rep, err := e.exchange(ns, netip.AddrPortFrom(vip, 80), "tcp?")
	if err != nil {
		return err
	}
	if !slices.Contains(names, rep.Server) {
		return fmt.Errorf("tcp %s -> %v:80 answered by %s, want one of %v", ns, vip, rep.Server, names)
	}
	rep, err = e.udpExchange(ns, netip.AddrPortFrom(vip, 53), "udp?", 2*time.Second)
	if err != nil {
		return err
	}
	if !slices.Contains(names, rep.Server) {
		return fmt.Errorf("udp %s -> %v:53 answered by %s, want one of %v", ns, vip, rep.Server, names)
	}
	return nil
}

// TestLBNoEndpoints checks kube-proxy's rules for Services without a
// usable endpoint: refuse new connections at once (TCP connect fails with
// ECONNREFUSED, UDP gets ICMP port unreachable), except that endpoints
// which are terminating but still serving take traffic when none is
// ready.
func TestLBNoEndpoints(t *testing.T) {
	var (
		emptyVIP    = netip.MustParseAddr("10.96.100.10")
		notReadyVIP = netip.MustParseAddr("10.96.100.11")
		termServVIP = netip.MustParseAddr("10.96.100.12")
		termVIP     = netip.MustParseAddr("10.96.100.13")
		deadVIP     = netip.MustParseAddr("10.96.100.14")
	)
	static := []configs.ServiceSpec{
		dualService("empty", emptyVIP, nil),
		dualService("not-ready", notReadyVIP, lbNginx, withConditions(false, false, false)),
		dualService("term-serving", termServVIP, lbNginx, withConditions(false, true, true)),
		dualService("term-not-serving", termVIP, lbNginx, withConditions(false, false, true)),
		// Ready endpoints with nothing listening on the target port.
		dualService("no-server", deadVIP, lbNginx, func(s *configs.ServiceSpec) {
			for i := range s.Ports {
				s.Ports[i].TargetPort = "9"
			}
		}),
	}
	e := startLB(t, "noep", append([]configs.ServiceSpec{myService(), kubeDNS()}, static...))
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	e.serveOn(e.c.ServeUDPEcho, 53, lbNginx...)
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)

	clients := []string{lbCorednsXx6mc.name, lbNginx4k7xw.name}
	refused := func(t *testing.T, vip netip.Addr) {
		t.Helper()
		for _, from := range clients {
			if err := e.refusedTCP(from, netip.AddrPortFrom(vip, 80)); err != nil {
				t.Error(err)
			}
			if err := e.refusedUDP(from, netip.AddrPortFrom(vip, 53)); err != nil {
				t.Error(err)
			}
		}
	}

	t.Run("no endpoints in the config", func(t *testing.T) { refused(t, emptyVIP) })
	t.Run("not ready, not serving", func(t *testing.T) { refused(t, notReadyVIP) })
	t.Run("terminating, not serving", func(t *testing.T) { refused(t, termVIP) })
	t.Run("terminating but serving", func(t *testing.T) {
		for _, from := range clients {
			if err := e.servedBy(from, termServVIP, lbNginx); err != nil {
				t.Errorf("all endpoints terminating but serving: %v (want them used, as kube-proxy's fallback)", err)
			}
		}
	})

	t.Run("endpoints without a server", func(t *testing.T) {
		// The backend's kernel refuses: a TCP RST, an ICMP port
		// unreachable quoting the translated datagram. Both must reach
		// the client as answers from the VIP, as conntrack translates
		// the ICMP errors related to a flow.
		for _, from := range clients {
			if err := e.refusedTCP(from, netip.AddrPortFrom(deadVIP, 80)); err != nil {
				t.Error(err)
			}
			if err := e.refusedUDP(from, netip.AddrPortFrom(deadVIP, 53)); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("all endpoints removed", func(t *testing.T) {
		for _, from := range clients {
			if _, err := e.exchange(from, netip.AddrPortFrom(myServiceVIP, 80), "before"); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			if _, err := e.udpExchange(from, netip.AddrPortFrom(kubeDNSVIP, 53), "before", 2*time.Second); err != nil {
				t.Fatalf("before the change: %v", err)
			}
		}
		e.setServices(append([]configs.ServiceSpec{myService(withEndpoints()), kubeDNS(withEndpoints())}, static...)...)
		for _, from := range clients {
			took := eventually(t, reloadWait, fmt.Sprintf("tcp %s -> %v refused after its endpoints were removed", from, myServiceVIP), func() error {
				return e.refusedTCP(from, netip.AddrPortFrom(myServiceVIP, 80))
			})
			t.Logf("%s: my-service refused %v after the config change", from, took)
			// Now that the router has the change, every attempt is refused.
			for range 3 {
				if err := e.refusedTCP(from, netip.AddrPortFrom(myServiceVIP, 80)); err != nil {
					t.Error(err)
				}
				if err := e.refusedUDP(from, netip.AddrPortFrom(kubeDNSVIP, 53)); err != nil {
					t.Error(err)
				}
			}
		}
	})
}

// TestLBEndpointRemovedKeepsTCP opens one long-lived connection to each
// backend of my-service (round-robin, so three connections from one
// router reach all three), removes two of the backends, one on each node,
// and checks that the three connections keep working while new ones avoid
// the removed backends.
func TestLBEndpointRemovedKeepsTCP(t *testing.T) {
	rr := func(s *configs.ServiceSpec) { s.Picker = "round-robin" }
	e := startLB(t, "tcpkeep", []configs.ServiceSpec{myService(rr)})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	vip := netip.AddrPortFrom(myServiceVIP, 80)

	client := lbCorednsXx6mc
	conns := map[string]net.Conn{}
	for i := range lbNginx {
		conn, rep, err := e.dialFrom(client.name, netip.AddrPortFrom(client.addr, 0), vip, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d %s -> %v: %v", i, client.name, vip, err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[rep.Server] = conn
		if err := lbEcho(conn, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	if len(conns) != len(lbNginx) {
		t.Fatalf("%d round-robin connections from %s reached %v, want one on each of %v", len(lbNginx), client.name, keys(conns), podNames(lbNginx))
	}

	kept := lbNginxJ6zwk
	removed := []lbPod{lbNginxTh5pz, lbNginx4k7xw} // local and remote to the client
	e.setServices(myService(rr, withEndpoints(kept)))

	// Each router round-robins over all three backends until it has the
	// change: three new connections in a row to the kept one show that it
	// has.
	for _, from := range []string{lbCoredns8qxfv.name, lbNginx4k7xw.name} {
		inARow := 0
		took := eventually(t, reloadWait, fmt.Sprintf("new connections from %s only to %s", from, kept.name), func() error {
			rep, err := e.exchange(from, vip, "new")
			if err != nil {
				return err
			}
			if rep.Server != kept.name {
				inARow = 0
				return fmt.Errorf("answered by %s", rep.Server)
			}
			if inARow++; inARow < 3 {
				return fmt.Errorf("%d in a row to %s", inARow, kept.name)
			}
			return nil
		})
		t.Logf("%s: new connections avoid %v %v after the change", from, podNames(removed), took)
		for i := range 20 {
			rep, err := e.exchange(from, vip, "new")
			if err != nil {
				t.Fatalf("new connection %d from %s: %v", i, from, err)
			}
			if rep.Server != kept.name {
				t.Errorf("new connection %d from %s answered by %s, want %s: %v were removed", i, from, rep.Server, kept.name, podNames(removed))
			}
		}
	}

	for _, b := range lbNginx {
		conn := conns[b.name]
		if err := lbEcho(conn, "still there?"); err != nil {
			t.Errorf("connection to %s (removed: %t) after the change: %v", b.name, b.name != kept.name, err)
			continue
		}
		// A clean close both ways: the router still translates FINs.
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("connection to %s: after our FIN read %d bytes, %v; want EOF", b.name, n, err)
		}
	}
}

// keys is m's keys, sorted.
func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestLBUDPFlowMigration sends DNS-like queries to kube-dns from sockets
// bound to fixed ports, one on each node, so all queries of a socket are
// one flow. When the backend of their flows is removed, their next
// queries are answered by the other backend within reloadWait: no stale
// flow keeps sending them to the removed backend. When every backend is
// gone, the sockets get ICMP port unreachable. Many one-shot queries from
// random ports spread over both backends.
func TestLBUDPFlowMigration(t *testing.T) {
	e := startLB(t, "udpmove", []configs.ServiceSpec{kubeDNS()})
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)
	vip := netip.AddrPortFrom(kubeDNSVIP, 53)

	t.Run("one-shot queries spread", func(t *testing.T) {
		const n = 300
		var counts lbCounter
		clients := []string{lbNginx4k7xw.name, lbNginxJ6zwk.name, lbNginxTh5pz.name, lbMaster}
		failed, errs := lbParallel(8, n, func(i int) error {
			// A lost datagram is asked again, like a resolver does, from
			// a new port: a new flow and a new pick.
			var err error
			for range 3 {
				var rep topology.Reply
				if rep, err = e.udpExchange(clients[i%len(clients)], vip, fmt.Sprintf("query %d", i), time.Second); err == nil {
					counts.add(rep.Server)
					return nil
				}
			}
			return err
		})
		if failed > 0 {
			t.Fatalf("%d of %d one-shot queries to %v failed, e.g. %v", failed, n, vip, errs)
		}
		checkUniform(t, fmt.Sprintf("%d one-shot queries to %v", n, vip), counts.counts(), n, lbCoreDNS)
		t.Logf("%d one-shot queries: %v", n, counts.counts())
	})

	type client struct {
		pod   lbPod
		conn  *net.UDPConn
		first string
	}
	// One client on each node; the hostgw-master one (hairpin: its
	// backends are local) tries ports until its flow shares the backend
	// of the hostgw-node one, so that removing that backend moves both.
	var clients []*client
	open := func(p lbPod, port uint16) *client {
		c := &client{pod: p, conn: e.udpSocket(p.name, netip.AddrPortFrom(p.addr, port), vip)}
		for i := range 5 {
			server, err := lbQuery(c.conn, fmt.Sprintf("%s:%d %d", p.name, port, i), 2*time.Second)
			if err != nil {
				t.Fatalf("query %d from %s:%d: %v", i, p.name, port, err)
			}
			if c.first == "" {
				c.first = server
			}
			if server != c.first {
				t.Errorf("query %d from %s:%d answered by %s, earlier ones by %s: one flow, want one backend", i, p.name, port, server, c.first)
			}
		}
		return c
	}
	clients = append(clients, open(lbNginx4k7xw, 5353))
	for port := uint16(5353); ; port++ {
		c := open(lbNginxTh5pz, port)
		if c.first == clients[0].first {
			clients = append(clients, c)
			break
		}
		c.conn.Close()
		if port > 5353+30 {
			t.Fatalf("30 ports of %s all reached another backend than %s's %s", lbNginxTh5pz.name, clients[0].pod.name, clients[0].first)
		}
	}
	var removed, kept lbPod
	for _, b := range lbCoreDNS {
		if b.name == clients[0].first {
			removed = b
		} else {
			kept = b
		}
	}
	t.Logf("flows: %v -> %s, %v -> %s; removing %s", clients[0].conn.LocalAddr(), clients[0].first, clients[1].conn.LocalAddr(), clients[1].first, removed.name)
	e.setServices(kubeDNS(withEndpoints(kept)))

	start := time.Now()
	moved := map[*client]time.Duration{}
	for i := 0; len(moved) < len(clients); i++ {
		if time.Since(start) > reloadWait {
			break
		}
		for _, c := range clients {
			if _, ok := moved[c]; ok {
				continue
			}
			server, err := lbQuery(c.conn, fmt.Sprintf("after %d", i), 200*time.Millisecond)
			switch {
			case err != nil:
				// Lost while the router reloads: ask again.
			case server == kept.name:
				moved[c] = time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range clients {
		took, ok := moved[c]
		if !ok {
			t.Errorf("%v (flow on %s): no answer from %s within %v of removing %s", c.conn.LocalAddr(), c.first, kept.name, reloadWait, removed.name)
			continue
		}
		t.Logf("%v (flow on %s) answered by %s %v after the change", c.conn.LocalAddr(), c.first, kept.name, took.Round(time.Millisecond))
		for i := range 5 {
			if server, err := lbQuery(c.conn, fmt.Sprintf("settled %d", i), 2*time.Second); err != nil || server != kept.name {
				t.Errorf("query %d from %v after the move: %q, %v; want %s", i, c.conn.LocalAddr(), server, err, kept.name)
			}
		}
	}

	t.Run("all removed", func(t *testing.T) {
		e.setServices(kubeDNS(withEndpoints()))
		for _, c := range clients {
			eventually(t, reloadWait, fmt.Sprintf("%v refused once kube-dns has no endpoints", c.conn.LocalAddr()), func() error {
				server, err := lbQuery(c.conn, "anybody?", 200*time.Millisecond)
				if errors.Is(err, syscall.ECONNREFUSED) {
					return nil
				}
				return fmt.Errorf("answer %q, %v; want ECONNREFUSED", server, err)
			})
		}
	})
}
