package router

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenUDPConn opens an overlay Conn on addr, closed when the test ends.
func listenUDPConn(t testing.TB, addr netip.AddrPort) *udpConn {
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

// sendPath is one of the Conn's ways to send: UDP_SEGMENT, sendmmsg of
// single datagrams, one write per datagram.
type sendPath struct {
	name      string
	gso, mmsg bool
}

var sendPaths = []sendPath{
	{"UDP_SEGMENT", true, true},
	{"sendmmsg", false, true},
	{"one write each", false, false},
}

// sendPair opens a Conn on addr set to send by path (skipping the test
// where the kernel lacks UDP_SEGMENT) and a plain socket to receive, and
// returns the latter's address.
func sendPair(t *testing.T, addr netip.AddrPort, path sendPath) (*udpConn, *net.UDPConn, netip.AddrPort) {
	t.Helper()
	send := listenUDPConn(t, addr)
	if path.gso && !send.gso.Load() {
		t.Skip("kernel has no UDP_SEGMENT")
	}
	send.gso.Store(path.gso)
	send.mmsg.Store(path.mmsg)
	recv := listenPlainUDP(t, addr)
	return send, recv, recv.LocalAddr().(*net.UDPAddr).AddrPort()
}

// expectDatagrams reads len(want) datagrams from recv and fails the test
// unless they are want, in order, each from port.
func expectDatagrams(t *testing.T, recv *net.UDPConn, want [][]byte, port uint16) {
	t.Helper()
	buf := make([]byte, 65535)
	readDeadline(t, recv)
	for i, d := range want {
		n, from, err := recv.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d: ReadFrom: %v", i, err)
		}
		if !bytes.Equal(buf[:n], d) {
			t.Fatalf("datagram %d: got %d bytes starting %x, want %d starting %x", i, n, buf[:min(n, 8)], len(d), d[:min(len(d), 8)])
		}
		if from.Port() != port {
			t.Fatalf("datagram %d from %s, want port %d", i, from, port)
		}
	}
}

// Every send path — UDP_SEGMENT, sendmmsg, one write per datagram — puts
// the same datagrams on the wire, as a reader without UDP_GRO sees them.
func TestUDPWriteBatchArriveAsDatagrams(t *testing.T) {
	paths := sendPaths
	// sendmmsgs is how many system calls the UDP_SEGMENT path makes: one
	// per maxGSOMessages chunks of at most 64 datagrams and 65507 bytes.
	sizes := []struct {
		name          string
		size, segSize int
		sendmmsgs     uint64
		// single: one datagram, which writeOne sends with a raw sendmmsg
		// whatever the UDP_SEGMENT setting (no UDP_SEGMENT needed).
		single bool
	}{
		{"40x1400", 40 * 1400, 1400, 1, false},
		{"short last", 40*1400 - 333, 1400, 1, false},
		{"one datagram", 900, 1400, 1, true},
		{"segSize equals len", 1400, 1400, 1, true},
		{"64 KiB TSO packet, 44+2", 46 * 1472, 1472, 1, false},
		{"one datagram past a chunk", 44*1472 + 5, 1472, 1, false},
		{"past 64 segments and 64 KiB", 150 * 1472, 1472, 1, false},
		{"tiny segments past 64", 200 * 10, 10, 1, false},
		{"more chunks than one sendmmsg", (maxGSOMessages*44+3)*1472 - 9, 1472, 2, false},
	}
	for _, fam := range connFamilies {
		for _, path := range paths {
			for _, sz := range sizes {
				t.Run(fmt.Sprintf("%s/%s/%s", fam.name, path.name, sz.name), func(t *testing.T) {
					send, recv, to := sendPair(t, fam.addr, path)
					want := segmentPayload(sz.size, sz.segSize)
					if err := send.WriteBatch(want, sz.segSize, to); err != nil {
						t.Fatalf("WriteBatch(%d bytes, %d, %s): %v", len(want), sz.segSize, to, err)
					}
					expectDatagrams(t, recv, splitSegments(want, sz.segSize), send.LocalAddr().Port())
					if path.gso != send.gso.Load() {
						t.Errorf("after a send, gso = %v, want %v unchanged", send.gso.Load(), path.gso)
					}
					wantCalls := sz.sendmmsgs
					if !path.gso && !(sz.single && path.mmsg) {
						wantCalls = 0
					}
					if got := send.gsoCalls.Load(); got != wantCalls {
						t.Errorf("WriteBatch(%d bytes, %d) made %d UDP_SEGMENT sendmmsg calls, want %d", len(want), sz.segSize, got, wantCalls)
					}
				})
			}
		}
	}
}

