package integration

// A SYN flood against a proxy-mode ClusterIP from a pod with a raw socket,
// while an innocent pod on the same node keeps connecting to it.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201   vrouter (proxy mode terminates here)
//	 │    coredns-8qxfv 10.244.0.3   the flooder: raw SYNs to 10.103.92.81:80
//	 │                               from 10.244.0.100-.227 (addresses of the
//	 │                               node's pod CIDR where no pod lives, so
//	 │                               the SYN-ACKs go unanswered) and from
//	 │                               its own address
//	 │    coredns-xx6mc 10.244.0.2   the innocent client
//	 │    nginx-th5pz 10.244.0.4     backend
//	 └─ hostgw-node   eth0 .202
//	      nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3  backends
//
//	default/my-service  10.103.92.81:80/TCP mode proxy -> the three
//
// Proxy mode dials a backend before it completes a client's handshake,
// so each spoofed SYN used to cost a backend connection, and the flood's
// half-open handshakes took every in-flight slot. Now a client with
// setups in flight, or a busy proxy, completes the handshake first, and
// each client address holds a few slots at most.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

const synFloodMetricsAddr = "127.0.0.1:9287"

func TestLBProxySYNFlood(t *testing.T) {
	flooder, innocent := lbCoredns8qxfv, lbCorednsXx6mc
	e := startLBWith(t, "synflood", lbOptions{RouterArgs: []string{"--metrics-address", synFloodMetricsAddr}},
		[]configs.ServiceSpec{myService(proxyMode)})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	vip := netip.AddrPortFrom(myServiceVIP, 80)
	if _, err := e.exchange(innocent.name, vip, "before"); err != nil {
		t.Fatalf("connection before the flood: %v", err)
	}

	const flood = 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), flood)
	defer cancel()
	var sent atomic.Int64
	var wg sync.WaitGroup
	var floodErr error
	wg.Go(func() {
		f := rawFlood{own: flooder.addr, spoofed: addrRange(netip.AddrFrom4([4]byte{10, 244, 0, 100}), 128), dst: vip, proto: protoTCP}
		floodErr = e.c.Do(flooder.name, func() error { return f.run(ctx, &sent) })
	})

	// The innocent pod connects every 50 ms during the flood.
	pr := e.probe(ctx, innocent.name, vip, netip.AddrPort{})
	wg.Wait()
	if floodErr != nil {
		t.Fatalf("SYN flood from %s: %v", flooder.name, floodErr)
	}
	m := e.metricsOf(lbMaster, synFloodMetricsAddr)
	mem := readProcMem(t, e.routers[lbMaster].PID())
	t.Logf("flood: %d SYNs in %v from %s (spoofing 128 unused addresses and its own)", sent.Load(), flood, flooder.name)
	t.Logf("innocent %s: %d connections ok, %d failed; latency p50 %v, p99 %v, max %v",
		innocent.name, pr.tcpOK, pr.tcpFailed, pr.pct(0.5), pr.pct(0.99), pr.pct(1))
	t.Logf("proxy: %v connections spliced, %v handshake-first, %v unproven clients (no backend dialed), %v clients gone after their backend was dialed, SYNs dropped: %v over a client's in-flight cap, %v over the global cap; %v in flight now",
		m[`vrouter_proxy_connections_total`], m[`vrouter_proxy_handshake_first_total`], m[`vrouter_proxy_unproven_clients_total`],
		m[`vrouter_proxy_handshake_failures_total`], m[`vrouter_proxy_refused_total{reason="in_flight_client"}`],
		m[`vrouter_proxy_refused_total{reason="in_flight"}`], m[`vrouter_proxy_connections_in_flight`])
	t.Logf("router on %s: RSS %d MiB at the end of the flood", lbMaster, mem.rss>>20)

	if sent.Load() < 1000 {
		t.Fatalf("the flood sent %d SYNs, want ≥ 1000 for the test to mean anything", sent.Load())
	}
	if pr.tcpFailed > 0 {
		t.Errorf("%d of %d of the innocent pod's connections failed during the flood, want none, e.g. %v", pr.tcpFailed, pr.tcpOK+pr.tcpFailed, pr.errs)
	}
	// Backend connections for unanswering sources: a few slip through
	// before the pressure turns handshake-first on (each client's first
	// setups); not one per SYN.
	if wasted := m[`vrouter_proxy_handshake_failures_total`]; wasted > float64(sent.Load())/10 {
		t.Errorf("%v backend connections dialed for clients that never completed their handshake, of %d SYNs: want few", wasted, sent.Load())
	}
	// After the flood the innocent pod still connects.
	if _, err := e.exchange(innocent.name, vip, "after"); err != nil {
		t.Errorf("connection after the flood: %v", err)
	}
	e.requireRouters()
}

