package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/pcap"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gVisor's stack keeps a process-wide timer goroutine.
		goleak.IgnoreAnyFunction("gvisor.dev/gvisor/pkg/sync.Gopark"))
}

// served is an admin server for hostgw-master of an in-memory seed
// cluster, on a socket in a fresh directory.
type served struct {
	c      *seedtest.Cluster
	client *Client
	socket string
	level  zap.AtomicLevel
	logs   *observer.ObservedLogs
}

func serve(t *testing.T, mods ...func(*Options)) *served {
	t.Helper()
	return serveOn(t, seedtest.Start(t), mods...)
}

// serveOn is serve on cluster c; with c nil, mods set the Router.
func serveOn(t *testing.T, c *seedtest.Cluster, mods ...func(*Options)) *served {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "run", "vr0.sock")
	ln, err := Listen(socket)
	if err != nil {
		t.Fatalf("Listen(%s): %v", socket, err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	s := &served{c: c, socket: socket, level: zap.NewAtomicLevelAt(zapcore.InfoLevel), logs: logs}
	opts := Options{Log: zap.New(core), Level: s.level}
	if c != nil {
		opts.Router, opts.Table, opts.NAT = c.Master.Router, c.Master.Table, c.Master.NAT
	}
	for _, m := range mods {
		m(&opts)
	}
	srv := NewServer(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, ln, srv.Handler()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
		if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s after the server stopped: %v, want it removed", socket, err)
		}
	})
	s.client = NewClient(socket)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

var (
	nginxTh5pz   = netip.MustParseAddr("10.244.0.4")
	nginx4k7xw   = netip.MustParseAddr("10.244.1.2")
	corednsXx6mc = netip.MustParseAddr("10.244.0.2")
)

// traffic sends 2 pings across the nodes and opens 3 connections to
// my-service from coredns-xx6mc (one per backend: round-robin).
func (s *served) traffic(t *testing.T) {
	t.Helper()
	s.c.Ping(nginxTh5pz, nginx4k7xw, 1)
	s.c.Ping(nginxTh5pz, nginx4k7xw, 2)
	for i := range 3 {
		s.c.Master.Send(seedtest.TCPSyn(netip.AddrPortFrom(corednsXx6mc, uint16(40000+i)), netip.AddrPortFrom(seedtest.MyServiceVIP, 80)))
	}
	s.c.Master.Recv()
	s.c.Node.Recv()
	s.c.Node.Recv()
	deadline := time.Now().Add(5 * time.Second)
	for s.c.Master.Router.Stats().Peers["hostgw-node"].TxPackets != 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// roundTrip checks that v survives -o json: printed and parsed back, it
// is what it was.
func roundTrip[T any](t *testing.T, what string, v T) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteJSON(&b, v); err != nil {
		t.Fatalf("WriteJSON(%s): %v", what, err)
	}
	var back T
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("%s: parse -o json output: %v\n%s", what, err, b.String())
	}
	if !reflect.DeepEqual(back, v) {
		t.Errorf("%s: -o json round trip = %+v, want %+v\n%s", what, back, v, b.String())
	}
}

