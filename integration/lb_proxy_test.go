package integration

// Service load balancing in proxy mode on the seed's cluster: the router
// terminates a pod's TCP connection to a ClusterIP in its own stack, dials
// the picked endpoint from the node's kernel, and splices the two.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32, cni0 10.244.0.1/24
//	 │    nginx-th5pz 10.244.0.4 (backend)   coredns-xx6mc 10.244.0.2 (client)
//	 │    coredns-8qxfv 10.244.0.3 (no server on :80: a dead endpoint)
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32, cni0 10.244.1.1/24
//	      nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3 (backends and clients)
//	      10.244.1.9: no pod at all (a dead endpoint that never answers)
//
//	default/my-service  10.103.92.81:80/TCP  mode proxy -> 10.244.0.4, 10.244.1.2, 10.244.1.3
//	default/dual        10.103.92.90 80/TCP (proxy), 53/UDP (nat) -> the same three
//
//	client ─ cni0 ─ node kernel ─ vr0 ─ router stack: VIP:80 terminated
//	                                         │ vrouter dials the endpoint from the node kernel
//	                                         ▼
//	                           node kernel ─┬─ cni0 ─ local endpoint    (sees cni0's 10.244.x.1)
//	                                        └─ vr0 ─ router ─ overlay ─ router ─ remote endpoint
//	                                                                    (sees the node's vr0 10.244.x.0)
//
// Backends see the client node's address; with proxyProtocol they learn
// the client pod's address from a PROXY protocol v2 header.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// proxyMode puts a Service in proxy mode.
func proxyMode(s *configs.ServiceSpec) { s.Mode = configs.ModeProxy }

