package publish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var loopback = netip.MustParseAddr("127.0.0.1")

// serve runs a Server with opts on a socket in a fresh directory until
// the test ends, and checks that it stops cleanly and removes its socket.
func serve(t *testing.T, opts Options) *Client {
	c, _ := serveStoppable(t, opts)
	return c
}

// serveStoppable is serve, and returns stop, which stops the Server and
// returns once Serve has (every connection's goroutine, and so every copy
// of a socket the Server held, is gone).
func serveStoppable(t *testing.T, opts Options) (*Client, func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "publish.sock")
	s, err := Listen(path, zap.NewNop(), opts)
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s after Serve returned: %v, want it removed", path, err)
		}
	})
	t.Cleanup(stop)
	return &Client{Socket: path}, stop
}

// freePorts returns n TCP and UDP ports that were free on loopback a
// moment ago, for tests to allow and bind.
func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var ports []uint16
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for len(ports) < n {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, ln)
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			continue // taken for UDP: try another
		}
		closers = append(closers, pc)
		ports = append(ports, port)
	}
	return ports
}

func allow(ports ...uint16) Options {
	var o Options
	for _, p := range ports {
		o.Ports = append(o.Ports, PortRange{p, p})
	}
	return o
}

// TestTCP: the listener the client gets accepts connections, outlives
// the helper, and is the only copy of the socket: once the client closes
// it, the port is free.
func TestTCP(t *testing.T) {
	port := freePorts(t, 1)[0]
	c, stop := serveStoppable(t, allow(port))
	addr := netip.AddrPortFrom(loopback, port)
	ln, err := c.ListenTCP(addr)
	if err != nil {
		t.Fatalf("ListenTCP(%v): %v", addr, err)
	}
	if got := ln.Addr().String(); got != addr.String() {
		t.Errorf("ListenTCP(%v).Addr() = %s", addr, got)
	}
	stop()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			t.Errorf("Accept on the published listener: %v", err)
		}
		accepted <- conn
	}()
	client, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %v: %v", addr, err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	defer server.Close()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read through the published listener = %q, %v; want hello", buf, err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	// The helper kept no copy: the port is free again.
	again, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatalf("bind %v after the published listener closed: %v, want it free (the helper keeps no copy)", addr, err)
	}
	again.Close()
}

func TestUDP(t *testing.T) {
	port := freePorts(t, 1)[0]
	c := serve(t, allow(port))
	addr := netip.AddrPortFrom(loopback, port)
	uc, err := c.ListenUDP(addr)
	if err != nil {
		t.Fatalf("ListenUDP(%v): %v", addr, err)
	}
	defer uc.Close()
	if got := uc.LocalAddr().String(); got != addr.String() {
		t.Errorf("ListenUDP(%v).LocalAddr() = %s", addr, got)
	}
	client, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, from, err := uc.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "query" || from.String() != client.LocalAddr().String() {
		t.Fatalf("ReadFromUDPAddrPort on the published socket = %q from %v, %v; want query from %v", buf[:n], from, err, client.LocalAddr())
	}
}

// TestAddressInUse: the helper's bind error comes back as itself, named
// with the helper's socket, the network and the address.
func TestAddressInUse(t *testing.T) {
	port := freePorts(t, 1)[0]
	addr := netip.AddrPortFrom(loopback, port)
	taken, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c := serve(t, allow(port))
	ln, err := c.ListenTCP(addr)
	if err == nil {
		ln.Close()
		t.Fatalf("ListenTCP(%v) with the port taken succeeded", addr)
	}
	want := fmt.Sprintf("publish helper at %s: bind tcp %s: address already in use", c.Socket, addr)
	if !errors.Is(err, syscall.EADDRINUSE) || err.Error() != want {
		t.Errorf("ListenTCP(%v) with the port taken = %q, want %q and errors.Is EADDRINUSE", addr, err, want)
	}
	// An address this namespace does not have.
	other := netip.MustParseAddrPort(fmt.Sprintf("192.0.2.1:%d", port))
	if _, err := c.ListenUDP(other); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("ListenUDP(%v) = %v, want EADDRNOTAVAIL", other, err)
	}
}