// A UDP_SEGMENT send over loopback reaches a UDP_GRO socket as batches,
// one per UDP_SEGMENT chunk: ReadBatch returns every byte in order and
// the segment size.
func TestUDPReadBatchReturnsBatch(t *testing.T) {
	sizes := []struct {
		name          string
		size, segSize int
		chunks        int
	}{
		{"40x1400 short last", 40*1400 - 100, 1400, 1},
		{"64 KiB TSO packet, 44+2", 46 * 1472, 1472, 2},
		{"150x1472", 150 * 1472, 1472, 4},
	}
	for _, fam := range connFamilies {
		for _, sz := range sizes {
			t.Run(fam.name+"/"+sz.name, func(t *testing.T) {
				send := listenUDPConn(t, fam.addr)
				recv := listenUDPConn(t, fam.addr)
				readDeadline(t, recv.c)
				want := segmentPayload(sz.size, sz.segSize)
				if err := send.WriteBatch(want, sz.segSize, recv.LocalAddr()); err != nil {
					t.Fatalf("WriteBatch(%d bytes, %d): %v", len(want), sz.segSize, err)
				}
				buf := make([]byte, MaxSegmentsRead)
				var got []byte
				reads := 0
				for len(got) < len(want) {
					n, seg, from, err := readRun(recv, buf)
					if err != nil {
						t.Fatalf("ReadBatch after %d of %d bytes: %v", len(got), len(want), err)
					}
					reads++
					if from != send.LocalAddr() {
						t.Fatalf("ReadBatch from %s, want %s", from, send.LocalAddr())
					}
					if seg != sz.segSize && seg != n {
						t.Fatalf("ReadBatch = n %d, segSize %d; want segSize %d or n", n, seg, sz.segSize)
					}
					got = append(got, buf[:n]...)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("ReadBatch bytes differ from those sent (%d vs %d)", len(got), len(want))
				}
				if !send.gso.Load() {
					return
				}
				if reads > sz.chunks {
					t.Errorf("a UDP_SEGMENT send of %d bytes took %d ReadBatch, want at most %d batches", len(want), reads, sz.chunks)
				}
				if calls := send.gsoCalls.Load(); calls != 1 {
					t.Errorf("WriteBatch(%d bytes, %d) made %d sendmmsg calls, want 1", len(want), sz.segSize, calls)
				}
			})
		}
	}
}

// Destinations the UDP_SEGMENT sendmmsg cannot name itself go through Go's
// sendmsg, which resolves a zone or refuses the address.
func TestUDPWriteBatchAddressForms(t *testing.T) {
	const segSize = 1000
	want := segmentPayload(70*segSize+1, segSize)

	t.Run("IPv6 with a zone", func(t *testing.T) {
		send := listenUDPConn(t, netip.MustParseAddrPort("[::1]:0"))
		recv := listenPlainUDP(t, netip.MustParseAddrPort("[::1]:0"))
		readDeadline(t, recv)
		lo, err := net.InterfaceByIndex(1)
		if err != nil {
			t.Skipf("no loopback interface: %v", err)
		}
		port := recv.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		to := netip.AddrPortFrom(netip.MustParseAddr("::1").WithZone(lo.Name), port)
		if err := send.WriteBatch(want, segSize, to); err != nil {
			t.Fatalf("WriteBatch(%d bytes, %d, %s): %v", len(want), segSize, to, err)
		}
		buf := make([]byte, 2000)
		for i, d := range splitSegments(want, segSize) {
			n, _, err := recv.ReadFromUDPAddrPort(buf)
			if err != nil || !bytes.Equal(buf[:n], d) {
				t.Fatalf("datagram %d = %d bytes, %v; want %d bytes", i, n, err, len(d))
			}
		}
		if calls := send.gsoCalls.Load(); calls != 0 {
			t.Errorf("WriteBatch to %s made %d sendmmsg calls, want 0 (Go's sendmsg)", to, calls)
		}
	})

	t.Run("IPv6 from an IPv4 socket", func(t *testing.T) {
		send := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
		if !send.gso.Load() {
			t.Skip("kernel has no UDP_SEGMENT")
		}
		to := netip.MustParseAddrPort("[2001:db8::1]:9")
		if err := send.WriteBatch(want, segSize, to); err == nil {
			t.Fatalf("WriteBatch(%d bytes, %d, %s) from %s = nil, want an error", len(want), segSize, to, send.LocalAddr())
		}
	})
}