// proxyPodByName finds one of the seed's pods (lbNginx, lbCoreDNS).
func proxyPodByName(t *testing.T, name string) lbPod {
	t.Helper()
	for _, p := range append(slices.Clone(lbNginx), lbCoreDNS...) {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("no pod %q in the seed cluster", name)
	return lbPod{}
}

// TestLBProxyReachesEveryBackend connects to my-service in proxy mode
// from pods on both nodes and from a node: every endpoint answers, and
// sees the address the client's node kernel dials it from. The UDP port
// of a proxy-mode Service is translated as in nat mode.
func TestLBProxyReachesEveryBackend(t *testing.T) {
	dualVIP := netip.MustParseAddr("10.103.92.90")
	e := startLB(t, "pxy", []configs.ServiceSpec{
		myService(proxyMode),
		dualService("dual", dualVIP, lbNginx, proxyMode),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	e.serveOn(e.c.ServeUDPEcho, 53, lbNginx...)

	// 40 random picks miss one of 3 backends with probability 3·(2/3)^40 ≈ 3e-7.
	const conns = 40
	for _, from := range []string{lbCorednsXx6mc.name, lbNginx4k7xw.name, lbMaster} {
		t.Run(from, func(t *testing.T) {
			node := e.nodeOf(from)
			var counts lbCounter
			for i := range conns {
				vip := myServiceVIP
				if i%2 == 1 {
					vip = dualVIP
				}
				msg := fmt.Sprintf("proxied %d", i)
				rep, err := e.exchange(from, netip.AddrPortFrom(vip, 80), msg)
				if err != nil {
					t.Fatalf("connection %d to %v:80: %v", i, vip, err)
				}
				counts.add(rep.Server)
				backend := proxyPodByName(t, rep.Server)
				// The router dials from the node kernel: the backend sees
				// the source that kernel picks towards it.
				if want := e.sourceFor(node, backend.addr); rep.Client.Addr() != want {
					t.Errorf("connection %d from %s to %v:80: %s saw client %v, want %v (%s's kernel's source towards %v)",
						i, from, vip, rep.Server, rep.Client, want, node, backend.addr)
				}
			}
			got := counts.counts()
			for _, b := range lbNginx {
				if got[b.name] == 0 {
					t.Errorf("%d connections from %s: backend %s never answered; counts %v", conns, from, b.name, got)
				}
			}
			t.Logf("from %s: %v", from, got)

			rep, err := e.udpExchange(from, netip.AddrPortFrom(dualVIP, 53), "udp through nat", 3*time.Second)
			if err != nil {
				t.Fatalf("UDP to %v:53 (proxy-mode Service, UDP port: nat): %v", dualVIP, err)
			}
			if !slices.Contains(podNames(lbNginx), rep.Server) {
				t.Errorf("UDP to %v:53 answered by %s, want one of %v", dualVIP, rep.Server, podNames(lbNginx))
			}
		})
	}
	e.requireRouters()
}

// TestLBProxyDeadEndpoint lists two dead endpoints next to the three
// live ones: a pod without a server on the port (the dial is refused) and
// an address with no pod (the dial times out). The router dials before it
// completes the client's handshake and tries another endpoint when a dial
// fails, so not one of 100 client connections fails.
func TestLBProxyDeadEndpoint(t *testing.T) {
	noPod := netip.MustParseAddr("10.244.1.9")
	e := startLB(t, "pxydead", []configs.ServiceSpec{
		myService(proxyMode, func(s *configs.ServiceSpec) {
			s.Endpoints = append(lbEndpoints(append(slices.Clone(lbNginx), lbCoredns8qxfv)...),
				configs.EndpointSpec{Addresses: []string{noPod.String()}, NodeName: lbWorker})
		}),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)

	clients := []string{lbCorednsXx6mc.name, lbNginxJ6zwk.name, lbMaster, lbWorker}
	const n, workers = 100, 8
	var counts lbCounter
	start := time.Now()
	failed, errs := lbParallel(workers, n, func(i int) error {
		rep, err := e.exchange(clients[i%len(clients)], netip.AddrPortFrom(myServiceVIP, 80), fmt.Sprintf("conn %d", i))
		if err != nil {
			return err
		}
		counts.add(rep.Server)
		if !slices.Contains(podNames(lbNginx), rep.Server) {
			return fmt.Errorf("connection %d answered by %s, want one of %v", i, rep.Server, podNames(lbNginx))
		}
		return nil
	})
	if failed > 0 {
		t.Fatalf("%d of %d connections to my-service (with dead endpoints %v and %v) failed, e.g. %v",
			failed, n, lbCoredns8qxfv.addr, noPod, errs)
	}
	t.Logf("%d connections from %v in %v, none failed: %v", n, clients, time.Since(start).Round(time.Millisecond), counts.counts())
	e.requireRouters()
}

// TestLBProxyDrain removes the endpoint of an open connection: the
// connection keeps working until lb.proxy.drainTimeout, then is ended,
// while new connections avoid that endpoint from the reload on.
func TestLBProxyDrain(t *testing.T) {
	const drain = 5 * time.Second
	tune := func(f *configs.File) { f.LB.Proxy.DrainTimeout = drain.String() }
	e := startProxyLB(t, "pxydrain", tune, myService(proxyMode))
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)

	client := lbCorednsXx6mc
	conn, _, err := e.dialTCP(client.name, netip.AddrPortFrom(myServiceVIP, 80), 5*time.Second)
	if err != nil {
		t.Fatalf("dial my-service from %s: %v", client.name, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	server, _, err := readGreeting(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := lbEcho(conn, "before"); err != nil {
		t.Fatal(err)
	}
	var rest []lbPod
	for _, p := range lbNginx {
		if p.name != server {
			rest = append(rest, p)
		}
	}
	t.Logf("%s's connection went to %s; removing it from my-service, keeping %v", client.name, server, podNames(rest))

	reloads := proxyLogCount(t, e.logPath(lbMaster), "config reloaded")
	removed := time.Now()
	writeProxyConfigs(e, tune, myService(proxyMode, withEndpoints(rest...)))
	took := eventually(t, drain/2, "hostgw-master's router reloaded", func() error {
		if proxyLogCount(t, e.logPath(lbMaster), "config reloaded") == reloads {
			return errors.New("no new \"config reloaded\" line in its log")
		}
		return nil
	})
	t.Logf("reloaded %v after the file changed", took.Round(time.Millisecond))

	// Within the drain timeout the connection still carries data both ways.
	if err := lbEcho(conn, "draining"); err != nil {
		t.Fatalf("connection to %s %v after its endpoint left (drain timeout %v): %v, want it still working", server, time.Since(removed).Round(time.Millisecond), drain, err)
	}
	// New connections avoid the endpoint that left.
	for i := range 30 {
		rep, err := e.exchange(client.name, netip.AddrPortFrom(myServiceVIP, 80), "new")
		if err != nil {
			t.Fatalf("new connection %d: %v", i, err)
		}
		if rep.Server == server {
			t.Fatalf("new connection %d went to %s, which left my-service", i, server)
		}
	}
	if since := time.Since(removed); since < drain {
		if err := lbEcho(conn, "still draining"); err != nil {
			t.Fatalf("connection to %s %v after its endpoint left (drain timeout %v): %v, want it still working", server, since.Round(time.Millisecond), drain, err)
		}
	}

	// After the drain timeout the router ends it.
	conn.SetReadDeadline(removed.Add(drain + 10*time.Second))
	_, err = io.Copy(io.Discard, conn)
	ended := time.Since(removed)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection to %s still open %v after its endpoint left, want it ended after the drain timeout %v", server, ended.Round(time.Millisecond), drain)
	}
	if ended < drain {
		t.Errorf("connection to %s ended %v after its endpoint left (%v), want after the drain timeout %v", server, ended.Round(time.Millisecond), err, drain)
	}
	t.Logf("connection to %s ended %v after its endpoint left (%v)", server, ended.Round(time.Millisecond), err)
	e.requireRouters()
}

// TestLBProxyModeSwitch switches my-service from nat to proxy mode and
// back in the config file while the routers run: each reload moves the
// ClusterIP in or out of the stack's own addresses, and backends see the
// client's address (nat) or its node's (proxy) accordingly.
func TestLBProxyModeSwitch(t *testing.T) {
	e := startLB(t, "pxyswitch", []configs.ServiceSpec{myService()})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	client := lbCorednsXx6mc
	check := func(mode string) {
		t.Helper()
		var counts lbCounter
		for i := range 12 {
			rep, err := e.exchange(client.name, netip.AddrPortFrom(myServiceVIP, 80), mode)
			if err != nil {
				t.Fatalf("%s mode, connection %d: %v", mode, i, err)
			}
			counts.add(rep.Server)
			backend := proxyPodByName(t, rep.Server)
			want := client.addr // nat: the client itself, or the router address (hairpin)
			switch {
			case mode == configs.ModeProxy:
				want = e.sourceFor(lbMaster, backend.addr)
			case backend.node == client.node:
				want = lbRouterAddr
			}
			if rep.Client.Addr() != want {
				t.Errorf("%s mode, connection %d: %s saw client %v, want %v", mode, i, rep.Server, rep.Client, want)
			}
		}
		t.Logf("%s mode: %v", mode, counts.counts())
	}
	reload := func(svc configs.ServiceSpec) {
		t.Helper()
		n := proxyLogCount(t, e.logPath(lbMaster), "config reloaded")
		e.setServices(svc)
		eventually(t, 5*time.Second, "hostgw-master's router reloaded", func() error {
			if proxyLogCount(t, e.logPath(lbMaster), "config reloaded") == n {
				return errors.New("no new \"config reloaded\" line in its log")
			}
			return nil
		})
	}
	check(configs.ModeNAT)
	reload(myService(proxyMode))
	check(configs.ModeProxy)
	reload(myService())
	check(configs.ModeNAT)
	e.requireRouters()
}

// TestLBProxyProtocol: with proxyProtocol, each backend connection starts
// with a PROXY protocol v2 header naming the client pod's address and
// port and the ClusterIP it dialed.
func TestLBProxyProtocol(t *testing.T) {
	e := startLB(t, "pxypp", []configs.ServiceSpec{
		myService(proxyMode, func(s *configs.ServiceSpec) { s.ProxyProtocol = true }),
	})
	for _, p := range lbNginx {
		serveProxyV2(t, e.c, p.name, netip.AddrPortFrom(p.addr, 80))
	}
	vip := netip.AddrPortFrom(myServiceVIP, 80)
	for _, from := range []lbPod{lbCorednsXx6mc, lbNginx4k7xw} {
		for i := range 6 {
			conn, _, err := e.dialTCP(from.name, vip, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %v from %s: %v", vip, from.name, err)
			}
			local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := io.ReadAll(conn)
			conn.Close()
			if err != nil {
				t.Fatalf("connection %d from %s: read: %v", i, from.name, err)
			}
			f := strings.Fields(string(line))
			if len(f) != 3 {
				t.Fatalf("connection %d from %s: backend answered %q, want \"<pod> <source> <destination>\"", i, from.name, line)
			}
			if want := netip.AddrPortFrom(local.Addr().Unmap(), local.Port()).String(); f[1] != want || f[2] != vip.String() {
				t.Errorf("connection %d from %s (%v): %s got PROXY header %s -> %s, want %s -> %v", i, from.name, local, f[0], f[1], f[2], want, vip)
			}
		}
	}
	e.requireRouters()
}

// serveProxyV2 serves on addr in namespace ns: per connection it reads a
// PROXY protocol v2 header and answers "<ns> <source> <destination>\n"
// with the addresses it carries, then closes. Cleanup stops it.
func serveProxyV2(t *testing.T, c *topology.Cluster, ns string, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := c.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %v in %s: %v", addr, ns, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				src, dst, err := readProxyV2(conn)
				if err != nil {
					fmt.Fprintf(conn, "%s error: %v\n", ns, err)
					return
				}
				fmt.Fprintf(conn, "%s %v %v\n", ns, src, dst)
			})
		}
	})
}

