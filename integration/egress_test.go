package integration

// Egress masquerading (egress.masquerade): pods reach a server outside the
// cluster, which sees their node's address, as behind flannel's
// MASQUERADE rule, with no iptables rule anywhere.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201   route 198.51.100.10 via .100 (an upstream gateway)
//	 │    nginx-th5pz 10.244.0.4 ...
//	 ├─ hostgw-node   eth0 .202   route 198.51.100.10 via .100
//	 │    nginx-4k7xw 10.244.1.2 ...
//	 └─ outside       eth0 .100   lo 198.51.100.10: HTTP :80, echo :7, UDP echo :53, bulk :9000
//	                              (no route to the pod network: it can only answer nodes)
//
//	pod ─▶ node kernel: rule "from 10.244.0.0/24 lookup 118" ─▶ default dev vr0 ─▶ router:
//	       egress stack terminates TCP, relays UDP, ping sockets for echo ─▶ node's socket
//	       ─▶ eth0 ─▶ outside (sees .201 / .202)

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/tun"
)

var (
	egOutside   = topology.NodeSpec{Name: "outside", Underlay: netip.MustParseAddr("192.168.31.100")}
	egServer    = netip.MustParseAddr("198.51.100.10")
	egNoRoute   = netip.MustParseAddr("203.0.113.1")
	egNodeAddrs = map[string]netip.Addr{lbMaster: netip.MustParseAddr("192.168.31.201"), lbWorker: netip.MustParseAddr("192.168.31.202")}
)

// startEgress is startLB with egress.masquerade set to masq, the outside
// host holding egServer and each node routing egServer via it. Before the
// routers start, each node gets a stale egress rule, as a crashed run
// would leave: a router removes it whether masquerading is on or off.
func startEgress(t *testing.T, tag string, masq bool) *lbEnv {
	t.Helper()
	requireRoot(t)
	spec := topology.Seed()
	spec.Nodes = append(spec.Nodes, egOutside)
	var rnd [3]byte
	rand.Read(rnd[:])
	spec.Prefix = fmt.Sprintf("%s%s-%x-", lbPrefix, tag, rnd)
	e := &lbEnv{t: t, c: topology.BuildT(t, spec), spec: spec, dir: t.TempDir(), routers: map[string]*harness.Router{}, outside: []string{egOutside.Name}}
	if err := e.c.Do(egOutside.Name, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: egServer.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatalf("add %v to the outside host's loopback: %v", egServer, err)
	}
	for _, n := range []string{lbMaster, lbWorker} {
		if err := e.c.Do(n, func() error {
			if err := netlink.RouteAdd(&netlink.Route{
				Dst: &net.IPNet{IP: egServer.AsSlice(), Mask: net.CIDRMask(32, 32)},
				Gw:  egOutside.Underlay.AsSlice(),
			}); err != nil {
				return fmt.Errorf("route %v via %v: %w", egServer, egOutside.Underlay, err)
			}
			// Pings from vrouter's ping sockets, as systemd's default
			// sysctl allows every group.
			if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0o644); err != nil {
				return err
			}
			// Strict reverse-path filtering, as many distributions set
			// it: replies from the egress come in on vr0 with an outside
			// source, which the egress table routes back to vr0.
			for _, f := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+f+"/rp_filter", []byte("1"), 0o644); err != nil {
					return err
				}
			}
			stale := netlink.NewRule()
			stale.Priority, stale.Table, stale.Protocol = tun.EgressPriority+2, tun.EgressTable, tun.RouteProtocol
			stale.Src = &net.IPNet{IP: net.IPv4(10, 99, 0, 0).To4(), Mask: net.CIDRMask(24, 32)}
			return netlink.RuleAdd(stale)
		}); err != nil {
			t.Fatalf("set up node %s: %v", n, err)
		}
	}
	for _, n := range e.spec.Nodes {
		if n.Name == egOutside.Name {
			continue
		}
		ndir := filepath.Dir(e.configPath(n.Name))
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := harness.WriteConfig(ndir, e.spec, n.Name, harness.ConfigOptions{
			Services: []configs.ServiceSpec{myService()},
			Exclude:  e.outside,
			Egress:   configs.EgressSpec{Masquerade: masq},
		}); err != nil {
			t.Fatalf("write config of %s: %v", n.Name, err)
		}
	}
	t.Cleanup(e.stop)
	for _, n := range []string{lbMaster, lbWorker} {
		r, err := harness.StartRouter(e.c, vrouterBin, n, e.configPath(n), e.logPath(n), "--admin-socket", e.adminSocket(n))
		if err != nil {
			t.Fatalf("harness.StartRouter(%s): %v", n, err)
		}
		e.routers[n] = r
	}
	for _, s := range []struct {
		start func(ns, addr string) (*topology.Server, error)
		port  uint16
	}{{e.c.ServeHTTP, 80}, {e.c.ServeTCPEcho, 7}, {e.c.ServeUDPEcho, 53}} {
		if _, err := s.start(egOutside.Name, netip.AddrPortFrom(egServer, s.port).String()); err != nil {
			t.Fatalf("serve %v:%d on the outside host: %v", egServer, s.port, err)
		}
	}
	e.serveOn(e.c.ServeTCPEcho, 7, lbNginxTh5pz)
	e.serveOn(e.c.ServeHTTP, 80, lbNginx...)
	return e
}

