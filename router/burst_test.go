package router

import (
	"bytes"
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// countingConn records the WriteBatch calls made on a Conn.
type countingConn struct {
	Conn
	mu    sync.Mutex
	calls []int // each call's datagram count
	segs  []int // and segment size
}

func (c *countingConn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	c.mu.Lock()
	c.calls = append(c.calls, (len(b)+segSize-1)/segSize)
	c.segs = append(c.segs, segSize)
	c.mu.Unlock()
	return c.Conn.WriteBatch(b, segSize, addr)
}

// TestBurstSentAsRun: a burst read from the TUN leaves for a peer in runs
// of one size — one WriteBatch each — in the order it was read: a shorter
// packet closes a run, a packet for elsewhere flushes it first.
func TestBurstSentAsRun(t *testing.T) {
	dev, kernel := tuntest.NewPair(tuntest.Options{})
	var cc *countingConn
	r, self, far := burstRouter(t, dev, func(c Conn) Conn { cc = &countingConn{Conn: c}; return cc })
	pod, remote := addr("10.244.0.4"), addr("10.244.1.2")
	// Queued before the router reads: its reads take them 8 at a time.
	var burst [][]byte
	for i := range 5 {
		burst = append(burst, udp4(pod, remote, 64, true, []byte{'a', byte(i), 0, 0, 0, 0, 0, 0}))
	}
	burst = append(burst, udp4(pod, remote, 64, true, []byte("short")))             // closes the run
	burst = append(burst, udp4(pod, addr("10.244.0.9"), 64, true, []byte("local"))) // back to the node: flushes
	for i := range 9 {
		burst = append(burst, udp4(pod, remote, 64, true, []byte{'b', byte(i), 0, 0, 0, 0, 0, 0}))
	}
	runAfter(t, r, kernel, burst)

	var want [][]byte
	for _, p := range burst {
		if p[19] != 9 { // all but the local one cross
			want = append(want, p)
		}
	}
	buf := make([]byte, 65535)
	timeout := time.AfterFunc(10*time.Second, func() { far.Close() }) // ends a ReadFrom that waits in vain
	defer timeout.Stop()
	for i, w := range want {
		n, from, err := far.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i+1, len(want), err)
		}
		got := buf[:n]
		if from != self || len(got) != len(w) || got[8] != w[8]-1 || !bytes.Equal(got[20:], w[20:]) {
			t.Fatalf("datagram %d from %v = %x, want %x from %v with TTL %d: the burst must cross whole and in order", i+1, from, got, w, self, w[8]-1)
		}
	}
	cc.mu.Lock()
	calls, segs := cc.calls, cc.segs
	cc.mu.Unlock()
	t.Logf("WriteBatch calls (datagrams each): %v", calls)
	// Read 1 (8 packets): a run of 5 closed by the short one, the local
	// one, then a run of 1; read 2 (8): a run of 8.
	if len(calls) >= len(want) || calls[0] != 6 || segs[0] != len(burst[0]) {
		t.Errorf("WriteBatch calls (datagrams each) = %v, segment sizes %v; want fewer calls than the %d datagrams, the first a run of 6 of %d bytes", calls, segs, len(want), len(burst[0]))
	}
}