// readProxyV2 reads a PROXY protocol v2 header for TCP over IPv4 or IPv6.
func readProxyV2(r io.Reader) (src, dst netip.AddrPort, err error) {
	var h [16]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return src, dst, fmt.Errorf("read header: %w", err)
	}
	sig := []byte("\r\n\r\n\x00\r\nQUIT\n")
	if !bytes.Equal(h[:12], sig) || h[12] != 0x21 {
		return src, dst, fmt.Errorf("header % x: want the v2 signature and PROXY command", h)
	}
	body := make([]byte, binary.BigEndian.Uint16(h[14:16]))
	if _, err := io.ReadFull(r, body); err != nil {
		return src, dst, fmt.Errorf("read addresses: %w", err)
	}
	var n int
	switch h[13] {
	case 0x11:
		n = 4
	case 0x21:
		n = 16
	default:
		return src, dst, fmt.Errorf("family/transport %#x: want TCP over IPv4 (0x11) or IPv6 (0x21)", h[13])
	}
	if len(body) < 2*n+4 {
		return src, dst, fmt.Errorf("address block of %d bytes: want %d", len(body), 2*n+4)
	}
	sa, _ := netip.AddrFromSlice(body[:n])
	da, _ := netip.AddrFromSlice(body[n : 2*n])
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[2*n:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[2*n+2:]))
	return src, dst, nil
}

