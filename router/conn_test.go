package router

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// connFamilies are the loopback addresses the Conn tests run on.
var connFamilies = []struct {
	name string
	addr netip.AddrPort
}{
	{"IPv4", netip.MustParseAddrPort("127.0.0.1:0")},
	{"IPv6", netip.MustParseAddrPort("[::1]:0")},
}

// listenSegmentConn opens an overlay Conn on addr, closed when the test ends.
func listenSegmentConn(t testing.TB, addr netip.AddrPort) *udpConn {
	t.Helper()
	c, err := ListenUDP(addr)
	if err != nil {
		t.Fatalf("ListenUDP(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*udpConn)
}

// listenPlainUDP opens an ordinary UDP socket (no UDP_GRO) on addr, with
// the overlay's buffer size: the default one holds fewer than 100
// datagrams of 1.5 KB, and the tests send more at once.
func listenPlainUDP(t testing.TB, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("listen udp %s: %v", addr, err)
	}
	setSocketBuffers(c)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// segmentPayload returns size bytes in which every datagram of segSize
// bytes is distinct: byte j of datagram i is i*7+j.
func segmentPayload(size, segSize int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i/segSize*7 + i%segSize)
	}
	return b
}

// splitSegments is want cut into datagrams of segSize bytes.
func splitSegments(want []byte, segSize int) [][]byte {
	var out [][]byte
	for len(want) > 0 {
		k := min(segSize, len(want))
		out = append(out, want[:k])
		want = want[k:]
	}
	return out
}

// readDeadline bounds every read, so a lost datagram fails the test
// instead of hanging it.
func readDeadline(t testing.TB, c *net.UDPConn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
}

// Every send path — UDP_SEGMENT, sendmmsg, one write per datagram — puts
// the same datagrams on the wire, as a reader without UDP_GRO sees them.
func TestUDPWriteSegmentsArriveAsDatagrams(t *testing.T) {
	paths := []struct {
		name      string
		gso, mmsg bool
	}{
		{"UDP_SEGMENT", true, true},
		{"sendmmsg", false, true},
		{"one write each", false, false},
	}
	sizes := []struct {
		name          string
		size, segSize int
	}{
		{"40x1400", 40 * 1400, 1400},
		{"short last", 40*1400 - 333, 1400},
		{"one datagram", 900, 1400},
		{"segSize equals len", 1400, 1400},
		{"past 64 segments and 64 KiB", 150 * 1472, 1472},
		{"tiny segments past 64", 200 * 10, 10},
	}
	for _, fam := range connFamilies {
		for _, path := range paths {
			for _, sz := range sizes {
				t.Run(fmt.Sprintf("%s/%s/%s", fam.name, path.name, sz.name), func(t *testing.T) {
					send := listenSegmentConn(t, fam.addr)
					if path.gso && !send.gso.Load() {
						t.Skip("kernel has no UDP_SEGMENT")
					}
					send.gso.Store(path.gso)
					send.mmsg.Store(path.mmsg)
					recv := listenPlainUDP(t, fam.addr)
					to := recv.LocalAddr().(*net.UDPAddr).AddrPort()

					want := segmentPayload(sz.size, sz.segSize)
					if err := send.WriteSegments(want, sz.segSize, to); err != nil {
						t.Fatalf("WriteSegments(%d bytes, %d, %s): %v", len(want), sz.segSize, to, err)
					}
					buf := make([]byte, 65535)
					readDeadline(t, recv)
					for i, d := range splitSegments(want, sz.segSize) {
						n, from, err := recv.ReadFromUDPAddrPort(buf)
						if err != nil {
							t.Fatalf("datagram %d: ReadFrom: %v", i, err)
						}
						if !bytes.Equal(buf[:n], d) {
							t.Fatalf("datagram %d: got %d bytes starting %x, want %d starting %x", i, n, buf[:min(n, 8)], len(d), d[:min(len(d), 8)])
						}
						if from.Port() != send.LocalAddr().Port() {
							t.Fatalf("datagram %d from %s, want port %d", i, from, send.LocalAddr().Port())
						}
					}
					if path.gso != send.gso.Load() {
						t.Errorf("after a send, gso = %v, want %v unchanged", send.gso.Load(), path.gso)
					}
				})
			}
		}
	}
}

