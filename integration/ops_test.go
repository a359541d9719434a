package integration

// TestOps runs the seed's cluster with every operability endpoint on and
// checks what an operator sees: Prometheus metrics after real traffic,
// `vrouter routes`/`services`/`peers` over the admin socket, a pcap
// written during a ping, the log level changed at run time, and readiness
// at start and at SIGTERM (while a proxied connection drains):
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter --metrics-address 127.0.0.1:9285 --health-address 127.0.0.1:10256
//	 │    │                              --admin-socket <tmp>/hostgw-master.sock --shutdown-grace 10s
//	 │    cni0 ─ nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2 (client), coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 .202  vrouter (the same, socket <tmp>/hostgw-node.sock)
//	      cni0 ─ nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
//	default/my-service        10.103.92.81:80/TCP nat, round-robin -> 10.244.0.4, 10.244.1.2, 10.244.1.3
//	default/my-service-proxy  10.103.92.90:7/TCP  proxy            -> the same three (TCP echo)
//
// Metrics and health listen on 127.0.0.1 inside each node's network
// namespace, so the test reaches them from there; the admin sockets are
// files, reached from anywhere.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

const (
	opsMetricsAddr = "127.0.0.1:9285"
	opsHealthAddr  = "127.0.0.1:10256"
)

var opsProxyVIP = netip.MustParseAddr("10.103.92.90")

