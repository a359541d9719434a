//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// The Service load generator: n workers in one namespace, each on a
// thread inside it, send GET requests to my-service as fast as the
// answers come back (a closed loop, like wrk). It speaks just enough
// HTTP/1.1 to stay cheap on the client side, so the data path, not the
// generator, is what runs out of CPU first. It loads my-service two ways
// (loadTarget): its ClusterIP from httpClientPod, and its node port on
// masterNode's underlay address from outsideClient.
//
//   - new connections: every request on a new connection with
//     "Connection: close"; the backend closes after answering, so its
//     side holds TIME_WAIT and the client's ports are reusable. Rate =
//     completed exchanges per second; every one is a new connection
//     through the Service (a new conntrack entry / NAT flow / proxied or
//     relayed connection).
//   - keep-alive: each worker keeps one connection open and sends its
//     requests one after the other on it.

var (
	closeRequest     = []byte("GET / HTTP/1.1\r\nHost: my-service\r\nConnection: close\r\n\r\n")
	keepAliveRequest = []byte("GET / HTTP/1.1\r\nHost: my-service\r\n\r\n")
	okStatus         = []byte("HTTP/1.1 200 ")
)

// loadTarget is one way to load my-service.
type loadTarget struct {
	name string         // metric prefix: <name>_close_per_s, <name>_keepalive_per_s, …
	from string         // the namespace the workers run in
	addr netip.AddrPort // what they dial
}

var (
	clusterIPLoad = loadTarget{"http", httpClientPod, myService}
	nodePortLoad  = loadTarget{"nodeport", outsideClient, masterNodePort}
)

// loadStats are one worker's counts; the latencies are per exchange
// (connect included for new connections).
type loadStats struct {
	ok, errs int
	lat      []time.Duration
	firstErr error
}

// done counts an exchange that started at t0, if it ended by the
// deadline: the rate is exchanges completed within the run's duration,
// so one straggler (a retransmitted SYN, say) cannot stretch the run.
func (s *loadStats) done(t0, deadline time.Time) {
	end := time.Now()
	if end.After(deadline) {
		return
	}
	s.ok++
	if len(s.lat) < maxLatencies {
		s.lat = append(s.lat, end.Sub(t0))
	}
}

func (s *loadStats) fail(err error) {
	s.errs++
	if s.firstErr == nil {
		s.firstErr = err
	}
}

// measureHTTP loads my-service as t says for dur.
func measureHTTP(ctx context.Context, b *bed, t loadTarget, keepAlive bool, n int, dur time.Duration) (map[string]float64, error) {
	path, err := b.nsPath(t.from)
	if err != nil {
		return nil, err
	}
	stats := make([]loadStats, n)
	deadline := time.Now().Add(dur)
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(10*time.Second))
	defer cancel()
	err = workers(path, n, func(i int) error {
		if keepAlive {
			keepAliveWorker(ctx, t.addr, deadline, &stats[i])
		} else {
			closeWorker(ctx, t.addr, deadline, &stats[i])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var total loadStats
	for _, s := range stats {
		total.ok += s.ok
		total.errs += s.errs
		total.lat = append(total.lat, s.lat...)
		if total.firstErr == nil {
			total.firstErr = s.firstErr
		}
	}
	name := t.name + "_close"
	if keepAlive {
		name = t.name + "_keepalive"
	}
	if total.ok == 0 {
		return nil, fmt.Errorf("%s to %v from %s: no request succeeded (%d errors, first: %v)", name, t.addr, t.from, total.errs, total.firstErr)
	}
	if total.errs > 0 {
		progress("%s on %s: %d of %d exchanges failed; first: %v", name, b.mode, total.errs, total.ok+total.errs, total.firstErr)
	}
	m := map[string]float64{
		name + "_per_s":      float64(total.ok) / dur.Seconds(),
		name + "_errors":     float64(total.errs),
		name + "_p50_us":     percentile(total.lat, 0.50),
		name + "_p99_us":     percentile(total.lat, 0.99),
		name + "_error_rate": float64(total.errs) / float64(total.ok+total.errs),
	}
	return m, nil
}

// maxLatencies bounds the latencies one worker keeps.
const maxLatencies = 1 << 18

// dialTimeout bounds one connection attempt: a SYN unanswered for this
// long (the kernel retransmits it after 1 s) counts as an error and the
// worker dials again, so one lost SYN costs a worker at most this long.
const dialTimeout = time.Second

func closeWorker(ctx context.Context, addr netip.AddrPort, deadline time.Time, s *loadStats) {
	d := net.Dialer{Timeout: dialTimeout}
	buf := make([]byte, 4096)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		t0 := time.Now()
		if err := closeExchange(ctx, &d, addr, buf); err != nil {
			s.fail(err)
			time.Sleep(10 * time.Millisecond) // do not spin on a refusing Service
			continue
		}
		s.done(t0, deadline)
	}
}

// closeExchange does one request on a new connection and reads the
// answer up to the server's close.
func closeExchange(ctx context.Context, d *net.Dialer, addr netip.AddrPort, buf []byte) error {
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(closeRequest); err != nil {
		return err
	}
	n := 0
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if n == len(buf) {
			n = copy(buf, buf[:len(okStatus)]) // keep the status line's start
		}
	}
	if !bytes.HasPrefix(buf[:n], okStatus) {
		return fmt.Errorf("answer %q: want %q", buf[:min(n, 40)], okStatus)
	}
	return nil
}

func keepAliveWorker(ctx context.Context, addr netip.AddrPort, deadline time.Time, s *loadStats) {
	d := net.Dialer{Timeout: dialTimeout}
	var (
		conn net.Conn
		br   *bufio.Reader
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if conn == nil {
			c, err := d.DialContext(ctx, "tcp", addr.String())
			if err != nil {
				s.fail(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c.SetDeadline(deadline.Add(5 * time.Second))
			conn, br = c, bufio.NewReaderSize(c, 4096)
		}
		t0 := time.Now()
		if err := keepAliveExchange(conn, br); err != nil {
			s.fail(err)
			conn.Close()
			conn = nil
			continue
		}
		s.done(t0, deadline)
	}
}

// keepAliveExchange sends one request and reads one response with a
// Content-Length body.
func keepAliveExchange(conn net.Conn, br *bufio.Reader) error {
	if _, err := conn.Write(keepAliveRequest); err != nil {
		return err
	}
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, okStatus) {
		return fmt.Errorf("status line %q: want %q", status, okStatus)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return fmt.Errorf("Content-Length %q: %w", v, err)
			}
		}
	}
	if length < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = br.Discard(length)
	return err
}
