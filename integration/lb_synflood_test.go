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
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
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
		floodErr = e.c.Do(flooder.name, func() error { return synFlood(ctx, flooder.addr, vip, &sent) })
	})

	// The innocent pod connects every 50 ms during the flood.
	var ok, failed int
	var lat []time.Duration
	var errs []error
	for ctx.Err() == nil {
		t0 := time.Now()
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		payload := fmt.Sprintf("during %d", ok+failed)
		rep, err := e.c.TCPExchange(cctx, innocent.name, vip, []byte(payload))
		ccancel()
		if err == nil && string(rep.Payload) != payload {
			err = fmt.Errorf("echo %q, want %q", rep.Payload, payload)
		}
		if err != nil {
			failed++
			errs = append(errs, err)
		} else {
			ok++
			lat = append(lat, time.Since(t0))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if floodErr != nil {
		t.Fatalf("SYN flood from %s: %v", flooder.name, floodErr)
	}
	m := e.metricsOf(lbMaster, synFloodMetricsAddr)
	rss := "?"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.routers[lbMaster].PID())); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				rss = strings.TrimSpace(v)
			}
		}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)].Round(100 * time.Microsecond)
	}
	t.Logf("flood: %d SYNs in %v from %s (spoofing 128 unused addresses and its own)", sent.Load(), flood, flooder.name)
	t.Logf("innocent %s: %d connections ok, %d failed; latency p50 %v, p99 %v, max %v",
		innocent.name, ok, failed, pct(0.5), pct(0.99), pct(1))
	t.Logf("proxy: %v connections spliced, %v handshake-first, %v unproven clients (no backend dialed), %v clients gone after their backend was dialed, SYNs dropped: %v over a client's in-flight cap, %v over the global cap; %v in flight now",
		m[`vrouter_proxy_connections_total`], m[`vrouter_proxy_handshake_first_total`], m[`vrouter_proxy_unproven_clients_total`],
		m[`vrouter_proxy_handshake_failures_total`], m[`vrouter_proxy_refused_total{reason="in_flight_client"}`],
		m[`vrouter_proxy_refused_total{reason="in_flight"}`], m[`vrouter_proxy_connections_in_flight`])
	t.Logf("router on %s: RSS %s at the end of the flood", lbMaster, rss)

	if sent.Load() < 1000 {
		t.Fatalf("the flood sent %d SYNs, want ≥ 1000 for the test to mean anything", sent.Load())
	}
	if failed > 0 {
		t.Errorf("%d of %d of the innocent pod's connections failed during the flood, want none, e.g. %v", failed, ok+failed, errs[0])
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

// synFlood sends TCP SYNs to dst from a raw socket until ctx ends: from
// random ports of own and of 10.244.0.100-.227, at most about 20,000 a
// second.
func synFlood(ctx context.Context, own netip.Addr, dst netip.AddrPort, sent *atomic.Int64) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
	pkt := make([]byte, 40)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		<-tick.C
		for range 20 {
			src := own
			if rand.IntN(8) != 0 {
				src = netip.AddrFrom4([4]byte{10, 244, 0, byte(100 + rand.IntN(128))})
			}
			buildSYN(pkt, src, uint16(1024+rand.IntN(60000)), dst, rand.Uint32())
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

// buildSYN writes an IPv4 TCP SYN without options into b (40 bytes).
func buildSYN(b []byte, src netip.Addr, sport uint16, dst netip.AddrPort, seq uint32) {
	clear(b)
	b[0], b[8], b[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(b[2:], 40)
	s4, d4 := src.As4(), dst.Addr().As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], ^csum(0, b[:20]))
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	pseudo := make([]byte, 12)
	copy(pseudo[0:4], s4[:])
	copy(pseudo[4:8], d4[:])
	pseudo[9] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pseudo[10:], 20)
	binary.BigEndian.PutUint16(tcp[16:], ^csum(uint32(csum(0, pseudo)), tcp))
}

// csum adds b to the one's complement sum s, folded.
func csum(s uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// metricsOf returns every sample of node's router's /metrics (served on
// addr inside the node's namespace), keyed name{labels}.
func (e *lbEnv) metricsOf(node, addr string) map[string]float64 {
	e.t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var conn net.Conn
			err := e.c.Do(node, func() error {
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
		e.t.Fatalf("GET /metrics of %s: %v", node, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("GET /metrics of %s: %v", node, err)
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
