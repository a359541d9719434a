package publish

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// maxMessage bounds a request and a reply. A request is some 60 bytes; a
// longer one is refused as malformed.
const maxMessage = 512

// Server is the helper in the parent namespace: it binds the sockets its
// clients ask for, within its Options, and hands them over.
//
// Serve's goroutine owns the listening socket; one goroutine per client
// connection, started and joined by Serve, answers that connection's
// requests one at a time.
type Server struct {
	opts Options
	log  *zap.Logger
	ln   *socket

	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[*net.UnixConn]struct{}
	closed bool
}

// Listen opens the helper's unix socket at path (mode 0600; path's
// directory must exist) and returns the Server that will serve it. A
// stale socket at path is replaced; a live one fails with ErrSocketInUse.
// Clients may connect as soon as it returns; they are answered once Serve
// runs. It logs each socket it hands over or refuses to log (nil: none).
func Listen(path string, log *zap.Logger, opts Options) (*Server, error) {
	ln, err := listenSocket(path)
	if err != nil {
		return nil, fmt.Errorf("publish socket %s: %w", path, err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{opts: opts, log: log, ln: ln, conns: map[*net.UnixConn]struct{}{}}, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.ln.path }

// Serve answers clients until ctx ends, then closes their connections and
// the socket, removes the socket's path, and returns once every goroutine
// it started has. The sockets it handed over are the clients'; they stay
// open. A failure of the listening socket is returned.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer func() {
		stop()
		s.Close()
		wg.Wait()
	}()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || s.isClosed() {
				return nil
			}
			return fmt.Errorf("publish socket %s: accept: %w", s.ln.path, err)
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		wg.Go(func() {
			defer s.untrack(c)
			s.serveConn(c)
		})
	}
}

// Close stops the Server: it closes the socket, removes its path and
// closes every client connection. Serve then returns. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	return s.ln.Close()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track records c so that Close closes it; it reports false once the
// Server is closed.
func (s *Server) track(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *net.UnixConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serveConn answers c's requests, one at a time, until c ends or fails.
func (s *Server) serveConn(c *net.UnixConn) {
	buf := make([]byte, maxMessage)
	for {
		// No control buffer: descriptors a client might send are
		// discarded (and closed) by the kernel.
		n, _, flags, _, err := c.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 { // on SOCK_SEQPACKET, 0 is the client's close
			return
		}
		if flags&unix.MSG_TRUNC != 0 {
			s.reply(c, fmt.Sprintf("bad request longer than %d bytes", maxMessage), -1)
			return
		}
		if !s.answer(c, string(buf[:n])) {
			return
		}
	}
}

// answer serves one request and reports whether the connection is still
// worth reading.
func (s *Server) answer(c *net.UnixConn, req string) bool {
	network, addr, err := parseRequest(req)
	if err != nil {
		s.log.Warn("malformed publish request", zap.String("request", req), zap.Error(err))
		return s.reply(c, "bad "+err.Error(), -1)
	}
	log := s.log.With(zap.String("network", network), zap.Stringer("address", addr))
	if err := s.opts.allowed(addr); err != nil {
		log.Warn("publish refused", zap.Error(err))
		return s.reply(c, "refused "+err.Error(), -1)
	}
	fd, closeSock, err := bind(network, addr)
	if err != nil {
		log.Warn("publish failed", zap.Error(err))
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return s.reply(c, fmt.Sprintf("errno %d %s", int(errno), errno.Error()), -1)
		}
		return s.reply(c, "error "+err.Error(), -1)
	}
	// The client's copy is the socket from here on; ours goes whether
	// the reply reached it or not.
	defer closeSock()
	if !s.reply(c, "ok", fd) {
		log.Warn("publish reply lost: the client went away")
		return false
	}
	log.Info("published")
	return true
}

// reply sends msg, with fd if fd >= 0, and reports whether it went.
func (s *Server) reply(c *net.UnixConn, msg string, fd int) bool {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err := c.WriteMsgUnix([]byte(msg), oob, nil)
	return err == nil
}

// parseRequest reads "bind tcp|udp ADDR:PORT".
func parseRequest(req string) (network string, addr netip.AddrPort, err error) {
	f := strings.Fields(req)
	if len(f) != 3 || f[0] != "bind" {
		return "", addr, fmt.Errorf("request %q: want \"bind tcp|udp ADDRESS:PORT\"", req)
	}
	if f[1] != "tcp" && f[1] != "udp" {
		return "", addr, fmt.Errorf("request %q: network %q: want tcp or udp", req, f[1])
	}
	addr, err = netip.ParseAddrPort(f[2])
	if err != nil || addr.Addr().Zone() != "" {
		return "", addr, fmt.Errorf("request %q: address %q: want IP:PORT, such as 127.0.0.1:30080 or [::1]:30080", req, f[2])
	}
	return f[1], addr, nil
}

// bind opens a socket of network bound to addr in this process's network
// namespace, as lb.KernelBinder does but of addr's family only (tcp4 for
// an IPv4 address, so that 0.0.0.0 is not also [::]). It returns the
// socket's descriptor, valid until closeSock.
func bind(network string, addr netip.AddrPort) (fd int, closeSock func(), err error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	family := "4"
	if addr.Addr().Is6() {
		family = "6"
	}
	var conn interface {
		SyscallConn() (syscall.RawConn, error)
		Close() error
	}
	switch network {
	case "tcp":
		conn, err = net.ListenTCP(network+family, net.TCPAddrFromAddrPort(addr))
	default:
		conn, err = net.ListenUDP(network+family, net.UDPAddrFromAddrPort(addr))
	}
	if err != nil {
		return -1, nil, err
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		err = rc.Control(func(f uintptr) { fd = int(f) })
	}
	if err != nil {
		conn.Close()
		return -1, nil, err
	}
	return fd, func() { conn.Close() }, nil
}
