package router

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// openBind opens a NewWireGuardBind on any port, closed when the test
// ends, and returns its IPv4 receive function and port.
func openBind(t *testing.T) (conn.Bind, conn.ReceiveFunc, uint16) {
	t.Helper()
	b := NewWireGuardBind()
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatalf("Open(0): %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if port == 0 || len(fns) == 0 {
		t.Fatalf("Open(0) = %d functions, port %d", len(fns), port)
	}
	return b, fns[0], port
}

// deviceBuffers are what wireguard-go passes a receive function:
// BatchSize buffers of its largest message each.
func deviceBuffers(b conn.Bind) ([][]byte, []int, []conn.Endpoint) {
	n := b.BatchSize()
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	return bufs, make([]int, n), make([]conn.Endpoint, n)
}

// A batch the device sends — a run of one size, a shorter last, then
// others — arrives one message per buffer, in order, whole, each from the
// sender's address, with one endpoint value per sender.
func TestWireGuardBindSendReceive(t *testing.T) {
	a, _, aPort := openBind(t)
	b, recv, bPort := openBind(t)
	to, err := a.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), bPort).String())
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for i := range 100 {
		l := 1452 // a sealed full-size segment
		switch {
		case i == 45:
			l = 700 // a short one ends a run
		case i >= 90:
			l = 32 + i // keepalives and handshakes: each its own size
		}
		m := make([]byte, l)
		for j := range m {
			m[j] = byte(i*31 + j)
		}
		msgs = append(msgs, m)
	}
	if err := a.Send(msgs, to); err != nil {
		t.Fatalf("Send(%d messages): %v", len(msgs), err)
	}

	bufs, sizes, eps := deviceBuffers(b)
	var got [][]byte
	var from conn.Endpoint
	calls := 0
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < len(msgs) && time.Now().Before(deadline) {
		calls++
		n, err := recv(bufs, sizes, eps)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		for i := range n {
			got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
			if from == nil {
				from = eps[i]
			}
			if eps[i] != from {
				t.Fatalf("message %d: endpoint %p (%s), want the one value %p for one sender", len(got)-1, eps[i], eps[i].DstToString(), from)
			}
		}
	}
	if len(got) != len(msgs) {
		t.Fatalf("received %d messages, want %d", len(got), len(msgs))
	}
	// The runs come coalesced (UDP_GRO) and split here: far fewer
	// receives than messages.
	if calls > len(msgs)/4 {
		t.Errorf("%d receives for %d messages: not batched", calls, len(msgs))
	}
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d: got %d bytes starting %x, want %d starting %x", i, len(got[i]), got[i][:min(8, len(got[i]))], len(msgs[i]), msgs[i][:8])
		}
	}
	if want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), aPort).String(); from.DstToString() != want {
		t.Errorf("sender %s, want %s", from.DstToString(), want)
	}
	if ap, err := netip.ParseAddrPort(from.DstToString()); err != nil || !bytes.Equal(from.DstToBytes(), must(ap.MarshalBinary())) {
		t.Errorf("DstToBytes %x does not encode %s", from.DstToBytes(), from.DstToString())
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Close ends a waiting receive with net.ErrClosed (the device's signal to
// stop its reader), Send then fails, and the Bind opens again.
func TestWireGuardBindCloseAndReopen(t *testing.T) {
	b, recv, port := openBind(t)
	bufs, sizes, eps := deviceBuffers(b)
	done := make(chan error, 1)
	go func() {
		_, err := recv(bufs, sizes, eps)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("receive after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("receive still waiting 5 s after Close")
	}
	ep, _ := b.ParseEndpoint("127.0.0.1:9")
	if err := b.Send([][]byte{{1}}, ep); err == nil {
		t.Error("Send on a closed Bind succeeded")
	}
	if _, p, err := b.Open(port); err != nil || p != port {
		t.Fatalf("Open(%d) again = %d, %v", port, p, err)
	}
	if _, _, err := b.Open(port); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Errorf("Open while open = %v, want ErrBindAlreadyOpen", err)
	}
}

// Endpoints are shared per address (IPv4-mapped as IPv4), and spoofed
// senders cannot grow the cache past its bound.
func TestWireGuardBindEndpointCache(t *testing.T) {
	var c endpoints
	a := c.get(netip.MustParseAddrPort("192.0.2.1:51820"))
	if c.get(netip.MustParseAddrPort("[::ffff:192.0.2.1]:51820")) != a {
		t.Error("an IPv4-mapped sender got an endpoint of its own")
	}
	if a.DstIP() != netip.MustParseAddr("192.0.2.1") || a.SrcIP().IsValid() || a.SrcToString() != "" {
		t.Errorf("endpoint %s: DstIP %s, SrcIP %s", a.DstToString(), a.DstIP(), a.SrcIP())
	}
	for i := range 5 * maxEndpoints {
		c.get(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 1))
		if len(c.m) > maxEndpoints {
			t.Fatalf("cache holds %d endpoints, bound %d", len(c.m), maxEndpoints)
		}
	}
	if _, err := NewWireGuardBind().ParseEndpoint("not an endpoint"); err == nil {
		t.Error("ParseEndpoint accepted garbage")
	}
}