// burstRouter is hostgw-master's router on dev, its overlay socket
// (wrapped by wrap) on an in-memory network where far is hostgw-node's;
// far is closed when the test ends.
func burstRouter(t *testing.T, dev tun.Device, wrap func(Conn) Conn) (r *Router, self netip.AddrPort, far *overlaytest.Conn) {
	t.Helper()
	nw := overlaytest.NewNetwork()
	self, peerAddr := netip.MustParseAddrPort("192.168.31.201:8285"), netip.MustParseAddrPort("192.168.31.202:8285")
	conn, err := nw.Listen(self)
	if err != nil {
		t.Fatal(err)
	}
	far, err = nw.Listen(peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	r, err = New(Options{TUN: dev, Overlay: wrap(conn)})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Set(Config{
		PodCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
		Addresses:     []netip.Addr{routerAddr4},
		NodeAddresses: []netip.Addr{self.Addr()},
		Peers:         []Peer{{Name: "far", Endpoint: peerAddr, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, self, far
}

// runAfter queues burst from the node kernel, then runs r until the test
// ends: its first reads find the whole burst waiting.
func runAfter(t *testing.T, r *Router, kernel *tuntest.Kernel, burst [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range burst {
		if err := kernel.Send(ctx, bytes.Clone(p)); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
}

// TestBusyPollFallsBack: a router asked to busy-poll devices that cannot
// be read without waiting says so and forwards as it always does.
func TestBusyPollFallsBack(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "hostgw-master", "192.168.31.201:8285", "10.244.0.0/24", Options{BusyPoll: time.Millisecond, Logger: zap.New(core)})
	b := startNode(t, nw, "hostgw-node", "192.168.31.202:8285", "10.244.1.0/24", Options{}, a.asPeer())
	if err := a.r.Set(a.config(b.asPeer())); err != nil {
		t.Fatal(err)
	}
	pkt := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("busy"))
	a.tun.send(bytes.Clone(pkt))
	if got := b.tun.recv(t); !bytes.Equal(got[20:], pkt[20:]) {
		t.Errorf("far node got %x, want %x", got, pkt)
	}
	waitFor(t, "the router's warning that busy polling is off", func() bool {
		return logs.FilterMessage("busy polling is off").Len() == 1
	})
}

// batchTUN is a tuntest.Device that records each Write's packet count
// and reports batched (tun.BatchIO): whether it writes a burst in one
// system call.
type batchTUN struct {
	*tuntest.Device
	batched bool
	mu      sync.Mutex
	writes  []int
}

func (d *batchTUN) BatchIO() (bool, error) { return d.batched, nil }

func (d *batchTUN) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	d.mu.Lock()
	d.writes = append(d.writes, len(bufs))
	d.mu.Unlock()
	return d.Device.Write(bufs, offs)
}

// TestBurstToTUNWrittenTogether: on a TUN with batched I/O, a burst's
// packets back to the node kernel leave in one Write, in the order read —
// a packet for a peer in between does not reorder them, and crosses — and
// a TUN without it gets them one Write each.
func TestBurstToTUNWrittenTogether(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(map[bool]string{true: "batched", false: "per-packet"}[batched], func(t *testing.T) {
			inner, kernel := tuntest.NewPair(tuntest.Options{})
			bt := &batchTUN{Device: inner, batched: batched}
			r, self, far := burstRouter(t, bt, func(c Conn) Conn { return c })
			// One burst of 8: three to local pods, one to the peer, four
			// more to local pods.
			const toPeer = 3
			pod := addr("10.244.0.4")
			var burst [][]byte
			for i := range 8 {
				dst := addr("10.244.0.9")
				if i == toPeer {
					dst = addr("10.244.1.2")
				}
				burst = append(burst, udp4(pod, dst, 64, true, []byte{'q', byte(i)}))
			}
			runAfter(t, r, kernel, burst)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i, w := range burst {
				if i == toPeer {
					continue
				}
				got, err := kernel.Recv(ctx)
				if err != nil {
					t.Fatalf("packet %d back to the node: %v", i, err)
				}
				if len(got) != len(w) || got[8] != w[8]-1 || !bytes.Equal(got[20:], w[20:]) {
					t.Fatalf("packet back to the node = %x, want %x with TTL %d: in the order read", got, w, w[8]-1)
				}
			}
			buf := make([]byte, 2048)
			timeout := time.AfterFunc(10*time.Second, func() { far.Close() }) // ends a ReadFrom that waits in vain
			defer timeout.Stop()
			n, from, err := far.ReadFrom(buf)
			if err != nil {
				t.Fatalf("the burst's packet %d to the peer: %v", toPeer, err)
			}
			if from != self || n < 20 || !bytes.Equal(buf[20:n], burst[toPeer][20:]) {
				t.Errorf("the peer got %x from %v, want the burst's packet %d from %v", buf[:n], from, toPeer, self)
			}
			bt.mu.Lock()
			writes := bt.writes
			bt.mu.Unlock()
			want := []int{7}
			if !batched {
				want = []int{1, 1, 1, 1, 1, 1, 1}
			}
			if !slices.Equal(writes, want) {
				t.Errorf("TUN Writes (packets each) = %v, want %v", writes, want)
			}
			// The router counts a write after it returns, which can be
			// after the node kernel has the packets.
			waitFor(t, "the burst's 7 packets counted", func() bool { return r.Stats().TUN.TxPackets >= 7 })
			if st := r.Stats(); st.TUN.TxPackets != 7 {
				t.Errorf("TUN tx packets = %d, want 7", st.TUN.TxPackets)
			}
			if st := r.Stats(); batched && (st.TUNWriteBatches != 1 || st.TUNWriteBatchPackets != 7) {
				t.Errorf("TUN write batches = %d of %d packets, want 1 of 7", st.TUNWriteBatches, st.TUNWriteBatchPackets)
			}
		})
	}
}