// rawFlood is a flood from a pod's raw socket: TCP SYNs (proto
// protoTCP) or UDP datagrams (protoUDP) to dst from random ports of own
// and, 7 times in 8, of one of spoofed (addresses of the pod's node's pod
// CIDR, or the router drops them as not local).
type rawFlood struct {
	own     netip.Addr
	spoofed []netip.Addr
	dst     netip.AddrPort
	proto   byte
}

// run sends f's packets until ctx ends, at most about 20,000 a second,
// counting them in sent. Call it inside the pod's namespace (Cluster.Do).
func (f rawFlood) run(ctx context.Context, sent *atomic.Int64) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: f.dst.Addr().As4()}
	payload := []byte("flood")
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		<-tick.C
		for range 20 {
			src := f.own
			if len(f.spoofed) > 0 && rand.IntN(8) != 0 {
				src = f.spoofed[rand.IntN(len(f.spoofed))]
			}
			from := netip.AddrPortFrom(src, uint16(1024+rand.IntN(60000)))
			var pkt []byte
			switch f.proto {
			case protoTCP:
				pkt = tcpSYN(from, f.dst, rand.Uint32())
			case protoUDP:
				pkt = udpDatagram(from, f.dst, payload)
			default:
				return fmt.Errorf("raw flood: protocol %d, want TCP or UDP", f.proto)
			}
			if err := unix.Sendto(fd, pkt, 0, to); err != nil {
				if err == unix.ENOBUFS || err == unix.EAGAIN {
					continue
				}
				return fmt.Errorf("sendto: %w", err)
			}
			sent.Add(1)
		}
	}
	return nil
}

// addrRange is n IPv4 addresses from first on.
func addrRange(first netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
}

// probeResult is what a client saw of a Service while probe ran.
type probeResult struct {
	tcpOK, tcpFailed int
	dnsOK, dnsFailed int
	// dnsRetried counts queries answered only on a later try.
	dnsRetried int
	// errs are the first few failures; lat the successful TCP
	// exchanges' times, sorted.
	errs []error
	lat  []time.Duration
}

// dnsTries is how often probe sends a query, 1.5 s apart, before it
// counts it lost: 4.5 s in all, within a resolver's default budget
// (glibc: two tries of 5 s).
const dnsTries = 3

// probe has pod from exchange a payload with the TCP echo behind vip
// and, if dns is valid, query the UDP echo behind dns, every 50 ms until
// ctx ends. A connection may take 3 s (its SYN is retransmitted after
// 1 s); a query is sent again after 1.5 s, as a resolver does, and fails
// if none of dnsTries is answered.
func (e *lbEnv) probe(ctx context.Context, from string, vip, dns netip.AddrPort) probeResult {
	var r probeResult
	fail := func(err error) {
		if len(r.errs) < 5 {
			r.errs = append(r.errs, err)
		}
	}
	for i := 0; ctx.Err() == nil; i++ {
		t0 := time.Now()
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		payload := fmt.Sprintf("probe %d", i)
		rep, err := e.c.TCPExchange(cctx, from, vip, []byte(payload))
		ccancel()
		if err == nil && string(rep.Payload) != payload {
			err = fmt.Errorf("echo %q, want %q", rep.Payload, payload)
		}
		if err != nil {
			r.tcpFailed++
			fail(fmt.Errorf("tcp %s -> %v: %w", from, vip, err))
		} else {
			r.tcpOK++
			r.lat = append(r.lat, time.Since(t0))
		}
		if dns.IsValid() {
			var err error
			for try := range dnsTries {
				if _, err = e.udpExchange(from, dns, payload, 1500*time.Millisecond); err == nil {
					if try > 0 {
						r.dnsRetried++
					}
					break
				}
			}
			if err != nil {
				r.dnsFailed++
				fail(fmt.Errorf("udp %s -> %v, %d tries: %w", from, dns, dnsTries, err))
			} else {
				r.dnsOK++
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(r.lat)
	return r
}

// pct is the p-quantile (0..1) of r's TCP exchange times.
func (r probeResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(float64(len(r.lat)-1)*p)].Round(100 * time.Microsecond)
}

// metricsOf returns every sample of node's router's /metrics (served on
// addr inside the node's namespace), keyed name{labels}.
func (e *lbEnv) metricsOf(node, addr string) map[string]float64 {
	e.t.Helper()
	return scrapeMetrics(e.t, e.c, node, addr)
}

// scrapeMetrics returns every sample of the /metrics that node's router
// serves on addr inside the node's namespace, keyed name{labels} as the
// text format writes them; it fails t if they cannot be read.
func scrapeMetrics(t *testing.T, c *topology.Cluster, node, addr string) map[string]float64 {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var conn net.Conn
			err := c.Do(node, func() error {
				var err error
				var d net.Dialer
				conn, err = d.DialContext(ctx, network, a)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET /metrics of %s: %v", node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics of %s: %v", node, err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}
