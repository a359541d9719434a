package integration

// A router restart under established nat-mode ClusterIP connections: the
// clients' router is stopped (SIGTERM) and started again, then killed
// (SIGKILL) and started again; every connection and UDP flow through it
// must carry on as before, on the same backend.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter: running → SIGTERM → started → SIGKILL, 2 s down → started
//	 │    coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3   TCP clients
//	 │    nginx-th5pz 10.244.0.4                               UDP client; local backend
//	 └─ hostgw-node   eth0 .202  vrouter (never restarted)
//	      nginx-4k7xw 10.244.1.2                               remote backend
//
//	default/restart-local   10.103.92.86:80/TCP -> 10.244.0.4 (hairpin: SNAT to 169.254.244.1)
//	default/restart-remote  10.103.92.84:80/TCP -> 10.244.1.2 (DNAT only, over the overlay)
//	kube-system/kube-dns    10.96.0.10:53/UDP   -> 10.244.0.2, 10.244.0.3 (random)
//
// The flows live in hostgw-master's router; it keeps them in its flow
// file (harness.StateDir), which the next router adopts. vr0 is not
// persistent: it and its routes vanish with the router and come back with
// the next one, and the pods' kernels retransmit across the gap. Last, a
// flow file of garbage is refused: the router starts, and the
// connections it no longer knows are reset (what every connection
// suffered before flow files).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
)

// restartConn is a long-lived connection through a VIP.
type restartConn struct {
	conn    net.Conn
	from    string
	vip     netip.AddrPort
	backend string
}

