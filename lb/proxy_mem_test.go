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
		got := p.bufs.held.Load()
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
	if got := e.p.bufs.taken.Load(); got < 2*n {
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
	if got := e.p.bufs.grown.Load(); got != 0 {
		t.Fatalf("after a bulk transfer, idle proxied connections hold %d bytes of grown copy buffers, want 0", got)
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

// A direction's copy buffer follows its reads: each read that fills it
// takes the next size up for the next read, up to the largest; a read
// that fills less than a quarter of it steps back down; giving it back
// (a wait for data) starts again from the smallest. The counters hold
// what is taken and how many bytes sit above the smallest size.
func TestSpliceBufGrowsAndShrinks(t *testing.T) {
	var c spliceBufCounts
	s := newSpliceBuf(&c)
	sizes := spliceBufSizes[:]
	largest := sizes[len(sizes)-1]
	check := func(step string, wantLen int, wantGrown int64) {
		t.Helper()
		b := s.get()
		if len(b) != wantLen {
			t.Fatalf("%s: get() = %d bytes, want %d", step, len(b), wantLen)
		}
		if got := c.held.Load(); got != 1 {
			t.Fatalf("%s: held = %d, want 1", step, got)
		}
		if got := c.grown.Load(); got != wantGrown {
			t.Fatalf("%s: grown = %d bytes, want %d", step, got, wantGrown)
		}
	}
	check("first read", sizes[0], 0)
	s.used(sizes[0] - 1) // not full: stays
	check("after a read short of full", sizes[0], 0)
	for i := 1; i < len(sizes); i++ {
		s.used(sizes[i-1])
		check(fmt.Sprintf("after a full read of %d", sizes[i-1]), sizes[i], int64(sizes[i]))
	}
	s.used(largest)
	check("after a full read of the largest", largest, int64(largest))
	s.used(largest / 4) // a quarter: stays
	check("after a read of a quarter", largest, int64(largest))
	s.used(largest/4 - 1)
	check("after a read of less than a quarter", sizes[len(sizes)-2], int64(sizes[len(sizes)-2]))

	s.put()
	if got, grown := c.held.Load(), c.grown.Load(); got != 0 || grown != 0 {
		t.Fatalf("after put: held = %d, grown = %d bytes, want 0 and 0", got, grown)
	}
	s.put() // idempotent
	check("after put, the next read", sizes[0], 0)
	s.put()
	if got := c.taken.Load(); got != uint64(len(sizes)+2) {
		t.Fatalf("taken = %d, want %d", got, len(sizes)+2)
	}
}

// Buffers above the smallest size share spliceGrowBudget: a direction
// that would pass it keeps a smaller buffer, and one given back frees its
// share for the others.
func TestSpliceBufGrowBudget(t *testing.T) {
	var c spliceBufCounts
	largest := spliceBufSizes[len(spliceBufSizes)-1]
	grow := func(s *spliceBuf) int {
		for range spliceBufSizes {
			s.used(len(s.get()))
		}
		return len(s.get())
	}
	n := spliceGrowBudget / largest
	bufs := make([]spliceBuf, n+1)
	for i := range n {
		bufs[i] = newSpliceBuf(&c)
		if got := grow(&bufs[i]); got != largest {
			t.Fatalf("direction %d of %d within the budget grew to %d bytes, want %d", i+1, n, got, largest)
		}
	}
	if got := c.grown.Load(); got > spliceGrowBudget {
		t.Fatalf("grown = %d bytes, over the budget of %d", got, spliceGrowBudget)
	}
	bufs[n] = newSpliceBuf(&c)
	if got := grow(&bufs[n]); got != spliceBufSizes[0] {
		t.Fatalf("a direction past the budget grew to %d bytes, want %d", got, spliceBufSizes[0])
	}
	bufs[0].put()
	if got := grow(&bufs[n]); got != largest {
		t.Fatalf("after another gave its buffer back, a direction grew to %d bytes, want %d", got, largest)
	}
	for i := range bufs {
		bufs[i].put()
	}
	if got, grown := c.held.Load(), c.grown.Load(); got != 0 || grown != 0 {
		t.Fatalf("all given back: held = %d, grown = %d bytes, want 0 and 0", got, grown)
	}
}
