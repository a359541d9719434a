package topology

// The tests build the seed's cluster (Seed) in namespaces:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  cni0 10.244.0.1/24 ─ nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 .202  cni0 10.244.1.1/24 ─ nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
// and check what a user of the package would see: names, links and
// addresses; reachability before and after kernel host-gw routes; the
// TTL of replies; servers answering across nodes; nothing left behind.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	master, node           = "hostgw-master", "hostgw-node"
	nginxMaster            = "nginx-th5pz"   // 10.244.0.4 on hostgw-master
	corednsA               = "coredns-xx6mc" // 10.244.0.2 on hostgw-master
	nginxNodeA, nginxNodeB = "nginx-4k7xw", "nginx-j6zwk"

	addrNginxMaster = netip.MustParseAddr("10.244.0.4")
	addrCorednsA    = netip.MustParseAddr("10.244.0.2")
	addrNginxNodeA  = netip.MustParseAddr("10.244.1.2")
	addrNginxNodeB  = netip.MustParseAddr("10.244.1.3")
)

const pingTimeout = 500 * time.Millisecond

func TestSpecValidate(t *testing.T) {
	for name, s := range map[string]Spec{"Seed": Seed(), "ThreeNodes": ThreeNodes(), "SeedDualStack": SeedDualStack()} {
		if err := s.Validate(); err != nil {
			t.Errorf("%s().Validate() = %v, want nil", name, err)
		}
	}

	tests := []struct {
		name   string
		modify func(s *Spec)
		want   string // substring of the error
	}{
		{"duplicate pod address", func(s *Spec) { s.Nodes[1].Pods[1].Addr = addrNginxNodeA }, "Nodes[1].Pods[1].Addr 10.244.1.2: address already used by Nodes[1].Pods[0].Addr"},
		{"pod outside pod CIDR", func(s *Spec) { s.Nodes[0].Pods[0].Addr = addrNginxNodeA }, "Nodes[0].Pods[0].Addr 10.244.1.2: not inside 10.244.0.0/24"},
		{"pod on gateway", func(s *Spec) { s.Nodes[0].Pods[0].Addr = netip.MustParseAddr("10.244.0.1") }, "address already used by Nodes[0] cni0"},
		{"broadcast", func(s *Spec) { s.Nodes[0].Pods[0].Addr = netip.MustParseAddr("10.244.0.255") }, "broadcast address"},
		{"duplicate node name", func(s *Spec) { s.Nodes[1].Name = master }, `Nodes[1].Name "hostgw-master": name already used`},
		{"pod named like a node", func(s *Spec) { s.Nodes[1].Pods[0].Name = master }, `Nodes[1].Pods[0].Name "hostgw-master": name already used`},
		{"reserved name", func(s *Spec) { s.Nodes[0].Name = UnderlayNS }, "name already used by the underlay namespace"},
		{"bad name", func(s *Spec) { s.Nodes[0].Pods[0].Name = "a/b" }, `character '/' not allowed`},
		{"bad prefix", func(s *Spec) { s.Prefix = "vrt x-" }, `Spec.Prefix "vrt x-"`},
		{"overlapping pod CIDRs", func(s *Spec) { s.Nodes[1].PodCIDR = netip.MustParsePrefix("10.244.0.0/16") }, "Nodes[1].PodCIDR 10.244.0.0/16: overlaps Nodes[0].PodCIDR"},
		{"node outside underlay", func(s *Spec) { s.Nodes[0].Underlay = netip.MustParseAddr("192.168.32.1") }, "Nodes[0].Underlay 192.168.32.1: not inside 192.168.31.0/24"},
		{"no underlay", func(s *Spec) { s.Underlay = netip.Prefix{} }, "Spec.Underlay invalid Prefix: want an IPv4 prefix"},
		{"MTU", func(s *Spec) { s.MTU = 100 }, "Spec.MTU 100"},
		{"no nodes", func(s *Spec) { s.Nodes = nil }, "want at least one node"},
		{"v6 pod without v6 CIDR", func(s *Spec) { s.Nodes[0].Pods[0].Addr6 = netip.MustParseAddr("fd00::4") }, "Nodes[0].Pods[0].Addr6 fd00::4: node has no PodCIDR6"},
		{"v6 underlay missing on node", func(s *Spec) { s.Underlay6 = netip.MustParsePrefix("fd00::/64") }, "Nodes[0].Underlay6: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Seed()
			tt.modify(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSeedCluster(t *testing.T) {
	requireRoot(t)
	start := time.Now()
	c := BuildT(t, Seed())
	t.Logf("Build(Seed()) took %v; prefix %s", time.Since(start), c.Prefix())

	t.Run("Namespaces", func(t *testing.T) {
		want := []string{UnderlayNS, master, nginxMaster, corednsA, "coredns-8qxfv", node, nginxNodeA, nginxNodeB}
		if got := c.Namespaces(); !slices.Equal(got, want) {
			t.Errorf("Namespaces() = %v, want %v", got, want)
		}
		if got := entries(t, DefaultNetnsDir, c.Prefix()); len(got) != len(want) {
			t.Errorf("%s holds %v, want %d namespaces with prefix %s", DefaultNetnsDir, got, len(want), c.Prefix())
		}
		for _, ns := range want {
			p, err := c.Path(ns)
			if err != nil {
				t.Fatalf("Path(%s): %v", ns, err)
			}
			if want := filepath.Join(DefaultNetnsDir, c.Prefix()+ns); p != want {
				t.Errorf("Path(%s) = %s, want %s", ns, p, want)
			}
			mustExist(t, p)
		}
	})

	t.Run("Links", func(t *testing.T) {
		checkLink(t, c, UnderlayNS, UnderlayBridge, "")
		checkMasters(t, c, UnderlayNS, UnderlayBridge, map[string]string{"veth0": master, "veth1": node})
		for _, n := range c.Spec().Nodes {
			checkLink(t, c, n.Name, NodeUplink, n.Underlay.String()+"/24")
			checkLink(t, c, n.Name, PodBridge, n.Gateway().String()+"/24")
			ports := map[string]string{}
			for j, p := range n.Pods {
				ports[fmt.Sprintf("veth%d", j)] = p.Name
				checkLink(t, c, p.Name, PodLink, p.Addr.String()+"/24")
				checkDefaultRoute(t, c, p.Name, n.Gateway())
			}
			checkMasters(t, c, n.Name, PodBridge, ports)
			for _, s := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
				if got := readSysctl(t, c, n.Name, s); got != "1" {
					t.Errorf("in %s: sysctl %s = %q, want 1", n.Name, s, got)
				}
			}
			// Only connected routes: no route to the other node's pods.
			checkNoRoute(t, c, n.Name, "10.244.0.0/16")
		}
	})

	t.Run("SameNodePing", func(t *testing.T) {
		r := ping(t, c, nginxMaster, addrCorednsA)
		if r.Received != 1 || r.TTL != 64 {
			t.Errorf("Ping(%s -> %v) = %v, want 1 reply with TTL 64 (same bridge, no router)", nginxMaster, addrCorednsA, r)
		}
	})

	t.Run("CrossNodeWithoutRoutes", func(t *testing.T) {
		r := ping(t, c, nginxMaster, addrNginxNodeA)
		if r.Received != 0 {
			t.Errorf("Ping(%s -> %v) = %v before InstallKernelHostGW, want no reply", nginxMaster, addrNginxNodeA, r)
		}
		// The node kernel has no route and says so.
		if len(r.Errors) == 0 || !strings.Contains(r.Errors[0], "10.244.0.1: destination unreachable") {
			t.Errorf("Ping(%s -> %v).Errors = %v, want destination unreachable from 10.244.0.1", nginxMaster, addrNginxNodeA, r.Errors)
		}
	})

	t.Run("KernelHostGW", func(t *testing.T) {
		if err := c.InstallKernelHostGW(); err != nil {
			t.Fatalf("InstallKernelHostGW: %v", err)
		}
		if err := c.InstallKernelHostGW(); err != nil {
			t.Fatalf("InstallKernelHostGW again (want idempotent): %v", err)
		}
		checkRoute(t, c, master, "10.244.1.0/24", "192.168.31.202")
		checkRoute(t, c, node, "10.244.0.0/24", "192.168.31.201")

		r := ping(t, c, nginxMaster, addrNginxNodeB)
		if r.Received != 1 || r.TTL != 62 {
			t.Errorf("Ping(%s -> %v) = %v, want 1 reply with TTL 62 (two kernel hops)", nginxMaster, addrNginxNodeB, r)
		}
		r = ping(t, c, master, addrNginxNodeA) // node -> remote pod: one hop
		if r.Received != 1 || r.TTL != 63 {
			t.Errorf("Ping(%s -> %v) = %v, want 1 reply with TTL 63", master, addrNginxNodeA, r)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()

		h := serve(t)(c.ServeHTTP(nginxNodeA, ":80"))
		got, err := c.HTTPGet(ctx, nginxMaster, "http://10.244.1.2/")
		if err != nil {
			t.Fatalf("HTTPGet(%s -> 10.244.1.2): %v", nginxMaster, err)
		}
		if got.Server != nginxNodeA || got.Client.Addr() != addrNginxMaster {
			t.Errorf("HTTPGet(%s -> 10.244.1.2) = server %q client %v, want server %q client %v", nginxMaster, got.Server, got.Client, nginxNodeA, addrNginxMaster)
		}

		u := serve(t)(c.ServeUDPEcho(corednsA, ":53"))
		payload := []byte("who serves kube-dns?")
		got, err = c.UDPExchange(ctx, nginxNodeB, netip.AddrPortFrom(addrCorednsA, 53), payload)
		if err != nil {
			t.Fatalf("UDPExchange(%s -> %v:53): %v", nginxNodeB, addrCorednsA, err)
		}
		if got.Server != corednsA || got.Client.Addr() != addrNginxNodeB || string(got.Payload) != string(payload) {
			t.Errorf("UDPExchange(%s -> %v:53) = %+v, want server %q client %v payload %q", nginxNodeB, addrCorednsA, got, corednsA, addrNginxNodeB, payload)
		}

		e := serve(t)(c.ServeTCPEcho(nginxNodeB, "10.244.1.3:0"))
		payload = []byte(strings.Repeat("0123456789", 10000)) // several segments
		got, err = c.TCPExchange(ctx, corednsA, e.Addr(), payload)
		if err != nil {
			t.Fatalf("TCPExchange(%s -> %v): %v", corednsA, e.Addr(), err)
		}
		if got.Server != nginxNodeB || got.Client.Addr() != addrCorednsA || string(got.Payload) != string(payload) {
			t.Errorf("TCPExchange(%s -> %v) = server %q client %v %d bytes, want server %q client %v %d bytes echoed",
				corednsA, e.Addr(), got.Server, got.Client, len(got.Payload), nginxNodeB, addrCorednsA, len(payload))
		}

		for _, s := range []*Server{h, u, e} {
			if err := s.Close(); err != nil {
				t.Errorf("Close server in %s: %v", s.Namespace(), err)
			}
		}
		if _, err := c.HTTPGet(ctx, nginxMaster, "http://10.244.1.2/"); err == nil {
			t.Errorf("HTTPGet after the server's Close succeeded, want connection refused")
		}

		if err := c.RemoveKernelHostGW(); err != nil {
			t.Fatalf("RemoveKernelHostGW: %v", err)
		}
		if err := c.RemoveKernelHostGW(); err != nil {
			t.Fatalf("RemoveKernelHostGW again (want idempotent): %v", err)
		}
		if r := ping(t, c, nginxMaster, addrNginxNodeB); r.Received != 0 {
			t.Errorf("Ping(%s -> %v) = %v after RemoveKernelHostGW, want no reply", nginxMaster, addrNginxNodeB, r)
		}
	})

	t.Run("Command", func(t *testing.T) {
		for _, prog := range []string{"nsenter", "ip"} {
			if _, err := exec.LookPath(prog); err != nil {
				t.Skipf("needs %s: %v", prog, err)
			}
		}
		out, err := c.Command(nginxNodeA, "ip", "-4", "-o", "addr", "show", "dev", PodLink).CombinedOutput()
		if err != nil {
			t.Fatalf("Command(%s, ip addr show): %v: %s", nginxNodeA, err, out)
		}
		if !strings.Contains(string(out), "inet 10.244.1.2/24") {
			t.Errorf("Command(%s, ip addr show dev eth0) = %q, want inet 10.244.1.2/24", nginxNodeA, out)
		}
		if err := c.Command("no-such-ns", "true").Run(); err == nil {
			t.Errorf("Command(no-such-ns).Run() = nil, want an error")
		}
	})

	t.Run("Close", func(t *testing.T) {
		// A server left running is the cluster's to stop.
		serve(t)(c.ServeTCPEcho(nginxMaster, ":8080"))
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := entries(t, DefaultNetnsDir, c.Prefix()); len(got) != 0 {
			t.Errorf("after Close %s still holds %v", DefaultNetnsDir, got)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		if err := c.Do(master, func() error { return nil }); !errors.Is(err, ErrClosed) {
			t.Errorf("Do after Close = %v, want ErrClosed", err)
		}
		if err := c.InstallKernelHostGW(); !errors.Is(err, ErrClosed) {
			t.Errorf("InstallKernelHostGW after Close = %v, want ErrClosed", err)
		}
	})
}

func TestDo(t *testing.T) {
	requireRoot(t)
	c := BuildT(t, Seed())

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetNSIno(t)

	// A listener made in one pod is reachable from another pod on the
	// same node, and only there.
	var ln net.Listener
	if err := c.Do(nginxMaster, func() error {
		var err error
		ln, err = net.Listen("tcp", "10.244.0.4:0")
		return err
	}); err != nil {
		t.Fatalf("Do(%s, Listen 10.244.0.4:0): %v", nginxMaster, err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.Close()
		}
		accepted <- err
	}()
	var conn net.Conn
	if err := c.Do(corednsA, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatalf("Do(%s, Dial %v): %v", corednsA, ln.Addr(), err)
	}
	conn.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if _, err := net.Listen("tcp", "10.244.0.4:0"); err == nil {
		t.Errorf("Listen(10.244.0.4:0) outside Do succeeded, want the address to be absent from the test's namespace")
	}

	// Nested Do, and the namespace Do ran in is the one named.
	var inner, outer uint64
	err := c.Do(master, func() error {
		outer = nsIno()
		return c.Do(node, func() error { inner = nsIno(); return nil })
	})
	if err != nil {
		t.Fatalf("nested Do: %v", err)
	}
	if outer == inner || outer == before || inner == before {
		t.Errorf("nested Do namespaces: outer %d inner %d caller %d, want all different", outer, inner, before)
	}
	if got := fileIno(t, mustPath(t, c, master)); got != outer {
		t.Errorf("Do(%s) ran in netns inode %d, want %d", master, outer, got)
	}

	wantErr := errors.New("boom")
	if err := c.Do(master, func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Errorf("Do returning an error = %v, want %v", err, wantErr)
	}
	func() {
		defer func() {
			if p := recover(); p != "panic in ns" {
				t.Errorf("recover() after Do panicked = %v, want %q", p, "panic in ns")
			}
		}()
		c.Do(master, func() error { panic("panic in ns") })
	}()
	if err := c.Do("nope", func() error { return nil }); err == nil || !strings.Contains(err.Error(), `unknown namespace "nope"`) {
		t.Errorf("Do(nope) = %v, want unknown namespace", err)
	}

	if after := threadNetNSIno(t); after != before {
		t.Errorf("caller's thread netns changed from %d to %d", before, after)
	}
}

// nsIno returns the inode of the calling thread's network namespace, 0 on
// error; for use inside Do.
func nsIno() uint64 {
	var st unix.Stat_t
	if unix.Stat(threadNetNS, &st) != nil {
		return 0
	}
	return st.Ino
}

func TestThreeNodes(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	s := ThreeNodes()
	s.MTU = 9000
	c := BuildT(t, s)
	pod, n, ok := c.Spec().Pod("busybox")
	if !ok || n.Name != "hostgw-node2" || pod.Addr != netip.MustParseAddr("10.244.2.2") {
		t.Fatalf("Spec().Pod(busybox) = %+v on %s, %v; want 10.244.2.2 on hostgw-node2", pod, n.Name, ok)
	}
	checkLink(t, c, "busybox", PodLink, "10.244.2.2/24")
	checkLink(t, c, "hostgw-node2", NodeUplink, "192.168.31.203/24")
	checkLink(t, c, UnderlayNS, UnderlayBridge, "")
	if err := c.InstallKernelHostGW(); err != nil {
		t.Fatalf("InstallKernelHostGW: %v", err)
	}
	checkRoute(t, c, "hostgw-node2", "10.244.0.0/24", "192.168.31.201")
	checkRoute(t, c, "hostgw-node2", "10.244.1.0/24", "192.168.31.202")
	for _, dst := range []netip.Addr{addrNginxMaster, addrNginxNodeA} {
		if r := ping(t, c, "busybox", dst); r.Received != 1 || r.TTL != 62 {
			t.Errorf("Ping(busybox -> %v) = %v, want 1 reply with TTL 62", dst, r)
		}
	}
}

func TestDualStack(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	c := BuildT(t, SeedDualStack())
	checkLink(t, c, nginxNodeA, PodLink, "fd00:10:244:1::2/64")
	checkLink(t, c, master, PodBridge, "fd00:10:244::1/64")

	dst := netip.MustParseAddr("fd00:10:244:1::3")
	if r := ping(t, c, nginxMaster, netip.MustParseAddr("fd00:10:244::2")); r.Received != 1 || r.TTL != 64 {
		t.Errorf("Ping(%s -> fd00:10:244::2) = %v, want 1 reply with hop limit 64", nginxMaster, r)
	}
	if r := ping(t, c, nginxMaster, dst); r.Received != 0 {
		t.Errorf("Ping(%s -> %v) = %v before InstallKernelHostGW, want no reply", nginxMaster, dst, r)
	}
	if err := c.InstallKernelHostGW(); err != nil {
		t.Fatalf("InstallKernelHostGW: %v", err)
	}
	checkRoute(t, c, master, "fd00:10:244:1::/64", "fd00:192:168:31::202")
	if r := ping(t, c, nginxMaster, dst); r.Received != 1 || r.TTL != 62 {
		t.Errorf("Ping(%s -> %v) = %v, want 1 reply with hop limit 62", nginxMaster, dst, r)
	}

	s := serve(t)(c.ServeHTTP(nginxNodeB, "[::]:80"))
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got, err := c.HTTPGet(ctx, nginxMaster, "http://[fd00:10:244:1::3]/")
	if err != nil {
		t.Fatalf("HTTPGet over IPv6: %v", err)
	}
	if want := netip.MustParseAddr("fd00:10:244::4"); got.Server != nginxNodeB || got.Client.Addr() != want {
		t.Errorf("HTTPGet(%s -> [%v]) = server %q client %v, want %q %v", nginxMaster, dst, got.Server, got.Client, nginxNodeB, want)
	}
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	t.Parallel()

	t.Run("InvalidSpec", func(t *testing.T) {
		s := Seed()
		s.Prefix = fmt.Sprintf("vrt-bad%d-", os.Getpid())
		s.Nodes[1].Pods[1].Addr = s.Nodes[1].Pods[0].Addr
		if c, err := Build(s); err == nil {
			c.Close()
			t.Fatalf("Build(duplicate address) succeeded, want an error")
		}
		if got := entries(t, DefaultNetnsDir, s.Prefix); len(got) != 0 {
			t.Errorf("after a failed Build %s holds %v", DefaultNetnsDir, got)
		}
	})

	t.Run("MidBuild", func(t *testing.T) {
		// Someone else's namespace (here a plain file) has the name Build
		// wants for the second node: Build fails after making the
		// underlay, the first node and its pods.
		s := Seed()
		s.Prefix = fmt.Sprintf("vrt-mid%d-", os.Getpid())
		taken := filepath.Join(DefaultNetnsDir, s.Prefix+node)
		if err := os.MkdirAll(DefaultNetnsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(taken, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(taken)

		c, err := Build(s)
		if err == nil {
			c.Close()
			t.Fatalf("Build with %s taken succeeded, want an error", taken)
		}
		if !strings.Contains(err.Error(), "already exists") {
			t.Errorf("Build error = %v, want it to say the name already exists", err)
		}
		if got := entries(t, DefaultNetnsDir, s.Prefix); !slices.Equal(got, []string{s.Prefix + node}) {
			t.Errorf("after a failed Build %s holds %v, want only the pre-existing %s", DefaultNetnsDir, got, s.Prefix+node)
		}
	})
}

func TestCleanup(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	s := Seed()
	s.Prefix = fmt.Sprintf("vrt-crash%d-", os.Getpid())
	c := BuildT(t, s)
	// Pretend the process died: the bind mounts are all that is left.
	if err := Cleanup(s.Prefix); err != nil {
		t.Fatalf("Cleanup(%s): %v", s.Prefix, err)
	}
	if got := entries(t, DefaultNetnsDir, s.Prefix); len(got) != 0 {
		t.Errorf("after Cleanup %s holds %v", DefaultNetnsDir, got)
	}
	if err := Cleanup(""); err == nil {
		t.Errorf("Cleanup(\"\") = nil, want a refusal to remove every namespace")
	}
	_ = c // Close (in build's cleanup) must cope with the mounts being gone.
}

// ---- helpers ----

// serve returns a function that fails t if a Serve* call failed.
func serve(t *testing.T) func(*Server, error) *Server {
	return func(s *Server, err error) *Server {
		t.Helper()
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		return s
	}
}

func ping(t *testing.T, c *Cluster, from string, dst netip.Addr) PingResult {
	t.Helper()
	r, err := c.Ping(from, dst, 1, pingTimeout)
	if err != nil {
		t.Fatalf("Ping(%s -> %v): %v", from, dst, err)
	}
	return r
}

func mustPath(t *testing.T, c *Cluster, ns string) string {
	t.Helper()
	p, err := c.Path(ns)
	if err != nil {
		t.Fatalf("Path(%s): %v", ns, err)
	}
	return p
}

func fileIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// inNS runs fn in namespace ns and fails t on error.
func inNS(t *testing.T, c *Cluster, ns string, fn func() error) {
	t.Helper()
	if err := c.Do(ns, fn); err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// checkLink checks that link name exists in ns, is up, and (unless addr
// is "") has address addr.
func checkLink(t *testing.T, c *Cluster, ns, name, addr string) {
	t.Helper()
	inNS(t, c, ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("LinkByName(%s): %w", name, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("link %s is down", name)
		}
		if want := c.Spec().MTU; l.Attrs().MTU != want {
			return fmt.Errorf("link %s MTU %d, want %d", name, l.Attrs().MTU, want)
		}
		if addr == "" {
			return nil
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("AddrList(%s): %w", name, err)
		}
		var have []string
		for _, a := range addrs {
			p, _ := netip.ParsePrefix(a.IPNet.String())
			if p.String() == netip.MustParsePrefix(addr).String() {
				return nil
			}
			have = append(have, p.String())
		}
		return fmt.Errorf("link %s has addresses %v, want %s", name, have, addr)
	})
}

// checkMasters checks that bridge in ns has exactly the ports in want
// (port name -> alias).
func checkMasters(t *testing.T, c *Cluster, ns, bridge string, want map[string]string) {
	t.Helper()
	inNS(t, c, ns, func() error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				if l.Attrs().Flags&net.FlagUp == 0 {
					return fmt.Errorf("port %s of %s is down", l.Attrs().Name, bridge)
				}
				got[l.Attrs().Name] = l.Attrs().Alias
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("bridge %s ports (name:alias) %v, want %v", bridge, got, want)
		}
		return nil
	})
}

func checkDefaultRoute(t *testing.T, c *Cluster, ns string, gw netip.Addr) {
	t.Helper()
	inNS(t, c, ns, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw.AsSlice()) {
				return nil
			}
		}
		return fmt.Errorf("no default route via %v in %v", gw, routes)
	})
}

// checkRoute checks that ns routes dst via gw.
func checkRoute(t *testing.T, c *Cluster, ns, dst, gw string) {
	t.Helper()
	inNS(t, c, ns, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == dst && r.Gw.String() == gw {
				return nil
			}
		}
		return fmt.Errorf("no route %s via %s in %v", dst, gw, routes)
	})
}

// checkNoRoute checks that no route in ns lies within dst other than
// connected ones (routes without a gateway).
func checkNoRoute(t *testing.T, c *Cluster, ns, within string) {
	t.Helper()
	p := netip.MustParsePrefix(within)
	inNS(t, c, ns, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil {
				return fmt.Errorf("unexpected default route %v", r)
			}
			d, _ := netip.ParsePrefix(r.Dst.String())
			if p.Overlaps(d) && r.Gw != nil {
				return fmt.Errorf("unexpected route %v", r)
			}
		}
		return nil
	})
}

func readSysctl(t *testing.T, c *Cluster, ns, name string) string {
	t.Helper()
	var v []byte
	inNS(t, c, ns, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + name)
		return err
	})
	return strings.TrimSpace(string(v))
}