func TestLBRestartKeepsNATConnections(t *testing.T) {
	localVIP := netip.MustParseAddr("10.103.92.86")
	remoteVIP := netip.MustParseAddr("10.103.92.84")
	one := func(name string, vip netip.Addr, p lbPod) configs.ServiceSpec {
		return myService(func(s *configs.ServiceSpec) {
			s.Name = name
			s.ClusterIPs = []string{vip.String()}
			s.Endpoints = lbEndpoints(p)
		})
	}
	e := startLB(t, "restart", []configs.ServiceSpec{
		one("restart-local", localVIP, lbNginxTh5pz),
		one("restart-remote", remoteVIP, lbNginx4k7xw),
		kubeDNS(),
	})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginxTh5pz, lbNginx4k7xw)
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)

	// Three connections from each client to each VIP, and eight UDP
	// flows to kube-dns: eight random picks of two backends all equal to
	// the first ones by chance with probability 2^-8.
	var conns []*restartConn
	for _, from := range []lbPod{lbCorednsXx6mc, lbCoredns8qxfv} {
		for _, vip := range []netip.Addr{localVIP, remoteVIP} {
			for range 3 {
				to := netip.AddrPortFrom(vip, 80)
				conn, rep, err := e.dialFrom(from.name, netip.AddrPortFrom(from.addr, 0), to, 5*time.Second)
				if err != nil {
					t.Fatalf("connect %s -> %v: %v", from.name, to, err)
				}
				t.Cleanup(func() { conn.Close() })
				conns = append(conns, &restartConn{conn: conn, from: from.name, vip: to, backend: rep.Server})
			}
		}
	}
	type udpFlow struct {
		conn    *net.UDPConn
		backend string
	}
	var flows []udpFlow
	dns := netip.AddrPortFrom(kubeDNSVIP, 53)
	for i := range 8 {
		u := e.udpSocket(lbNginxTh5pz.name, netip.AddrPortFrom(lbNginxTh5pz.addr, 0), dns)
		id, err := lbQuery(u, fmt.Sprintf("before %d", i), 5*time.Second)
		if err != nil {
			t.Fatalf("udp %s -> %v: %v", lbNginxTh5pz.name, dns, err)
		}
		flows = append(flows, udpFlow{u, id})
	}
	checkAll := func(when string, timeout time.Duration) (kept int) {
		t.Helper()
		for i, c := range conns {
			msg := fmt.Sprintf("%s %d\n", when, i)
			if err := echoWithin(c.conn, msg, timeout); err != nil {
				t.Errorf("%s: connection %s -> %v (backend %s): %v", when, c.from, c.vip, c.backend, err)
				continue
			}
			kept++
		}
		for i, f := range flows {
			id, err := lbQuery(f.conn, fmt.Sprintf("%s %d", when, i), 5*time.Second)
			switch {
			case err != nil:
				t.Errorf("%s: udp flow %d %v -> %v: %v", when, i, f.conn.LocalAddr(), dns, err)
			case id != f.backend:
				t.Errorf("%s: udp flow %d %v -> %v answered by %s, want its backend %s", when, i, f.conn.LocalAddr(), dns, id, f.backend)
			}
		}
		return kept
	}
	checkAll("before", 5*time.Second)

	restarts := 0
	// The crash stays down 2 s, as a DaemonSet's Pod takes a while to
	// come back: long enough for the clients' retransmission timers to
	// back off a few times.
	for _, stop := range []struct {
		name string
		sig  syscall.Signal
		down time.Duration
	}{{"restart (SIGTERM)", syscall.SIGTERM, 0}, {"crash (SIGKILL)", syscall.SIGKILL, 2 * time.Second}} {
		o := e.outage(stop.name, lbMaster, stop.sig, stop.down, conns[:len(conns)/2])
		for _, err := range o.errs {
			t.Error(err)
		}
		kept := checkAll("after "+stop.name, 15*time.Second)
		t.Logf("%s: %d/%d TCP connections kept, %d UDP flows on their backend; router up again %v after the signal, data sent in the gap delivered after %v; vr0 gone while down: %v",
			stop.name, kept, len(conns), len(flows), o.up.Round(time.Millisecond), o.resumed.Round(time.Millisecond), o.tunGone)
		want := fmt.Sprintf(`"restored": %d,`, len(conns)+len(flows))
		if log := e.logOf(lbMaster); strings.Count(log, want) != restarts+1 {
			t.Errorf("%s: router log shows %q %d times, want %d (once per start after a stop):\n%s",
				stop.name, want, strings.Count(log, want), restarts+1, lastLines(log, 20))
		}
		restarts++
	}

	// A flow file of garbage: refused with a warning, the router starts
	// and serves new connections, and the old ones, which it no longer
	// knows, are reset rather than left hanging.
	if err := e.routers[lbMaster].Stop(); err != nil {
		t.Fatalf("stop router on %s: %v", lbMaster, err)
	}
	files, _ := filepath.Glob(filepath.Join(harness.StateDir(e.logPath(lbMaster), lbMaster), "*.flows"))
	if len(files) != 1 {
		t.Fatalf("flow files in %s: %v, want one", harness.StateDir(e.logPath(lbMaster), lbMaster), files)
	}
	if err := os.WriteFile(files[0], []byte(strings.Repeat("garbage\n", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.startRouter(lbMaster)
	// The router logs what it found in the file before it reads the TUN;
	// a connection through it (below) is after that.
	conn, _, err := e.dialFrom(lbCorednsXx6mc.name, netip.AddrPortFrom(lbCorednsXx6mc.addr, 0), netip.AddrPortFrom(remoteVIP, 80), 5*time.Second)
	if err != nil {
		t.Fatalf("new connection after the garbage flow file: %v", err)
	}
	conn.Close()
	if log := e.logOf(lbMaster); !strings.Contains(log, "not a vrouter flow file (bad magic)") {
		t.Errorf("router log does not say the garbage flow file was refused:\n%s", lastLines(log, 20))
	}
	c := conns[len(conns)-1]
	err = echoWithin(c.conn, "after the garbage\n", 10*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection %s -> %v after its flow was lost: %v, want reset", c.from, c.vip, err)
	}
}

// outageResult is what an outage of a router looked like.
type outageResult struct {
	// up is the time from the signal to the next router's start,
	// resumed to the last echo of data sent while it was down.
	up, resumed time.Duration
	// tunGone is whether vr0 was gone while the router was down.
	tunGone bool
	// errs are the connections whose data sent in the gap came back
	// wrong or not at all.
	errs []error
}

// outage stops node's router with sig (SIGTERM: a restart, which must
// exit cleanly; SIGKILL: a crash), writes a line on each of gap while it
// is down, keeps it down for down, starts it again and reads each
// line's echo.
func (e *lbEnv) outage(name, node string, sig syscall.Signal, down time.Duration, gap []*restartConn) outageResult {
	e.t.Helper()
	var o outageResult
	r := e.routers[node]
	start := time.Now()
	if err := r.Signal(sig); err != nil {
		e.t.Fatalf("%s: signal router on %s: %v", name, node, err)
	}
	err := r.Stop() // waits for the exit
	if sig == syscall.SIGTERM && err != nil {
		e.t.Fatalf("%s: router on %s: %v", name, node, err)
	}
	// While it is down, the clients send: their kernels must
	// retransmit once the next router is up.
	for i, c := range gap {
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := fmt.Fprintf(c.conn, "%s in the gap %d\n", name, i); err != nil {
			e.t.Fatalf("%s: write while the router is down: %v", name, err)
		}
	}
	o.tunGone = !e.hasLink(node, "vr0")
	time.Sleep(down) // the outage itself, not a wait for an event
	e.startRouter(node)
	o.up = time.Since(start)
	for i, c := range gap {
		want := fmt.Sprintf("%s in the gap %d\n", name, i)
		if err := readEcho(c.conn, want, 15*time.Second); err != nil {
			o.errs = append(o.errs, fmt.Errorf("%s: connection %s -> %v (backend %s), data sent in the gap: %w", name, c.from, c.vip, c.backend, err))
		}
	}
	o.resumed = time.Since(start)
	return o
}

// echoWithin writes msg on conn (to a ServeTCPEcho server) and reads it
// back within timeout.
func echoWithin(conn net.Conn, msg string, timeout time.Duration) error {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return readEcho(conn, msg, timeout)
}

// readEcho reads len(want) bytes from conn within timeout and checks them.
func readEcho(conn net.Conn, want string, timeout time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, len(want))
	n, err := io.ReadFull(conn, buf)
	if err != nil {
		return fmt.Errorf("read echo of %q (got %q): %w", want, buf[:n], err)
	}
	if string(buf) != want {
		return fmt.Errorf("echoed %q, want %q", buf, want)
	}
	return nil
}

// hasLink reports whether node's namespace has interface name.
func (e *lbEnv) hasLink(node, name string) bool {
	ok := false
	e.c.Do(node, func() error {
		_, err := net.InterfaceByName(name)
		ok = err == nil
		return nil
	})
	return ok
}

// logOf is node's router log.
func (e *lbEnv) logOf(node string) string {
	b, _ := os.ReadFile(e.logPath(node))
	return string(b)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// A --state-dir with no room for a flow file (a full tmpfs) costs only the
// persistence: the router warns, starts and translates.
func TestLBFlowFileNoRoom(t *testing.T) {
	e := startLB(t, "noroom", []configs.ServiceSpec{myService()})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// 64 KiB: less than a flow file's header and first records.
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a 64 KiB tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := e.routers[lbMaster].Stop(); err != nil {
		t.Fatal(err)
	}
	r, err := harness.StartRouter(e.c, vrouterBin, lbMaster, e.configPath(lbMaster), e.logPath(lbMaster), "--state-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	e.routers[lbMaster] = r
	conn, rep, err := e.dialFrom(lbCorednsXx6mc.name, netip.AddrPortFrom(lbCorednsXx6mc.addr, 0), netip.AddrPortFrom(myServiceVIP, 80), 5*time.Second)
	if err != nil {
		t.Fatalf("connect to my-service with no room for a flow file: %v", err)
	}
	defer conn.Close()
	if err := lbEcho(conn, "hello\n"); err != nil {
		t.Errorf("echo through %s: %v", rep.Server, err)
	}
	if log := e.logOf(lbMaster); !strings.Contains(log, "no flow file") || !strings.Contains(log, "no space left on device") {
		t.Errorf("router log does not warn that the flow file could not be made for want of space:\n%s", lastLines(log, 10))
	}
	if r.Exited() {
		t.Errorf("router on %s exited", lbMaster)
	}
}