// putSockaddr lays out the kernel's sockaddr_in and sockaddr_in6.
func TestUDPSockaddrLayout(t *testing.T) {
	asBytes := func(p unsafe.Pointer, n uintptr) []byte { return unsafe.Slice((*byte)(p), n) }
	// The port in network order, as the kernel reads a native uint16.
	port := func(p uint16) uint16 {
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], p)
		return binary.NativeEndian.Uint16(b[:])
	}
	in4 := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port(4789), Addr: [4]byte{10, 1, 2, 3}}
	in6 := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(4789), Addr: netip.MustParseAddr("fd00::1").As16()}
	mapped := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(4789), Addr: netip.MustParseAddr("::ffff:10.1.2.3").As16()}
	tests := []struct {
		name string
		is6  bool
		addr string
		want []byte // nil: putSockaddr refuses
	}{
		{"IPv4", false, "10.1.2.3:4789", asBytes(unsafe.Pointer(&in4), unsafe.Sizeof(in4))},
		{"mapped IPv4 on IPv4", false, "[::ffff:10.1.2.3]:4789", asBytes(unsafe.Pointer(&in4), unsafe.Sizeof(in4))},
		{"IPv6", true, "[fd00::1]:4789", asBytes(unsafe.Pointer(&in6), unsafe.Sizeof(in6))},
		{"IPv4 on IPv6", true, "10.1.2.3:4789", asBytes(unsafe.Pointer(&mapped), unsafe.Sizeof(mapped))},
		{"IPv6 on IPv4", false, "[fd00::1]:4789", nil},
		{"zone", true, "[fe80::1%eth0]:4789", nil},
	}
	for _, tt := range tests {
		var sa [unix.SizeofSockaddrInet6]byte
		n := putSockaddr(&sa, tt.is6, netip.MustParseAddrPort(tt.addr))
		if tt.want == nil {
			if n != 0 {
				t.Errorf("putSockaddr(%s, is6 %v) = %d bytes, want 0 (refused)", tt.addr, tt.is6, n)
			}
			continue
		}
		if !bytes.Equal(sa[:n], tt.want) {
			t.Errorf("putSockaddr(%s, is6 %v) = %x, want %x", tt.addr, tt.is6, sa[:n], tt.want)
		}
	}
	if putSockaddr(new([unix.SizeofSockaddrInet6]byte), true, netip.AddrPort{}) != 0 {
		t.Errorf("putSockaddr(invalid address) != 0, want refused")
	}
	// struct mmsghdr is a msghdr and an unsigned int, padded to 8 bytes.
	if want := (unsafe.Sizeof(unix.Msghdr{}) + 4 + 7) &^ 7; unsafe.Sizeof(uintptr(0)) == 8 && unsafe.Sizeof(mmsghdr{}) != want {
		t.Errorf("sizeof(mmsghdr) = %d, want %d", unsafe.Sizeof(mmsghdr{}), want)
	}
}

// The UDP_SEGMENT path's sendmmsg resumes after a partial send and waits
// in Go's poller on EAGAIN. A UDP socket on loopback never fills, so this
// drives mmsgSend.sendmmsg on a unix datagram socket pair with a small send
// buffer, which takes a few messages per call and then refuses with EAGAIN
// until the reader drains it.
func TestUDPSendmmsgResumesPartialSends(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // dups fd and sets it non-blocking
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns[i] = c
	}
	send, recv := conns[0].(*net.UnixConn), conns[1].(*net.UnixConn)
	rc, err := send.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	const size = 3000 // a few per send buffer
	want := segmentPayload(maxGSOMessages*size, size)
	mb := gsoBatches.Get().(*gsoBatch)
	defer gsoBatches.Put(mb)
	for i := range maxGSOMessages {
		mb.iovs[i].Base = &want[i*size]
		mb.iovs[i].SetLen(size)
		mb.msgs[i].hdr = unix.Msghdr{Iov: &mb.iovs[i]}
		mb.msgs[i].hdr.SetIovlen(1)
	}
	mb.start(mb.msgs[:])

	got := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 2*size)
		_ = recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		time.Sleep(50 * time.Millisecond) // let the sender fill its buffer and wait
		for range maxGSOMessages {
			n, err := recv.Read(buf)
			if err != nil {
				break
			}
			all = append(all, buf[:n]...)
		}
		got <- all
	}()
	if err := rc.Write(mb.send); err != nil || mb.err != nil {
		t.Fatalf("RawConn.Write(sendmmsg of %d messages) = %v, %v", len(mb.msgs), err, mb.err)
	}
	if mb.sent != maxGSOMessages {
		t.Fatalf("sendmmsg sent %d messages, want %d", mb.sent, maxGSOMessages)
	}
	if all := <-got; !bytes.Equal(all, want) {
		t.Fatalf("reader got %d bytes, differing from the %d sent", len(all), len(want))
	}
	// At least: a partial send, an EAGAIN, then the rest.
	if mb.calls < 3 {
		t.Errorf("sendmmsg of %d messages into a %d-byte buffer took %d calls, want a partial send and EAGAIN (3 or more)", maxGSOMessages, 4096, mb.calls)
	}
	clear(mb.iovs[:])
}

