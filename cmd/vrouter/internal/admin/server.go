package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/pcap"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/packet"
	"github.com/vrouter/vrouter/router/wireguard"
)

// Options configure a Server. Router is required; Table, NAT and Proxy
// may be nil when the router has no such part.
type Options struct {
	// Log receives one line per state change (log level, capture start
	// and stop). Default: no logging.
	Log    *zap.Logger
	Router *router.Router
	Table  *lb.Table
	NAT    *lb.NAT
	Proxy  *lb.Proxy
	// Egress is the egress masquerade, nil when it is off.
	Egress *lb.Egress
	// WireGuard is the encrypted overlay, the Router's overlay
	// transport; nil for a plain overlay.
	WireGuard *wireguard.Conn
	// HostPorts returns the host sockets of a Service (node ports,
	// external addresses, health check) with their state. Default: none.
	HostPorts func(lb.ServiceName) []HostPort
	// Level is the process's log level, which PUT /v1/log-level sets.
	// Default: a level of its own, so the API works but changes nothing.
	Level zap.AtomicLevel
	// Process reports what the process knows of itself for GET
	// /v1/status (version, mode, source, reloads, readiness). Called once
	// per request, from the request's goroutine. Default: nothing known.
	Process func() Process
	// HostSockets returns every host socket with its state, for GET
	// /v1/status. Default: none.
	HostSockets func() []HostPort
}

// Server answers the admin API. It keeps no state between requests.
type Server struct {
	opts Options
	log  *zap.Logger
}

// NewServer returns a Server. It starts nothing: see Handler and
// ServeHTTP.
func NewServer(opts Options) *Server {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Level == (zap.AtomicLevel{}) {
		opts.Level = zap.NewAtomicLevel()
	}
	return &Server{opts: opts, log: log}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/routes", s.getRoutes)
	mux.HandleFunc("GET /v1/peers", s.getPeers)
	mux.HandleFunc("GET /v1/services", s.getServices)
	mux.HandleFunc("GET /v1/conns", s.getConns)
	mux.HandleFunc("DELETE /v1/conns", s.deleteConns)
	mux.HandleFunc("GET /v1/log-level", s.getLogLevel)
	mux.HandleFunc("PUT /v1/log-level", s.putLogLevel)
	mux.HandleFunc("GET /v1/capture", s.capture)
	mux.HandleFunc("GET /v1/status", s.getStatus)
	mux.HandleFunc("GET /v1/ping", s.getPing)
	// Go's profiles of the running router, for `go tool pprof`: the
	// socket is its owner's alone (0600), as the rest of the API.
	//
	//	curl --unix-socket /run/vrouter/vr0….sock -o cpu.pprof 'http://vrouter/debug/pprof/profile?seconds=10'
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, fmt.Appendf(nil, `{"error":%q}`, err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

func (s *Server) getRoutes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Routes())
}

// Routes returns the router's table, sorted by destination (routes of one
// destination keep their lookup order), with their counters.
func (s *Server) Routes() []Route {
	r := s.opts.Router
	st := r.Stats()
	owner := make(map[netip.Prefix]string)
	for _, p := range r.Config().Peers {
		for _, c := range p.PodCIDRs {
			owner[c] = p.Name
		}
	}
	out := []Route{}
	for _, rt := range r.Routes() {
		ar := Route{Dst: rt.Dst, Gateway: rt.Gateway, Dev: rt.Dev, Unreachable: rt.Unreachable}
		switch {
		case rt.Unreachable:
		case rt.Dev == router.OverlayNICName:
			ar.Peer = owner[rt.Dst]
			ar.Counters = countersOf(st.Peers[ar.Peer].LinkStats)
		default:
			ar.Counters = countersOf(st.TUN)
		}
		out = append(out, ar)
	}
	// By destination, the unreachable rest of each cluster CIDR last.
	slices.SortStableFunc(out, func(a, b Route) int {
		return cmp.Or(boolCmp(a.Unreachable, b.Unreachable), a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()))
	})
	return out
}

