package topology

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ClientAddrHeader is the response header in which ServeHTTP's server
// reports the client address it saw.
const ClientAddrHeader = "X-Client-Addr"

// Reply is what one of the cluster's servers answered. The servers
// started by ServeTCPEcho, ServeUDPEcho and ServeHTTP answer with their
// identity, the short name of the namespace they listen in (e.g.
// "nginx-4k7xw"), and with the client address they saw, so tests can tell
// which backend a Service picked and whether the client IP survived:
//
//	TCP echo:  on accept, sends "<identity> <client ip:port>\n", then echoes
//	           every byte until the client half-closes, then closes.
//	UDP echo:  answers each datagram with "<identity> <client ip:port>\n"
//	           followed by the datagram.
//	HTTP:      answers every request 200 with body "<identity>" and header
//	           ClientAddrHeader: <client ip:port>.
//
// TCPExchange, UDPExchange and HTTPGet are the matching clients.
type Reply struct {
	// Server is the identity of the server that answered.
	Server string
	// Client is the client address the server saw: the dialer's own
	// address unless something on the way translated it.
	Client netip.AddrPort
	// Payload is the echoed data, or the HTTP body.
	Payload []byte
}

// Server is a server running in a namespace of a Cluster. Its goroutines
// (one accept or read loop, one per connection) belong to it; Close stops
// them. Close on the Cluster closes servers still running.
type Server struct {
	c        *Cluster
	ns       string
	addr     netip.AddrPort
	identity string

	// stop closes the listening socket and every open connection, so that
	// all goroutines in wg return.
	stop func() error
	wg   sync.WaitGroup

	once     sync.Once
	closeErr error
}

// Addr is the address the server listens on (with the port the kernel
// chose if the caller asked for port 0).
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Namespace is the short name of the namespace the server runs in.
func (s *Server) Namespace() string { return s.ns }

// Close stops the server and returns after all its goroutines have
// exited. Idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.closeErr = s.stop()
		s.wg.Wait()
		s.c.mu.Lock()
		delete(s.c.servers, s)
		s.c.mu.Unlock()
	})
	return s.closeErr
}

// start registers s with the cluster, unless the cluster is closed.
func (c *Cluster) start(s *Server) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.servers[s] = struct{}{}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// listenTCP opens a listening socket in namespace ns and prepares a
// Server for it.
func (c *Cluster) listenTCP(ns, addr string) (net.Listener, *Server, error) {
	var ln net.Listener
	err := c.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listen tcp %s in %s: %w", addr, ns, err)
	}
	return ln, &Server{c: c, ns: ns, identity: ns, addr: addrPort(ln.Addr())}, nil
}

// ServeTCPEcho starts a TCP echo server in namespace ns on addr (such as
// ":80" or "10.244.1.2:0"); see Reply for what it answers.
func (c *Cluster) ServeTCPEcho(ns, addr string) (*Server, error) {
	ln, s, err := c.listenTCP(ns, addr)
	if err != nil {
		return nil, err
	}
	var (
		mu     sync.Mutex // guards conns and closed
		conns  = make(map[net.Conn]struct{})
		closed bool
	)
	s.stop = func() error {
		err := ln.Close()
		mu.Lock()
		closed = true
		for conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		return err
	}
	if err := c.start(s); err != nil {
		ln.Close()
		return nil, err
	}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				conn.Close()
				return
			}
			conns[conn] = struct{}{}
			mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, conn)
					mu.Unlock()
					conn.Close()
				}()
				if _, err := fmt.Fprintf(conn, "%s %s\n", s.identity, addrPort(conn.RemoteAddr())); err != nil {
					return
				}
				if _, err := io.Copy(conn, conn); err != nil {
					return
				}
				conn.(*net.TCPConn).CloseWrite()
			})
		}
	})
	return s, nil
}

// ServeUDPEcho starts a UDP echo server in namespace ns on addr; see Reply
// for what it answers.
func (c *Cluster) ServeUDPEcho(ns, addr string) (*Server, error) {
	var pc *net.UDPConn
	err := c.Do(ns, func() error {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		pc, err = net.ListenUDP("udp", ua)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, ns, err)
	}
	s := &Server{c: c, ns: ns, identity: ns, addr: addrPort(pc.LocalAddr()), stop: pc.Close}
	if err := c.start(s); err != nil {
		pc.Close()
		return nil, err
	}
	s.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue // e.g. ICMP errors reported on the socket
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			reply := append(fmt.Appendf(nil, "%s %s\n", s.identity, from), buf[:n]...)
			pc.WriteToUDPAddrPort(reply, from)
		}
	})
	return s, nil
}