func TestOps(t *testing.T) {
	services := harness.SeedServices("round-robin")
	proxySvc := services[0]
	proxySvc.Name, proxySvc.ClusterIPs, proxySvc.Picker, proxySvc.Mode = "my-service-proxy", []string{opsProxyVIP.String()}, "", configs.ModeProxy
	proxySvc.Ports = []configs.ServicePortSpec{{Port: 7, Protocol: "TCP"}}
	services = append(services, proxySvc)
	e := newEnv(t, "ops", topology.Seed(), harness.ConfigOptions{Services: services})
	e.serve(nginxTh5pz, corednsXx6mc, coredns8qxfv, nginx4k7xw, nginxJ6zwk)

	socket := func(node string) string { return filepath.Join(e.dir, node+".sock") }
	start := func(node string) {
		t.Helper()
		r, err := harness.StartRouter(e.c, vrouterBin, node, e.configPath(node), e.logPath(node),
			"--log-level", "info",
			"--metrics-address", opsMetricsAddr,
			"--health-address", opsHealthAddr,
			"--admin-socket", socket(node),
			"--shutdown-grace", "10s",
			"--state-dir", harness.StateDir(e.logPath(node), node))
		if err != nil {
			t.Fatalf("harness.StartRouter(%s): %v", node, err)
		}
		e.routers[node] = r
	}

	t.Run("ready at start", func(t *testing.T) {
		// Before the router: nothing answers the probe.
		if code, _, err := e.httpGetIn(masterNode, "http://"+opsHealthAddr+"/readyz"); err == nil {
			t.Fatalf("GET /readyz before the router started = %d, want no answer", code)
		}
		// Probe all through the start: the answers may only go from
		// none, through 503 "starting", to 200, never back.
		seen := e.pollReadiness(masterNode, func() { start(masterNode) })
		t.Logf("readiness of %s while it started: %v", masterNode, seen)
		if len(seen) == 0 || seen[len(seen)-1] != "200" {
			t.Fatalf("readiness while starting = %v, want to end with 200", seen)
		}
		order := map[string]int{"none": 0, "503 starting": 1, "200": 2}
		for i := 1; i < len(seen); i++ {
			a, okA := order[seen[i-1]]
			b, okB := order[seen[i]]
			if !okA || !okB || b < a {
				t.Fatalf("readiness while starting = %v, want none, then 503 starting, then 200, never back", seen)
			}
		}
		start(workerNode)
		for _, node := range []string{masterNode, workerNode} {
			code, body, err := e.httpGetIn(node, "http://"+opsHealthAddr+"/healthz")
			var h struct {
				Status   string    `json:"status"`
				Ready    bool      `json:"ready"`
				LastSync time.Time `json:"lastSync"`
			}
			if err == nil {
				err = json.Unmarshal([]byte(body), &h)
			}
			if err != nil || code != 200 || h.Status != "ok" || !h.Ready || time.Since(h.LastSync) > time.Minute {
				t.Errorf("GET /healthz on %s = %d %s (%v), want 200, ok, ready and a last sync just now", node, code, body, err)
			}
		}
	})
	if t.Failed() {
		return
	}

	t.Run("metrics after traffic", func(t *testing.T) {
		const pings, requests = 5, 20
		res, err := e.c.Ping(nginxTh5pz.name, nginx4k7xw.addr, pings, 2*time.Second)
		if err != nil || res.Received != pings {
			t.Fatalf("Ping(%s -> %v, %d) = %v, %v; want every probe answered", nginxTh5pz.name, nginx4k7xw.addr, pings, res, err)
		}
		answered := map[string]int{}
		url := fmt.Sprintf("http://%s/", harness.MyServiceIP)
		for i := range requests {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rep, err := e.c.HTTPGet(ctx, corednsXx6mc.name, url)
			cancel()
			if err != nil {
				t.Fatalf("request %d: GET %s from %s: %v", i, url, corednsXx6mc.name, err)
			}
			answered[rep.Server]++
		}
		t.Logf("GET %s x%d from %s: %v", url, requests, corednsXx6mc.name, answered)

		svc := map[string]string{"namespace": "default", "service": "my-service", "cluster_ip": harness.MyServiceIP, "port": "80", "protocol": "TCP"}
		with := func(m map[string]string, kv ...string) map[string]string {
			out := map[string]string{}
			for k, v := range m {
				out[k] = v
			}
			for i := 0; i+1 < len(kv); i += 2 {
				out[kv[i]] = kv[i+1]
			}
			return out
		}
		// Round-robin over 3 backends from one router: each gets at
		// least requests/3.
		perBackend := float64(requests / 3)
		checks := []struct {
			node   string
			name   string
			labels map[string]string
			min    float64
		}{
			// The echo requests leave hostgw-master for hostgw-node and
			// the replies come back, over the overlay.
			{masterNode, "vrouter_peer_packets_total", map[string]string{"peer": workerNode, "direction": "tx"}, pings},
			{masterNode, "vrouter_peer_packets_total", map[string]string{"peer": workerNode, "direction": "rx"}, pings},
			{masterNode, "vrouter_peer_bytes_total", map[string]string{"peer": workerNode, "direction": "tx"}, pings * 84},
			{workerNode, "vrouter_peer_packets_total", map[string]string{"peer": masterNode, "direction": "rx"}, pings},
			{workerNode, "vrouter_peer_packets_total", map[string]string{"peer": masterNode, "direction": "tx"}, pings},
			// Every connection was picked by hostgw-master's router.
			{masterNode, "vrouter_service_connections_total", svc, requests},
			{masterNode, "vrouter_backend_connections_total", with(svc, "backend", "10.244.0.4:80"), perBackend},
			{masterNode, "vrouter_backend_connections_total", with(svc, "backend", "10.244.1.2:80"), perBackend},
			{masterNode, "vrouter_backend_connections_total", with(svc, "backend", "10.244.1.3:80"), perBackend},
			{masterNode, "vrouter_nat_flows_total", nil, requests},
			{masterNode, "vrouter_routes", nil, 2},
			{masterNode, "vrouter_peers", nil, 1},
			{masterNode, "vrouter_services", nil, 3},
			{masterNode, "vrouter_sync_proxy_rules_last_timestamp_seconds", nil, float64(time.Now().Add(-time.Hour).Unix())},
			{masterNode, "vrouter_sync_proxy_rules_duration_seconds", nil, 1}, // its count: the initial programming
		}
		scraped := map[string]map[string]*dto.MetricFamily{}
		for _, node := range []string{masterNode, workerNode} {
			code, body, err := e.httpGetIn(node, "http://"+opsMetricsAddr+"/metrics")
			if err != nil || code != 200 {
				t.Fatalf("GET /metrics on %s = %d, %v", node, code, err)
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			if scraped[node], err = p.TextToMetricFamilies(strings.NewReader(body)); err != nil {
				t.Fatalf("parse /metrics of %s: %v", node, err)
			}
		}
		for _, c := range checks {
			got, err := metricValue(scraped[c.node], c.name, c.labels)
			if err != nil {
				t.Errorf("/metrics of %s: %v", c.node, err)
				continue
			}
			if got < c.min {
				t.Errorf("/metrics of %s: %s%v = %v, want at least %v", c.node, c.name, c.labels, got, c.min)
			} else {
				t.Logf("/metrics of %s: %s%v = %v", c.node, c.name, c.labels, got)
			}
		}
		// Backends on hostgw-node counted no connection of their own:
		// the picks are the client's router's.
		if got, err := metricValue(scraped[workerNode], "vrouter_service_connections_total", svc); err != nil || got != 0 {
			t.Errorf("/metrics of %s: vrouter_service_connections_total%v = %v, %v; want 0", workerNode, svc, got, err)
		}
	})

	t.Run("vrouter routes", func(t *testing.T) {
		for _, tc := range []struct {
			node string
			want string
		}{
			{masterNode, "10.244.0.0/24 dev vr0\n10.244.1.0/24 via 192.168.31.202 dev overlay0\nunreachable 10.244.0.0/16\n"},
			{workerNode, "10.244.0.0/24 via 192.168.31.201 dev overlay0\n10.244.1.0/24 dev vr0\nunreachable 10.244.0.0/16\n"},
		} {
			out, err := exec.Command(vrouterBin, "routes", "--socket", socket(tc.node)).CombinedOutput()
			if err != nil || string(out) != tc.want {
				t.Errorf("vrouter routes --socket %s = %v\n%s\nwant\n%s", socket(tc.node), err, out, tc.want)
			}
		}
		out, err := exec.Command(vrouterBin, "routes", "-v", "-o", "json", "--socket", socket(masterNode)).Output()
		var routes []struct {
			Dst      string `json:"dst"`
			Peer     string `json:"peer"`
			Counters struct {
				TxPackets uint64 `json:"txPackets"`
			} `json:"counters"`
		}
		if err == nil {
			err = json.Unmarshal(out, &routes)
		}
		if err != nil || len(routes) != 3 || routes[1].Peer != workerNode || routes[1].Counters.TxPackets < 5 {
			t.Errorf("vrouter routes -o json = %v\n%s\nwant 3 routes, the second to peer %s with at least 5 packets sent", err, out, workerNode)
		}

		out, err = exec.Command(vrouterBin, "services", "--socket", socket(masterNode)).CombinedOutput()
		for _, want := range [][]string{
			{"default", "my-service", "ClusterIP", harness.MyServiceIP, "<none>", "80/TCP"},
			{"kube-system", "kube-dns", "ClusterIP", harness.KubeDNSIP, "<none>", "53/UDP,53/TCP,9153/TCP"},
			{"default/my-service", "10.103.92.81:80/TCP", "10.244.1.3:80", "ready", "hostgw-node", "yes"},
		} {
			if err != nil || !hasRow(string(out), want...) {
				t.Errorf("vrouter services = %v\n%s\nwant a row starting %q", err, out, want)
			}
		}
		out, err = exec.Command(vrouterBin, "peers", "--socket", socket(masterNode)).CombinedOutput()
		if err != nil || !hasRow(string(out), workerNode, "192.168.31.202:8285", "10.244.1.0/24") {
			t.Errorf("vrouter peers = %v\n%s\nwant hostgw-node at 192.168.31.202:8285", err, out)
		}
	})

	t.Run("capture during a ping", func(t *testing.T) {
		file := filepath.Join(e.dir, "ping.pcap")
		cmd := exec.Command(vrouterBin, "capture", "--nic", "tun", "-w", file, "--socket", socket(masterNode))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		// The file header is written once the router's tap is in place.
		eventually(t, 5*time.Second, "capture file header", func() error {
			if fi, err := os.Stat(file); err != nil || fi.Size() < 24 {
				return fmt.Errorf("%s: %v", file, err)
			}
			return nil
		})
		e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
		// Ctrl-C ends the capture cleanly.
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("vrouter capture after Ctrl-C: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "packets captured") {
			t.Errorf("vrouter capture stderr = %q, want the number of packets captured", stderr.String())
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		records, err := parsePcap(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var request, reply bool
		n := len(records)
		for _, rec := range records {
			ip := header.IPv4(rec)
			if len(rec) < header.IPv4MinimumSize || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
				continue
			}
			src, dst := ip.SourceAddress().String(), ip.DestinationAddress().String()
			switch typ := header.ICMPv4(ip.Payload()).Type(); {
			case typ == header.ICMPv4Echo && src == nginxTh5pz.addr.String() && dst == nginx4k7xw.addr.String():
				request = true
			case typ == header.ICMPv4EchoReply && src == nginx4k7xw.addr.String() && dst == nginxTh5pz.addr.String():
				reply = true
			}
		}
		if !request || !reply {
			t.Errorf("%s: %d records, echo request %v, echo reply %v; want both", file, n, request, reply)
		}
		if tcpdump, err := exec.LookPath("tcpdump"); err == nil {
			out, err := exec.Command(tcpdump, "-n", "-r", file, "icmp").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "ICMP echo request") || !strings.Contains(string(out), "ICMP echo reply") {
				t.Errorf("tcpdump -n -r %s icmp = %v\n%s\nwant the echo request and reply", file, err, out)
			}
		}
		// The tap is gone: a new capture of the NIC starts.
		again := filepath.Join(e.dir, "again.pcap")
		cmd = exec.Command(vrouterBin, "capture", "--nic", "tun", "-w", again, "--socket", socket(masterNode))
		var out strings.Builder
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		eventually(t, 5*time.Second, "a second capture after Ctrl-C", func() error {
			if fi, err := os.Stat(again); err != nil || fi.Size() < 24 {
				return fmt.Errorf("%s: %v", again, err)
			}
			return nil
		})
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("second vrouter capture: %v\n%s", err, out.String())
		}
	})

	t.Run("log level at run time", func(t *testing.T) {
		out, err := exec.Command(vrouterBin, "log-level", "debug", "--socket", socket(workerNode)).CombinedOutput()
		if err != nil || string(out) != "debug\n" {
			t.Errorf("vrouter log-level debug = %v %q, want \"debug\"", err, out)
		}
		r := e.router(workerNode)
		r.Signal(syscall.SIGUSR1) // back to the configured level
		eventually(t, 5*time.Second, "SIGUSR1 back to info", func() error {
			out, err := exec.Command(vrouterBin, "log-level", "--socket", socket(workerNode)).CombinedOutput()
			if err != nil || string(out) != "info\n" {
				return fmt.Errorf("vrouter log-level = %v %q, want info", err, out)
			}
			return nil
		})
		b, _ := os.ReadFile(e.logPath(workerNode))
		if n := strings.Count(string(b), "log level changed"); n != 2 {
			t.Errorf("router log of %s has %d 'log level changed' lines, want 2", workerNode, n)
		}
	})

	t.Run("not ready at SIGTERM, drains proxied connections", func(t *testing.T) {
		// A connection through the proxy-mode Service, open across the
		// SIGTERM.
		var conn net.Conn
		addr := netip.AddrPortFrom(opsProxyVIP, 7)
		err := e.c.Do(corednsXx6mc.name, func() error {
			var err error
			conn, err = net.DialTimeout("tcp", addr.String(), 5*time.Second)
			return err
		})
		if err != nil {
			t.Fatalf("dial %v from %s: %v", addr, corednsXx6mc.name, err)
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatalf("%v: greeting: %v", addr, err)
		}

		r := e.router(masterNode)
		sent := time.Now()
		if err := r.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "/readyz 503 after SIGTERM", func() error {
			code, body, err := e.httpGetIn(masterNode, "http://"+opsHealthAddr+"/readyz")
			if err != nil || code != 503 || !strings.Contains(body, "shutting down") {
				return fmt.Errorf("GET /readyz = %d %q, %v; want 503 shutting down", code, body, err)
			}
			return nil
		})
		// The router keeps the connection going while it drains.
		time.Sleep(time.Second)
		if r.Exited() {
			t.Fatalf("router on %s exited %v after SIGTERM with a proxied connection open and --shutdown-grace 10s", masterNode, time.Since(sent))
		}
		if _, err := fmt.Fprintf(conn, "still here\n"); err != nil {
			t.Fatalf("write while draining: %v", err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "still here\n" {
			t.Fatalf("echo while draining = %q, %v; want \"still here\"", line, err)
		}
		// The last connection ends: the router stops well before the
		// grace period is over, and exits 0.
		conn.Close()
		closed := time.Now()
		eventually(t, 5*time.Second, "router exits after the last proxied connection", func() error {
			if !r.Exited() {
				return errors.New("still running")
			}
			return nil
		})
		t.Logf("router exited %v after the connection closed, %v after SIGTERM", time.Since(closed).Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))
		if err := r.Stop(); err != nil {
			t.Errorf("router on %s after SIGTERM: %v, want exit status 0", masterNode, err)
		}
		b, _ := os.ReadFile(e.logPath(masterNode))
		for _, want := range []string{"shutting down: not ready", "draining proxied connections", "proxied connections drained"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("router log of %s has no %q", masterNode, want)
			}
		}
		if _, err := os.Stat(socket(masterNode)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("admin socket %s after exit: %v, want it removed", socket(masterNode), err)
		}
	})
}