func (s *Server) getPeers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Peers())
}

// Peers returns the peer routers by name, with their counters and, over
// an encrypted overlay, their WireGuard sessions.
func (s *Server) Peers() []Peer {
	r := s.opts.Router
	st := r.Stats()
	sessions := s.sessions()
	now := time.Now()
	out := []Peer{}
	for _, p := range r.Config().Peers {
		ps := st.Peers[p.Name]
		ap := Peer{Name: p.Name, Endpoint: p.Endpoint, PodCIDRs: p.PodCIDRs, Counters: countersOf(ps.LinkStats), PublicKey: p.PublicKey}
		if ps.LastSeenUnixNano != 0 {
			ap.LastSeen = time.Unix(0, ps.LastSeenUnixNano).UTC()
		}
		if s.opts.WireGuard != nil {
			ap.WireGuard = peerSession(p, sessions, now)
		}
		out = append(out, ap)
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// sessions returns the encrypted overlay's sessions by peer key; none
// for a plain overlay, or if the overlay cannot say.
func (s *Server) sessions() map[wireguard.Key]wireguard.PeerStatus {
	if s.opts.WireGuard == nil {
		return nil
	}
	ss, err := s.opts.WireGuard.Peers()
	if err != nil {
		s.log.Debug("WireGuard sessions unknown", zap.Error(err))
		return nil
	}
	out := make(map[wireguard.Key]wireguard.PeerStatus, len(ss))
	for _, ps := range ss {
		out[ps.PublicKey] = ps
	}
	return out
}

// peerSession is peer p's session among sessions at now: "no key" for a
// peer without one, "down" for one the device does not know (yet).
func peerSession(p router.Peer, sessions map[wireguard.Key]wireguard.PeerStatus, now time.Time) *PeerSession {
	if p.PublicKey.IsZero() {
		return &PeerSession{Session: SessionNoKey}
	}
	ps, ok := sessions[p.PublicKey]
	if !ok {
		return &PeerSession{Session: SessionDown}
	}
	out := &PeerSession{
		Session: SessionDown, Handshakes: ps.Handshakes, Rekeys: ps.Rekeys,
		RxBytes: ps.RxBytes, TxBytes: ps.TxBytes,
	}
	if ps.Up(now) {
		out.Session = SessionUp
	}
	if !ps.LastHandshake.IsZero() {
		out.LatestHandshake = ps.LastHandshake.UTC()
	}
	if ep := unmap(ps.Endpoint); ep.IsValid() && ep != unmap(p.Endpoint) {
		out.Endpoint = ep
	}
	return out
}

// unmap is a with an IPv4-mapped IPv6 address as IPv4.
func unmap(a netip.AddrPort) netip.AddrPort {
	if !a.IsValid() {
		return a
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func (s *Server) getServices(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Services())
}

// Services returns the Services of the table with each of their ports'
// endpoints (all of them, with their conditions and whether they are in
// use) and counters, sorted by namespace and name.
func (s *Server) Services() []Service {
	out := []Service{}
	t := s.opts.Table
	if t == nil {
		return out
	}
	var cur *Service
	var svc lb.Service
	for _, e := range t.Entries() {
		name := e.Name().ServiceName
		if cur == nil || cur.Namespace != name.Namespace || cur.Name != name.Name {
			var ok bool
			if svc, ok = t.Service(name.Namespace, name.Name); !ok {
				continue // deleted since Entries
			}
			as := Service{
				Namespace: name.Namespace, Name: name.Name, Type: svc.Type.String(),
				ClusterIPs: svc.ClusterIPs, ExternalIPs: svc.ExternalIPs, LoadBalancerIPs: svc.LoadBalancerIPs,
				HealthCheckNodePort: svc.HealthCheckNodePort, Ports: []ServicePort{},
			}
			if svc.Type != lb.TypeClusterIP || len(svc.ExternalIPs) > 0 {
				as.ExternalTrafficPolicy = svc.ExternalTrafficPolicy.String()
			}
			if s.opts.HostPorts != nil {
				as.HostPorts = s.opts.HostPorts(name)
			}
			out = append(out, as)
			cur = &out[len(out)-1]
		}
		cur.Ports = append(cur.Ports, servicePort(e, &svc))
	}
	return out
}

func servicePort(e *lb.Entry, svc *lb.Service) ServicePort {
	st := e.Stats()
	k := e.Key()
	sp := ServicePort{
		Name: e.Name().Port, ClusterIP: k.VIP, Port: k.Port, Protocol: k.Proto.String(),
		External: k.External, NodePort: k.IsNodePort(),
		Mode: e.Mode().String(), Picker: e.PickerKind().String(), Status: st.Status.String(),
		Conns: st.Conns, Active: st.Active, Refused: st.Refused, Endpoints: []Endpoint{},
	}
	inUse := make(map[netip.AddrPort]lb.BackendStats, len(st.Backends))
	for _, b := range st.Backends {
		inUse[b.AddrPort] = b
	}
	var port *lb.ServicePort
	for i := range svc.Ports {
		p := &svc.Ports[i]
		if p.Name != sp.Name || p.Proto != k.Proto {
			continue
		}
		if k.IsNodePort() && p.NodePort == k.Port || !k.IsNodePort() && p.Port == k.Port {
			port = p
		}
	}
	if port == nil {
		return sp
	}
	for i := range svc.Endpoints {
		ep := &svc.Endpoints[i]
		if ep.Addr.Is4() != k.VIP.Is4() {
			continue
		}
		target, ok := port.Target(ep)
		if !ok {
			continue
		}
		ae := Endpoint{
			Address: netip.AddrPortFrom(ep.Addr, target), Node: ep.NodeName,
			Ready: ep.Ready, Serving: ep.Serving, Terminating: ep.Terminating,
		}
		if b, ok := inUse[ae.Address]; ok {
			ae.InUse, ae.Conns, ae.Active = true, b.Conns, b.Active
			ae.Ejected, ae.Ejections = b.Ejected, b.Ejections
		}
		sp.Endpoints = append(sp.Endpoints, ae)
	}
	slices.SortFunc(sp.Endpoints, func(a, b Endpoint) int { return a.Address.Compare(b.Address) })
	return sp
}

// Conns returns every nat mode flow and proxied connection, sorted by
// mode, client and Service address (see QueryConns).
func (s *Server) Conns() []Conn {
	out, _ := s.QueryConns(ConnQuery{Limit: -1})
	return out
}

func (s *Server) getLogLevel(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, LogLevel{Level: s.opts.Level.Level().String()})
}

func (s *Server) putLogLevel(w http.ResponseWriter, r *http.Request) {
	var req LogLevel
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "log level: body: %v (want {\"level\": \"debug\"})", err)
		return
	}
	lvl, err := zapcore.ParseLevel(req.Level)
	if err != nil || lvl < zapcore.DebugLevel || lvl > zapcore.ErrorLevel {
		writeError(w, http.StatusBadRequest, "log level %q: want debug, info, warn or error", req.Level)
		return
	}
	if old := s.opts.Level.Level(); old != lvl {
		s.opts.Level.SetLevel(lvl)
		// Logged at Warn so the line shows whatever the new level is.
		s.log.Warn("log level changed", zap.Stringer("from", old), zap.Stringer("to", lvl), zap.String("by", "admin API"))
	}
	writeJSON(w, http.StatusOK, LogLevel{Level: lvl.String()})
}

