package metrics

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router/packet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gVisor's stack keeps a process-wide timer goroutine.
		goleak.IgnoreAnyFunction("gvisor.dev/gvisor/pkg/sync.Gopark"))
}

// sample is one metric as a scrape shows it.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func gather(t *testing.T, cs ...prometheus.Collector) []sample {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var out []sample
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := sample{name: mf.GetName(), labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			out = append(out, s)
		}
	}
	return out
}

// value returns the value of the one sample of name whose labels include
// want, failing t if there is none.
func value(t *testing.T, samples []sample, name string, want map[string]string) float64 {
	t.Helper()
	var found []sample
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			match = match && s.labels[k] == v
		}
		if match {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var names []string
		for _, s := range samples {
			if s.name == name {
				names = append(names, formatSample(s))
			}
		}
		t.Fatalf("%s%v: %d samples match, want 1; the %s samples: %v", name, want, len(found), name, names)
	}
	return found[0].value
}

func formatSample(s sample) string {
	var ls []string
	for k, v := range s.labels {
		ls = append(ls, k+"="+v)
	}
	sort.Strings(ls)
	return s.name + "{" + strings.Join(ls, ",") + "}"
}

type labels = map[string]string

func myServiceLabels(extra ...string) labels {
	l := labels{"namespace": "default", "service": "my-service", "port_name": "", "cluster_ip": "10.103.92.81", "port": "80", "protocol": "TCP"}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return l
}

