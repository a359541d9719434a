package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func dnsCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	domain := fs.String("domain", "cluster.local", "the cluster `domain`: names are <svc>.<ns>.svc.<domain>")
	listen := fs.String("listen", ":53", "UDP and TCP `address` to answer on")
	health := fs.String("health", ":8080", "HTTP `address` of /healthz, 200 once Services are listed")
	api := fs.String("api", "", "the API server's `URL` (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)")
	saDir := fs.String("sa-dir", defaultSADir, "`directory` of the ServiceAccount's token and ca.crt")
	refresh := fs.Duration("refresh", 2*time.Second, "how often to list Services (and on every unknown name)")
	upstream := fs.String("upstream", "", "forward queries for names outside the domain to the resolver at this UDP `address` (default: refuse them)")
	if _, err := parseFlags(fs, env, args, 0); err != nil {
		return err
	}
	if *api == "" {
		var err error
		if *api, err = inClusterAPI(env.getenv); err != nil {
			return err
		}
	}
	client, err := newAPIClient(*api, *saDir)
	if err != nil {
		return err
	}
	defer client.close()
	udp, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer tcp.Close()
	healthLn, err := net.Listen("tcp", *health)
	if err != nil {
		return err
	}
	defer healthLn.Close()
	s := newDNSServer(*domain, client.services, *refresh, env.stderr)
	s.upstream.Store(upstream)
	fmt.Fprintf(env.stderr, "vrtest dns: *.svc.%s on %s UDP and TCP from %s, /healthz on %s\n", *domain, *listen, *api, healthLn.Addr())
	return s.run(ctx, udp, tcp, healthLn)
}

// dnsServer answers A and AAAA queries for <svc>.<ns>.svc.<domain> with
// the Service's ClusterIPs, from the last list of Services: NXDOMAIN for
// other names in the domain, REFUSED for names outside it (or, with an
// upstream, the upstream's answer, as a cluster DNS forwards to the node's
// resolver), SERVFAIL until the first list succeeds.
type dnsServer struct {
	domain string // "cluster.local."
	// upstream is the UDP address of the resolver for other names; nil
	// or "" refuses them.
	upstream atomic.Pointer[string]
	list     func(context.Context) ([]service, error)
	refresh  time.Duration
	log      io.Writer

	// table is the last list's names; nil until one succeeds. Queries read
	// it without a lock.
	table atomic.Pointer[dnsTable]

	// listMu serializes lists and guards lastErr.
	listMu  sync.Mutex
	lastErr string
}

// dnsTable maps lower-case names with a trailing dot to addresses.
type dnsTable struct {
	names    map[string][]netip.Addr
	listedAt time.Time // when the list started: the data is at least this fresh
}

// dnsTTL is short: tests change Services and query again at once.
const dnsTTL = 1

func newDNSServer(domain string, list func(context.Context) ([]service, error), refresh time.Duration, log io.Writer) *dnsServer {
	return &dnsServer{
		domain:  strings.ToLower(strings.TrimSuffix(domain, ".")) + ".",
		list:    list,
		refresh: refresh,
		log:     log,
	}
}

// run lists Services every refresh interval and answers on udp, tcp and
// health until ctx is done; it returns when all its goroutines have.
func (s *dnsServer) run(ctx context.Context, udp net.PacketConn, tcp net.Listener, health net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	httpSrv := &http.Server{Handler: http.HandlerFunc(s.serveHealth), ReadHeaderTimeout: 10 * time.Second}
	conns := newConnSet()
	var queries sync.WaitGroup // UDP queries answered in their own goroutine
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		s.relist(ctx, time.Now())
		t := time.NewTicker(s.refresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.relist(ctx, time.Now())
			}
		}
	}()
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(health); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("health: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, addr, err := udp.ReadFrom(buf)
			if err != nil {
				if ctx.Err() == nil {
					errc <- fmt.Errorf("DNS over UDP: %w", err)
				}
				return
			}
			query := append([]byte(nil), buf[:n]...)
			queries.Add(1)
			go func() { // a miss waits for a list
				defer queries.Done()
				if resp := s.answer(ctx, query); resp != nil {
					udp.WriteTo(resp, addr)
				}
			}()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := tcp.Accept()
			if err != nil {
				if ctx.Err() == nil {
					errc <- fmt.Errorf("DNS over TCP: %w", err)
				}
				return
			}
			conns.serve(c, func(c net.Conn) { s.serveTCPConn(ctx, c) })
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	httpSrv.Close()
	udp.Close()
	tcp.Close()
	conns.closeAll()
	wg.Wait()
	conns.wait()
	queries.Wait()
	return err
}