// CaptureDroppedTrailer is the HTTP trailer of a capture stream that counts
// the packets the router left out of it because the reader fell behind.
const CaptureDroppedTrailer = "Vrouter-Capture-Dropped"

// ParseNIC maps the names the capture command takes ("tun", "overlay", or
// the NICs' own names) to the router's NIC IDs.
func ParseNIC(name, tunName string) (tcpip.NICID, error) {
	switch name {
	case "tun", tunName:
		return router.TUNNIC, nil
	case "overlay", router.OverlayNICName:
		return router.OverlayNIC, nil
	}
	return 0, fmt.Errorf("NIC %q: want tun or overlay", name)
}

// capture streams the packets crossing one NIC as a pcap file until the
// client goes away, the server stops, or count packets were sent:
// GET /v1/capture?nic=tun|overlay[&count=N][&snaplen=N][&host=IP][&port=N][&proto=tcp|udp|icmp|N].
func (s *Server) capture(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tunName := s.opts.Router.Stack().FindNICNameFromID(router.TUNNIC)
	nic, err := ParseNIC(q.Get("nic"), tunName)
	if err != nil {
		writeError(w, http.StatusBadRequest, "capture: %v", err)
		return
	}
	var count, snapLen int
	for _, p := range []struct {
		name string
		v    *int
	}{{"count", &count}, {"snaplen", &snapLen}} {
		if s := q.Get(p.name); s != "" {
			if *p.v, err = strconv.Atoi(s); err != nil || *p.v < 0 {
				writeError(w, http.StatusBadRequest, "capture: %s %q: want a number ≥ 0 (0: no limit)", p.name, s)
				return
			}
		}
	}
	filter, err := ParseCaptureFilter(q.Get("host"), q.Get("port"), q.Get("proto"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "capture: %v", err)
		return
	}
	c, err := s.opts.Router.StartCapture(nic, router.CaptureOptions{SnapLen: snapLen, Filter: filter})
	if errors.Is(err, router.ErrCaptureBusy) {
		writeError(w, http.StatusConflict, "capture: %v (one capture per NIC at a time; stop the other one first)", err)
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "capture: %v", err)
		return
	}
	defer c.Close()
	s.log.Info("capture started", zap.String("nic", c.NIC()), zap.Int("count", count), zap.String("filter", filterString(filter)))

	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	w.Header().Set("Trailer", CaptureDroppedTrailer)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	n := 0
	pw, err := pcap.NewWriter(w, snapLen)
	if err == nil {
		flush()
		for count == 0 || n < count {
			var p router.CapturedPacket
			select {
			case <-r.Context().Done():
				err = r.Context().Err()
			case p = <-c.Packets():
			}
			if err != nil {
				break
			}
			if err = pw.WritePacket(p.Time, p.Data, p.Len); err != nil {
				break
			}
			flush()
			n++
		}
	}
	c.Close()
	w.Header().Set(CaptureDroppedTrailer, strconv.FormatUint(c.Dropped(), 10))
	s.log.Info("capture stopped", zap.String("nic", c.NIC()), zap.Int("packets", n),
		zap.Uint64("dropped", c.Dropped()), zap.NamedError("reason", err))
}

