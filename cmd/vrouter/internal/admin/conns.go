package admin

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/lb"
)

// DefaultConnsLimit is how many connections GET /v1/conns returns when
// the request does not say: a table of a quarter million flows is not
// shipped whole unless asked for.
const DefaultConnsLimit = 1000

// ConnsMatchedHeader is the header of a GET /v1/conns answer that counts
// every connection the filters matched, of which the body holds the
// first limit.
const ConnsMatchedHeader = "Vrouter-Conns-Matched"

// ConnQuery selects connections. GET and DELETE /v1/conns take it as
// query parameters: service=NS/NAME, backend=IP[:PORT], client=IP[:PORT],
// limit=N.
type ConnQuery struct {
	// Service selects a Service's connections: "default/my-service"
	// (every port) or "kube-system/kube-dns:dns" (one named port).
	Service string
	// Backend and Client select by address, and by port when they have
	// one ("10.244.1.2" or "10.244.1.2:80").
	Backend, Client AddrFilter
	// Limit caps the connections listed, in order; 0 is
	// DefaultConnsLimit, -1 no cap. DELETE ignores it.
	Limit int
}

// AddrFilter matches an address, and a port unless Port is 0.
type AddrFilter struct {
	Addr netip.Addr
	Port uint16
}

// ParseAddrFilter parses "IP", "IP:PORT" or "[IPv6]:PORT".
func ParseAddrFilter(s string) (AddrFilter, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return AddrFilter{Addr: ap.Addr().Unmap(), Port: ap.Port()}, nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return AddrFilter{}, fmt.Errorf("%q: want IP or IP:PORT", s)
	}
	return AddrFilter{Addr: a.Unmap()}, nil
}

func (f AddrFilter) String() string {
	if f.Port == 0 {
		return f.Addr.String()
	}
	return netip.AddrPortFrom(f.Addr, f.Port).String()
}

func (f AddrFilter) matches(ap netip.AddrPort) bool {
	return !f.Addr.IsValid() || ap.Addr().Unmap() == f.Addr && (f.Port == 0 || ap.Port() == f.Port)
}

// Filtered reports whether q selects anything short of every connection.
func (q ConnQuery) Filtered() bool {
	return q.Service != "" || q.Backend.Addr.IsValid() || q.Client.Addr.IsValid()
}

func (q ConnQuery) matches(c *Conn) bool {
	if q.Service != "" && c.Service != q.Service && !strings.HasPrefix(c.Service, q.Service+":") {
		return false
	}
	return q.Backend.matches(c.Backend) && q.Client.matches(c.Client)
}

// values encodes q as query parameters.
func (q ConnQuery) values() url.Values {
	v := url.Values{}
	if q.Service != "" {
		v.Set("service", q.Service)
	}
	if q.Backend.Addr.IsValid() {
		v.Set("backend", q.Backend.String())
	}
	if q.Client.Addr.IsValid() {
		v.Set("client", q.Client.String())
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// parseConnQuery reads a ConnQuery from query parameters.
func parseConnQuery(v url.Values) (ConnQuery, error) {
	q := ConnQuery{Service: v.Get("service")}
	if q.Service != "" {
		if ns, name, ok := strings.Cut(q.Service, "/"); !ok || ns == "" || name == "" {
			return q, fmt.Errorf("service %q: want NAMESPACE/NAME", q.Service)
		}
	}
	for _, p := range []struct {
		name string
		f    *AddrFilter
	}{{"backend", &q.Backend}, {"client", &q.Client}} {
		if s := v.Get(p.name); s != "" {
			f, err := ParseAddrFilter(s)
			if err != nil {
				return q, fmt.Errorf("%s %w", p.name, err)
			}
			*p.f = f
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < -1 {
			return q, fmt.Errorf("limit %q: want a number ≥ 0 (0: no limit)", s)
		}
		q.Limit = n
		if n == 0 {
			q.Limit = -1
		}
	}
	return q, nil
}

func (s *Server) getConns(w http.ResponseWriter, r *http.Request) {
	q, err := parseConnQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "conns: %v", err)
		return
	}
	out, matched := s.QueryConns(q)
	w.Header().Set(ConnsMatchedHeader, strconv.Itoa(matched))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteConns(w http.ResponseWriter, r *http.Request) {
	q, err := parseConnQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "delete conns: %v", err)
		return
	}
	if !q.Filtered() {
		writeError(w, http.StatusBadRequest, "delete conns: refusing to delete every connection: select some by service, backend or client")
		return
	}
	d := s.DeleteConns(q)
	s.log.Info("connections deleted", zap.String("query", q.values().Encode()), zap.Int("nat", d.NAT), zap.Int("proxy", d.Proxy))
	writeJSON(w, http.StatusOK, d)
}