func TestPolicy(t *testing.T) {
	port := freePorts(t, 1)[0]
	for _, tc := range []struct {
		name string
		opts Options
		addr netip.AddrPort
		want string // in the error; "" for allowed
	}{
		{"default range refuses 8080", Options{}, netip.MustParseAddrPort("127.0.0.1:8080"),
			"refused by the helper's policy: port 8080 is outside the ports this helper publishes (30000-32767); start it with --ports to allow it"},
		{"default range refuses 32768", Options{}, netip.MustParseAddrPort("127.0.0.1:32768"), "port 32768 is outside"},
		{"privileged refused though listed", Options{Ports: []PortRange{NodePortRange, {80, 80}}}, netip.MustParseAddrPort("127.0.0.1:80"),
			"port 80 is privileged (below 1024) and this helper publishes none; start it with --allow-privileged"},
		{"listed port allowed", allow(port), netip.AddrPortFrom(loopback, port), ""},
		{"address outside the allowed ones", Options{Ports: allow(port).Ports, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			netip.AddrPortFrom(loopback, port), "address 127.0.0.1 is outside the addresses this helper publishes on (10.0.0.0/8)"},
		{"address inside the allowed ones", Options{Ports: allow(port).Ports, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
			netip.AddrPortFrom(loopback, port), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serve(t, tc.opts)
			ln, err := c.ListenTCP(tc.addr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ListenTCP(%v) = %v, want a listener", tc.addr, err)
				}
				ln.Close()
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("ListenTCP(%v) succeeded, want it refused: %s", tc.addr, tc.want)
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ListenTCP(%v) = %q, want ErrRefused with %q", tc.addr, err, tc.want)
			}
		})
	}
}

// TestPrivilegedAllowed: --allow-privileged lets a listed port below 1024
// through to bind(2), which decides (root may; others get EACCES unless
// the sysctl lowers the limit).
func TestPrivilegedAllowed(t *testing.T) {
	c := serve(t, Options{Ports: []PortRange{{1, 1023}}, AllowPrivileged: true})
	addr := netip.MustParseAddrPort("127.0.0.1:1")
	uc, err := c.ListenUDP(addr)
	if errors.Is(err, ErrRefused) {
		t.Fatalf("ListenUDP(%v) with AllowPrivileged = %v, want it not refused by the policy", addr, err)
	}
	if err == nil {
		uc.Close()
	}
}

// TestSocket: the socket is 0600; a stale one is replaced, a live one
// refused, and anything else left alone.
func TestSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.sock")

	// A socket left by a process that died.
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	s, err := Listen(path, zap.NewNop(), Options{})
	if err != nil {
		t.Fatalf("Listen(stale socket) = %v, want it replaced", err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v, %v; want a socket with mode 0600", path, fi.Mode(), err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".publish*")); len(leftovers) != 0 {
		t.Errorf("Listen left %v beside the socket", leftovers)
	}

	// A live one.
	if _, err := Listen(path, zap.NewNop(), Options{}); !errors.Is(err, ErrSocketInUse) {
		t.Errorf("Listen(live socket) = %v, want ErrSocketInUse", err)
	}
	s.Close()
	s.Close() // idempotent
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}

	// A live socket of another kind.
	stream := filepath.Join(dir, "stream.sock")
	sl, err := net.Listen("unix", stream)
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	if _, err := Listen(stream, zap.NewNop(), Options{}); err == nil {
		t.Errorf("Listen(a live stream socket) succeeded, want it refused")
	}
	if _, err := os.Lstat(stream); err != nil {
		t.Errorf("live stream socket after Listen refused it: %v, want it kept", err)
	}

	// Not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := Listen(file, zap.NewNop(), Options{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen(regular file) = %v, want an error saying it is not a socket", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("regular file now holds %q, want it untouched", b)
	}

	// No directory.
	if _, err := Listen(filepath.Join(dir, "none", "p.sock"), zap.NewNop(), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Listen in a missing directory = %v, want ErrNotExist", err)
	}
}

func TestNoHelper(t *testing.T) {
	c := &Client{Socket: filepath.Join(t.TempDir(), "none.sock")}
	_, err := c.ListenTCP(netip.MustParseAddrPort("127.0.0.1:30080"))
	want := "publish helper at " + c.Socket + ": bind tcp 127.0.0.1:30080: "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "is `vrouter publish --socket "+c.Socket+"` running") {
		t.Errorf("ListenTCP with no helper = %v, want %q... asking whether vrouter publish runs", err, want)
	}
}