// startProxyLB is startLB with every node's config file changed by tune
// (lb settings that harness.ConfigOptions does not carry, and that need a
// router restart to change). writeProxyConfigs rewrites the files the same
// way.
func startProxyLB(t *testing.T, tag string, tune func(*configs.File), services ...configs.ServiceSpec) *lbEnv {
	t.Helper()
	requireRoot(t)
	spec := topology.Seed()
	var rnd [3]byte
	rand.Read(rnd[:])
	spec.Prefix = fmt.Sprintf("%s%s-%x-", lbPrefix, tag, rnd)
	e := &lbEnv{t: t, c: topology.BuildT(t, spec), spec: spec, dir: t.TempDir(), routers: map[string]*harness.Router{}}
	writeProxyConfigs(e, tune, services...)
	t.Cleanup(e.stop)
	for _, n := range spec.Nodes {
		r, err := harness.StartRouter(e.c, vrouterBin, n.Name, e.configPath(n.Name), e.logPath(n.Name),
			"--state-dir", harness.StateDir(e.logPath(n.Name), n.Name))
		if err != nil {
			t.Fatalf("harness.StartRouter(%s): %v", n.Name, err)
		}
		e.routers[n.Name] = r
	}
	return e
}

// writeProxyConfigs (re)writes every node's config file with services,
// changed by tune, in one rename each, and checks that it loads.
func writeProxyConfigs(e *lbEnv, tune func(*configs.File), services ...configs.ServiceSpec) {
	e.t.Helper()
	for _, n := range e.spec.Nodes {
		f, err := harness.NodeFile(e.spec, n.Name, harness.ConfigOptions{Services: services})
		if err != nil {
			e.t.Fatalf("harness.NodeFile(%s): %v", n.Name, err)
		}
		tune(f)
		b, err := yaml.Marshal(f)
		if err != nil {
			e.t.Fatal(err)
		}
		path := e.configPath(n.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			e.t.Fatal(err)
		}
		if _, err := configs.Load(path); err != nil {
			e.t.Fatalf("config of %s: %v", n.Name, err)
		}
	}
}

// proxyLogCount counts the lines of the log at path that contain s.
func proxyLogCount(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read router log: %v", err)
	}
	return bytes.Count(b, []byte(s))
}
