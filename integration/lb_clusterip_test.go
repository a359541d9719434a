package integration

// ClusterIP load balancing in nat mode on the seed's cluster: who answers,
// which client address backends see, how connections spread over the
// backends, and ClientIP session affinity.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32, router 169.254.244.1
//	 │    nginx-th5pz 10.244.0.4  (backend; also a client of its own Service)
//	 │    coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3  (clients)
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32, router 169.254.244.1
//	      nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3  (backends and clients)
//
//	default/my-service      10.103.92.81:80/TCP  random       -> 10.244.0.4, 10.244.1.2, 10.244.1.3
//	default/my-service-rr   10.103.92.82:80/TCP  round-robin  -> the same three
//	default/my-service-aff  10.103.92.83:80/TCP  ClientIP     -> the same three
//	default/remote-a, -b    10.103.92.84, .85:80/TCP      -> 10.244.1.2 only
//	default/local-a, -b     10.103.92.86, .87:80/TCP      -> 10.244.0.4 only
//
//	client ─ cni0 ─ node kernel ─ vr0 ─ router: DNAT VIP → backend ─┬─ vr0 ─ cni0 ─ local backend
//	                                      (+ SNAT client → 169.254.244.1)
//	                                                                └─ overlay ─ router ─ remote backend
//
// A backend on the other node sees the client's own address (DNAT only);
// one on the client's node sees the router address 169.254.244.1
// (hairpin), so that its reply returns through the router.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
)

// TestLBClusterIPReachesEveryBackend curls my-service, as the seed does,
// from pods on both nodes (two of them backends of the Service) and from
// node hostgw-master.
func TestLBClusterIPReachesEveryBackend(t *testing.T) {
	e := startLB(t, "svc", []configs.ServiceSpec{myService()})
	e.serveOn(e.c.ServeHTTP, 80, lbNginx...)

	url := fmt.Sprintf("http://%s/", myServiceVIP)
	// 40 random picks miss one of 3 backends with probability 3·(2/3)^40 ≈ 3e-7.
	const requests = 40
	for _, from := range []string{lbCorednsXx6mc.name, lbNginxTh5pz.name, lbNginx4k7xw.name, lbMaster} {
		t.Run(from, func(t *testing.T) {
			src := e.sourceFor(from, myServiceVIP)
			var counts lbCounter
			for i := range requests {
				rep, err := e.httpGet(from, url)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				counts.add(rep.Server)
				want, why := src, "the client's own address: the backend is on the other node"
				if e.nodeOf(rep.Server) == e.nodeOf(from) {
					want, why = lbRouterAddr, "the router address: hairpin"
				}
				if rep.Client.Addr() != want {
					t.Errorf("GET %s from %s (%v): %s on %s saw client %v, want %v (%s)",
						url, from, src, rep.Server, e.nodeOf(rep.Server), rep.Client, want, why)
				}
			}
			got := counts.counts()
			for _, b := range lbNginx {
				if got[b.name] == 0 {
					t.Errorf("GET %s x%d from %s: backend %s never answered; counts %v", url, requests, from, b.name, got)
				}
			}
			if len(got) != len(lbNginx) {
				t.Errorf("GET %s x%d from %s: answered by %v, want only %v", url, requests, from, got, podNames(lbNginx))
			}
			t.Logf("from %s (%v): %v", from, src, got)
		})
	}
}