// Datagrams sent one by one come back one per ReadBatch, segSize == n.
func TestUDPReadBatchSingleDatagrams(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			send := listenPlainUDP(t, fam.addr)
			recv := listenUDPConn(t, fam.addr)
			readDeadline(t, recv.c)
			want := [][]byte{[]byte("first"), []byte("second datagram"), {}}
			for _, d := range want {
				if _, err := send.WriteToUDPAddrPort(d, recv.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, MaxSegmentsRead)
			for i, d := range want {
				n, seg, _, err := readRun(recv, buf)
				if err != nil || n != len(d) || seg != n || !bytes.Equal(buf[:n], d) {
					t.Fatalf("ReadBatch #%d = %q, segSize %d, %v; want %q, segSize %d", i, buf[:n], seg, err, d, len(d))
				}
			}
		})
	}
}

// A batch larger than ReadBatch' buffer keeps its whole datagrams only.
func TestUDPReadBatchSmallBufferKeepsWholeDatagrams(t *testing.T) {
	send := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	recv := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if !send.gso.Load() {
		t.Skip("kernel has no UDP_SEGMENT")
	}
	readDeadline(t, recv.c)
	const segSize = 1400
	want := segmentPayload(40*segSize, segSize)
	if err := send.WriteBatch(want, segSize, recv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10000)
	n, seg, _, err := readRun(recv, buf)
	if err != nil {
		t.Fatal(err)
	}
	if seg != segSize || n%segSize != 0 || !bytes.Equal(buf[:n], want[:n]) {
		t.Fatalf("ReadBatch(%d-byte buffer) = n %d, segSize %d; want whole %d-byte datagrams", len(buf), n, seg, segSize)
	}
}

