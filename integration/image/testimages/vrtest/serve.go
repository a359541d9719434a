package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// defaultUnreadyFile makes serve's /healthz answer 503 while it exists.
const defaultUnreadyFile = "/tmp/unready"

func serveCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	httpAddr := fs.String("http", ":8080", "HTTP `address` ($PORT, if set, gives the port)")
	tcpAddr := fs.String("tcp", ":9000", "TCP echo `address`")
	udpAddr := fs.String("udp", ":9001", "UDP echo `address`")
	unready := fs.String("unready-file", defaultUnreadyFile, "/healthz answers 503 while this `file` exists")
	if _, err := parseFlags(fs, env, args, 0); err != nil {
		return err
	}
	if port := env.getenv("PORT"); port != "" {
		*httpAddr = ":" + port
	}
	hostname, err := os.Hostname()
	if err != nil {
		return err
	}
	srv := &server{hostname: hostname, unreadyFile: *unready}
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	defer httpLn.Close()
	tcpLn, err := net.Listen("tcp", *tcpAddr)
	if err != nil {
		return err
	}
	defer tcpLn.Close()
	udpConn, err := net.ListenPacket("udp", *udpAddr)
	if err != nil {
		return err
	}
	defer udpConn.Close()
	fmt.Fprintf(env.stderr, "vrtest serve: %s: HTTP %s, TCP echo %s, UDP echo %s\n", hostname, httpLn.Addr(), tcpLn.Addr(), udpConn.LocalAddr())
	return srv.run(ctx, httpLn, tcpLn, udpConn)
}

// server answers HTTP, TCP echo and UDP echo, each reply naming the pod
// (hostname) and the client's address as the pod sees it.
type server struct {
	hostname    string
	unreadyFile string
}

// handler serves /healthz (200, or 503 while unreadyFile exists) and, on
// every other path, "<hostname> <client ip:port>\n".
func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(s.unreadyFile); err == nil {
			http.Error(w, "unready: "+s.unreadyFile+" exists", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", s.hostname, r.RemoteAddr)
	})
	return mux
}

// run serves on the listeners until ctx is done, then closes them and
// every connection, and returns when all its goroutines have.
func (s *server) run(ctx context.Context, httpLn, tcpLn net.Listener, udp net.PacketConn) error {
	httpSrv := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	conns := newConnSet()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(httpLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("HTTP: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.serveTCP(tcpLn, conns); ctx.Err() == nil {
			errc <- fmt.Errorf("TCP echo: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.serveUDP(udp); ctx.Err() == nil {
			errc <- fmt.Errorf("UDP echo: %w", err)
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	httpSrv.Close()
	tcpLn.Close()
	udp.Close()
	conns.closeAll()
	wg.Wait()
	conns.wait()
	return err
}

// serveTCP answers each line a client sends with "<hostname> <client>
// <line>\n", until ln is closed.
func (s *server) serveTCP(ln net.Listener, conns *connSet) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		conns.serve(c, func(c net.Conn) {
			remote := c.RemoteAddr().String()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "%s %s %s\n", s.hostname, remote, sc.Text()); err != nil {
					return
				}
			}
		})
	}
}

// serveUDP answers each datagram with "<hostname> <client> <payload>",
// until pc is closed.
func (s *server) serveUDP(pc net.PacketConn) error {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		reply := fmt.Appendf(nil, "%s %s %s", s.hostname, addr, buf[:n])
		pc.WriteTo(reply, addr) // a lost reply is the client's to retry
	}
}

// connSet runs one goroutine per accepted connection and closes them all
// on closeAll.
type connSet struct {
	wg sync.WaitGroup
	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{conns: map[net.Conn]struct{}{}} }

// serve runs handle(c) in a goroutine and closes c after it; after
// closeAll, it closes c at once.
func (cs *connSet) serve(c net.Conn, handle func(net.Conn)) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		c.Close()
		return
	}
	cs.conns[c] = struct{}{}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		handle(c)
		c.Close()
		cs.mu.Lock()
		delete(cs.conns, c)
		cs.mu.Unlock()
	}()
}

func (cs *connSet) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for c := range cs.conns {
		c.Close()
	}
}

// wait returns when every handler has returned; serve must not be called
// concurrently.
func (cs *connSet) wait() { cs.wg.Wait() }

// unreadyCmd and readyCmd create and remove the file that fails serve's
// /healthz, for `kubectl exec POD -- /vrtest unready`.
func unreadyCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("unready", flag.ContinueOnError)
	file := fs.String("file", defaultUnreadyFile, "the `file` serve's /healthz checks")
	if _, err := parseFlags(fs, env, args, 0); err != nil {
		return err
	}
	return os.WriteFile(*file, nil, 0o644)
}

func readyCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("ready", flag.ContinueOnError)
	file := fs.String("file", defaultUnreadyFile, "the `file` serve's /healthz checks")
	if _, err := parseFlags(fs, env, args, 0); err != nil {
		return err
	}
	if err := os.Remove(*file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