// TestLBDistribution opens 3,000 connections to a random and 3,000 to a
// round-robin Service. Random gives each backend n/3 within 5 standard
// deviations; round-robin, which rotates per router, exactly n/3 when one
// router makes every pick: it picks once per connection, however the
// clients' ports fall.
//
// A client's kernel may reuse a local port for the same VIP while the
// router still keeps the closed flow of its previous connection (it
// lingers 10 s): hostgw-master's own kernel did, about once in three runs
// of 3,000. Such a connection once inherited the closed flow and went to
// its backend without a pick, which gave 1,001/1,000/999; it now starts a
// new flow and picks ("reused port" checks that directly).
//
// Outlier ejection is off: it counts a SYN still unanswered after 1 s as a
// failure, and a loaded machine that delays three SYN-ACKs of one backend
// in a row would take that backend out of the rotation for 5 s — as it
// should, but then no rotation is exact. Ejection is tested on its own.
func TestLBDistribution(t *testing.T) {
	rrVIP := netip.MustParseAddr("10.103.92.82")
	off := false
	e := startLBWith(t, "dist", lbOptions{LB: configs.LBSpec{Outlier: configs.OutlierSpec{Enabled: &off}}}, []configs.ServiceSpec{
		myService(),
		myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.Picker = "my-service-rr", []string{rrVIP.String()}, "round-robin"
		}),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)

	// Raw TCP connections, 8 at a time: each is connect, one byte each
	// way, close.
	const n, workers = 3000, 8
	run := func(t *testing.T, vip netip.Addr, clients []string) map[string]int {
		t.Helper()
		var counts lbCounter
		start := time.Now()
		failed, errs := lbParallel(workers, n, func(i int) error {
			rep, err := e.exchange(clients[i%len(clients)], netip.AddrPortFrom(vip, 80), "x")
			if err != nil {
				return err
			}
			counts.add(rep.Server)
			return nil
		})
		if failed > 0 {
			t.Fatalf("%d of %d connections to %v failed, e.g. %v", failed, n, vip, errs)
		}
		got := counts.counts()
		t.Logf("%d connections to %v from %v in %v: %v", n, vip, clients, time.Since(start).Round(time.Millisecond), got)
		return got
	}

	// Round-robin first, from hostgw-master, then random from
	// hostgw-node: disjoint clients, so that no connection of one phase
	// meets a flow of the other that is still lingering after its close
	// (see TestLBSameClientPortTwoVIPs for what happens then).
	t.Run("round-robin", func(t *testing.T) {
		// Every client on hostgw-master, so that one router picks for all.
		got := run(t, rrVIP, []string{lbCorednsXx6mc.name, lbCoredns8qxfv.name, lbNginxTh5pz.name, lbMaster})
		// The router's own count of the flows it started per backend
		// tells a pick spent on no connection (a flow for a SYN that
		// never became a connection: more flows than answers) from a
		// connection that took no pick (fewer).
		flows := e.backendFlows(lbMaster, "my-service-rr")
		for _, b := range lbNginx {
			if got[b.name] != n/len(lbNginx) {
				t.Errorf("%d connections to %v (round-robin): %s answered %d, want exactly %d; counts %v",
					n, rrVIP, b.name, got[b.name], n/len(lbNginx), got)
			}
			if f := flows[netip.AddrPortFrom(b.addr, 80)]; f != got[b.name] {
				t.Errorf("%s's router started %d flows to %s (%v:80) for %d connections it answered: each connection must be one flow and one pick; flows %v",
					lbMaster, f, b.name, b.addr, got[b.name], flows)
			}
		}
	})
	// A client that aborts its connection (RST: no TIME_WAIT) and connects
	// again at once from the same port, within the closed flow's linger:
	// each connection is a new pick, so the backends follow the rotation
	// (sorted by address), not the first connection's backend.
	t.Run("reused port", func(t *testing.T) {
		client := lbCorednsXx6mc
		local := netip.AddrPortFrom(client.addr, 20100) // below the ephemeral range (32768-60999): no earlier connection of this test holds it in TIME_WAIT
		vip := netip.AddrPortFrom(rrVIP, 80)
		var got []string
		for i := range 2 * len(lbNginx) {
			c, rep, err := e.dialFrom(client.name, local, vip, 5*time.Second)
			if err != nil {
				t.Fatalf("connection %d %v -> %v: %v", i+1, local, vip, err)
			}
			got = append(got, rep.Server)
			c.(*net.TCPConn).SetLinger(0) // close with RST
			c.Close()
		}
		order := podNames(lbNginx) // th5pz, 4k7xw, j6zwk: by address
		first := slices.Index(order, got[0])
		for i, name := range got {
			if want := order[(first+i)%len(order)]; name != want {
				t.Fatalf("%d connections from %v to %v (round-robin), each aborted before the next: backends %v, want the rotation %v from %s", len(got), local, vip, got, order, got[0])
			}
		}
	})
	t.Run("random", func(t *testing.T) {
		got := run(t, myServiceVIP, []string{lbNginx4k7xw.name, lbNginxJ6zwk.name, lbWorker})
		checkUniform(t, fmt.Sprintf("%d connections to %v (random)", n, myServiceVIP), got, n, lbNginx)
	})
}