// ParseCaptureFilter reads a capture filter: a host address, a port and
// a protocol (tcp, udp, icmp — which takes ICMPv6 too — or a number),
// each "" for any.
func ParseCaptureFilter(host, port, proto string) (router.CaptureFilter, error) {
	var f router.CaptureFilter
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return f, fmt.Errorf("host %q: want an IP address", host)
		}
		f.Host = a.Unmap()
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("port %q: want a number from 1 to 65535", port)
		}
		f.Port = uint16(n)
	}
	switch strings.ToLower(proto) {
	case "":
	case "tcp":
		f.Proto = packet.TCP
	case "udp":
		f.Proto = packet.UDP
	case "icmp", "icmp6", "icmpv6":
		f.Proto = packet.ICMPv4
	default:
		n, err := strconv.ParseUint(proto, 10, 8)
		if err != nil || n == 0 {
			return f, fmt.Errorf("proto %q: want tcp, udp, icmp or an IP protocol number", proto)
		}
		f.Proto = uint8(n)
	}
	return f, nil
}

// filterString writes f as tcpdump's filter language would.
func filterString(f router.CaptureFilter) string {
	var parts []string
	if f.Host.IsValid() {
		parts = append(parts, "host "+f.Host.String())
	}
	if f.Port != 0 {
		parts = append(parts, "port "+strconv.Itoa(int(f.Port)))
	}
	switch f.Proto {
	case 0:
	case packet.TCP:
		parts = append(parts, "tcp")
	case packet.UDP:
		parts = append(parts, "udp")
	case packet.ICMPv4:
		parts = append(parts, "(icmp or icmp6)")
	default:
		parts = append(parts, "proto "+strconv.Itoa(int(f.Proto)))
	}
	return strings.Join(parts, " and ")
}

