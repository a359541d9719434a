//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The memory an idle ClusterIP connection costs the router: nat mode
// keeps a flow-table entry per connection, proxy mode a gVisor TCP
// endpoint, a kernel socket to the backend and the goroutines splicing
// them. measureConnMemory opens n connections from httpClientPod to
// my-service, one HTTP exchange on each (so every buffer a connection
// that has carried data holds is there, and the backends' 10-s header
// timeout does not close them), leaves them idle and reads the
// hostgw-master router's memory before and after from its /metrics:
//
//	per connection = Δ(go_memstats_heap_alloc_bytes + go_memstats_stack_inuse_bytes) / Δtracked
//
// where tracked is vrouter_nat_flows (nat) or
// vrouter_proxy_connections_active (proxy), so flows that ended meanwhile
// do not count. VmRSS is read alongside.
//
// The live heap is only known right after a garbage collection, and an
// idle router collects every two minutes at best; so before each reading
// UDP bursts from clientPod to serverPod (a closed port: the routers
// forward them, allocating as they do) make it collect, and the reading
// with the smallest heap among those taken just after a collection is
// kept. What remains is the garbage of at most one burst and one
// scrape, a few hundred KB: about 0.1 KiB per connection at 2,000
// connections, 1 KiB at the smoke run's 200.

// metricsPort is where every benchmarked router serves /metrics, on its
// node's loopback (--metrics-address).
const metricsPort = 9285

// memSample is one scrape of a router's /metrics, with its VmRSS.
type memSample struct {
	heap, stack, nextGC float64 // bytes
	gcs                 float64 // completed collections
	tracked             float64 // nat flows or proxied connections
	rss                 uint64
	afterGC             bool // taken just after a collection
}

// Settling: bursts of burstPackets datagrams until gcsWanted collections
// were seen after a burst, for at most settleTimeout.
const (
	burstPackets  = 1000
	gcsWanted     = 3
	settleTimeout = 10 * time.Second
	discardPort   = 9
)

