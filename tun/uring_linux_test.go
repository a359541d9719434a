package tun

// Real-device tests of batched TUN I/O (uring_linux.go): the same bursts
// through io_uring and packet by packet, in a network namespace of their
// own.

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// batchModes runs f on a fresh offload device with batched I/O on and
// off. On needs io_uring: where the kernel refuses it (a seccomp filter,
// kernel.io_uring_disabled) that subtest is skipped, with the reason.
func batchModes(t *testing.T, f func(t *testing.T, d *offloadFile)) {
	for _, batched := range []bool{true, false} {
		name := map[bool]string{true: "io_uring", false: "per-packet"}[batched]
		t.Run(name, func(t *testing.T) {
			inNewNetns(t)
			uringDisabled.Store(!batched)
			t.Cleanup(func() { uringDisabled.Store(false) })
			d := mustOpenOffload(t, Options{})
			if err := Configure("vr0", seedConfig()); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			on, why := d.BatchIO()
			if batched && !on {
				if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) != "0" {
					t.Skipf("io_uring is off on this host (kernel.io_uring_disabled=%s): %v", strings.TrimSpace(string(b)), why)
				}
				t.Fatalf("BatchIO() = false, %v; want it on: this kernel has io_uring", why)
			}
			if !batched && (on || !errors.Is(why, errNoURing)) {
				t.Fatalf("BatchIO() with batching turned off = %v, %v; want false and a reason", on, why)
			}
			f(t, d)
		})
	}
}

// echoBurst is n echo requests to the node, sequence numbers from seq.
func echoBurst(n int, seq uint16) [][]byte {
	var bufs [][]byte
	for i := range n {
		bufs = append(bufs, echo4(podAddr4, nodeAddr4.Addr(), 0x7672, seq+uint16(i), []byte("batch")))
	}
	return bufs
}

// readBufs are buffers for a burst of up to maxReadBurst packets.
func readBufs() (bufs [][]byte, sizes []int, offs []Offload) {
	bufs, sizes, offs = make([][]byte, maxReadBurst), make([]int, maxReadBurst), make([]Offload, maxReadBurst)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	return bufs, sizes, offs
}