// When the kernel refuses UDP_SEGMENT (here: SO_NO_CHECK, which it
// rejects with EINVAL), WriteBatch falls back for good and still
// delivers every datagram.
func TestUDPWriteBatchFallsBackWhenKernelRefuses(t *testing.T) {
	send := listenGSORefused(t)
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
		if err := send.WriteBatch(want, segSize, to); err != nil {
			t.Fatalf("WriteBatch with UDP_SEGMENT refused: %v", err)
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

// WriteBatch from many goroutines at once, while the first refused
// UDP_SEGMENT send switches the Conn to its fallback, delivers every
// datagram whole.
func TestUDPWriteBatchConcurrent(t *testing.T) {
	send := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
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
			errs <- send.WriteBatch(bytes.Repeat([]byte{byte(g)}, size), segSize, to)
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent WriteBatch: %v", err)
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

func TestUDPWriteBatchRefusesBadSegmentSize(t *testing.T) {
	c := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	to := netip.MustParseAddrPort("127.0.0.1:9")
	for _, seg := range []int{0, -1} {
		err := c.WriteBatch([]byte("abc"), seg, to)
		if err == nil {
			t.Fatalf("WriteBatch(3 bytes, %d, %s) = nil, want an error", seg, to)
		}
		if !bytes.Contains([]byte(err.Error()), []byte(to.String())) {
			t.Errorf("WriteBatch error %q does not name %s", err, to)
		}
	}
}

// Close unblocks a pending ReadBatch with net.ErrClosed, and later reads
// fail alike.
func TestUDPCloseUnblocksReads(t *testing.T) {
	reads := map[string]func(c *udpConn) error{
		"ReadBatch": func(c *udpConn) error {
			_, err := makeBatch(2, MaxSegmentsRead).read(c)
			return err
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			c := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
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

// batch is ReadBatch's arguments: its messages' buffers and what it
// reports of each.
type batch struct {
	bufs            [][]byte
	sizes, segSizes []int
	from            []netip.AddrPort
}

// makeBatch returns k messages for ReadBatch, each with a size-byte buffer.
func makeBatch(k, size int) *batch {
	b := &batch{sizes: make([]int, k), segSizes: make([]int, k), from: make([]netip.AddrPort, k)}
	for range k {
		b.bufs = append(b.bufs, make([]byte, size))
	}
	return b
}

func (b *batch) read(c Conn) (int, error) { return c.ReadBatch(b.bufs, b.sizes, b.segSizes, b.from) }

// wantMessage is one message ReadBatch should return.
type wantMessage struct {
	data    []byte
	segSize int
	from    netip.AddrPort
}

// checkBatch fails the test unless ReadBatch's first n messages are want.
func checkBatch(t *testing.T, b *batch, n int, want []wantMessage) {
	t.Helper()
	if n != len(want) {
		t.Errorf("ReadBatch(%d messages) = %d, want %d", len(b.bufs), n, len(want))
	}
	for i := range min(n, len(want)) {
		w := want[i]
		if b.sizes[i] != len(w.data) || b.segSizes[i] != w.segSize || b.from[i] != w.from {
			t.Errorf("ReadBatch message %d = size %d, segSize %d, from %s; want size %d, segSize %d, from %s", i, b.sizes[i], b.segSizes[i], b.from[i], len(w.data), w.segSize, w.from)
			continue
		}
		if !bytes.Equal(b.bufs[i][:b.sizes[i]], w.data) {
			t.Errorf("ReadBatch message %d: %d bytes differ from those sent", i, b.sizes[i])
		}
	}
}

// A TCP super-packet at a 1472-byte tunnel MTU leaves a peer as one
// sendmmsg of two UDP_SEGMENT messages (44 and 2 datagrams) and arrives as
// two GRO batches, which one ReadBatch returns as two messages.
func TestUDPReadBatchTakesSuperPacketWhole(t *testing.T) {
	const segSize = 1472
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			send := listenUDPConn(t, fam.addr)
			if !send.gso.Load() {
				t.Skip("kernel has no UDP_SEGMENT")
			}
			recv := listenUDPConn(t, fam.addr)
			readDeadline(t, recv.c)
			want := segmentPayload(46*segSize, segSize)
			if err := send.WriteBatch(want, segSize, recv.LocalAddr()); err != nil {
				t.Fatalf("WriteBatch(%d bytes, %d): %v", len(want), segSize, err)
			}
			if calls := send.gsoCalls.Load(); calls != 1 {
				t.Fatalf("WriteBatch(%d bytes, %d) made %d sendmmsg calls, want 1", len(want), segSize, calls)
			}
			msgs := makeBatch(MaxReadBatch, MaxSegmentsRead)
			n, err := msgs.read(recv)
			if err != nil {
				t.Fatalf("ReadBatch: %v", err)
			}
			from := send.LocalAddr()
			checkBatch(t, msgs, n, []wantMessage{
				{want[:44*segSize], segSize, from},
				{want[44*segSize:], segSize, from},
			})
		})
	}
}

// Messages from several senders, GRO batches and single datagrams of any
// size, come back in the order they arrived, each with its own sender and
// segment size.
func TestUDPReadBatchMixedSenders(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			gsoA := listenUDPConn(t, fam.addr)
			if !gsoA.gso.Load() {
				t.Skip("kernel has no UDP_SEGMENT")
			}
			gsoC := listenUDPConn(t, fam.addr)
			plainB := listenPlainUDP(t, fam.addr)
			recv := listenUDPConn(t, fam.addr)
			to := recv.LocalAddr()
			readDeadline(t, recv.c)

			a := segmentPayload(46*1472, 1472)
			b := [][]byte{[]byte("x"), segmentPayload(1000, 1000), {}}
			c := segmentPayload(10*1000-1, 1000)
			if err := gsoA.WriteBatch(a, 1472, to); err != nil {
				t.Fatalf("WriteBatch from A: %v", err)
			}
			for _, d := range b {
				if _, err := plainB.WriteToUDPAddrPort(d, to); err != nil {
					t.Fatalf("WriteTo from B: %v", err)
				}
			}
			if err := gsoC.WriteBatch(c, 1000, to); err != nil {
				t.Fatalf("WriteBatch from C: %v", err)
			}

			fromA, fromC := gsoA.LocalAddr(), gsoC.LocalAddr()
			fromB := plainB.LocalAddr().(*net.UDPAddr).AddrPort()
			fromB = netip.AddrPortFrom(fromB.Addr().Unmap(), fromB.Port())
			msgs := makeBatch(MaxReadBatch, MaxSegmentsRead)
			n, err := msgs.read(recv)
			if err != nil {
				t.Fatalf("ReadBatch: %v", err)
			}
			checkBatch(t, msgs, n, []wantMessage{
				{a[:44*1472], 1472, fromA},
				{a[44*1472:], 1472, fromA},
				{b[0], 1, fromB},
				{b[1], 1000, fromB},
				{b[2], 0, fromB},
				{c, 1000, fromC},
			})
		})
	}
}

