package router

import (
	"bytes"
	"context"
	"net/netip"
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
	nw := overlaytest.NewNetwork()
	self, peerAddr := netip.MustParseAddrPort("192.168.31.201:8285"), netip.MustParseAddrPort("192.168.31.202:8285")
	conn, err := nw.Listen(self)
	if err != nil {
		t.Fatal(err)
	}
	far, err := nw.Listen(peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	cc := &countingConn{Conn: conn}
	dev, kernel := tuntest.NewPair(tuntest.Options{})
	r, err := New(Options{TUN: dev, Overlay: cc})
	if err != nil {
		t.Fatal(err)
	}
	pod, remote := addr("10.244.0.4"), addr("10.244.1.2")
	err = r.Set(Config{
		PodCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
		Addresses:     []netip.Addr{routerAddr4},
		NodeAddresses: []netip.Addr{self.Addr()},
		Peers:         []Peer{{Name: "far", Endpoint: peerAddr, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
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
	defer func() { stop(); <-done }()

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

// batchTUN is a tuntest.Device that says it writes bursts in one system
// call (tun.BatchIO) and records each Write's packet count.
type batchTUN struct {
	*tuntest.Device
	mu     sync.Mutex
	writes []int
}

func (d *batchTUN) BatchIO() (bool, error) { return true, nil }

func (d *batchTUN) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	d.mu.Lock()
	d.writes = append(d.writes, len(bufs))
	d.mu.Unlock()
	return d.Device.Write(bufs, offs)
}

// TestBurstToTUNWrittenTogether: on a TUN with batched I/O, a burst's
// packets back to the node kernel leave in one Write, in the order read —
// a packet for a peer in between does not reorder them — and a TUN
// without it gets them one Write each.
func TestBurstToTUNWrittenTogether(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(map[bool]string{true: "batched", false: "per-packet"}[batched], func(t *testing.T) {
			nw := overlaytest.NewNetwork()
			self, peerAddr := netip.MustParseAddrPort("192.168.31.201:8285"), netip.MustParseAddrPort("192.168.31.202:8285")
			conn, err := nw.Listen(self)
			if err != nil {
				t.Fatal(err)
			}
			far, err := nw.Listen(peerAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer far.Close()
			inner, kernel := tuntest.NewPair(tuntest.Options{})
			bt := &batchTUN{Device: inner}
			var dev tun.Device = bt
			if !batched {
				dev = recordingTUN{bt}
			}
			r, err := New(Options{TUN: dev, Overlay: conn})
			if err != nil {
				t.Fatal(err)
			}
			pod := addr("10.244.0.4")
			err = r.Set(Config{
				PodCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
				Addresses:     []netip.Addr{routerAddr4},
				NodeAddresses: []netip.Addr{self.Addr()},
				Peers:         []Peer{{Name: "far", Endpoint: peerAddr, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			// One burst of 8: three to local pods, one to the peer, four
			// more to local pods.
			var burst [][]byte
			for i := range 8 {
				dst := addr("10.244.0.9")
				if i == 3 {
					dst = addr("10.244.1.2")
				}
				burst = append(burst, udp4(pod, dst, 64, true, []byte{'q', byte(i)}))
			}
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
			defer func() { stop(); <-done }()
			for i, w := range burst {
				if i == 3 {
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
			bt.mu.Lock()
			writes := bt.writes
			bt.mu.Unlock()
			want := []int{7}
			if !batched {
				want = []int{1, 1, 1, 1, 1, 1, 1}
			}
			if len(writes) != len(want) || (batched && writes[0] != 7) {
				t.Errorf("TUN Writes (packets each) = %v, want %v", writes, want)
			}
			if st := r.Stats(); st.TUN.TxPackets < 7 {
				t.Errorf("TUN tx packets = %d, want at least 7", st.TUN.TxPackets)
			}
		})
	}
}

// recordingTUN hides batchTUN's BatchIO: a TUN that writes one packet per
// system call.
type recordingTUN struct{ d *batchTUN }

func (r recordingTUN) Read(bufs [][]byte, sizes []int, offs []tun.Offload) (int, error) {
	return r.d.Read(bufs, sizes, offs)
}
func (r recordingTUN) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	return r.d.Write(bufs, offs)
}
func (r recordingTUN) BatchSize() int   { return r.d.BatchSize() }
func (r recordingTUN) Offload() bool    { return r.d.Offload() }
func (r recordingTUN) UDPOffload() bool { return r.d.UDPOffload() }
func (r recordingTUN) Name() string     { return r.d.Name() }
func (r recordingTUN) Close() error     { return r.d.Close() }