// drainTryRead reads what configuring the link queued (router
// solicitations) until a TryRead finds nothing.
func drainTryRead(t *testing.T, d *offloadFile, bufs [][]byte, sizes []int, offs []Offload) {
	t.Helper()
	for {
		n, err := d.TryRead(bufs, sizes, offs)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// echoReplySeq is the sequence number of packet p when it is an ICMP echo
// reply, else false (a router solicitation, say).
func echoReplySeq(p []byte) (int, bool) {
	if len(p) < 28 || p[9] != 1 || p[20] != 0 {
		return 0, false
	}
	return int(p[26])<<8 | int(p[27]), true
}

// readEchoReplies reads until want echo replies came, or fails; it returns
// their sequence numbers in the order read.
func readEchoReplies(t *testing.T, d *offloadFile, want int) []int {
	t.Helper()
	bufs, sizes, offs := readBufs()
	var seqs []int
	for len(seqs) < want {
		if err := d.f.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := d.Read(bufs, sizes, offs)
		if err != nil {
			t.Fatalf("Read after %d of %d replies: %v", len(seqs), want, err)
		}
		for i := range n {
			if seq, ok := echoReplySeq(bufs[i][:sizes[i]]); ok {
				seqs = append(seqs, seq)
			}
		}
	}
	return seqs
}

// TestWriteBatch: one Write of many packets — more than a ring takes in
// one system call — delivers each, in order, through io_uring as packet
// by packet; the replies the kernel queued come back in order through
// the batched reads.
func TestWriteBatch(t *testing.T) {
	batchModes(t, func(t *testing.T, d *offloadFile) {
		const n = uringEntries + 5
		bufs := echoBurst(n, 0)
		if got, err := d.Write(bufs, nil); got != n || err != nil {
			t.Fatalf("Write(%d echo requests) = %d, %v; want %d, nil", n, got, err, n)
		}
		seqs := readEchoReplies(t, d, n)
		for i, s := range seqs {
			if s != i {
				t.Fatalf("echo replies by sequence = %v, want 0..%d in order", seqs, n-1)
			}
		}
	})
}

// TestWriteBatchStopsAtBadOffload: a batch whose third packet carries
// metadata that cannot describe it writes the two before it, reports 2
// and ErrBadOffload, and writes nothing after it, as packet by packet.
func TestWriteBatchStopsAtBadOffload(t *testing.T) {
	batchModes(t, func(t *testing.T, d *offloadFile) {
		bufs := echoBurst(4, 100)
		offs := make([]Offload, 4)
		offs[2] = Offload{GSOType: GSOTCPv4, GSOSize: 1000, HdrLen: 40} // an echo request is no TCP super-packet
		got, err := d.Write(bufs, offs)
		if got != 2 || !errors.Is(err, ErrBadOffload) {
			t.Fatalf("Write(good, good, bad, good) = %d, %v; want 2 and ErrBadOffload", got, err)
		}
		seqs := readEchoReplies(t, d, 2)
		if len(seqs) != 2 || seqs[0] != 100 || seqs[1] != 101 {
			t.Fatalf("echo replies = %v, want [100 101]", seqs)
		}
		// The fourth was not written: one more echo comes back alone.
		if _, err := d.Write(echoBurst(1, 200), nil); err != nil {
			t.Fatal(err)
		}
		if seqs := readEchoReplies(t, d, 1); seqs[0] != 200 {
			t.Fatalf("echo reply after the refused batch = %v, want [200]: the packet after the bad one went out", seqs)
		}
	})
}

// TestWriteBatchLinkDown: with vr0 down the kernel refuses every write
// (EIO); a batch reports 0 written and that error, through io_uring as
// packet by packet.
func TestWriteBatchLinkDown(t *testing.T) {
	batchModes(t, func(t *testing.T, d *offloadFile) {
		if err := setLinkDown("vr0"); err != nil {
			t.Fatal(err)
		}
		got, err := d.Write(echoBurst(3, 0), nil)
		if got != 0 || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Write(3 packets) on a down TUN = %d, %v; want 0, EIO", got, err)
		}
	})
}

// TestReadBatchEmpty: a batched TryRead of an empty queue returns at once
// with nothing, and leaves no read behind: a packet queued afterwards is
// read whole by the next Read, not taken by a read parked earlier.
func TestReadBatchEmpty(t *testing.T) {
	batchModes(t, func(t *testing.T, d *offloadFile) {
		bufs, sizes, offs := readBufs()
		drainTryRead(t, d, bufs, sizes, offs)
		for range 3 {
			start := time.Now()
			if n, err := d.TryRead(bufs, sizes, offs); n != 0 || err != nil {
				t.Fatalf("TryRead of an empty queue = %d, %v; want 0, nil", n, err)
			}
			if el := time.Since(start); el > time.Second {
				t.Fatalf("TryRead of an empty queue took %v", el)
			}
		}
		for i := range bufs {
			clear(bufs[i][:64])
		}
		if _, err := d.Write(echoBurst(1, 7), nil); err != nil {
			t.Fatal(err)
		}
		if seqs := readEchoReplies(t, d, 1); seqs[0] != 7 {
			t.Fatalf("echo reply = %v, want [7]", seqs)
		}
	})
}

// TestTryReadBurst: a poller's TryRead returns the first packet after an
// empty queue alone, and the next one the rest of the burst behind it, in
// order.
func TestTryReadBurst(t *testing.T) {
	batchModes(t, func(t *testing.T, d *offloadFile) {
		bufs, sizes, offs := readBufs()
		drainTryRead(t, d, bufs, sizes, offs)
		// Five echo requests: their replies are queued inside the write.
		if _, err := d.Write(echoBurst(5, 40), nil); err != nil {
			t.Fatal(err)
		}
		var seqs, counts []int
		for range 2 {
			n, err := d.TryRead(bufs, sizes, offs)
			if err != nil {
				t.Fatal(err)
			}
			counts = append(counts, n)
			for i := range n {
				if seq, ok := echoReplySeq(bufs[i][:sizes[i]]); ok {
					seqs = append(seqs, seq)
				}
			}
		}
		if counts[0] != 1 || fmt.Sprint(seqs) != "[40 41 42 43 44]" {
			t.Fatalf("two TryReads after a burst of 5 = %v packets, echo replies %v; want 1 packet first and replies [40 41 42 43 44] from the two", counts, seqs)
		}
	})
}

// setLinkDown sets link name down.
func setLinkDown(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetDown(l)
}

// TestBatchIORefused: where the kernel refuses io_uring
// (kernel.io_uring_disabled=2 here, a seccomp filter in a container), a
// device opens all the same, says why it moves one packet per system
// call, and reads and writes bursts.
func TestBatchIORefused(t *testing.T) {
	inNewNetns(t)
	const knob = "/proc/sys/kernel/io_uring_disabled"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Skipf("no %s: %v", knob, err)
	}
	// Global to the host: other tests that open a device meanwhile get
	// the per-packet path, which they must work with too. Restored at
	// once.
	if err := os.WriteFile(knob, []byte("2"), 0o644); err != nil {
		t.Skipf("cannot refuse io_uring here: %v", err)
	}
	d, openErr := Open(Options{Offload: true})
	if err := os.WriteFile(knob, old, 0o644); err != nil {
		t.Errorf("restore %s to %s: %v", knob, old, err)
	}
	if openErr != nil {
		t.Fatalf("Open with io_uring refused: %v", openErr)
	}
	t.Cleanup(func() { d.Close() })
	on, why := BatchIO(d)
	if on || !errors.Is(why, errNoURing) || !errors.Is(why, syscall.EPERM) {
		t.Fatalf("BatchIO() with io_uring refused = %v, %v; want false, and io_uring_setup's EPERM as the reason", on, why)
	}
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	od := d.(*offloadFile)
	if got, err := od.Write(echoBurst(5, 0), nil); got != 5 || err != nil {
		t.Fatalf("Write(5) = %d, %v", got, err)
	}
	if seqs := readEchoReplies(t, od, 5); len(seqs) != 5 || seqs[4] != 4 {
		t.Fatalf("echo replies = %v, want 0..4", seqs)
	}
}
