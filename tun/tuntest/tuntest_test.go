package tuntest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vrouter/vrouter/tun"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ipv4 returns a minimal packet that passes the version check: the first
// byte says IPv4, the rest is payload for the test to recognise.
func ipv4(payload string) []byte { return append([]byte{0x45}, payload...) }

// read1 reads one packet into buf with a batch of one.
func read1(dev *Device, buf []byte) (int, error) {
	sizes, offs := []int{0}, []tun.Offload{{}}
	if _, err := dev.Read([][]byte{buf}, sizes, offs); err != nil {
		return 0, err
	}
	return sizes[0], nil
}

// write1 writes one packet, a batch of one, and returns its length.
func write1(dev *Device, b []byte) (int, error) {
	if _, err := dev.Write([][]byte{b}, nil); err != nil {
		return 0, err
	}
	return len(b), nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDefaults(t *testing.T) {
	dev, _ := NewPair(Options{})
	defer dev.Close()
	if got := dev.Name(); got != "vr0" {
		t.Errorf("Name() = %q, want %q", got, "vr0")
	}
	dev2, _ := NewPair(Options{Name: "vr7"})
	defer dev2.Close()
	if got := dev2.Name(); got != "vr7" {
		t.Errorf("Name() = %q, want %q", got, "vr7")
	}
}

func TestKernelToRouter(t *testing.T) {
	dev, k := NewPair(Options{})
	defer dev.Close()

	pkt := ipv4("from kernel")
	if err := k.Send(ctx(t), pkt); err != nil {
		t.Fatalf("Send: %v", err)
	}
	pkt[1] = 'X' // Send copied it: the router sees the original.
	buf := make([]byte, 1500)
	n, err := read1(dev, buf)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if want := ipv4("from kernel"); !bytes.Equal(buf[:n], want) {
		t.Errorf("Read = %q, want %q", buf[:n], want)
	}
}

func TestRouterToKernel(t *testing.T) {
	dev, k := NewPair(Options{})
	defer dev.Close()

	buf := ipv4("to kernel")
	if n, err := write1(dev, buf); err != nil || n != len(buf) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(buf))
	}
	buf[1] = 'X' // Write copied it: the router may reuse its buffer.
	got, err := k.Recv(ctx(t))
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if want := ipv4("to kernel"); !bytes.Equal(got, want) {
		t.Errorf("Recv = %q, want %q", got, want)
	}
}