// ServeHTTP starts an HTTP server in namespace ns on addr; see Reply for
// what it answers.
func (c *Cluster) ServeHTTP(ns, addr string) (*Server, error) {
	ln, s, err := c.listenTCP(ns, addr)
	if err != nil {
		return nil, err
	}
	var conns sync.WaitGroup // one per connection goroutine of srv
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(ClientAddrHeader, r.RemoteAddr)
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, s.identity)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateHijacked, http.StateClosed:
				conns.Done()
			}
		},
	}
	s.stop = srv.Close
	if err := c.start(s); err != nil {
		ln.Close()
		return nil, err
	}
	s.wg.Go(func() {
		srv.Serve(ln) // returns http.ErrServerClosed after Close
		// Close closed every connection; wait for their goroutines.
		conns.Wait()
	})
	return s, nil
}

// dial connects from inside namespace fromNS: the socket is made there.
func (c *Cluster) dial(ctx context.Context, fromNS, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := c.Do(fromNS, func() error {
		var err error
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// TCPExchange connects from namespace fromNS to a TCP echo server at addr,
// sends payload, half-closes and reads the whole answer.
func (c *Cluster) TCPExchange(ctx context.Context, fromNS string, addr netip.AddrPort, payload []byte) (Reply, error) {
	conn, err := c.dial(ctx, fromNS, "tcp", addr.String())
	if err != nil {
		return Reply{}, fmt.Errorf("tcp exchange %s -> %v: %w", fromNS, addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(payload); err != nil {
		return Reply{}, fmt.Errorf("tcp exchange %s -> %v: write: %w", fromNS, addr, err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		return Reply{}, fmt.Errorf("tcp exchange %s -> %v: half-close: %w", fromNS, addr, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return Reply{}, fmt.Errorf("tcp exchange %s -> %v: read: %w", fromNS, addr, errors.Join(ctx.Err(), err))
	}
	r, err := parseGreeting(b)
	if err != nil {
		return Reply{}, fmt.Errorf("tcp exchange %s -> %v: %w", fromNS, addr, err)
	}
	return r, nil
}

// UDPExchange sends payload in one datagram from namespace fromNS to a
// UDP echo server at addr and returns its answer. Lost datagrams are not
// retried: ctx bounds the wait.
func (c *Cluster) UDPExchange(ctx context.Context, fromNS string, addr netip.AddrPort, payload []byte) (Reply, error) {
	conn, err := c.dial(ctx, fromNS, "udp", addr.String())
	if err != nil {
		return Reply{}, fmt.Errorf("udp exchange %s -> %v: %w", fromNS, addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := conn.Write(payload); err != nil {
		return Reply{}, fmt.Errorf("udp exchange %s -> %v: write: %w", fromNS, addr, err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return Reply{}, fmt.Errorf("udp exchange %s -> %v: read: %w", fromNS, addr, errors.Join(ctx.Err(), err))
	}
	r, err := parseGreeting(buf[:n])
	if err != nil {
		return Reply{}, fmt.Errorf("udp exchange %s -> %v: %w", fromNS, addr, err)
	}
	return r, nil
}

// parseGreeting splits "<identity> <client>\n<payload>".
func parseGreeting(b []byte) (Reply, error) {
	line, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok {
		return Reply{}, fmt.Errorf("answer %q: want \"<identity> <client>\\n\" first", b)
	}
	id, client, ok := strings.Cut(string(line), " ")
	ap, err := netip.ParseAddrPort(client)
	if !ok || err != nil {
		return Reply{}, fmt.Errorf("answer line %q: want \"<identity> <client ip:port>\"", line)
	}
	return Reply{Server: id, Client: ap, Payload: rest}, nil
}

// HTTPGet fetches url from inside namespace fromNS without keep-alive or
// proxies and returns the answer of a ServeHTTP server (Payload is the
// body). Any server works; Client is then zero unless it sets
// ClientAddrHeader. A status other than 200 is an error.
func (c *Cluster) HTTPGet(ctx context.Context, fromNS, url string) (Reply, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dial(ctx, fromNS, network, addr)
		},
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Reply{}, fmt.Errorf("http get %s from %s: %w", url, fromNS, err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return Reply{}, fmt.Errorf("http get %s from %s: %w", url, fromNS, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Reply{}, fmt.Errorf("http get %s from %s: read body: %w", url, fromNS, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Reply{}, fmt.Errorf("http get %s from %s: status %s, body %q", url, fromNS, resp.Status, body)
	}
	r := Reply{Server: strings.TrimSpace(string(body)), Payload: body}
	if v := resp.Header.Get(ClientAddrHeader); v != "" {
		r.Client, _ = netip.ParseAddrPort(v)
	}
	return r, nil
}
