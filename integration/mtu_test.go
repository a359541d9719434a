package integration

// TestMTU checks the tunnel MTU end to end on the seed's cluster, with the
// default tunnel MTU (underlay 1500 − 28 = 1472) and with overlay.mtu 1400:
//
//	underlay br0 192.168.31.0/24, every veth and bridge mtu 1500
//	 ├─ hostgw-master eth0 .201 mtu 1500   vr0 mtu = tunnel MTU   cni0 10.244.0.1/24
//	 │     nginx-th5pz 10.244.0.4   coredns-xx6mc 10.244.0.2   (eth0 mtu 1500)
//	 └─ hostgw-node   eth0 .202 mtu 1500   vr0 mtu = tunnel MTU   cni0 10.244.1.1/24
//	       nginx-4k7xw 10.244.1.2   nginx-j6zwk 10.244.1.3
//
//	largest inner packet = tunnel MTU; + 8 UDP + 20 IPv4 = one underlay frame
//
// A DF ping whose IP packet is exactly the tunnel MTU crosses; one byte
// more is refused by the node kernel (vr0's MTU is the tunnel MTU) with
// "fragmentation needed" carrying that MTU, from cni0's address. TCP
// between pods (MSS 1460 from their 1500-byte links) learns the smaller
// path MTU from those errors, so a 1 MB transfer each way completes.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestMTU(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tunnelMTU int // 0: the default
		want      int
	}{
		{"default", 0, 1472},
		{"overlay.mtu 1400", 1400, 1400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fmt.Sprintf("mtu%d", tc.want), topology.Seed(), harness.ConfigOptions{TunnelMTU: tc.tunnelMTU})
			e.startAll()

			for _, n := range []string{masterNode, workerNode} {
				if got := e.linkMTU(n, "vr0"); got != tc.want {
					t.Errorf("%s: vr0 mtu %d, want %d", n, got, tc.want)
				}
			}

			// Too big first: nothing has taught the pods a path MTU yet,
			// so the error must come from the node kernel.
			payload := tc.want - 28 // IPv4 and ICMP headers
			for _, pr := range []struct{ from, to pod }{{nginxTh5pz, nginx4k7xw}, {nginxJ6zwk, corednsXx6mc}} {
				if err := e.pingFragNeeded(pr.from, pr.to.addr, payload+1, tc.want); err != nil {
					t.Error(err)
				}
				if err := e.pingDF(pr.from, pr.to.addr, payload); err != nil {
					t.Error(err)
				}
			}

			srv := e.serveStoreAndEcho(nginx4k7xw)
			if err := e.bigTransfer(coredns8qxfv, srv, 1<<20); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMTUSmallerTUNOnOneNode gives hostgw-node's vr0 a smaller MTU (tun.mtu
// 1400) than the tunnel MTU both routers use (1472). A 1472-byte DF packet
// from hostgw-master's pod fits its own vr0 and the tunnel, and reaches
// hostgw-node's router, which cannot pass it to its vr0: the router must
// answer "fragmentation needed" with mtu 1400 and the answer must reach the
// pod, or TCP across the nodes stalls on a path MTU black hole.
func TestMTUSmallerTUNOnOneNode(t *testing.T) {
	e := newEnv(t, "tunmtu", topology.Seed(), harness.ConfigOptions{})
	f, err := harness.NodeFile(e.c.Spec(), workerNode, harness.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.TUN.MTU = 1400
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(e.configPath(workerNode), b); err != nil {
		t.Fatal(err)
	}
	e.startAll()
	if got := e.linkMTU(workerNode, "vr0"); got != 1400 {
		t.Fatalf("%s: vr0 mtu %d, want 1400 (tun.mtu)", workerNode, got)
	}
	if err := e.pingDF(nginxTh5pz, nginx4k7xw.addr, 1400-28); err != nil {
		t.Error(err)
	}
	args := []string{"-n", "-c", "1", "-W", "1", "-M", "do", "-s", strconv.Itoa(1472 - 28), nginx4k7xw.addr.String()}
	out, _ := e.command(nginxTh5pz.name, "ping", args...)
	m := fragNeededRE.FindStringSubmatch(out)
	// hostgw-node's router sends it over the overlay from hostgw-node's
	// overlay identity 10.244.1.0, which hostgw-master's router accepts.
	if m == nil {
		t.Fatalf("ping %v: want \"Frag needed\" with mtu 1400 from hostgw-node's router, got:\n%s", args, out)
	}
	if m[2] != "1400" {
		t.Errorf("ping %v: frag needed from %s with mtu %s, want mtu 1400", args, m[1], m[2])
	}
	srv := e.serveStoreAndEcho(nginx4k7xw)
	if err := e.bigTransfer(coredns8qxfv, srv, 1<<20); err != nil {
		t.Error(err)
	}
}

// linkMTU is the MTU of link name in namespace ns.
func (e *env) linkMTU(ns, name string) int {
	e.t.Helper()
	var mtu int
	err := e.c.Do(ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		return nil
	})
	if err != nil {
		e.t.Fatalf("%s: link %s: %v", ns, name, err)
	}
	return mtu
}

// pingDF sends one DF echo request with size bytes of payload from pod
// from to dst with the ping binary and expects the reply.
func (e *env) pingDF(from pod, dst netip.Addr, size int) error {
	args := []string{"-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(size), dst.String()}
	out, err := e.command(from.name, "ping", args...)
	if err != nil || !regexp.MustCompile(`(?m)^1 packets transmitted, 1 received`).MatchString(out) {
		return fmt.Errorf("%s: ping %v (DF, %d-byte IP packet): %v, want a reply:\n%s", from.name, args, size+28, err, out)
	}
	return nil
}

// fragNeededRE matches iputils ping's report of an ICMP "fragmentation
// needed": "From 10.244.0.1 icmp_seq=1 Frag needed and DF set (mtu = 1472)".
var fragNeededRE = regexp.MustCompile(`From (\S+) icmp_seq=\d+ Frag needed and DF set \(mtu = (\d+)\)`)

// pingFragNeeded sends one DF echo request with size bytes of payload and
// expects "fragmentation needed" with mtu wantMTU from the pod's node
// kernel (its cni0 address).
func (e *env) pingFragNeeded(from pod, dst netip.Addr, size, wantMTU int) error {
	args := []string{"-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(size), dst.String()}
	out, _ := e.command(from.name, "ping", args...) // exits 1: no reply
	m := fragNeededRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("%s: ping %v (DF, %d-byte IP packet): want \"Frag needed and DF set (mtu = %d)\", got:\n%s", from.name, args, size+28, wantMTU, out)
	}
	if m[1] != gateway(from.node).String() || m[2] != strconv.Itoa(wantMTU) {
		return fmt.Errorf("%s: ping %v: frag needed from %s with mtu %s, want from %v (the node kernel) with mtu %d", from.name, args, m[1], m[2], gateway(from.node), wantMTU)
	}
	return nil
}

// storeEchoServer accepts TCP connections in one pod; for each it reads
// everything until the client half-closes, then sends it back and closes.
// Reading all before writing means neither side ever waits on the other's
// buffers, whatever the size.
type storeEchoServer struct {
	pod  pod
	addr netip.AddrPort
	ln   net.Listener
	wg   sync.WaitGroup
}

// serveStoreAndEcho starts a storeEchoServer on p, port 9, and stops it
// when the test ends.
func (e *env) serveStoreAndEcho(p pod) *storeEchoServer {
	e.t.Helper()
	s := &storeEchoServer{pod: p, addr: netip.AddrPortFrom(p.addr, 9)}
	err := e.c.Do(p.name, func() error {
		var err error
		s.ln, err = net.Listen("tcp", s.addr.String())
		return err
	})
	if err != nil {
		e.t.Fatalf("listen on %v in %s: %v", s.addr, p.name, err)
	}
	e.t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	s.wg.Go(func() {
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				b, err := io.ReadAll(conn)
				if err != nil {
					return
				}
				conn.Write(b)
			})
		}
	})
	return s
}

// bigTransfer sends n random bytes from pod from to s and checks that the
// same n bytes come back.
func (e *env) bigTransfer(from pod, s *storeEchoServer, n int) error {
	data := make([]byte, n)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	err := e.c.Do(from.name, func() error {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", s.addr.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("dial %v from %s: %w", s.addr, from.name, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	start := time.Now()
	if _, err := conn.Write(data); err != nil {
		return fmt.Errorf("%s -> %v: send %d bytes: %w", from.name, s.addr, n, err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	back, err := io.ReadAll(conn)
	if err != nil {
		return fmt.Errorf("%s -> %v: read the %d bytes back: got %d: %w", from.name, s.addr, n, len(back), err)
	}
	if len(back) != n || sha256.Sum256(back) != sha256.Sum256(data) {
		return fmt.Errorf("%s -> %v: sent %d bytes, got %d back, not the same", from.name, s.addr, n, len(back))
	}
	e.t.Logf("%s -> %s: %d bytes there and back in %v", from.name, s.pod.name, n, time.Since(start).Round(time.Millisecond))
	return nil
}