// A UDP_SEGMENT send over loopback reaches a UDP_GRO socket as one batch:
// ReadSegments returns every byte and the segment size.
func TestUDPReadSegmentsReturnsBatch(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			send := listenSegmentConn(t, fam.addr)
			recv := listenSegmentConn(t, fam.addr)
			readDeadline(t, recv.c)
			const segSize = 1400
			want := segmentPayload(40*segSize-100, segSize)
			if err := send.WriteSegments(want, segSize, recv.LocalAddr()); err != nil {
				t.Fatalf("WriteSegments: %v", err)
			}
			buf := make([]byte, MaxSegmentsRead)
			var got []byte
			reads := 0
			for len(got) < len(want) {
				n, seg, from, err := recv.ReadSegments(buf)
				if err != nil {
					t.Fatalf("ReadSegments after %d of %d bytes: %v", len(got), len(want), err)
				}
				reads++
				if from != send.LocalAddr() {
					t.Fatalf("ReadSegments from %s, want %s", from, send.LocalAddr())
				}
				if seg != segSize && seg != n {
					t.Fatalf("ReadSegments = n %d, segSize %d; want segSize %d or n", n, seg, segSize)
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("ReadSegments bytes differ from those sent (%d vs %d)", len(got), len(want))
			}
			if send.gso.Load() && reads != 1 {
				t.Errorf("a UDP_SEGMENT send of %d bytes took %d ReadSegments, want 1 batch", len(want), reads)
			}
		})
	}
}

// Datagrams sent one by one come back one per ReadSegments, segSize == n.
func TestUDPReadSegmentsSingleDatagrams(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			send := listenPlainUDP(t, fam.addr)
			recv := listenSegmentConn(t, fam.addr)
			readDeadline(t, recv.c)
			want := [][]byte{[]byte("first"), []byte("second datagram"), {}}
			for _, d := range want {
				if _, err := send.WriteToUDPAddrPort(d, recv.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, MaxSegmentsRead)
			for i, d := range want {
				n, seg, _, err := recv.ReadSegments(buf)
				if err != nil || n != len(d) || seg != n || !bytes.Equal(buf[:n], d) {
					t.Fatalf("ReadSegments #%d = %q, segSize %d, %v; want %q, segSize %d", i, buf[:n], seg, err, d, len(d))
				}
			}
		})
	}
}

// ReadFrom returns a GRO batch one datagram per call, in order, whatever
// the size of its buffer; ReadSegments then picks up what ReadFrom queued.
func TestUDPReadFromSplitsBatch(t *testing.T) {
	const segSize = 1400
	for _, fam := range connFamilies {
		for _, bufSize := range []int{1500, MaxSegmentsRead} {
			t.Run(fmt.Sprintf("%s/buffer %d", fam.name, bufSize), func(t *testing.T) {
				send := listenSegmentConn(t, fam.addr)
				recv := listenSegmentConn(t, fam.addr)
				readDeadline(t, recv.c)
				want := segmentPayload(30*segSize-7, segSize)
				datagrams := splitSegments(want, segSize)
				for range 2 {
					if err := send.WriteSegments(want, segSize, recv.LocalAddr()); err != nil {
						t.Fatalf("WriteSegments: %v", err)
					}
				}
				buf := make([]byte, bufSize)
				// First batch: all by ReadFrom.
				for i, d := range datagrams {
					n, from, err := recv.ReadFrom(buf)
					if err != nil {
						t.Fatalf("ReadFrom #%d: %v", i, err)
					}
					if !bytes.Equal(buf[:n], d) || from != send.LocalAddr() {
						t.Fatalf("ReadFrom #%d = %d bytes from %s, want %d bytes (datagram %d) from %s", i, n, from, len(d), i, send.LocalAddr())
					}
				}
				// Second batch: two by ReadFrom, the rest by ReadSegments.
				for i := range 2 {
					n, _, err := recv.ReadFrom(buf)
					if err != nil || !bytes.Equal(buf[:n], datagrams[i]) {
						t.Fatalf("ReadFrom #%d of second batch = %d bytes, %v; want datagram %d", i, n, err, i)
					}
				}
				big := make([]byte, MaxSegmentsRead)
				var rest []byte
				for len(rest) < len(want)-2*segSize {
					n, seg, from, err := recv.ReadSegments(big)
					if err != nil {
						t.Fatalf("ReadSegments after ReadFrom: %v", err)
					}
					if seg != segSize && seg != n || from != send.LocalAddr() {
						t.Fatalf("ReadSegments after ReadFrom = n %d segSize %d from %s", n, seg, from)
					}
					rest = append(rest, big[:n]...)
				}
				if !bytes.Equal(rest, want[2*segSize:]) {
					t.Fatalf("ReadSegments after ReadFrom returned %d bytes that differ from the %d queued", len(rest), len(want)-2*segSize)
				}
			})
		}
	}
}