// serveTCPConn answers length-prefixed queries on c until the client
// closes it or is idle for 10 seconds.
func (s *dnsServer) serveTCPConn(ctx context.Context, c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		query := make([]byte, n)
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		resp := s.answer(ctx, query)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func (s *dnsServer) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" {
		http.NotFound(w, r)
		return
	}
	if s.table.Load() == nil {
		s.listMu.Lock()
		msg := s.lastErr
		s.listMu.Unlock()
		http.Error(w, "Services not listed yet: "+msg, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// relist lists Services unless a list that started after asked has
// already succeeded, so a burst of misses costs one list.
func (s *dnsServer) relist(ctx context.Context, asked time.Time) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if t := s.table.Load(); t != nil && t.listedAt.After(asked) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	svcs, err := s.list(ctx)
	if err != nil {
		if msg := err.Error(); msg != s.lastErr && ctx.Err() == nil {
			fmt.Fprintf(s.log, "vrtest dns: list Services: %v\n", err)
			s.lastErr = msg
		}
		return
	}
	if s.lastErr != "" || s.table.Load() == nil {
		fmt.Fprintf(s.log, "vrtest dns: listed %d Services\n", len(svcs))
		s.lastErr = ""
	}
	t := &dnsTable{names: make(map[string][]netip.Addr, len(svcs)), listedAt: start}
	for _, svc := range svcs {
		if len(svc.ips) > 0 {
			t.names[strings.ToLower(svc.name+"."+svc.namespace+".svc."+s.domain)] = svc.ips
		}
	}
	s.table.Store(t)
}

// lookup returns name's addresses and RCodeSuccess, or RCodeNameError for
// a name no Service has even after a fresh list, or RCodeServerFailure if
// Services could never be listed.
func (s *dnsServer) lookup(ctx context.Context, name string) ([]netip.Addr, dnsmessage.RCode) {
	asked := time.Now()
	if t := s.table.Load(); t != nil {
		if addrs, ok := t.names[name]; ok {
			return addrs, dnsmessage.RCodeSuccess
		}
	}
	// The Service may be newer than the last list.
	s.relist(ctx, asked)
	t := s.table.Load()
	if t == nil {
		return nil, dnsmessage.RCodeServerFailure
	}
	if addrs, ok := t.names[name]; ok {
		return addrs, dnsmessage.RCodeSuccess
	}
	return nil, dnsmessage.RCodeNameError
}

// answer returns the response to query, or nil to drop it (not a query,
// or too broken to have an ID).
func (s *dnsServer) answer(ctx context.Context, query []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	qs, err := p.AllQuestions()
	switch {
	case err != nil || len(qs) != 1:
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil)
	case h.OpCode != 0:
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, nil, nil)
	}
	q := qs[0]
	name := strings.ToLower(q.Name.String())
	if !strings.HasSuffix(name, "."+s.domain) || q.Class != dnsmessage.ClassINET {
		if up := s.upstream.Load(); up != nil && *up != "" {
			b, err := s.forward(ctx, *up, query)
			if err == nil {
				return b
			}
			fmt.Fprintf(s.log, "vrtest dns: forward %s to %s: %v\n", name, *up, err)
			resp.RCode = dnsmessage.RCodeServerFailure
			return build(resp, &q, nil)
		}
		resp.RCode = dnsmessage.RCodeRefused
		return build(resp, &q, nil)
	}
	resp.Authoritative = true
	addrs, rcode := s.lookup(ctx, name)
	resp.RCode = rcode
	var answers []netip.Addr
	for _, a := range addrs {
		if (q.Type == dnsmessage.TypeA && a.Is4()) || (q.Type == dnsmessage.TypeAAAA && a.Is6()) {
			answers = append(answers, a)
		}
	}
	return build(resp, &q, answers)
}

// forward sends query to the resolver at upstream over UDP and returns its
// answer to it (by ID), waiting at most 2 s.
func (s *dnsServer) forward(ctx context.Context, upstream string, query []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", upstream)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if n >= 2 && buf[0] == query[0] && buf[1] == query[1] {
			return buf[:n], nil
		}
	}
}

// build encodes a response with question q (if any) answered by addrs.
func build(h dnsmessage.Header, q *dnsmessage.Question, addrs []netip.Addr) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), h)
	b.EnableCompression()
	var err error
	if q != nil {
		err = errors.Join(b.StartQuestions(), b.Question(*q), b.StartAnswers())
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		for _, a := range addrs {
			if a.Is4() {
				err = errors.Join(err, b.AResource(rh, dnsmessage.AResource{A: a.As4()}))
			} else {
				err = errors.Join(err, b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()}))
			}
		}
	}
	msg, ferr := b.Finish()
	if err = errors.Join(err, ferr); err != nil {
		// Only a name longer than DNS allows gets here, and it was parsed
		// from the query, so it fits.
		return nil
	}
	return msg
}