// adminSocket is node's router's admin socket.
func (e *lbEnv) adminSocket(node string) string { return filepath.Join(e.dir, node+".sock") }

// rules lists the egress rules installed in node's namespace.
func (e *lbEnv) egressRules(node string) []tun.EgressRule {
	e.t.Helper()
	var rs []tun.EgressRule
	if err := e.c.Do(node, func() error {
		var err error
		rs, err = tun.EgressRulesInstalled()
		return err
	}); err != nil {
		e.t.Fatalf("list egress rules on %s: %v", node, err)
	}
	return rs
}

func TestEgressMasquerade(t *testing.T) {
	e := startEgress(t, "egress", true)
	pods := []lbPod{lbNginxTh5pz, lbNginx4k7xw}

	t.Run("rules", func(t *testing.T) {
		rs := e.egressRules(lbMaster)
		var got []string
		for _, r := range rs {
			got = append(got, r.String())
		}
		want := []string{
			"6200: from all iif vr0 lookup main",
			"6201: from 10.244.0.0/24 to 10.244.0.0/16 lookup main",
			"6201: from 10.244.0.0/24 to 10.96.0.0/12 lookup main",
			"6202: from 10.244.0.0/24 lookup 118",
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("egress rules on %s = %q, want %q (and the stale 10.99.0.0/24 rule gone)", lbMaster, got, want)
		}
	})

	for _, p := range pods {
		node := egNodeAddrs[p.node]
		t.Run("http/"+p.name, func(t *testing.T) {
			rep, err := e.httpGet(p.name, "http://"+egServer.String()+"/")
			if err != nil {
				t.Fatalf("GET http://%v/ from %s: %v", egServer, p.name, err)
			}
			if rep.Client.Addr() != node {
				t.Errorf("GET http://%v/ from %s: the server saw %v, want the node's address %v", egServer, p.name, rep.Client, node)
			}
		})
		t.Run("udp/"+p.name, func(t *testing.T) {
			rep, err := e.udpExchange(p.name, netip.AddrPortFrom(egServer, 53), "query from "+p.name, 3*time.Second)
			if err != nil {
				t.Fatalf("UDP exchange from %s: %v", p.name, err)
			}
			if rep.Client.Addr() != node {
				t.Errorf("UDP exchange from %s: the server saw %v, want %v", p.name, rep.Client, node)
			}
		})
		t.Run("ping/"+p.name, func(t *testing.T) {
			res, err := e.c.Ping(p.name, egServer, 3, 2*time.Second)
			if err != nil {
				t.Fatalf("Ping(%s, %v): %v", p.name, egServer, err)
			}
			if res.Received != 3 {
				t.Errorf("Ping(%s, %v) = %v, want 3 replies", p.name, egServer, res)
			}
		})
		t.Run("bulk/"+p.name, func(t *testing.T) {
			e.bulk(p.name, 100<<20)
		})
	}

	t.Run("conns", func(t *testing.T) {
		p := lbNginx4k7xw
		conn, _, err := e.dialTCP(p.name, netip.AddrPortFrom(egServer, 7), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %v:7 from %s: %v", egServer, p.name, err)
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := readGreeting(conn); err != nil {
			t.Fatalf("read the echo server's greeting at %s: %v", p.name, err)
		}
		pod := netip.MustParseAddrPort(conn.LocalAddr().String())
		out, err := exec.Command(vrouterBin, "conns", "-o", "json", "--socket", e.adminSocket(p.node)).CombinedOutput()
		if err != nil {
			t.Fatalf("vrouter conns on %s: %v", p.node, err)
		}
		var conns []struct {
			Mode, Protocol string
			Client, VIP    netip.AddrPort
			SNAT           netip.AddrPort
		}
		if err := json.Unmarshal(out, &conns); err != nil {
			t.Fatalf("vrouter conns -o json on %s: %v\n%s", p.node, err, out)
		}
		for _, c := range conns {
			if c.Mode == "egress" && c.Protocol == "tcp" && c.Client == pod && c.VIP == netip.AddrPortFrom(egServer, 7) && c.SNAT.Addr() == egNodeAddrs[p.node] {
				return
			}
		}
		t.Errorf("vrouter conns on %s lists no egress tcp connection from %v to %v:7 leaving from %v:\n%s", p.node, pod, egServer, egNodeAddrs[p.node], out)
	})

	t.Run("cluster traffic keeps the pod's address", func(t *testing.T) {
		rep, err := e.exchange(lbNginx4k7xw.name, netip.AddrPortFrom(lbNginxTh5pz.addr, 7), "hello")
		if err != nil {
			t.Fatalf("exchange %s -> %v:7: %v", lbNginx4k7xw.name, lbNginxTh5pz.addr, err)
		}
		if rep.Client.Addr() != lbNginx4k7xw.addr {
			t.Errorf("exchange %s -> %v:7: the pod saw %v, want %v (no masquerade inside the cluster)", lbNginx4k7xw.name, lbNginxTh5pz.addr, rep.Client, lbNginx4k7xw.addr)
		}
		for range 6 {
			rep, err = e.httpGet(lbNginx4k7xw.name, "http://"+myServiceVIP.String()+"/")
			if err != nil {
				t.Fatalf("GET my-service from %s: %v", lbNginx4k7xw.name, err)
			}
			// A backend on the client's node sees the router address
			// (hairpin), one on the other node the pod.
			if rep.Client.Addr() != lbNginx4k7xw.addr && rep.Client.Addr() != lbRouterAddr {
				t.Errorf("GET my-service from %s: backend %s saw %v, want %v or %v", lbNginx4k7xw.name, rep.Server, rep.Client, lbNginx4k7xw.addr, lbRouterAddr)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		_, took, err := e.dialTCP(lbNginx4k7xw.name, netip.AddrPortFrom(egServer, 9), 5*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %v:9 (no listener) from %s = %v after %v, want connection refused", egServer, lbNginx4k7xw.name, err, took)
		}
	})
	t.Run("udp port unreachable", func(t *testing.T) {
		// The node's socket gets the server's ICMP port unreachable;
		// the pod's connected socket gets it too.
		_, err := e.udpExchange(lbNginx4k7xw.name, netip.AddrPortFrom(egServer, 9), "anyone?", 3*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP to %v:9 (no listener) from %s = %v, want connection refused (ICMP port unreachable)", egServer, lbNginx4k7xw.name, err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		_, took, err := e.dialTCP(lbNginx4k7xw.name, netip.AddrPortFrom(egNoRoute, 80), 5*time.Second)
		if !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial %v:80 (no route from the node) from %s = %v after %v, want network or host unreachable", egNoRoute, lbNginx4k7xw.name, err, took)
		}
	})

	t.Run("rules removed on stop", func(t *testing.T) {
		for _, n := range []string{lbMaster, lbWorker} {
			if err := e.routers[n].Stop(); err != nil {
				t.Errorf("stop router on %s: %v", n, err)
			}
			if rs := e.egressRules(n); len(rs) != 0 {
				t.Errorf("egress rules on %s after the router stopped = %v, want none", n, rs)
			}
		}
	})
}

func TestEgressMasqueradeOff(t *testing.T) {
	e := startEgress(t, "egressoff", false)
	if rs := e.egressRules(lbMaster); len(rs) != 0 {
		t.Errorf("egress rules on %s with masquerade off = %v, want none (the stale one removed)", lbMaster, rs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if rep, err := e.c.HTTPGet(ctx, lbNginx4k7xw.name, "http://"+egServer.String()+"/"); err == nil {
		t.Errorf("GET http://%v/ from %s with masquerade off answered (server saw %v), want no answer: the outside host has no route to pods", egServer, lbNginx4k7xw.name, rep.Client)
	}
	// The node itself still reaches it.
	rep, err := e.httpGet(lbWorker, "http://"+egServer.String()+"/")
	if err != nil {
		t.Fatalf("GET http://%v/ from node %s: %v", egServer, lbWorker, err)
	}
	if rep.Client.Addr() != egNodeAddrs[lbWorker] {
		t.Errorf("GET from node %s: server saw %v", lbWorker, rep.Client)
	}
}

// bulk sends n bytes from pod to a server on the outside host and n back:
// the server counts what it got before it answers with its count and the
// n bytes, so both directions and the half-close are checked.
func (e *lbEnv) bulk(pod string, n int64) {
	t := e.t
	var ln net.Listener
	if err := e.c.Do(egOutside.Name, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(egServer, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen on the outside host: %v", err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		got, err := io.Copy(io.Discard, c)
		if err != nil {
			srvErr <- err
			return
		}
		var hdr [8]byte
		binary.BigEndian.PutUint64(hdr[:], uint64(got))
		if _, err := c.Write(hdr[:]); err != nil {
			srvErr <- err
			return
		}
		_, err = io.CopyN(c, zeroReader{}, n)
		srvErr <- err
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	conn, _, err := e.dialTCP(pod, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v from %s: %v", addr, pod, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := io.CopyN(conn, zeroReader{}, n); err != nil {
		t.Fatalf("send %d bytes from %s: %v", n, pod, err)
	}
	conn.CloseWrite()
	var hdr [8]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Fatalf("read the server's count at %s: %v", pod, err)
	}
	back, err := io.Copy(io.Discard, conn)
	took := time.Since(start)
	if err != nil {
		out, _ := exec.Command(vrouterBin, "status", "--socket", e.adminSocket(e.nodeOf(pod))).CombinedOutput()
		t.Fatalf("receive at %s: %v after %d bytes\n%s", pod, err, back, out)
	}
	if got := int64(binary.BigEndian.Uint64(hdr[:])); got != n || back != n {
		t.Fatalf("bulk from %s: the server got %d bytes, the pod got %d back, want %d each way", pod, got, back, n)
	}
	if err := <-srvErr; err != nil {
		t.Fatalf("bulk server: %v", err)
	}
	t.Logf("bulk %s: %d MB each way in %v (%.2f Gbit/s)", pod, n>>20, took, float64(2*n*8)/took.Seconds()/1e9)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestKubernetesEgress: in Kubernetes mode, `vrouter run --masquerade`
// (as the shipped DaemonSet runs it) masquerades pods' outside traffic.
// The server is on the worker node's loopback at egServer, which the
// master routes via the worker: a pod on the master reaching it is seen
// with the master's address (the worker could route the pod's own back,
// so a pod address would mean no masquerade).
func TestKubernetesEgress(t *testing.T) {
	e := newEnv(t, "kubeegress", topology.Seed(), harness.ConfigOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := startKubeAPI(t, ctx, e)
	for _, n := range []string{masterNode, workerNode} {
		t.Cleanup(relayAPIServer(t, e, n, api.target))
		r, err := harness.Launch(e.c, vrouterBin, n, e.logPath(n),
			"run", "--kubeconfig", api.kubeconfig, "--node-name", n, "--masquerade",
			"--admin-socket", filepath.Join(e.dir, n+".sock"), "--cni-conf-dir", filepath.Join(e.dir, n+"-cni"),
			"--state-dir", harness.StateDir(e.logPath(n), n))
		if err != nil {
			t.Fatal(err)
		}
		e.routers[n] = r
	}
	for _, n := range []*corev1.Node{kubeNode(masterNode, "10.244.0.0/24", "192.168.31.201"), kubeNode(workerNode, "10.244.1.0/24", "192.168.31.202")} {
		created, err := api.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create Node %s: %v", n.Name, err)
		}
		created.Status = n.Status
		if _, err := api.admin.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("Node %s status: %v", n.Name, err)
		}
	}
	for n, r := range e.routers {
		if err := r.WaitReady(e.c, 20*time.Second); err != nil {
			t.Fatalf("router on %s: %v", n, err)
		}
	}
	host := &net.IPNet{IP: egServer.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := e.c.Do(workerNode, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: host})
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Do(masterNode, func() error {
		return netlink.RouteAdd(&netlink.Route{Dst: host, Gw: net.IPv4(192, 168, 31, 202).To4()})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.ServeHTTP(workerNode, netip.AddrPortFrom(egServer, 80).String()); err != nil {
		t.Fatal(err)
	}
	// The rules come with the first update from the API server.
	var rep topology.Reply
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
		rep, err = e.c.HTTPGet(hctx, nginxTh5pz.name, "http://"+egServer.String()+"/")
		hcancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("GET http://%v/ from %s: %v", egServer, nginxTh5pz.name, err)
	}
	if want := netip.MustParseAddr("192.168.31.201"); rep.Client.Addr() != want {
		t.Errorf("GET http://%v/ from %s: the server saw %v, want the master's address %v", egServer, nginxTh5pz.name, rep.Client, want)
	}
}