// QueryConns returns the connections q selects, sorted by mode, client,
// Service address and protocol, at most q's limit of them, and how many
// matched in all. It keeps no more than twice the limit at a time.
func (s *Server) QueryConns(q ConnQuery) ([]Conn, int) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultConnsLimit
	}
	out := []Conn{}
	matched := 0
	trim := func() {
		slices.SortFunc(out, compareConns)
		if limit >= 0 && len(out) > limit {
			out = out[:limit]
		}
	}
	s.eachConn(func(c Conn) bool {
		if !q.matches(&c) {
			return true
		}
		matched++
		out = append(out, c)
		if limit >= 0 && len(out) >= 2*max(limit, 1) {
			trim()
		}
		return true
	})
	trim()
	return out, matched
}

func compareConns(a, b Conn) int {
	return cmp.Or(cmp.Compare(a.Mode, b.Mode), a.Client.Compare(b.Client), a.VIP.Compare(b.VIP), cmp.Compare(a.Protocol, b.Protocol))
}

// DeleteConns removes the nat flows q selects from the flow table and
// resets the proxied connections it selects.
func (s *Server) DeleteConns(q ConnQuery) ConnsDeleted {
	var d ConnsDeleted
	if n := s.opts.NAT; n != nil {
		d.NAT = n.DeleteFlows(func(f lb.FlowInfo) bool {
			c := s.natConn(f)
			return q.matches(&c)
		})
	}
	if p := s.opts.Proxy; p != nil {
		d.Proxy = p.ResetConns(func(pc lb.ProxyConnInfo) bool {
			c := s.proxyConn(pc)
			return q.matches(&c)
		})
	}
	return d
}

// eachConn calls fn with each connection the load balancer carries, in
// no order, until fn returns false: nat flows (one flow shard at a time,
// under its lock: fn must be quick), then proxied connections, then
// pods' egress flows.
func (s *Server) eachConn(fn func(Conn) bool) {
	more := true
	if n := s.opts.NAT; n != nil {
		n.EachFlow(func(f lb.FlowInfo) bool {
			more = fn(s.natConn(f))
			return more
		})
	}
	if p := s.opts.Proxy; p != nil && more {
		for _, pc := range p.Conns() {
			if more = fn(s.proxyConn(pc)); !more {
				return
			}
		}
	}
	if e := s.opts.Egress; e != nil && more {
		for _, f := range e.Flows() {
			if !fn(egressConn(f)) {
				return
			}
		}
	}
}

// egressConn is a pod's egress flow (egress.masquerade) as a Conn: the
// pod is the client, the destination its VIP and backend, the node's
// address and port the SNAT the destination sees.
func egressConn(f lb.EgressFlowInfo) Conn {
	c := Conn{Mode: "egress", Protocol: f.Proto.String(), Client: f.Pod, VIP: f.Dst, Backend: f.Dst, SNAT: f.Local}
	if f.Proto == lb.EgressTCP {
		c.State = "ESTABLISHED"
	}
	return c
}

// serviceOf names the Service port of vip, if it still exists.
func (s *Server) serviceOf(vip netip.AddrPort, proto lb.Protocol) string {
	if s.opts.Table == nil {
		return ""
	}
	if e := s.opts.Table.Lookup(lb.ServiceKey{VIP: vip.Addr(), Port: vip.Port(), Proto: proto}); e != nil {
		return e.Name().String()
	}
	return ""
}

func (s *Server) natConn(f lb.FlowInfo) Conn {
	c := Conn{
		Mode: "nat", Protocol: f.Proto.String(), Service: s.serviceOf(f.VIP, f.Proto),
		Client: f.Client, VIP: f.VIP, Backend: f.Backend, SNAT: f.SNAT, LastSeen: f.LastSeen.UTC(),
		State: f.State, Started: f.Started.UTC(),
		Orig:  &FlowCount{Packets: f.Packets[0], Bytes: f.Bytes[0]},
		Reply: &FlowCount{Packets: f.Packets[1], Bytes: f.Bytes[1]},
	}
	return c
}

func (s *Server) proxyConn(pc lb.ProxyConnInfo) Conn {
	c := Conn{
		Mode: "proxy", Protocol: lb.TCP.String(), Service: s.serviceOf(pc.VIP, lb.TCP),
		Client: pc.Client, VIP: pc.VIP, Backend: pc.Backend, State: "ESTABLISHED",
		Started: pc.Started.UTC(), LastSeen: pc.LastSeen.UTC(),
		Orig: &FlowCount{Bytes: pc.Bytes[0]}, Reply: &FlowCount{Bytes: pc.Bytes[1]},
	}
	if pc.Draining {
		c.DrainAt = pc.DrainAt.UTC()
	}
	return c
}