// ReadBatch fills at most MaxReadBatch messages and leaves the rest of
// msgs alone; the next call takes what is left.
func TestUDPReadBatchMoreThanMaxReadBatch(t *testing.T) {
	send := listenPlainUDP(t, netip.MustParseAddrPort("127.0.0.1:0"))
	recv := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	readDeadline(t, recv.c)
	from := send.LocalAddr().(*net.UDPAddr).AddrPort()
	var want []wantMessage
	for i := range MaxReadBatch + 3 {
		d := bytes.Repeat([]byte{byte(i)}, 100+i) // sizes differ: no GRO
		if _, err := send.WriteToUDPAddrPort(d, recv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		want = append(want, wantMessage{d, len(d), from})
	}
	msgs := makeBatch(MaxReadBatch+2, 2000)
	n, err := msgs.read(recv)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	checkBatch(t, msgs, n, want[:MaxReadBatch])
	for i := MaxReadBatch; i < len(msgs.bufs); i++ {
		if msgs.sizes[i] != 0 || msgs.segSizes[i] != 0 || msgs.from[i].IsValid() {
			t.Errorf("ReadBatch(%d messages) set message %d past MaxReadBatch: size %d, segSize %d, from %s", len(msgs.bufs), i, msgs.sizes[i], msgs.segSizes[i], msgs.from[i])
		}
	}
	n, err = msgs.read(recv)
	if err != nil {
		t.Fatalf("second ReadBatch: %v", err)
	}
	checkBatch(t, msgs, n, want[MaxReadBatch:])
}

// A message larger than its buffer keeps its whole datagrams only, or is
// truncated if a single datagram.
func TestUDPReadBatchSmallBuffers(t *testing.T) {
	send := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if !send.gso.Load() {
		t.Skip("kernel has no UDP_SEGMENT")
	}
	recv := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	readDeadline(t, recv.c)
	const segSize = 1400
	batch := segmentPayload(40*segSize, segSize)
	if err := send.WriteBatch(batch, segSize, recv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	single := segmentPayload(3000, 3000)
	if err := writeTo(send, single, recv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	msgs := makeBatch(2, 10000)
	msgs.bufs[1] = msgs.bufs[1][:1000]
	n, err := msgs.read(recv)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	from := send.LocalAddr()
	checkBatch(t, msgs, n, []wantMessage{
		{batch[:7*segSize], segSize, from},
		{single[:1000], 1000, from},
	})
}

// ReadBatch honours the read deadline with a timeout error, which the
// read loop retries, and reads nothing when given no messages.
func TestUDPReadBatchDeadline(t *testing.T) {
	c := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	if n, err := c.ReadBatch(nil, nil, nil, nil); n != 0 || err != nil {
		t.Fatalf("ReadBatch(nil) = %d, %v; want 0, nil", n, err)
	}
	if err := c.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := makeBatch(1, 1500).read(c)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadBatch past its deadline = %v, want a timeout", err)
	}
}

// A ReadBatch allocates nothing.
func TestUDPReadBatchAllocs(t *testing.T) {
	send := listenPlainUDP(t, netip.MustParseAddrPort("127.0.0.1:0"))
	recv := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
	readDeadline(t, recv.c)
	const runs = 50
	for range runs + 1 { // AllocsPerRun warms up with one more
		if _, err := send.WriteToUDPAddrPort([]byte("datagram"), recv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	msgs := makeBatch(1, MaxSegmentsRead)
	var err error
	allocs := testing.AllocsPerRun(runs, func() {
		if _, e := msgs.read(recv); e != nil {
			err = e
		}
	})
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	if allocs != 0 {
		t.Errorf("ReadBatch allocated %v times per call, want 0", allocs)
	}
}

// sockaddr decodes the kernel's sockaddr_in and sockaddr_in6: IPv4-mapped
// senders unmapped, an IPv6 scope ID named as Go's net names it.
func TestUDPReadBatchSockaddr(t *testing.T) {
	asBytes := func(p unsafe.Pointer, n uintptr) []byte { return unsafe.Slice((*byte)(p), n) }
	port := func(p uint16) uint16 {
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], p)
		return binary.NativeEndian.Uint16(b[:])
	}
	lo, err := net.InterfaceByIndex(1)
	if err != nil {
		t.Skipf("no interface 1: %v", err)
	}
	in4 := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port(4789), Addr: [4]byte{10, 1, 2, 3}}
	in6 := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(4789), Addr: netip.MustParseAddr("fd00::1").As16()}
	mapped := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(4789), Addr: netip.MustParseAddr("::ffff:10.1.2.3").As16()}
	zoned := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(4789), Addr: netip.MustParseAddr("fe80::1").As16(), Scope_id: 1}
	unknown := unix.RawSockaddrInet6{Family: unix.AF_UNIX}
	tests := []struct {
		name string
		sa   []byte
		want netip.AddrPort
	}{
		{"IPv4", asBytes(unsafe.Pointer(&in4), unsafe.Sizeof(in4)), netip.MustParseAddrPort("10.1.2.3:4789")},
		{"IPv6", asBytes(unsafe.Pointer(&in6), unsafe.Sizeof(in6)), netip.MustParseAddrPort("[fd00::1]:4789")},
		{"IPv4-mapped", asBytes(unsafe.Pointer(&mapped), unsafe.Sizeof(mapped)), netip.MustParseAddrPort("10.1.2.3:4789")},
		{"scope ID", asBytes(unsafe.Pointer(&zoned), unsafe.Sizeof(zoned)), netip.MustParseAddrPort("[fe80::1%" + lo.Name + "]:4789")},
		{"short IPv6", asBytes(unsafe.Pointer(&in6), unsafe.Sizeof(in4)), netip.AddrPort{}},
		{"other family", asBytes(unsafe.Pointer(&unknown), unsafe.Sizeof(unknown)), netip.AddrPort{}},
		{"empty", nil, netip.AddrPort{}},
	}
	var r recvBatch
	for _, tt := range tests {
		if got := r.sockaddr(tt.sa); got != tt.want {
			t.Errorf("sockaddr(%s) = %s, want %s", tt.name, got, tt.want)
		}
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

// BenchmarkWriteBatch sends count datagrams of 1472 bytes over loopback
// per op with one WriteBatch (UDP_SEGMENT), against one WriteBatch
// per UDP_SEGMENT chunk, sendmmsg without UDP_SEGMENT and one WriteTo per
// datagram. 44 datagrams fill one UDP_SEGMENT send; 46 are
// a 64 KiB TSO packet at a tunnel MTU of 1472, two UDP_SEGMENT chunks. A
// reader drains the socket so the sender never blocks on a full buffer.
func BenchmarkWriteBatch(b *testing.B) {
	const segSize = 1472
	run := func(b *testing.B, payload []byte, send func(c *udpConn, p []byte, to netip.AddrPort) error, configure func(c *udpConn)) {
		c := listenUDPConn(b, netip.MustParseAddrPort("127.0.0.1:0"))
		configure(c)
		recv := listenUDPConn(b, netip.MustParseAddrPort("127.0.0.1:0"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, MaxSegmentsRead)
			for {
				if _, _, _, err := readRun(recv, buf); err != nil {
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
			if err := send(c, payload, to); err != nil {
				b.Fatal(err)
			}
		}
		if calls := c.gsoCalls.Load(); calls > 0 {
			b.ReportMetric(float64(calls)/float64(b.N), "sendmmsg/op")
		}
	}
	segments := func(c *udpConn, p []byte, to netip.AddrPort) error { return c.WriteBatch(p, segSize, to) }
	writeEach := func(c *udpConn, p []byte, to netip.AddrPort) error {
		for ; len(p) > 0; p = p[segSize:] {
			if err := writeTo(c, p[:segSize], to); err != nil {
				return err
			}
		}
		return nil
	}
	for _, count := range []int{44, 46} {
		payload := segmentPayload(segSize*count, segSize)
		b.Run(fmt.Sprintf("%d/UDP_SEGMENT", count), func(b *testing.B) {
			run(b, payload, segments, func(c *udpConn) {
				if !c.gso.Load() {
					b.Skip("kernel has no UDP_SEGMENT")
				}
			})
		})
		// The baseline for UDP_SEGMENT: one system call per chunk, as
		// before chunks shared a sendmmsg.
		b.Run(fmt.Sprintf("%d/UDP_SEGMENT per chunk", count), func(b *testing.B) {
			run(b, payload, func(c *udpConn, p []byte, to netip.AddrPort) error {
				for ; len(p) > 0; p = p[min(44*segSize, len(p)):] {
					if err := c.WriteBatch(p[:min(44*segSize, len(p))], segSize, to); err != nil {
						return err
					}
				}
				return nil
			}, func(c *udpConn) {
				if !c.gso.Load() {
					b.Skip("kernel has no UDP_SEGMENT")
				}
			})
		})
		b.Run(fmt.Sprintf("%d/sendmmsg", count), func(b *testing.B) {
			run(b, payload, segments, func(c *udpConn) { c.gso.Store(false) })
		})
		b.Run(fmt.Sprintf("%d/WriteTo", count), func(b *testing.B) {
			run(b, payload, writeEach, func(*udpConn) {})
		})
	}
}

// WriteDatagrams puts each buffer on the wire as one datagram, in order,
// on every send path: runs of one size (the last shorter) as UDP_SEGMENT
// messages pointing at the buffers, runs cut at 64 datagrams and 64 KiB,
// a larger datagram starting a new run.
func TestUDPWriteDatagrams(t *testing.T) {
	var lens []int
	for range 40 {
		lens = append(lens, 1436) // a TCP super-packet's sealed segments
	}
	lens = append(lens, 300, 1436, 1436, 32) // a short one ends a run; a keepalive
	lens = append(lens, 1436, 1436, 0, 1436) // an empty datagram, its own message
	for range 70 {
		lens = append(lens, 48) // more than 64 of one size
	}
	lens = append(lens, 1500, 60000, 9000, 9000) // larger than the run before; past 64 KiB together
	for range 3 * maxVecMessages {
		lens = append(lens, 100+len(lens)%7) // more messages than one sendmmsg
	}
	bufs := make([][]byte, len(lens))
	for i, l := range lens {
		bufs[i] = make([]byte, l)
		for j := range bufs[i] {
			bufs[i][j] = byte(i*13 + j)
		}
	}
	for _, fam := range connFamilies {
		for _, path := range sendPaths {
			t.Run(fam.name+"/"+path.name, func(t *testing.T) {
				send, recv, to := sendPair(t, fam.addr, path)
				if err := send.WriteDatagrams(bufs, to); err != nil {
					t.Fatalf("WriteDatagrams(%d datagrams): %v", len(bufs), err)
				}
				expectDatagrams(t, recv, bufs, send.LocalAddr().Port())
				calls := send.gsoCalls.Load()
				switch {
				case path.gso && (calls < 2 || calls > 8):
					// Runs of 41, 3, 64, 6, 1, 1 and 2, then the 192
					// mixed sizes in runs of one or two: about 160
					// messages, 3 sendmmsg calls of up to 64.
					t.Errorf("UDP_SEGMENT path made %d sendmmsg calls for %d datagrams, want a few", calls, len(bufs))
				case !path.gso && calls != 0:
					t.Errorf("without UDP_SEGMENT, %d UDP_SEGMENT calls counted", calls)
				}
			})
		}
	}
}

// listenGSORefused opens a Conn on loopback whose kernel knows
// UDP_SEGMENT but refuses it on this socket (SO_NO_CHECK), as a route
// whose device cannot checksum does.
func listenGSORefused(t *testing.T) *udpConn {
	t.Helper()
	send := listenUDPConn(t, netip.MustParseAddrPort("127.0.0.1:0"))
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
	return send
}

// A socket that refuses UDP_SEGMENT (SO_NO_CHECK) gets WriteDatagrams'
// runs again as single datagrams, every one delivered once, in order.
func TestUDPWriteDatagramsFallsBackWhenKernelRefuses(t *testing.T) {
	send := listenGSORefused(t)
	recv := listenPlainUDP(t, netip.MustParseAddrPort("127.0.0.1:0"))
	to := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	readDeadline(t, recv)
	bufs := [][]byte{{1}, segmentPayload(1200, 1200), segmentPayload(1200, 1200), segmentPayload(700, 1200), {2, 3}}
	bufs[2][0] = 0xff
	if err := send.WriteDatagrams(bufs, to); err != nil {
		t.Fatalf("WriteDatagrams with UDP_SEGMENT refused: %v", err)
	}
	if send.gso.Load() {
		t.Fatal("after a refused UDP_SEGMENT send, gso still on")
	}
	buf := make([]byte, 2000)
	for i, d := range bufs {
		n, _, err := recv.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:n], d) {
			t.Fatalf("datagram %d = %d bytes, %v; want %d bytes", i, n, err, len(d))
		}
	}
}
