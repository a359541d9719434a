package publish

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/lb"
)

// ErrRefused marks a bind the helper's policy does not allow.
var ErrRefused = errors.New("refused by the helper's policy")

// DefaultTimeout bounds one request to the helper, when Client.Timeout is
// zero.
const DefaultTimeout = 5 * time.Second

// Client is the lb.Binder of a router whose node ports are published by a
// helper: it asks the Server at Socket for each socket, over a connection
// of its own, and returns the socket the helper bound in its network
// namespace. It keeps no state between calls: a helper that restarted
// serves the next call. It is safe for concurrent use.
type Client struct {
	// Socket is the helper's unix socket.
	Socket string
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
}

var _ lb.Binder = (*Client)(nil)

// Error is a socket the helper did not hand over. Err is the
// syscall.Errno the helper's bind(2) failed with (errors.Is(err,
// syscall.EADDRINUSE) holds for a port in use), ErrRefused wrapped with
// the helper's reason, or why the helper could not be asked.
type Error struct {
	Socket  string
	Network string // tcp or udp
	Addr    netip.AddrPort
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("publish helper at %s: bind %s %s: %v", e.Socket, e.Network, e.Addr, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ListenTCP implements lb.Binder: a listening TCP socket bound to addr in
// the helper's network namespace.
func (c *Client) ListenTCP(addr netip.AddrPort) (*net.TCPListener, error) {
	f, err := c.bind("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, c.errorf("tcp", addr, "use the socket it sent: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, c.errorf("tcp", addr, "it sent a %T, not a TCP listener", ln)
	}
	if got, _ := netip.ParseAddrPort(tl.Addr().String()); got != addr {
		tl.Close()
		return nil, c.errorf("tcp", addr, "it sent a socket bound to %s", tl.Addr())
	}
	return tl, nil
}

// ListenUDP implements lb.Binder: a UDP socket bound to addr in the
// helper's network namespace.
func (c *Client) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	f, err := c.bind("udp", addr)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, c.errorf("udp", addr, "use the socket it sent: %w", err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, c.errorf("udp", addr, "it sent a %T, not a UDP socket", pc)
	}
	if got, _ := netip.ParseAddrPort(uc.LocalAddr().String()); got != addr {
		uc.Close()
		return nil, c.errorf("udp", addr, "it sent a socket bound to %s", uc.LocalAddr())
	}
	return uc, nil
}

func (c *Client) errorf(network string, addr netip.AddrPort, format string, args ...any) error {
	return &Error{Socket: c.Socket, Network: network, Addr: addr, Err: fmt.Errorf(format, args...)}
}

// bind asks the helper for a socket and returns it as a file, which the
// caller closes.
func (c *Client) bind(network string, addr netip.AddrPort) (*os.File, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	fail := func(err error) error { return &Error{Socket: c.Socket, Network: network, Addr: addr, Err: err} }
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	conn, err := net.DialTimeout("unixpacket", c.Socket, timeout)
	if err != nil {
		return nil, fail(fmt.Errorf("%w (is `vrouter publish --socket %s` running in the namespace to publish on?)", err, c.Socket))
	}
	uc := conn.(*net.UnixConn)
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(timeout))
	if _, err := uc.Write([]byte("bind " + network + " " + addr.String())); err != nil {
		return nil, fail(fmt.Errorf("send request: %w", err))
	}
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4)) // room for more fds than one, to close any extra
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fail(fmt.Errorf("read reply: %w", err))
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, fail(err)
	}
	reply := string(buf[:n])
	if reply != "ok" || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		if reply == "ok" {
			return nil, fail(fmt.Errorf("the helper replied ok with %d descriptors, want 1", len(fds)))
		}
		return nil, fail(replyError(reply))
	}
	return os.NewFile(uintptr(fds[0]), network+":"+addr.String()), nil
}

// parseRights returns the descriptors in a message's control data.
// (Received with MSG_CMSG_CLOEXEC, as net does, they do not leak into
// children.)
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse the reply's control data: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds, nil
}

// replyError is the error a reply other than ok stands for.
func replyError(reply string) error {
	kind, text, _ := strings.Cut(reply, " ")
	switch kind {
	case "errno":
		num, _, _ := strings.Cut(text, " ")
		if n, err := strconv.Atoi(num); err == nil && n > 0 {
			return syscall.Errno(n)
		}
	case "refused":
		return fmt.Errorf("%w: %s", ErrRefused, text)
	case "bad", "error":
		return fmt.Errorf("the helper says: %s", text)
	}
	return fmt.Errorf("unexpected reply %q", reply)
}