// parsePcap parses a capture file as vrouter writes it: libpcap format,
// little-endian, microsecond timestamps, link type LINKTYPE_RAW (101). It
// is written here from the format's description rather than shared with
// the writer, so that it checks the file and not the writer against
// itself.
func parsePcap(b []byte) ([][]byte, error) {
	le := binary.LittleEndian
	if len(b) < 24 {
		return nil, fmt.Errorf("%d bytes: no pcap header", len(b))
	}
	if magic := le.Uint32(b); magic != 0xa1b2c3d4 {
		return nil, fmt.Errorf("magic %#x, want 0xa1b2c3d4", magic)
	}
	if major, minor := le.Uint16(b[4:]), le.Uint16(b[6:]); major != 2 || minor != 4 {
		return nil, fmt.Errorf("version %d.%d, want 2.4", major, minor)
	}
	if lt := le.Uint32(b[20:]); lt != 101 {
		return nil, fmt.Errorf("link type %d, want 101 (LINKTYPE_RAW)", lt)
	}
	var out [][]byte
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			return out, fmt.Errorf("record %d: header cut short", len(out))
		}
		incl, orig := le.Uint32(b[8:]), le.Uint32(b[12:])
		if usec := le.Uint32(b[4:]); usec >= 1e6 || incl > orig || uint32(len(b)-16) < incl {
			return out, fmt.Errorf("record %d: usec %d, %d of %d bytes, %d left", len(out), usec, incl, orig, len(b)-16)
		}
		out = append(out, b[16:16+incl])
		b = b[16+incl:]
	}
	return out, nil
}

