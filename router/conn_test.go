package router

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// connFamilies are the loopback addresses the Conn tests run on.
var connFamilies = []struct {
	name string
	addr netip.AddrPort
}{
	{"IPv4", netip.MustParseAddrPort("127.0.0.1:0")},
	{"IPv6", netip.MustParseAddrPort("[::1]:0")},
}

// readDeadline bounds every read, so a lost datagram fails the test
// instead of hanging it.
func readDeadline(t testing.TB, c *net.UDPConn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
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

// ListenUDP returns the batching socket where the platform has one
// (conn_linux.go) and stdConn elsewhere (conn_other.go).
func TestListenUDPPlatform(t *testing.T) {
	c, err := ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatalf("ListenUDP(127.0.0.1:0): %v", err)
	}
	defer c.Close()
	_, std := c.(*stdConn)
	if want := runtime.GOOS != "linux"; std != want {
		t.Errorf("ListenUDP on %s = %T; want stdConn %v", runtime.GOOS, c, want)
	}
}

// readFrom reads one message with ReadBatch: a datagram, or a run of
// them.
func readFrom(c Conn, b []byte) (n int, from netip.AddrPort, err error) {
	n, _, from, err = readRun(c, b)
	return n, from, err
}

// readRun is readFrom that also returns the run's segment size.
func readRun(c Conn, b []byte) (n, segSize int, from netip.AddrPort, err error) {
	sizes, segSizes, froms := []int{0}, []int{0}, []netip.AddrPort{{}}
	k, err := c.ReadBatch([][]byte{b}, sizes, segSizes, froms)
	if err != nil || k != 1 {
		return 0, 0, netip.AddrPort{}, err
	}
	return sizes[0], segSizes[0], froms[0], nil
}

// writeTo sends b as one datagram.
func writeTo(c Conn, b []byte, to netip.AddrPort) error {
	return c.WriteBatch(b, max(len(b), 1), to)
}

// listenStdConn opens a stdConn on addr, closed when the test ends.
func listenStdConn(t testing.TB, network string, addr netip.AddrPort) *stdConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	s := newStdConn(c)
	t.Cleanup(func() { _ = s.Close() })
	readDeadline(t, c)
	return s
}

// stdConn, the Conn of platforms without conn_linux.go, carries datagrams
// whole, one per call, both ways, and names the sender as it bound.
func TestStdConnExchange(t *testing.T) {
	for _, fam := range connFamilies {
		t.Run(fam.name, func(t *testing.T) {
			a := listenStdConn(t, "udp", fam.addr)
			b := listenStdConn(t, "udp", fam.addr)
			sizes := []int{1, 1400, 9000}
			for _, size := range sizes {
				if err := writeTo(a, segmentPayload(size, size), b.LocalAddr()); err != nil {
					t.Fatalf("WriteBatch(%d bytes, %s): %v", size, b.LocalAddr(), err)
				}
			}
			buf := make([]byte, MaxSegmentsRead)
			for _, size := range sizes {
				n, from, err := readFrom(b, buf)
				if err != nil || n != size || from != a.LocalAddr() {
					t.Fatalf("ReadBatch = %d bytes from %s, %v; want %d bytes from %s", n, from, err, size, a.LocalAddr())
				}
				if !bytes.Equal(buf[:n], segmentPayload(size, size)) {
					t.Fatalf("ReadBatch: %d bytes differ from those sent", n)
				}
			}
			if err := writeTo(b, []byte("back"), a.LocalAddr()); err != nil {
				t.Fatalf("WriteBatch(%s): %v", a.LocalAddr(), err)
			}
			if n, from, err := readFrom(a, buf); err != nil || string(buf[:n]) != "back" || from != b.LocalAddr() {
				t.Fatalf("ReadBatch = %q from %s, %v; want \"back\" from %s", buf[:n], from, err, b.LocalAddr())
			}
		})
	}
}

// A dual-stack socket hears IPv4 senders as ::ffff:a.b.c.d; stdConn
// reports them unmapped, as udpConn does, so the overlay's peer lookup
// finds them.
func TestStdConnUnmapsSender(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified})
	if err != nil {
		t.Skipf("no dual-stack socket: %v", err)
	}
	recv := newStdConn(c)
	t.Cleanup(func() { _ = recv.Close() })
	readDeadline(t, c)
	send := listenStdConn(t, "udp4", netip.MustParseAddrPort("127.0.0.1:0"))
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), recv.LocalAddr().Port())
	if err := writeTo(send, []byte("v4"), to); err != nil {
		t.Fatalf("WriteBatch(%s): %v", to, err)
	}
	buf := make([]byte, 100)
	if _, from, err := readFrom(recv, buf); err != nil || from != send.LocalAddr() {
		t.Fatalf("ReadBatch on [::]:%d = from %s, %v; want from %s", to.Port(), from, err, send.LocalAddr())
	}
}

// Close unblocks a pending ReadBatch with net.ErrClosed, and is idempotent.
func TestStdConnCloseUnblocksRead(t *testing.T) {
	c := listenStdConn(t, "udp", netip.MustParseAddrPort("127.0.0.1:0"))
	if err := c.c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := readFrom(c, make([]byte, 1500))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block in recvfrom
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5s after Close")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// stdConn's WriteBatch sends a run as one datagram per segment, and its
// ReadBatch returns them one per message, each a run of one.
func TestStdConnWriteBatchSegments(t *testing.T) {
	a := listenStdConn(t, "udp", netip.MustParseAddrPort("127.0.0.1:0"))
	b := listenStdConn(t, "udp", netip.MustParseAddrPort("127.0.0.1:0"))
	const segSize = 1000
	want := segmentPayload(2*segSize+300, segSize)
	if err := a.WriteBatch(want, segSize, b.LocalAddr()); err != nil {
		t.Fatalf("WriteBatch(%d bytes, %d, %s): %v", len(want), segSize, b.LocalAddr(), err)
	}
	buf := make([]byte, MaxSegmentsRead)
	for i, d := range splitSegments(want, segSize) {
		n, seg, from, err := readRun(b, buf)
		if err != nil || n != len(d) || seg != n || from != a.LocalAddr() || !bytes.Equal(buf[:n], d) {
			t.Fatalf("ReadBatch #%d = %d bytes, segSize %d, from %s, %v; want datagram %d (%d bytes) from %s", i, n, seg, from, err, i, len(d), a.LocalAddr())
		}
	}
	if err := a.WriteBatch(want, 0, b.LocalAddr()); err == nil {
		t.Errorf("WriteBatch(%d bytes, 0) = nil, want an error", len(want))
	}
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