// TestConcurrentClients: many clients at once each get their own socket.
func TestConcurrentClients(t *testing.T) {
	const n = 16
	ports := freePorts(t, n)
	c := serve(t, allow(ports...))
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, port := range ports {
		wg.Go(func() {
			addr := netip.AddrPortFrom(loopback, port)
			if i%2 == 0 {
				ln, err := c.ListenTCP(addr)
				if err == nil {
					ln.Close()
				}
				errs[i] = err
				return
			}
			uc, err := c.ListenUDP(addr)
			if err == nil {
				uc.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("%d concurrent binds: %v", n, err)
	}
}

// exchange sends one request on conn and returns the reply and the
// descriptors that came with it.
func exchange(t *testing.T, conn *net.UnixConn, req string) (string, []int) {
	t.Helper()
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatalf("send %q: %v", req, err)
	}
	buf, oob := make([]byte, maxMessage), make([]byte, 64)
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("reply to %q: %v", req, err)
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	})
	return string(buf[:n]), fds
}

// TestProtocol: one connection carries requests one after another;
// malformed ones are answered, an oversized one ends the connection.
func TestProtocol(t *testing.T) {
	ports := freePorts(t, 2)
	c := serve(t, allow(ports...))
	conn, err := net.Dial("unixpacket", c.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	for _, tc := range []struct {
		req, reply string
		fds        int
	}{
		{fmt.Sprintf("bind tcp 127.0.0.1:%d", ports[0]), "ok", 1},
		{fmt.Sprintf("bind udp 127.0.0.1:%d", ports[1]), "ok", 1},
		{fmt.Sprintf("bind tcp 127.0.0.1:%d", ports[0]), fmt.Sprintf("errno %d address already in use", syscall.EADDRINUSE), 0},
		{"bind sctp 127.0.0.1:30080", `bad request "bind sctp 127.0.0.1:30080": network "sctp": want tcp or udp`, 0},
		{"bind tcp localhost:30080", `bad request "bind tcp localhost:30080": address "localhost:30080": want IP:PORT, such as 127.0.0.1:30080 or [::1]:30080`, 0},
		{"connect tcp 127.0.0.1:30080", `bad request "connect tcp 127.0.0.1:30080": want "bind tcp|udp ADDRESS:PORT"`, 0},
		{"bind tcp 127.0.0.1:22", "refused port 22 is outside the ports this helper publishes", 0},
	} {
		reply, fds := exchange(t, uc, tc.req)
		if !strings.HasPrefix(reply, tc.reply) || len(fds) != tc.fds {
			t.Errorf("%q: reply %q with %d descriptors, want %q with %d", tc.req, reply, len(fds), tc.reply, tc.fds)
		}
	}
	reply, _ := exchange(t, uc, "bind tcp "+strings.Repeat("1", maxMessage))
	if want := fmt.Sprintf("bad request longer than %d bytes", maxMessage); reply != want {
		t.Errorf("oversized request: reply %q, want %q", reply, want)
	}
	if n, err := uc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after an oversized request the connection reads %d bytes, %v; want it closed", n, err)
	}
}

// TestServeStopsWithIdleClients: a connected client that sends nothing
// does not hold Serve up (serve's cleanup waits for it).
func TestServeStopsWithIdleClients(t *testing.T) {
	c := serve(t, Options{})
	for range 3 {
		conn, err := net.Dial("unixpacket", c.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
}

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []PortRange
		err  string
	}{
		{"30000-32767", []PortRange{NodePortRange}, ""},
		{"30000-32767, 8080,443-444", []PortRange{NodePortRange, {8080, 8080}, {443, 444}}, ""},
		{"0", nil, `ports "0": "0": want a port from 1 to 65535`},
		{"65536", nil, `"65536": want a port`},
		{"32767-30000", nil, `"32767-30000": the range ends before it starts`},
		{"http", nil, `"http": want a port`},
		{"", nil, `"": want a port`},
	} {
		got, err := ParsePorts(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePorts(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseAddrs(t *testing.T) {
	got, err := ParseAddrs("127.0.0.1, 192.168.1.7/24,::1")
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("::1/128")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseAddrs = %v, %v; want %v", got, err, want)
	}
	if _, err := ParseAddrs("localhost"); err == nil || !strings.Contains(err.Error(), `"localhost": want an IP address or a prefix`) {
		t.Errorf("ParseAddrs(localhost) = %v, want an error naming the value", err)
	}
}