// TestCollectorAfterTraffic sends real traffic through the in-memory seed
// cluster and checks what a scrape of hostgw-master's router shows.
func TestCollectorAfterTraffic(t *testing.T) {
	c := seedtest.Start(t)
	m := c.Master

	// 5 pings from nginx-th5pz to nginx-4k7xw, across the nodes.
	for seq := range 5 {
		c.Ping(netip.MustParseAddr("10.244.0.4"), netip.MustParseAddr("10.244.1.2"), uint16(seq))
	}
	// 3 connections from coredns-xx6mc to my-service: round-robin gives
	// each backend one; 10.244.0.4 is local (hairpin), the others are
	// reached over the overlay.
	for i := range 3 {
		m.Send(seedtest.TCPSyn(netip.AddrPortFrom(netip.MustParseAddr("10.244.0.2"), uint16(40000+i)), netip.AddrPortFrom(seedtest.MyServiceVIP, 80)))
	}
	m.Recv()      // the hairpin SYN to 10.244.0.4
	c.Node.Recv() // the SYNs to 10.244.1.2 and 10.244.1.3
	c.Node.Recv()
	// A Service without endpoints refuses at once.
	if err := m.Table.Upsert(lb.Service{
		Namespace: "default", Name: "empty", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.99")},
		Ports: []lb.ServicePort{{Port: 80, Proto: lb.TCP}},
	}); err != nil {
		t.Fatal(err)
	}
	m.Send(seedtest.TCPSyn(netip.MustParseAddrPort("10.244.0.2:41000"), netip.MustParseAddrPort("10.96.0.99:80")))
	m.Recv() // ICMP port unreachable
	// A datagram from an address that is no peer is dropped and counted.
	c.Net.Send(netip.MustParseAddrPort("192.168.31.99:8285"), seedtest.MasterUnderlay,
		seedtest.ICMPEcho(netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.0.4"), 1, 1, false))

	col := NewCollector(Sources{Router: m.Router, Table: m.Table, NAT: m.NAT})
	// The sender counts after its write returns: wait for the last one.
	var s []sample
	deadline := time.Now().Add(5 * time.Second)
	for {
		s = gather(t, col)
		if value(t, s, "vrouter_peer_packets_total", labels{"peer": "hostgw-node", "direction": "tx"}) == 7 &&
			value(t, s, "vrouter_packets_dropped_total", labels{"reason": "unknown_peer"}) == 1 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	const ping, syn = seedtest.PingLen, 40
	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		// 5 echo requests and 2 SYNs to hostgw-node; 5 echo replies back.
		{"vrouter_peer_packets_total", labels{"peer": "hostgw-node", "direction": "tx"}, 7},
		{"vrouter_peer_bytes_total", labels{"peer": "hostgw-node", "direction": "tx"}, 5*ping + 2*syn},
		{"vrouter_peer_packets_total", labels{"peer": "hostgw-node", "direction": "rx"}, 5},
		{"vrouter_peer_bytes_total", labels{"peer": "hostgw-node", "direction": "rx"}, 5 * ping},
		// The TUN: 5 requests, 3 SYNs and 1 SYN refused in; 5 replies, the
		// hairpin SYN and the port unreachable out.
		{"vrouter_nic_packets_total", labels{"nic": "vr0", "direction": "rx"}, 9},
		{"vrouter_nic_packets_total", labels{"nic": "vr0", "direction": "tx"}, 6},
		{"vrouter_nic_packets_total", labels{"nic": "overlay0", "direction": "tx"}, 7},
		{"vrouter_packets_dropped_total", labels{"reason": "unknown_peer"}, 1},
		{"vrouter_packets_dropped_total", labels{"reason": "spoofed_source"}, 0},
		{"vrouter_packets_dropped_total", labels{"reason": "source_not_local"}, 0},
		{"vrouter_packets_dropped_total", labels{"reason": "no_route"}, 0},
		{"vrouter_routes", nil, 2},
		{"vrouter_peers", nil, 1},
		{"vrouter_services", nil, 3},
		// my-service 3 + kube-dns 2 on each of its 3 ports + empty 0.
		{"vrouter_endpoints", nil, 9},
		{"vrouter_service_endpoints", myServiceLabels(), 3},
		{"vrouter_service_connections_total", myServiceLabels(), 3},
		{"vrouter_service_connections_active", myServiceLabels(), 3},
		{"vrouter_service_picker_refusals_total", myServiceLabels(), 0},
		{"vrouter_backend_connections_total", myServiceLabels("backend", "10.244.0.4:80"), 1},
		{"vrouter_backend_connections_total", myServiceLabels("backend", "10.244.1.2:80"), 1},
		{"vrouter_backend_connections_total", myServiceLabels("backend", "10.244.1.3:80"), 1},
		{"vrouter_backend_connections_active", myServiceLabels("backend", "10.244.1.3:80"), 1},
		{"vrouter_service_connections_total", labels{"service": "kube-dns", "port_name": "dns-tcp"}, 0},
		{"vrouter_nat_flows", nil, 3},
		{"vrouter_nat_flows_total", nil, 3},
		{"vrouter_nat_hairpin_flows_total", nil, 1},
		{"vrouter_nat_refused_total", labels{"reason": "no_endpoints"}, 1},
		{"vrouter_nat_refused_total", labels{"reason": "cap"}, 0},
		{"vrouter_nat_refused_total", labels{"reason": "ports"}, 0},
		{"vrouter_nat_evicted_total", labels{"reason": "cap"}, 0},
		{"vrouter_nat_evicted_total", labels{"reason": "client_cap"}, 0},
		{"vrouter_nat_half_open_expired_total", nil, 0},
		{"vrouter_nat_flow_file_records_total", labels{"result": "restored"}, 0},
		{"vrouter_nat_flow_file_refused_total", nil, 0},
		{"vrouter_nat_flow_file_unrecorded_total", nil, 0},
		{"vrouter_icmp_errors_sent_total", nil, 0},
		{"vrouter_overlay_peers_without_key", nil, 0},
	} {
		if got := value(t, s, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if got := value(t, s, "vrouter_peer_last_seen_timestamp_seconds", labels{"peer": "hostgw-node"}); time.Since(time.Unix(int64(got), 0)) > time.Minute {
		t.Errorf("vrouter_peer_last_seen_timestamp_seconds{peer=hostgw-node} = %v, want about now", got)
	}
	// A plain overlay has no WireGuard metrics.
	for _, x := range s {
		if strings.HasPrefix(x.name, "vrouter_wireguard_") {
			t.Errorf("%s exported over a plain overlay", formatSample(x))
		}
	}

	// The names and help texts pass Prometheus' linter.
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestCollectorPeerNeverHeardFrom: a configured peer that has sent
// nothing yet has a last-seen time of 0, not no sample, so that an alert
// on time() - vrouter_peer_last_seen_timestamp_seconds fires for it.
func TestCollectorPeerNeverHeardFrom(t *testing.T) {
	c := seedtest.Start(t)
	s := gather(t, NewCollector(Sources{Router: c.Master.Router}))
	if got := value(t, s, "vrouter_peer_last_seen_timestamp_seconds", labels{"peer": "hostgw-node"}); got != 0 {
		t.Errorf("vrouter_peer_last_seen_timestamp_seconds{peer=hostgw-node} before any datagram = %v, want 0", got)
	}
}

// TestCollectorProxy checks that a Proxy's counters are exported when the
// router has one.
func TestCollectorProxy(t *testing.T) {
	c := seedtest.Start(t)
	p, err := lb.NewProxy(c.Master.Router.Stack(), c.Master.Table, nil, lb.ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := gather(t, NewCollector(Sources{Router: c.Master.Router, Table: c.Master.Table, Proxy: p}))
	for _, l := range []labels{{"reason": "no_endpoints"}, {"reason": "cap"}, {"reason": "unreachable"}} {
		if got := value(t, s, "vrouter_proxy_refused_total", l); got != 0 {
			t.Errorf("vrouter_proxy_refused_total%v = %v, want 0", l, got)
		}
	}
	if got := value(t, s, "vrouter_proxy_connections_active", nil); got != 0 {
		t.Errorf("vrouter_proxy_connections_active = %v, want 0", got)
	}
	for _, x := range s {
		if strings.HasPrefix(x.name, "vrouter_nat_") {
			t.Errorf("%s exported without a NAT", x.name)
		}
	}
}

// TestCollectorHostPorts: a Service with a node port and an external IP
// exports its cluster and external keys as distinct series (scope), and
// the host sockets' state: one listening, one that could not be bound.
func TestCollectorHostPorts(t *testing.T) {
	c := seedtest.Start(t)
	p, err := lb.NewProxy(c.Master.Router.Stack(), c.Master.Table, nil, lb.ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hp, err := lb.NewHostPorts(c.Master.Table, p, nil, lb.HostPortsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A port already taken on one address: its socket fails.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := uint16(taken.Addr().(*net.TCPAddr).Port)
	svcs := seedtest.Services()[:1]
	my := &svcs[0]
	my.Type = lb.TypeNodePort
	my.Ports[0].NodePort = port
	my.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	if err := c.Master.Table.Set(svcs); err != nil {
		t.Fatal(err)
	}
	hp.SetAddresses([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}, nil)
	hp.Set(svcs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hp.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(5 * time.Second)
	for st := hp.Stats(); st.Listening != 1 || st.Failed != 1; st = hp.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("HostPorts stats = %+v, want 1 listening (127.0.0.2) and 1 failed (127.0.0.1: port taken)", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := gather(t, NewCollector(Sources{Router: c.Master.Router, Table: c.Master.Table, Proxy: p, HostPorts: hp}))
	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"vrouter_hostport_sockets", labels{"state": "listening"}, 1},
		{"vrouter_hostport_sockets", labels{"state": "failed"}, 1},
		{"vrouter_hostport_bind_failures_total", nil, 1},
		{"vrouter_service_endpoints", labels{"cluster_ip": "192.0.2.10", "scope": "cluster"}, 3},
		{"vrouter_service_endpoints", labels{"cluster_ip": "192.0.2.10", "scope": "external"}, 3},
		{"vrouter_service_endpoints", labels{"cluster_ip": "0.0.0.0", "port": strconv.Itoa(int(port)), "scope": "external"}, 3},
	} {
		if v := value(t, s, tc.name, tc.labels); v != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}
}

func TestSyncs(t *testing.T) {
	s := NewSyncs()
	end := time.Unix(1764090000, 500_000_000)
	s.Observe(3*time.Millisecond, end, true)
	s.Observe(time.Millisecond, end.Add(time.Minute), false) // refused: not the last good sync
	s.Refused()                                              // an invalid file: refused, not timed
	got := gather(t, s)
	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"vrouter_sync_proxy_rules_duration_seconds", nil, 2},
		{"vrouter_sync_proxy_rules_last_timestamp_seconds", nil, 1764090000.5},
		{"vrouter_config_reloads_total", labels{"result": "applied"}, 1},
		{"vrouter_config_reloads_total", labels{"result": "refused"}, 2},
	} {
		if v := value(t, got, tc.name, tc.labels); v != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}
}

func TestHandlerServesTheRegistry(t *testing.T) {
	c := seedtest.Start(t)
	reg := NewRegistry(NewCollector(Sources{Router: c.Master.Router, Table: c.Master.Table, NAT: c.Master.NAT}), NewSyncs(), BuildInfo("test", "abc123def456", "go"))
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`vrouter_peers 1`,
		`vrouter_backend_connections_total{backend="10.244.1.2:80",cluster_ip="10.103.92.81",namespace="default",port="80",port_name="",protocol="TCP",scope="cluster",service="my-service"} 0`,
		`vrouter_build_info{goversion="go",revision="abc123def456",version="test"} 1`,
		`# TYPE vrouter_sync_proxy_rules_duration_seconds histogram`,
		`go_goroutines `,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("GET /metrics: no line %q in\n%s", want, b)
		}
	}
}

// TestCollectorEgress: the egress masquerade's series, by protocol and
// reason, count what it did: here a pod's packet of a protocol it does
// not carry (GRE) to an outside address.
func TestCollectorEgress(t *testing.T) {
	c := seedtest.Start(t)
	e, err := lb.NewEgress(c.Master.Table, nil, lb.EgressOptions{Send: func([]byte) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, nil)
	gre := []byte{0x45, 0, 0, 24, 0, 0, 0x40, 0, 64, 47, 0, 0, 10, 244, 0, 4, 198, 51, 100, 10, 0, 0, 0x08, 0}
	var p packet.Parsed
	if f := p.Decode(gre); f != packet.FaultNone {
		t.Fatalf("Decode(GRE packet) = fault %d", f)
	}
	if pass, _ := e.Ingress(true, &p, gre); pass {
		t.Fatal("Egress passed a pod's GRE packet to an outside address")
	}
	s := gather(t, NewCollector(Sources{Router: c.Master.Router, Egress: e}))
	if got := value(t, s, "vrouter_egress_unsupported_dropped_total", nil); got != 1 {
		t.Errorf("vrouter_egress_unsupported_dropped_total = %v, want 1", got)
	}
	for _, proto := range []string{"tcp", "udp", "icmp"} {
		if got := value(t, s, "vrouter_egress_refused_total", labels{"protocol": proto, "reason": "cap"}); got != 0 {
			t.Errorf("vrouter_egress_refused_total{%s, cap} = %v, want 0", proto, got)
		}
	}
	if got := value(t, s, "vrouter_egress_refused_total", labels{"protocol": "icmp", "reason": "ping_unavailable"}); got != 0 {
		t.Errorf("vrouter_egress_refused_total{icmp, ping_unavailable} = %v, want 0", got)
	}
}