// measureConnMemory measures the router memory per idle connection to
// my-service with n connections (see above).
func measureConnMemory(ctx context.Context, b *bed, n int) (map[string]float64, error) {
	idx := -1
	for i, r := range b.routers {
		if r.Node == masterNode {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("no router on %s", masterNode)
	}
	trackedMetric := "vrouter_nat_flows"
	if b.mode == modeProxy {
		trackedMetric = "vrouter_proxy_connections_active"
	}
	quiet, err := b.waitQuiet(ctx, idx, trackedMetric, 15*time.Second)
	if err != nil {
		return nil, err
	}
	before, err := b.settledMemory(ctx, idx, trackedMetric)
	if err != nil {
		return nil, err
	}
	conns, err := openIdle(ctx, b, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	after, err := b.settledMemory(ctx, idx, trackedMetric)
	if err != nil {
		return nil, err
	}
	d := after.tracked - before.tracked
	if d < float64(len(conns))/2 {
		return nil, fmt.Errorf("%s went from %.0f to %.0f with %d connections open: the router does not track them", trackedMetric, before.tracked, after.tracked, len(conns))
	}
	settled := 0.0
	if before.afterGC && after.afterGC {
		settled = 1
	}
	const kib = 1024
	return map[string]float64{
		"conn_mem_kib":       (after.heap + after.stack - before.heap - before.stack) / d / kib,
		"conn_heap_kib":      (after.heap - before.heap) / d / kib,
		"conn_stack_kib":     (after.stack - before.stack) / d / kib,
		"conn_next_gc_kib":   (after.nextGC - before.nextGC) / d / kib,
		"conn_rss_kib":       (float64(after.rss) - float64(before.rss)) / d / kib,
		"conn_count":         d,
		"conn_gc_settled":    settled,
		"conn_quiet_tracked": quiet,
	}, nil
}

// openIdle opens n connections from httpClientPod to my-service, does one
// keep-alive HTTP exchange on each and returns them open. It fails if
// fewer than half could be opened; the connections it returns are the
// caller's to close, also with an error.
func openIdle(ctx context.Context, b *bed, n int) ([]net.Conn, error) {
	path, err := b.c.Path(httpClientPod)
	if err != nil {
		return nil, err
	}
	const dialers = 16
	var (
		mu    sync.Mutex
		conns []net.Conn
		errs  int
		first error
	)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = workers(path, dialers, func(w int) error {
		d := net.Dialer{Timeout: time.Second} // a lost SYN costs a dialer at most this long
		for i := w; i < n && ctx.Err() == nil; i += dialers {
			c, err := openOne(ctx, &d)
			mu.Lock()
			if err != nil {
				errs++
				if first == nil {
					first = err
				}
			} else {
				conns = append(conns, c)
			}
			mu.Unlock()
		}
		return nil
	})
	if err == nil && len(conns) < n/2 {
		err = fmt.Errorf("opened %d of %d idle connections to %v (%d failed; first: %v)", len(conns), n, myService, errs, first)
	}
	if err == nil && errs > 0 {
		progress("idle connections on %s: %d of %d failed; first: %v", b.mode, errs, n, first)
	}
	return conns, err
}

func openOne(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	c, err := d.DialContext(ctx, "tcp", myService.String())
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := keepAliveExchange(c, bufio.NewReaderSize(c, 512)); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// waitQuiet waits until the router's tracked count stops falling (flows
// and connections of earlier measurements linger a while after they
// close) or timeout passes, and returns the count.
func (b *bed) waitQuiet(ctx context.Context, idx int, tracked string, timeout time.Duration) (float64, error) {
	deadline := time.Now().Add(timeout)
	last := -1.0
	for {
		m, err := b.scrape(idx)
		if err != nil {
			return 0, err
		}
		v := m[tracked]
		if v == 0 || (v == last && v < 16) || time.Now().After(deadline) || ctx.Err() != nil {
			return v, nil
		}
		last = v
		time.Sleep(time.Second) // the NAT reaps once a second
	}
}

// settledMemory reads router idx's memory just after garbage
// collections it caused with UDP bursts through the routers (see above).
// Without a collection within settleTimeout, the smallest reading is
// returned, garbage included.
func (b *bed) settledMemory(ctx context.Context, idx int, tracked string) (memSample, error) {
	path, err := b.c.Path(clientPod)
	if err != nil {
		return memSample{}, err
	}
	var uc net.Conn
	err = inNetnsGo(path, func() error {
		var err error
		uc, err = net.Dial("udp", netip.AddrPortFrom(serverAddr, discardPort).String())
		return err
	})
	if err != nil {
		return memSample{}, fmt.Errorf("UDP socket in %s: %w", clientPod, err)
	}
	defer uc.Close()
	payload := make([]byte, 64)

	read := func() (memSample, error) {
		m, err := b.scrape(idx)
		if err != nil {
			return memSample{}, err
		}
		rss, _, err := procMemory(b.pids[idx])
		if err != nil {
			return memSample{}, err
		}
		s := memSample{
			heap: m["go_memstats_heap_alloc_bytes"], stack: m["go_memstats_stack_inuse_bytes"],
			nextGC: m["go_memstats_next_gc_bytes"], gcs: m["go_gc_duration_seconds_count"],
			tracked: m[tracked], rss: rss,
		}
		if _, ok := m["go_memstats_heap_alloc_bytes"]; !ok {
			return s, errors.New("router /metrics has no go_memstats_heap_alloc_bytes")
		}
		return s, nil
	}
	best, err := read()
	if err != nil {
		return best, err
	}
	gcs, seen := best.gcs, 0
	deadline := time.Now().Add(settleTimeout)
	for seen < gcsWanted && time.Now().Before(deadline) && ctx.Err() == nil {
		for range burstPackets {
			uc.Write(payload) // ICMP port unreachable comes back: ignore the errors
		}
		s, err := read()
		if err != nil {
			return best, err
		}
		if s.gcs > gcs {
			seen++
			gcs = s.gcs
			s.afterGC = true
			if !best.afterGC || s.heap+s.stack < best.heap+best.stack {
				best = s
			}
		} else if !best.afterGC && s.heap+s.stack < best.heap+best.stack {
			best = s
		}
	}
	return best, nil
}

// scrape reads router idx's /metrics, on its node's loopback, and returns
// the unlabelled samples by name.
func (b *bed) scrape(idx int) (map[string]float64, error) {
	node := b.routers[idx].Node
	path, err := b.c.Path(node)
	if err != nil {
		return nil, err
	}
	var body []byte
	err = inNetnsGo(path, func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", metricsPort), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n"); err != nil {
			return err
		}
		body, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("scrape the %s router's /metrics: %w", node, err)
	}
	status, rest, _ := strings.Cut(string(body), "\r\n")
	if !strings.Contains(status, " 200 ") {
		return nil, fmt.Errorf("scrape the %s router's /metrics: %q", node, status)
	}
	_, text, _ := strings.Cut(rest, "\r\n\r\n")
	return parseMetrics(text), nil
}

// parseMetrics returns the unlabelled samples of Prometheus text format.
func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			m[f[0]] = v
		}
	}
	return m
}