// A batch larger than ReadSegments' buffer keeps its whole datagrams only.
func TestUDPReadSegmentsSmallBufferKeepsWholeDatagrams(t *testing.T) {
	send := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	recv := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if !send.gso.Load() {
		t.Skip("kernel has no UDP_SEGMENT")
	}
	readDeadline(t, recv.c)
	const segSize = 1400
	want := segmentPayload(40*segSize, segSize)
	if err := send.WriteSegments(want, segSize, recv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10000)
	n, seg, _, err := recv.ReadSegments(buf)
	if err != nil {
		t.Fatal(err)
	}
	if seg != segSize || n%segSize != 0 || !bytes.Equal(buf[:n], want[:n]) {
		t.Fatalf("ReadSegments(%d-byte buffer) = n %d, segSize %d; want whole %d-byte datagrams", len(buf), n, seg, segSize)
	}
}

// When the kernel refuses UDP_SEGMENT (here: SO_NO_CHECK, which it
// rejects with EINVAL), WriteSegments falls back for good and still
// delivers every datagram.
func TestUDPWriteSegmentsFallsBackWhenKernelRefuses(t *testing.T) {
	send := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if !send.gso.Load() {
		t.Skip("kernel has no UDP_SEGMENT")
	}
	rc, err := send.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
	}); err != nil || serr != nil {
		t.Fatalf("set SO_NO_CHECK: %v %v", err, serr)
	}
	// The kernel really does refuse it.
	var oob [unix.SizeofCmsghdr + 8]byte
	if _, _, err := send.c.WriteMsgUDPAddrPort(make([]byte, 2800), putSegmentSize(oob[:], 1400), send.LocalAddr()); !isGSORefused(err) {
		t.Fatalf("UDP_SEGMENT send with SO_NO_CHECK: %v, want EINVAL", err)
	}

	recv := listenPlainUDP(t, netip.MustParseAddrPort("127.0.0.1:0"))
	to := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	readDeadline(t, recv)
	const segSize = 1200
	want := segmentPayload(100*segSize+5, segSize)
	for range 2 {
		if err := send.WriteSegments(want, segSize, to); err != nil {
			t.Fatalf("WriteSegments with UDP_SEGMENT refused: %v", err)
		}
		if send.gso.Load() {
			t.Fatalf("after a refused UDP_SEGMENT send, gso still on")
		}
		buf := make([]byte, 2000)
		for i, d := range splitSegments(want, segSize) {
			n, _, err := recv.ReadFromUDPAddrPort(buf)
			if err != nil || !bytes.Equal(buf[:n], d) {
				t.Fatalf("datagram %d = %d bytes, %v; want %d bytes", i, n, err, len(d))
			}
		}
	}
}

// WriteSegments from many goroutines at once, while the first refused
// UDP_SEGMENT send switches the Conn to its fallback, delivers every
// datagram whole.
func TestUDPWriteSegmentsConcurrent(t *testing.T) {
	send := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	rc, err := send.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1)
	})
	recv := listenPlainUDP(t, netip.MustParseAddrPort("127.0.0.1:0"))
	to := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	readDeadline(t, recv)
	const writers, segSize, size = 4, 1000, 20*1000 - 1
	errs := make(chan error, writers)
	for g := range writers {
		go func() {
			errs <- send.WriteSegments(bytes.Repeat([]byte{byte(g)}, size), segSize, to)
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent WriteSegments: %v", err)
		}
	}
	got := make(map[byte]int)
	buf := make([]byte, 2000)
	for i := range writers * 20 {
		n, _, err := recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, writers*20, err)
		}
		if n == 0 || !bytes.Equal(buf[:n], bytes.Repeat(buf[:1], n)) || (n != segSize && n != size%segSize) {
			t.Fatalf("datagram %d: %d bytes, mixed or wrong size", i, n)
		}
		got[buf[0]] += n
	}
	for g := range writers {
		if got[byte(g)] != size {
			t.Errorf("writer %d: %d bytes arrived, want %d", g, got[byte(g)], size)
		}
	}
}

func TestUDPWriteSegmentsRefusesBadSegmentSize(t *testing.T) {
	c := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	to := netip.MustParseAddrPort("127.0.0.1:9")
	for _, seg := range []int{0, -1} {
		err := c.WriteSegments([]byte("abc"), seg, to)
		if err == nil {
			t.Fatalf("WriteSegments(3 bytes, %d, %s) = nil, want an error", seg, to)
		}
		if !bytes.Contains([]byte(err.Error()), []byte(to.String())) {
			t.Errorf("WriteSegments error %q does not name %s", err, to)
		}
	}
}