// ErrSocketInUse is returned by Listen when another process serves the
// socket.
var ErrSocketInUse = errors.New("another process is serving it")

// Listen opens the admin socket at path: it creates the socket's directory
// (mode 0700) if needed, replaces a stale socket a dead process left, and
// makes the socket 0600 so that only its owner (root) can use it. It
// fails with ErrSocketInUse if a live process serves path, and refuses to
// replace anything that is not a socket.
//
// The socket is 0600 from the moment path names it: it is bound in a
// fresh 0700 directory beside path, where no other user can reach it,
// chmod'ed there, and then linked to path, which fails like bind(2) if
// path exists. Binding at path and chmod'ing afterwards would leave a
// window in which, under a loose umask, any local user could connect;
// setting the umask around the bind would change it for every goroutine
// of the process. The listener's Close removes path (if it is still this
// socket).
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: the path exists and is not a socket; remove it or choose another path", path)
		}
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: %w", path, ErrSocketInUse)
		}
		// Nobody answers: a stale socket of a process that died.
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, rerr)
		}
	}

	tmp, err := os.MkdirTemp(dir, ".s")
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it unlinks path instead
	if err := os.Chmod(bound, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Link(bound, path); err != nil {
		ln.Close()
		if errors.Is(err, os.ErrExist) {
			// Another process took path since the check above.
			return nil, fmt.Errorf("admin socket %s: %w", path, ErrSocketInUse)
		}
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return &listener{UnixListener: ln, path: path, fi: fi}, nil
}

// listener is the admin socket's listener: its Addr is path, not the
// temporary name it was bound at, and its Close removes the socket at
// path, as a net.UnixListener does at the path it bound, but only if path
// still names this socket and not a successor's.
type listener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	once sync.Once
}

func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// ServeHTTP serves h on ln until ctx is done, then shuts the server down:
// requests in progress (captures too) see their context end, and it
// returns once they have. It closes ln. A failure of ln is returned.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SocketDir is where admin sockets live by default.
const SocketDir = "/run/vrouter"

// DefaultSocket is the admin socket of the router of TUN device tunName
// in the calling process's network namespace:
// /run/vrouter/<tunName>.netns-<inode>.sock, inode being the namespace's
// (readlink /proc/self/ns/net says net:[inode]). Routers in different
// network namespaces sharing one /run (namespace setups on one host)
// thus never take each other's path, and a status command run in a
// router's namespace (on the node, in a hostNetwork Pod through kubectl
// exec, in a sidecar's Pod) finds that router's socket by the same rule.
// Where the namespace cannot be read (no /proc, off Linux) it is
// /run/vrouter/<tunName>.sock.
func DefaultSocket(tunName string) string {
	if ino := netnsInode(); ino != "" {
		return filepath.Join(SocketDir, tunName+".netns-"+ino+".sock")
	}
	return filepath.Join(SocketDir, tunName+".sock")
}

// netnsInode returns the inode of the calling process's network
// namespace, in decimal, or "" if /proc does not say.
func netnsInode() string {
	link, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return ""
	}
	ino, ok := strings.CutPrefix(link, "net:[")
	ino, ok2 := strings.CutSuffix(ino, "]")
	if _, err := strconv.ParseUint(ino, 10, 64); !ok || !ok2 || err != nil {
		return ""
	}
	return ino
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
