package lb

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// openIdle opens n connections to proxyVIP, reads each one's greeting
// and echoes one message on it, so that data went both ways through the
// proxy, and leaves them open. Cleanup closes them.
func openIdle(tb testing.TB, e *proxyEnv, n int) []*gonet.TCPConn {
	tb.Helper()
	conns := make([]*gonet.TCPConn, n)
	for i := range conns {
		c, err := e.dial(proxyVIP)
		if err != nil {
			tb.Fatalf("connection %d: dial %v: %v", i, proxyVIP, err)
		}
		tb.Cleanup(func() { c.Close() })
		conns[i] = c
		greeting(tb, c)
		if err := echo(c, "hello"); err != nil {
			tb.Fatalf("connection %d: %v", i, err)
		}
	}
	return conns
}

// waitBufsHeld waits up to 5s for the proxy's splice goroutines to hold
// want copy buffers and returns how many they hold.
func waitBufsHeld(p *Proxy, want int64) int64 {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := p.bufsHeld.Load()
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle proxied connection holds no copy buffer: both splice
// goroutines give theirs back when they find nothing to read, and take
// one again when data comes, also for a bulk transfer.
func TestProxyIdleConnsHoldNoBuffers(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1", nil)
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}))
	const n = 8
	conns := openIdle(t, e, n)
	if got := e.p.bufsTaken.Load(); got < 2*n {
		t.Fatalf("after data both ways on %d connections, copy buffers taken = %d, want ≥ %d", n, got, 2*n)
	}
	if got := waitBufsHeld(e.p, 0); got != 0 {
		t.Fatalf("%d idle proxied connections hold %d copy buffers, want 0", n, got)
	}

	// A bulk transfer both ways on one of them, then idle again.
	const size = 4 << 20
	msg := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	c := conns[0]
	c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo of %d bytes: %v", size, err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write %d bytes: %v", size, err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo of %d bytes differs from what was sent", size)
	}
	c.SetDeadline(time.Time{})
	if got := waitBufsHeld(e.p, 0); got != 0 {
		t.Fatalf("after a bulk transfer, %d idle proxied connections hold %d copy buffers, want 0", n, got)
	}
}

// proxyConnHeapBudget is the live heap the in-process test may see per
// idle proxied connection. It counts more than the router's share: the
// client's gVisor endpoint and the test backend's socket are in the test
// process too (BenchmarkProxyConnMemory prints the total, and
// TestProxyConnMemoryBudget logs it, with or without -race). Two copy
// buffers held while idle add 64 KiB; TestProxyIdleConnsHoldNoBuffers
// catches even one.
const proxyConnHeapBudget = 56 << 10

// smallEchoServer greets as echoServer does, then echoes through a
// 64-byte buffer, so that its share of an idle connection stays small.
func smallEchoServer(b *testBackend, c *net.TCPConn) {
	if _, err := fmt.Fprintf(c, "%s %s\n", b.name, c.RemoteAddr()); err != nil {
		return
	}
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			c.CloseWrite()
			return
		}
	}
}

// proxyConnMemory opens n idle proxied connections (see openIdle) and
// returns the live heap and the goroutine stacks they added per
// connection, after collections before and after (two, so that the
// buffers the pool kept are freed).
func proxyConnMemory(tb testing.TB, n int) (heap, stack float64) {
	tb.Helper()
	b := newBackend(tb, "b", "127.0.0.1", smallEchoServer)
	e := startProxy(tb, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}))
	openIdle(tb, e, 1) // the stacks' and the proxy's own first allocations
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns := openIdle(tb, e, n)
	// Let the splice goroutines reach their wait.
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := e.p.Stats().Active; got != int64(n+1) {
		tb.Fatalf("Stats().Active = %d, want %d", got, n+1)
	}
	runtime.KeepAlive(conns)
	perConn := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	return perConn(after.HeapAlloc, before.HeapAlloc), perConn(after.StackInuse, before.StackInuse)
}

// BenchmarkProxyConnMemory reports the memory an idle proxied
// connection costs in process, both ends of the test included (see
// proxyConnHeapBudget): live heap (heap-B/conn) and goroutine stacks
// (stack-B/conn).
//
//	go test -run '^$' -bench ProxyConnMemory -benchtime 3x ./lb/
func BenchmarkProxyConnMemory(b *testing.B) {
	var heap, stack float64
	for range b.N {
		h, s := proxyConnMemory(b, 500)
		heap += h
		stack += s
	}
	b.ReportMetric(heap/float64(b.N), "heap-B/conn")
	b.ReportMetric(stack/float64(b.N), "stack-B/conn")
}

// Idle proxied connections stay within their heap budget: they hold no
// copy buffers.
func TestProxyConnMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	heap, stack := proxyConnMemory(t, 200)
	if heap > proxyConnHeapBudget {
		t.Errorf("live heap per idle proxied connection (both ends) = %.0f B, want ≤ %d B", heap, proxyConnHeapBudget)
	} else {
		t.Logf("per idle proxied connection (both ends): live heap %.0f B (budget %d B), goroutine stacks %.0f B", heap, proxyConnHeapBudget, stack)
	}
}

// BenchmarkProxyBulk echoes 1 MiB per operation through one proxied
// connection: the splice's throughput both ways at once.
//
//	go test -run '^$' -bench ProxyBulk ./lb/
func BenchmarkProxyBulk(b *testing.B) {
	be := newBackend(b, "b", "127.0.0.1", nil)
	e := startProxy(b, ProxyOptions{}, proxyService([]Endpoint{be.endpoint()}))
	c := openIdle(b, e, 1)[0]
	const size = 1 << 20
	msg := make([]byte, size)
	got := make([]byte, size)
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(msg)
			werr <- err
		}()
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatalf("read the echo of %d bytes: %v", size, err)
		}
		if err := <-werr; err != nil {
			b.Fatalf("write %d bytes: %v", size, err)
		}
	}
}