// Close unblocks ReadSegments and ReadFrom with net.ErrClosed, also when
// ReadFrom still has datagrams queued.
func TestUDPCloseUnblocksReads(t *testing.T) {
	reads := map[string]func(c *udpConn) error{
		"ReadSegments": func(c *udpConn) error {
			_, _, _, err := c.ReadSegments(make([]byte, MaxSegmentsRead))
			return err
		},
		"ReadFrom": func(c *udpConn) error {
			_, _, err := c.ReadFrom(make([]byte, 1500))
			return err
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			c := listenSegmentConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
			done := make(chan error, 1)
			go func() { done <- read(c) }()
			time.Sleep(20 * time.Millisecond) // let it block in recvmsg
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("%s after Close = %v, want net.ErrClosed", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s still blocked 5s after Close", name)
			}
			if err := c.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := read(c); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s on a closed Conn = %v, want net.ErrClosed", name, err)
			}
		})
	}
}

// The UDP_SEGMENT control message is the kernel's layout: a cmsghdr for
// SOL_UDP/UDP_SEGMENT with a 2-byte length, then the size.
func TestPutSegmentSizeLayout(t *testing.T) {
	var oob [unix.SizeofCmsghdr + 8]byte
	b := putSegmentSize(oob[:], 1472)
	h, data, rest, err := unix.ParseOneSocketControlMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Level != unix.SOL_UDP || h.Type != unix.UDP_SEGMENT || h.Len != uint64(unix.CmsgLen(2)) || len(rest) != 0 {
		t.Fatalf("cmsg header %+v, rest %d bytes; want SOL_UDP/UDP_SEGMENT len %d", h, len(rest), unix.CmsgLen(2))
	}
	if len(data) < 2 || data[0] != 1472&0xff || data[1] != 1472>>8 {
		t.Fatalf("cmsg data %x, want 1472 little-endian", data)
	}
}

func TestGROSegmentSize(t *testing.T) {
	cmsg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := unix.Cmsghdr{Level: level, Type: typ}
		h.SetLen(unix.CmsgLen(len(data)))
		*(*unix.Cmsghdr)(unsafe.Pointer(&b[0])) = h
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	gro := cmsg(unix.SOL_UDP, unix.UDP_GRO, []byte{0x78, 0x05, 0, 0})
	other := cmsg(unix.SOL_IP, unix.IP_TOS, []byte{1, 0, 0, 0})
	tests := []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"UDP_GRO", gro, 1400},
		{"after another", append(append([]byte{}, other...), gro...), 1400},
		{"other only", other, 0},
		{"truncated", gro[:unix.CmsgLen(0)+2], 0},
		{"garbage", []byte{1, 2, 3}, 0},
	}
	for _, tt := range tests {
		if got := groSegmentSize(tt.oob); got != tt.want {
			t.Errorf("groSegmentSize(%s) = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// BenchmarkWriteSegments sends 44 datagrams of 1472 bytes over loopback
// per op with one WriteSegments (UDP_SEGMENT), against sendmmsg and against
// one WriteTo per datagram. A reader drains the socket so the sender never
// blocks on a full buffer.
func BenchmarkWriteSegments(b *testing.B) {
	const segSize, count = 1472, 44
	payload := segmentPayload(segSize*count, segSize)
	run := func(b *testing.B, send func(c *udpConn, to netip.AddrPort) error, configure func(c *udpConn)) {
		c := listenSegmentConn(b, netip.MustParseAddrPort("127.0.0.1:0"))
		configure(c)
		recv := listenSegmentConn(b, netip.MustParseAddrPort("127.0.0.1:0"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, MaxSegmentsRead)
			for {
				if _, _, _, err := recv.ReadSegments(buf); err != nil {
					return
				}
			}
		}()
		b.Cleanup(func() { _ = recv.Close(); <-done })
		to := recv.LocalAddr()
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if err := send(c, to); err != nil {
				b.Fatal(err)
			}
		}
	}
	segments := func(c *udpConn, to netip.AddrPort) error { return c.WriteSegments(payload, segSize, to) }
	b.Run("UDP_SEGMENT", func(b *testing.B) {
		run(b, segments, func(c *udpConn) {
			if !c.gso.Load() {
				b.Skip("kernel has no UDP_SEGMENT")
			}
		})
	})
	b.Run("sendmmsg", func(b *testing.B) {
		run(b, segments, func(c *udpConn) { c.gso.Store(false) })
	})
	b.Run("WriteTo", func(b *testing.B) {
		run(b, func(c *udpConn, to netip.AddrPort) error {
			for p := payload; len(p) > 0; p = p[segSize:] {
				if err := c.WriteTo(p[:segSize], to); err != nil {
					return err
				}
			}
			return nil
		}, func(*udpConn) {})
	})
}