// hasRow reports whether a line of a table in out starts with the given
// cells.
func hasRow(out string, cells ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
			return true
		}
	}
	return false
}

// httpGetIn makes one GET from inside namespace ns (the socket is made
// there) and returns the status and body.
func (e *env) httpGetIn(ns, url string) (int, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := e.c.Do(ns, func() error {
				var err error
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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

// pollReadiness probes node's /readyz as fast as it can while start runs
// and until one answer is 200 (at most 10s), and returns the distinct
// answers in the order seen: "none" (no answer), "503 <reason>", "200".
func (e *env) pollReadiness(node string, start func()) []string {
	var (
		mu   sync.Mutex
		seen []string
	)
	note := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 || seen[len(seen)-1] != s {
			seen = append(seen, s)
		}
		return s == "200"
	}
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			default:
			}
			code, body, err := e.httpGetIn(node, "http://"+opsHealthAddr+"/readyz")
			var s string
			switch {
			case err != nil:
				s = "none"
			case code == 200:
				s = "200"
			default:
				var r struct {
					Reason string `json:"reason"`
				}
				json.Unmarshal([]byte(body), &r)
				s = fmt.Sprintf("%d %s", code, r.Reason)
			}
			if note(s) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	start()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
	}
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	return append([]string(nil), seen...)
}

// metricValue returns the value of the one sample of name in mfs whose
// labels include want (a histogram's value is its count).
func metricValue(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, error) {
	mf := mfs[name]
	if mf == nil {
		return 0, fmt.Errorf("no metric %s", name)
	}
	var found []*dto.Metric
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && have[k] == v
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%s%v: %d samples match, want 1", name, want, len(found))
	}
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue(), nil
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), nil
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount()), nil
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), nil
	}
	return 0, fmt.Errorf("%s: no value", name)
}