func TestReadTruncates(t *testing.T) {
	dev, k := NewPair(Options{})
	defer dev.Close()
	if err := k.Send(ctx(t), ipv4("0123456789")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	buf := make([]byte, 4)
	n, err := read1(dev, buf)
	if err != nil || n != 4 || !bytes.Equal(buf, ipv4("012")) {
		t.Errorf("Read(4-byte buffer) = %d, %v, %q; want 4, nil, %q", n, err, buf[:n], ipv4("012"))
	}
}

func TestWriteRejectsNonIP(t *testing.T) {
	dev, k := NewPair(Options{})
	defer dev.Close()
	for _, pkt := range [][]byte{nil, {}, {0x00, 1, 2}, {0x55}, {0xff}} {
		if _, err := write1(dev, pkt); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Write(%x) error = %v, want EINVAL", pkt, err)
		}
	}
	if _, err := write1(dev, []byte{0x60, 0, 0, 0}); err != nil {
		t.Errorf("Write(IPv6 packet) = %v, want nil", err)
	}
	select {
	case pkt := <-k.FromRouter():
		if pkt[0] != 0x60 {
			t.Errorf("kernel got %x, want only the IPv6 packet", pkt)
		}
	default:
		t.Errorf("kernel got nothing, want the IPv6 packet")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	dev, k := NewPair(Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := read1(dev, make([]byte, 1500))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Read block; the test passes either way
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v, want an error wrapping os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5s after Close")
	}
	select {
	case <-k.Closed():
	default:
		t.Error("Kernel.Closed() not closed after Device.Close")
	}
}

func TestCloseUnblocksWrite(t *testing.T) {
	dev, _ := NewPair(Options{QueueLen: 1})
	if _, err := write1(dev, ipv4("fills the queue")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := write1(dev, ipv4("blocks"))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	dev.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("blocked Write after Close = %v, want an error wrapping os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked 5s after Close")
	}
}

func TestAfterClose(t *testing.T) {
	dev, k := NewPair(Options{})
	if _, err := write1(dev, ipv4("before close")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := k.Send(ctx(t), ipv4("unread")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for i := range 2 {
		if err := dev.Close(); err != nil {
			t.Errorf("Close #%d = %v, want nil", i+1, err)
		}
	}
	// Read prefers Close over a queued packet, as a closed file does.
	if _, err := read1(dev, make([]byte, 100)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v, want os.ErrClosed", err)
	}
	if _, err := write1(dev, ipv4("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	if err := k.Send(ctx(t), ipv4("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close = %v, want os.ErrClosed", err)
	}
	// What the router wrote before Close still reaches the kernel.
	if got, err := k.Recv(ctx(t)); err != nil || !bytes.Equal(got, ipv4("before close")) {
		t.Errorf("Recv after Close = %q, %v; want %q, nil", got, err, ipv4("before close"))
	}
	if _, err := k.Recv(ctx(t)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Recv on drained closed device = %v, want os.ErrClosed", err)
	}
}

func TestContextEnds(t *testing.T) {
	dev, k := NewPair(Options{QueueLen: 1})
	defer dev.Close()
	c, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := k.Recv(c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Recv with nothing written = %v, want context.DeadlineExceeded", err)
	}
	if err := k.Send(c, ipv4("fills")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := k.Send(c, ipv4("blocks")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send to a full queue = %v, want context.DeadlineExceeded", err)
	}
}

// TestConcurrent runs one reader, several writers and the kernel side at
// once under -race, and checks nothing is lost or duplicated.
func TestConcurrent(t *testing.T) {
	dev, k := NewPair(Options{QueueLen: 4})
	defer dev.Close()
	const writers, perWriter = 4, 200
	c := ctx(t)

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := write1(dev, []byte{0x45, byte(w), byte(i)}); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range writers * perWriter {
			if err := k.Send(c, []byte{0x45, byte(i), byte(i >> 8)}); err != nil {
				t.Errorf("Send: %v", err)
				return
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64)
		for range writers * perWriter {
			if _, err := read1(dev, buf); err != nil {
				t.Errorf("Read: %v", err)
				return
			}
		}
	})
	seen := make(map[[2]byte]bool)
	for range writers * perWriter {
		pkt, err := k.Recv(c)
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		key := [2]byte{pkt[1], pkt[2]}
		if seen[key] {
			t.Errorf("packet %x received twice", pkt)
		}
		seen[key] = true
	}
	wg.Wait()
	if len(seen) != writers*perWriter {
		t.Errorf("kernel received %d distinct packets, want %d", len(seen), writers*perWriter)
	}
}

// One Read takes every queued packet, up to the batch's length and
// BatchSize, in order; a Write of several hands them over in order.
func TestBatches(t *testing.T) {
	dev, k := NewPair(Options{})
	defer dev.Close()
	for i := range batchSize + 2 {
		if err := k.Send(ctx(t), ipv4(string(rune('a'+i)))); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if got := dev.BatchSize(); got != batchSize {
		t.Fatalf("BatchSize() = %d, want %d", got, batchSize)
	}
	bufs := make([][]byte, batchSize+1)
	for i := range bufs {
		bufs[i] = make([]byte, 100)
	}
	sizes, offs := make([]int, len(bufs)), make([]tun.Offload, len(bufs))
	for _, tc := range []struct {
		want  int
		first rune
	}{{batchSize, 'a'}, {2, 'a' + batchSize}} {
		want, first := tc.want, tc.first
		n, err := dev.Read(bufs, sizes, offs)
		if err != nil || n != want {
			t.Fatalf("Read(%d buffers) = %d, %v; want %d, nil", len(bufs), n, err, want)
		}
		for i := range n {
			if w := ipv4(string(first + rune(i))); !bytes.Equal(bufs[i][:sizes[i]], w) || offs[i] != (tun.Offload{}) {
				t.Errorf("Read packet %d = %q, %+v; want %q, no offload", i, bufs[i][:sizes[i]], offs[i], w)
			}
		}
	}
	if n, err := dev.Write([][]byte{ipv4("x"), ipv4("y")}, nil); err != nil || n != 2 {
		t.Fatalf("Write(2 packets) = %d, %v; want 2, nil", n, err)
	}
	for _, want := range []string{"x", "y"} {
		if got, err := k.Recv(ctx(t)); err != nil || !bytes.Equal(got, ipv4(want)) {
			t.Errorf("Recv = %q, %v; want %q", got, err, ipv4(want))
		}
	}
}

// The fake has no offloads: it refuses a packet with offload metadata.
func TestWriteRefusesOffload(t *testing.T) {
	dev, _ := NewPair(Options{})
	defer dev.Close()
	if dev.Offload() {
		t.Error("Offload() = true, want false")
	}
	o := []tun.Offload{{}, {NeedsCsum: true, CsumStart: 20, CsumOffset: 16}}
	n, err := dev.Write([][]byte{ipv4("plain"), ipv4("partial")}, o)
	if n != 1 || !errors.Is(err, tun.ErrBadOffload) {
		t.Errorf("Write(plain, partial checksum) = %d, %v; want 1, an error wrapping ErrBadOffload", n, err)
	}
}