// TestLBSameClientPortTwoVIPs connects one client socket address to two
// Services that share their one backend, at the same time: the backend
// would see two connections with one 4-tuple unless the router gives the
// second another source port, as Linux conntrack does (nf_nat's null
// binding picks a free port on a clash). Clients hit this whenever the
// kernel reuses a local port for another destination while the router
// still tracks the earlier flow, which lingers 10 s after the close.
func TestLBSameClientPortTwoVIPs(t *testing.T) {
	vipA, vipB := netip.MustParseAddr("10.103.92.84"), netip.MustParseAddr("10.103.92.85")
	vipC, vipD := netip.MustParseAddr("10.103.92.86"), netip.MustParseAddr("10.103.92.87")
	one := func(name string, vip netip.Addr, p lbPod) configs.ServiceSpec {
		return myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.Endpoints = name, []string{vip.String()}, lbEndpoints(p)
		})
	}
	e := startLB(t, "clash", []configs.ServiceSpec{
		one("remote-a", vipA, lbNginx4k7xw), one("remote-b", vipB, lbNginx4k7xw),
		one("local-a", vipC, lbNginxTh5pz), one("local-b", vipD, lbNginxTh5pz),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx4k7xw, lbNginxTh5pz)

	client := lbCorednsXx6mc
	for _, tc := range []struct {
		name       string
		first, sec netip.Addr
		backend    lbPod
		seen       netip.Addr // the client address the backend sees
		port       uint16
		bug        string
	}{
		{"hairpin backend", vipC, vipD, lbNginxTh5pz, lbRouterAddr, 20001, ""},
		{"remote backend", vipA, vipB, lbNginx4k7xw, client.addr, 20002,
			"lb.NAT drops the SYN when its reply tuple (backend ↔ client ip:port) is taken by another flow; it remaps the port only for hairpin flows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := netip.AddrPortFrom(client.addr, tc.port)
			c1, rep1, err := e.dialFrom(client.name, local, netip.AddrPortFrom(tc.first, 80), 5*time.Second)
			if err != nil {
				t.Fatalf("first connection %v -> %v: %v", local, tc.first, err)
			}
			defer c1.Close()
			c2, rep2, err := e.dialFrom(client.name, local, netip.AddrPortFrom(tc.sec, 80), 3*time.Second)
			if err != nil {
				t.Fatalf("second connection %v -> %v (same backend %s as %v -> %v, still open): %v",
					local, tc.sec, tc.backend.name, local, tc.first, err)
			}
			defer c2.Close()
			if rep1.Server != tc.backend.name || rep2.Server != tc.backend.name {
				t.Errorf("answered by %s and %s, want %s for both", rep1.Server, rep2.Server, tc.backend.name)
			}
			if rep1.Client == rep2.Client || rep1.Client.Addr() != tc.seen || rep2.Client.Addr() != tc.seen {
				t.Errorf("backend saw the connections from %v and %v, want two ports of %v", rep1.Client, rep2.Client, tc.seen)
			}
			for i, c := range []net.Conn{c1, c2} {
				if err := lbEcho(c, fmt.Sprintf("connection %d", i+1)); err != nil {
					t.Error(err)
				}
			}
			t.Logf("backend %s saw %v and %v", tc.backend.name, rep1.Client, rep2.Client)
		})
	}
}

// TestLBSessionAffinity sends 50 connections from each of two pods to a
// Service with sessionAffinity ClientIP: each pod's connections all land
// on one backend.
func TestLBSessionAffinity(t *testing.T) {
	affVIP := netip.MustParseAddr("10.103.92.83")
	e := startLB(t, "aff", []configs.ServiceSpec{
		myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.SessionAffinity = "my-service-aff", []string{affVIP.String()}, "ClientIP"
		}),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)

	// Without affinity, 50 random picks would all land on one backend
	// with probability 3·(1/3)^50: a pass is not luck.
	const conns = 50
	for _, from := range []lbPod{lbCorednsXx6mc, lbNginxJ6zwk} {
		var counts lbCounter
		for i := range conns {
			rep, err := e.exchange(from.name, netip.AddrPortFrom(affVIP, 80), "affinity")
			if err != nil {
				t.Fatalf("connection %d from %s: %v", i, from.name, err)
			}
			counts.add(rep.Server)
		}
		if got := counts.counts(); len(got) != 1 {
			t.Errorf("%d connections from %s to %v (sessionAffinity ClientIP) landed on %v, want all on one backend", conns, from.name, affVIP, got)
		} else {
			t.Logf("from %s: %v", from.name, got)
		}
	}
}

// backendFlows returns the flows node's router started per backend of
// Service default/service (vrouter_backend_connections_total), read from
// its /metrics on the default address, 127.0.0.1:10249, in the node's
// namespace.
func (e *lbEnv) backendFlows(node, service string) map[netip.AddrPort]int {
	e.t.Helper()
	code, body, err := e.httpGetNS(node, "http://127.0.0.1:10249/metrics")
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("GET /metrics of %s = %d, %v", node, code, err)
	}
	out := map[netip.AddrPort]int{}
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "vrouter_backend_connections_total{") || !strings.Contains(l, `service="`+service+`"`) {
			continue
		}
		_, rest, _ := strings.Cut(l, `backend="`)
		addr, _, _ := strings.Cut(rest, `"`)
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			e.t.Fatalf("/metrics of %s: %q: backend %q: %v", node, l, addr, err)
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err != nil {
			e.t.Fatalf("/metrics of %s: %q: %v", node, l, err)
		}
		out[ap] = int(v)
	}
	return out
}

// httpGetNS GETs url from inside namespace ns and returns the status code
// and body.
func (e *lbEnv) httpGetNS(ns, url string) (int, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := e.c.Do(ns, func() error {
				var d net.Dialer
				var err error
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