func TestRoutes(t *testing.T) {
	s := serve(t)
	s.traffic(t)
	routes, err := s.client.Routes(ctx(t))
	if err != nil {
		t.Fatalf("Routes: %v", err)
	}
	var out bytes.Buffer
	if err := WriteRoutes(&out, routes, false); err != nil {
		t.Fatal(err)
	}
	want := "10.244.0.0/24 dev vr0\n" +
		"10.244.1.0/24 via 192.168.31.202 dev overlay0\n"
	if out.String() != want {
		t.Errorf("vrouter routes printed\n%s\nwant\n%s", out.String(), want)
	}

	out.Reset()
	WriteRoutes(&out, routes, true)
	const ping, syn = seedtest.PingLen, 40
	// The TUN: 2 echo requests and 3 SYNs in; 2 replies and the hairpin
	// SYN out. hostgw-node: 2 requests and 2 SYNs out, 2 replies in.
	wantV := "10.244.0.0/24 dev vr0\n" +
		"    device vr0: rx 5 packets " + itoa(2*ping+3*syn) + " bytes, tx 3 packets " + itoa(2*ping+syn) + " bytes\n" +
		"10.244.1.0/24 via 192.168.31.202 dev overlay0\n" +
		"    peer hostgw-node: rx 2 packets " + itoa(2*ping) + " bytes, tx 4 packets " + itoa(2*ping+2*syn) + " bytes\n"
	if out.String() != wantV {
		t.Errorf("vrouter routes -v printed\n%s\nwant\n%s", out.String(), wantV)
	}
	roundTrip(t, "routes", routes)
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPeers(t *testing.T) {
	s := serve(t)
	s.traffic(t)
	peers, err := s.client.Peers(ctx(t))
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	if len(peers) != 1 || peers[0].Name != "hostgw-node" || peers[0].Endpoint != seedtest.NodeUnderlay ||
		peers[0].Counters.RxPackets != 2 || peers[0].Counters.TxPackets != 4 || time.Since(peers[0].LastSeen) > time.Minute {
		t.Fatalf("Peers = %+v, want hostgw-node at %v, 2 packets in, 4 out, seen just now", peers, seedtest.NodeUnderlay)
	}
	var out bytes.Buffer
	WritePeers(&out, peers, peers[0].LastSeen.Add(3*time.Second))
	want := "NAME          ENDPOINT              POD CIDRS       LAST SEEN   RX PACKETS   RX BYTES   TX PACKETS   TX BYTES\n" +
		"hostgw-node   192.168.31.202:8285   10.244.1.0/24   3s ago      2            72         4            152\n"
	if out.String() != want {
		t.Errorf("vrouter peers printed\n%s\nwant\n%s", out.String(), want)
	}
	// A plain overlay has no keys and no sessions.
	out.Reset()
	WriteJSON(&out, peers)
	for _, field := range []string{`"publicKey"`, `"wireguard"`} {
		if strings.Contains(out.String(), field) {
			t.Errorf("vrouter peers -o json over a plain overlay has %s:\n%s", field, out.String())
		}
	}
	roundTrip(t, "peers", peers)
}

func TestServices(t *testing.T) {
	s := serve(t)
	s.traffic(t)
	svcs, err := s.client.Services(ctx(t))
	if err != nil {
		t.Fatalf("Services: %v", err)
	}
	var out bytes.Buffer
	if err := WriteServices(&out, svcs); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE     NAME         TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)
default       my-service   ClusterIP   10.103.92.81   <none>        80/TCP
kube-system   kube-dns     ClusterIP   10.96.0.10     <none>        53/UDP,53/TCP,9153/TCP

SERVICE                        PORT                  ENDPOINT          STATE   NODE            IN USE   ACTIVE   CONNS
default/my-service             10.103.92.81:80/TCP   10.244.0.4:80     ready   hostgw-master   yes      1        1
default/my-service             10.103.92.81:80/TCP   10.244.1.2:80     ready   hostgw-node     yes      1        1
default/my-service             10.103.92.81:80/TCP   10.244.1.3:80     ready   hostgw-node     yes      1        1
kube-system/kube-dns:dns       10.96.0.10:53/UDP     10.244.0.2:53     ready   hostgw-master   yes      0        0
kube-system/kube-dns:dns       10.96.0.10:53/UDP     10.244.0.3:53     ready   hostgw-master   yes      0        0
kube-system/kube-dns:dns-tcp   10.96.0.10:53/TCP     10.244.0.2:53     ready   hostgw-master   yes      0        0
kube-system/kube-dns:dns-tcp   10.96.0.10:53/TCP     10.244.0.3:53     ready   hostgw-master   yes      0        0
kube-system/kube-dns:metrics   10.96.0.10:9153/TCP   10.244.0.2:9153   ready   hostgw-master   yes      0        0
kube-system/kube-dns:metrics   10.96.0.10:9153/TCP   10.244.0.3:9153   ready   hostgw-master   yes      0        0
`
	if out.String() != want {
		t.Errorf("vrouter services printed\n%s\nwant\n%s", out.String(), want)
	}
	roundTrip(t, "services", svcs)
}

func TestServicesShowsUnusedEndpoints(t *testing.T) {
	s := serve(t)
	svcs := seedtest.Services()
	my := &svcs[0]
	my.Endpoints[0].Ready = false                                    // not ready: unused while others are ready
	my.Endpoints[1].Ready, my.Endpoints[1].Terminating = false, true // serving and terminating
	empty := svcs[1]
	empty.Name, empty.Endpoints, empty.ClusterIPs = "empty", nil, []netip.Addr{netip.MustParseAddr("10.96.0.99")}
	empty.Ports = empty.Ports[:1]
	if err := s.c.Master.Table.Set(append(svcs[:1], empty)); err != nil {
		t.Fatal(err)
	}
	got, err := s.client.Services(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	WriteServices(&out, got)
	for _, line := range []string{
		"default/my-service      10.103.92.81:80/TCP   10.244.0.4:80   not ready      hostgw-master   no       0        0",
		"default/my-service      10.103.92.81:80/TCP   10.244.1.2:80   terminating    hostgw-node     no       0        0",
		"default/my-service      10.103.92.81:80/TCP   10.244.1.3:80   ready          hostgw-node     yes      0        0",
		"kube-system/empty:dns   10.96.0.99:53/UDP     <none>          no endpoints                            0        0",
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("vrouter services: no line %q in\n%s", line, out.String())
		}
	}
}

// TestServicesNodePort: a NodePort Service with an external IP prints as
// kubectl prints it, its node-port and external keys have their own
// endpoint lines (externalTrafficPolicy Local: the local endpoint only),
// and its host sockets show their state.
func TestServicesNodePort(t *testing.T) {
	svcs := seedtest.Services()[:1]
	my := &svcs[0]
	my.Type, my.ExternalTrafficPolicy, my.HealthCheckNodePort = lb.TypeLoadBalancer, lb.PolicyLocal, 32000
	my.Ports[0].NodePort = 30080
	my.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	s := serve(t, func(o *Options) {
		o.HostPorts = func(n lb.ServiceName) []HostPort {
			if n != my.Key() {
				return nil
			}
			return []HostPort{
				{Address: netip.MustParseAddrPort("192.168.31.201:30080"), Protocol: "TCP", State: "listening"},
				{Address: netip.MustParseAddrPort("127.0.0.1:30080"), Protocol: "TCP", State: "failed", Error: "address already in use"},
			}
		}
	})
	if err := s.c.Master.Table.Set(svcs); err != nil {
		t.Fatal(err)
	}
	got, err := s.client.Services(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ExternalTrafficPolicy != "Local" || got[0].HealthCheckNodePort != 32000 || len(got[0].HostPorts) != 2 {
		t.Fatalf("Services = %+v, want my-service with externalTrafficPolicy Local, healthCheckNodePort 32000 and 2 host ports", got)
	}
	var out bytes.Buffer
	WriteServices(&out, got)
	// Columns compared with their padding squeezed to one space.
	lines := strings.Split(regexp.MustCompile(` +`).ReplaceAllString(out.String(), " "), "\n")
	for _, line := range []string{
		"default my-service LoadBalancer 10.103.92.81 192.0.2.10 80:30080/TCP",
		"default/my-service 10.103.92.81:80/TCP 10.244.1.2:80 ready hostgw-node yes 0 0",
		"default/my-service nodePort 30080/TCP 10.244.0.4:80 ready hostgw-master yes 0 0",
		"default/my-service nodePort 30080/TCP 10.244.1.2:80 ready hostgw-node no 0 0",
		"default/my-service 192.0.2.10:80/TCP 10.244.1.2:80 ready hostgw-node yes 0 0",
		"default/my-service 192.0.2.10:80/TCP (external) 10.244.0.4:80 ready hostgw-master yes 0 0",
		"default/my-service 192.0.2.10:80/TCP (external) 10.244.1.2:80 ready hostgw-node no 0 0",
		"default/my-service 192.168.31.201:30080 TCP listening",
		"default/my-service 127.0.0.1:30080 TCP failed: address already in use",
	} {
		if !slices.Contains(lines, line) {
			t.Errorf("vrouter services: no line %q in\n%s", line, out.String())
		}
	}
	roundTrip(t, "services", got)
}

func TestConns(t *testing.T) {
	s := serve(t)
	s.traffic(t)
	conns, err := s.client.Conns(ctx(t))
	if err != nil {
		t.Fatalf("Conns: %v", err)
	}
	if len(conns) != 3 {
		t.Fatalf("Conns = %+v, want the 3 flows to my-service", conns)
	}
	for i, c := range conns {
		wantClient := netip.AddrPortFrom(corednsXx6mc, uint16(40000+i))
		if c.Mode != "nat" || c.Protocol != "TCP" || c.Service != "default/my-service" || c.Client != wantClient ||
			c.VIP != netip.AddrPortFrom(seedtest.MyServiceVIP, 80) || time.Since(c.LastSeen) > time.Minute {
			t.Errorf("Conns[%d] = %+v, want a nat TCP flow from %v to default/my-service", i, c, wantClient)
		}
	}
	// The first connection went to the local backend: hairpin.
	if conns[0].Backend != netip.MustParseAddrPort("10.244.0.4:80") || conns[0].SNAT.Addr() != seedtest.RouterAddr {
		t.Errorf("Conns[0] = %+v, want backend 10.244.0.4:80 seeing the router address", conns[0])
	}
	var out bytes.Buffer
	WriteConns(&out, conns[:1], 1, conns[0].Started.Add(3*time.Second))
	idle := (conns[0].Started.Add(3 * time.Second)).Sub(conns[0].LastSeen).Round(time.Second).String()
	want := "MODE   PROTO   CLIENT             SERVICE              VIP               BACKEND         SNAT                  STATE      AGE   IDLE   PACKETS   BYTES\n" +
		"nat    TCP     10.244.0.2:40000   default/my-service   10.103.92.81:80   10.244.0.4:80   169.254.244.1:40000   SYN_SENT   3s    " + idle + "     1/0       40/0\n"
	if out.String() != want {
		t.Errorf("vrouter conns printed\n%s\nwant\n%s", out.String(), want)
	}
	roundTrip(t, "conns", conns)
}

func TestLogLevel(t *testing.T) {
	s := serve(t)
	c := ctx(t)
	if got, err := s.client.LogLevel(c); err != nil || got != "info" {
		t.Fatalf("LogLevel() = %q, %v; want info", got, err)
	}
	if got, err := s.client.SetLogLevel(c, "debug"); err != nil || got != "debug" {
		t.Fatalf("SetLogLevel(debug) = %q, %v; want debug", got, err)
	}
	if s.level.Level() != zapcore.DebugLevel {
		t.Errorf("process log level = %v after SetLogLevel(debug), want debug", s.level.Level())
	}
	if n := s.logs.FilterMessage("log level changed").Len(); n != 1 {
		t.Errorf("%d 'log level changed' lines, want 1", n)
	}
	if _, err := s.client.SetLogLevel(c, "loud"); err == nil || !strings.Contains(err.Error(), `log level "loud": want debug, info, warn or error`) {
		t.Errorf("SetLogLevel(loud) = %v, want an error naming the value and the levels", err)
	}
	if s.level.Level() != zapcore.DebugLevel {
		t.Errorf("process log level = %v after a refused change, want debug still", s.level.Level())
	}
}

func TestSocketPermissions(t *testing.T) {
	s := serve(t)
	fi, err := os.Stat(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode = %v, want a socket with mode 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(s.socket))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("admin socket directory mode = %v, want 0700", di.Mode().Perm())
	}
}

func TestListenStaleInUseAndNotASocket(t *testing.T) {
	dir := t.TempDir()

	// A socket left by a process that died: replaced.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	ln, err := Listen(stale)
	if err != nil {
		t.Fatalf("Listen(stale socket) = %v, want it replaced", err)
	}

	// A socket a live process serves: refused.
	if _, err := Listen(stale); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("Listen(live socket) = %v, want ErrSocketInUse", err)
	}
	ln.Close()

	// Anything else: left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen(regular file) = %v, want an error saying it is not a socket", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("regular file now holds %q, want it untouched", b)
	}
}

func TestClientWithoutRouter(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Routes(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "is `vrouter run` running?") || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("Routes() with no router = %v, want an error naming the socket and asking whether vrouter runs", err)
	}
}

// TestClientWithoutRouterListsOtherSockets: when no router answers on a
// socket, the error names the sockets beside it (the routers of other
// network namespaces), so that --socket can pick one.
func TestClientWithoutRouterListsOtherSockets(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "vr0.netns-4026532999.sock")
	ln, err := Listen(other)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = NewClient(filepath.Join(dir, "vr0.netns-1.sock")).Routes(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "running in this network namespace? "+dir+" holds vr0.netns-4026532999.sock") {
		t.Errorf("Routes() with no router on the socket = %v, want an error listing vr0.netns-4026532999.sock", err)
	}
}

// TestDefaultSocket: the default socket is named after the TUN and the
// network namespace of the process, as /proc shows it.
func TestDefaultSocket(t *testing.T) {
	link, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		if got, want := DefaultSocket("vr0"), "/run/vrouter/vr0.sock"; got != want {
			t.Errorf("DefaultSocket(vr0) without /proc = %q, want %q", got, want)
		}
		return
	}
	ino := strings.TrimSuffix(strings.TrimPrefix(link, "net:["), "]")
	if got, want := DefaultSocket("vr1"), "/run/vrouter/vr1.netns-"+ino+".sock"; got != want {
		t.Errorf("DefaultSocket(vr1) in network namespace %s = %q, want %q", link, got, want)
	}
}

// readPackets reads a pcap stream's records until it ends.
func readPackets(t *testing.T, r io.Reader) []pcap.Record {
	t.Helper()
	pr, err := pcap.NewReader(r)
	if err != nil {
		t.Fatalf("capture stream: %v", err)
	}
	if h := pr.Header(); h.LinkType != pcap.LinkTypeRaw {
		t.Errorf("capture link type = %d, want %d (LINKTYPE_RAW)", h.LinkType, pcap.LinkTypeRaw)
	}
	var out []pcap.Record
	for {
		rec, err := pr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("capture stream after %d records: %v", len(out), err)
		}
		out = append(out, rec)
	}
}

func TestCapture(t *testing.T) {
	s := serve(t)
	c := ctx(t)
	stream, err := s.client.Capture(c, CaptureRequest{NIC: "tun", Count: 2})
	if err != nil {
		t.Fatalf("Capture(tun, 2): %v", err)
	}
	defer stream.Close()
	// One capture per NIC.
	if _, err := s.client.Capture(c, CaptureRequest{NIC: "tun"}); err == nil || !strings.Contains(err.Error(), "capture on vr0: a capture is already running") {
		t.Errorf("second Capture(tun) = %v, want an error saying a capture already runs on vr0", err)
	}
	if _, err := s.client.Capture(c, CaptureRequest{NIC: "eth0"}); err == nil || !strings.Contains(err.Error(), `NIC "eth0": want tun or overlay`) {
		t.Errorf("Capture(eth0) = %v, want an error naming the NIC and the choices", err)
	}

	s.c.Ping(nginxTh5pz, nginx4k7xw, 7)
	recs := readPackets(t, stream) // the server ends the stream after 2
	if len(recs) != 2 {
		t.Fatalf("capture of 2 packets on the TUN got %d records", len(recs))
	}
	for i, want := range []struct {
		typ      header.ICMPv4Type
		src, dst netip.Addr
	}{{header.ICMPv4Echo, nginxTh5pz, nginx4k7xw}, {header.ICMPv4EchoReply, nginx4k7xw, nginxTh5pz}} {
		ip := header.IPv4(recs[i].Data)
		if !ip.IsValid(len(recs[i].Data)) || ip.SourceAddress().String() != want.src.String() ||
			ip.DestinationAddress().String() != want.dst.String() || header.ICMPv4(ip.Payload()).Type() != want.typ {
			t.Errorf("record %d = % x, want ICMP type %d %v -> %v", i, recs[i].Data, want.typ, want.src, want.dst)
		}
	}
	if d := stream.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d, want 0", d)
	}
	// The capture ended: its tap is gone.
	waitFreeNIC(t, s.c.Master.Router, router.TUNNIC)
}

func TestCaptureStopsWhenTheClientGoes(t *testing.T) {
	s := serve(t)
	c, cancel := context.WithCancel(ctx(t))
	stream, err := s.client.Capture(c, CaptureRequest{NIC: "overlay"})
	if err != nil {
		t.Fatalf("Capture(overlay): %v", err)
	}
	s.c.Ping(nginxTh5pz, nginx4k7xw, 1)
	pr, err := pcap.NewReader(stream)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := pr.Next(); err != nil || header.IPv4(rec.Data).DestinationAddress().String() != nginx4k7xw.String() {
		t.Fatalf("first overlay record = %x, %v; want the echo request to %v", rec.Data, err, nginx4k7xw)
	}
	cancel() // Ctrl-C
	stream.Close()
	waitFreeNIC(t, s.c.Master.Router, router.OverlayNIC)
	// The line follows the tap's removal.
	deadline := time.Now().Add(5 * time.Second)
	for s.logs.FilterMessage("capture stopped").Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.logs.FilterMessage("capture stopped").Len(); n != 1 {
		t.Errorf("%d 'capture stopped' lines, want 1", n)
	}
}

// waitFreeNIC waits until nic can be captured again.
func waitFreeNIC(t *testing.T, r *router.Router, nic tcpip.NICID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := r.StartCapture(nic, router.CaptureOptions{})
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NIC %d still captured 5s after its capture ended: %v", nic, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServicesDualStack: a dual-stack Service shows both ClusterIPs.
func TestServicesDualStack(t *testing.T) {
	s := serve(t)
	svcs := seedtest.Services()[:1]
	svcs[0].ClusterIPs = append(svcs[0].ClusterIPs, netip.MustParseAddr("fd00:10:96::5b51"))
	svcs[0].Endpoints = append(svcs[0].Endpoints, lb.Endpoint{Addr: netip.MustParseAddr("fd00:10:244:1::2"), NodeName: "hostgw-node", Ready: true, Serving: true})
	if err := s.c.Master.Table.Set(svcs); err != nil {
		t.Fatal(err)
	}
	got, err := s.client.Services(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	WriteServices(&out, got)
	line := "default     my-service   ClusterIP   10.103.92.81,fd00:10:96::5b51   <none>        80/TCP\n"
	if !strings.HasPrefix(out.String(), "NAMESPACE   NAME         TYPE        CLUSTER-IP                      EXTERNAL-IP   PORT(S)\n"+line) {
		t.Errorf("vrouter services printed\n%s\nwant the line\n%s", out.String(), line)
	}
}

// TestCaptureFiltered: the TUN named by its own name, and a filter the
// router applies: a TCP SYN before the ping is left out.
func TestCaptureFiltered(t *testing.T) {
	s := serve(t)
	c := ctx(t)
	if _, err := s.client.Capture(c, CaptureRequest{NIC: "vr0", Proto: "gre"}); err == nil || !strings.Contains(err.Error(), `proto "gre"`) {
		t.Errorf("Capture(proto gre) = %v, want an error naming the protocol", err)
	}
	stream, err := s.client.Capture(c, CaptureRequest{NIC: "vr0", Count: 1, Host: nginx4k7xw, Proto: "icmp"})
	if err != nil {
		t.Fatalf("Capture(vr0, host %v, icmp): %v", nginx4k7xw, err)
	}
	defer stream.Close()
	s.c.Master.Send(seedtest.TCPSyn(netip.AddrPortFrom(nginxTh5pz, 40000), netip.AddrPortFrom(nginx4k7xw, 80)))
	s.c.Node.Recv()
	s.c.Ping(nginxTh5pz, nginx4k7xw, 3)
	recs := readPackets(t, stream)
	if len(recs) != 1 {
		t.Fatalf("capture of 1 packet got %d records", len(recs))
	}
	if ip := header.IPv4(recs[0].Data); ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || header.ICMPv4(ip.Payload()).Sequence() != 3 {
		t.Errorf("filtered capture's record = % x, want the echo request of seq 3, not the SYN", recs[0].Data)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.logs.FilterField(zap.String("filter", "host 10.244.1.2 and (icmp or icmp6)")).Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.logs.FilterField(zap.String("filter", "host 10.244.1.2 and (icmp or icmp6)")).Len() == 0 {
		t.Errorf("no capture log line with the filter as tcpdump writes it: %v", s.logs.All())
	}
}

// TestServicesShowsEjectedEndpoints: an endpoint that outlier detection
// ejected shows as "ejected" under IN USE.
func TestServicesShowsEjectedEndpoints(t *testing.T) {
	svcs := []Service{{
		Namespace: "default", Name: "my-service", Type: "ClusterIP",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.103.92.81")},
		Ports: []ServicePort{{
			ClusterIP: netip.MustParseAddr("10.103.92.81"), Port: 80, Protocol: "TCP", Mode: "nat", Picker: "random", Status: "ok",
			Endpoints: []Endpoint{
				{Address: netip.MustParseAddrPort("10.244.1.2:80"), Node: "hostgw-node", Ready: true, Serving: true, InUse: true, Conns: 7},
				{Address: netip.MustParseAddrPort("10.244.1.3:80"), Node: "hostgw-node", Ready: true, Serving: true, InUse: true, Ejected: true, Ejections: 1, Conns: 3},
			},
		}},
	}}
	var out bytes.Buffer
	if err := WriteServices(&out, svcs); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"default/my-service   10.103.92.81:80/TCP   10.244.1.2:80   ready   hostgw-node   yes       0        7",
		"default/my-service   10.103.92.81:80/TCP   10.244.1.3:80   ready   hostgw-node   ejected   0        3",
	} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("vrouter services: no line %q in\n%s", line, out.String())
		}
	}
	roundTrip(t, "services", svcs)
}

// TestProfiles: the socket serves Go's profiles, and a CPU profile is one
// `go tool pprof` reads (gzipped protobuf).
func TestProfiles(t *testing.T) {
	s := serve(t)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.socket)
	}}}
	defer hc.CloseIdleConnections()
	for path, want := range map[string][]byte{
		"/debug/pprof/":                  []byte("goroutine"),
		"/debug/pprof/profile?seconds=1": {0x1f, 0x8b}, // gzip
	} {
		resp, err := hc.Get("http://vrouter" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, want) {
			t.Errorf("GET %s = %s, %d bytes (%v); want 200 with %q", path, resp.Status, len(body), err, want)
		}
	}
}
