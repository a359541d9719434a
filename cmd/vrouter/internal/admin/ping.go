package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/router"
)

// PingRequest says how to probe a peer (GET /v1/ping's query
// parameters).
type PingRequest struct {
	// Target is a peer's name (its overlay identity is probed) or an IP
	// address in a peer's pod CIDRs.
	Target string
	// Count probes (default 3) of Size bytes (default: 84 for IPv4, 104
	// for IPv6, as ping's 56 bytes of data), each awaited up to Timeout
	// (default 1s), Interval apart (default 200ms).
	Count, Size       int
	Timeout, Interval time.Duration
	// MTU searches for the largest probe that passes, up to the tunnel
	// MTU.
	MTU bool
}

// Ping defaults and bounds.
const (
	DefaultPingCount    = 3
	DefaultPingTimeout  = time.Second
	DefaultPingInterval = 200 * time.Millisecond
	maxPingCount        = 100
)

func (q *PingRequest) setDefaults() {
	if q.Count == 0 {
		q.Count = DefaultPingCount
	}
	if q.Timeout == 0 {
		q.Timeout = DefaultPingTimeout
	}
	if q.Interval == 0 {
		q.Interval = DefaultPingInterval
	}
}

// Duration bounds how long the router may take to answer q.
func (q PingRequest) Duration() time.Duration {
	q.setDefaults()
	d := time.Duration(q.Count) * (q.Timeout + q.Interval)
	if q.MTU {
		d += 16 * q.Timeout // a search halves a range of at most 65535 bytes
	}
	return d
}

func (q PingRequest) values() url.Values {
	v := url.Values{"target": {q.Target}}
	if q.Count != 0 {
		v.Set("count", strconv.Itoa(q.Count))
	}
	if q.Size != 0 {
		v.Set("size", strconv.Itoa(q.Size))
	}
	if q.Timeout != 0 {
		v.Set("timeout", q.Timeout.String())
	}
	if q.Interval != 0 {
		v.Set("interval", q.Interval.String())
	}
	if q.MTU {
		v.Set("mtu", "true")
	}
	return v
}

func parsePingRequest(v url.Values) (PingRequest, error) {
	q := PingRequest{Target: v.Get("target")}
	if q.Target == "" {
		return q, errors.New("target: want a peer's name or an IP address")
	}
	for _, p := range []struct {
		name string
		n    *int
		max  int
	}{{"count", &q.Count, maxPingCount}, {"size", &q.Size, 65535}} {
		if s := v.Get(p.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > p.max {
				return q, fmt.Errorf("%s %q: want a number from 1 to %d", p.name, s, p.max)
			}
			*p.n = n
		}
	}
	for _, p := range []struct {
		name string
		d    *time.Duration
	}{{"timeout", &q.Timeout}, {"interval", &q.Interval}} {
		if s := v.Get(p.name); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 || d > time.Minute {
				return q, fmt.Errorf("%s %q: want a duration up to 1m, e.g. 500ms", p.name, s)
			}
			*p.d = d
		}
	}
	if s := v.Get("mtu"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return q, fmt.Errorf("mtu %q: want true or false", s)
		}
		q.MTU = b
	}
	return q, nil
}

func (s *Server) getPing(w http.ResponseWriter, r *http.Request) {
	q, err := parsePingRequest(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "ping: %v", err)
		return
	}
	rep, err := s.Ping(r.Context(), q)
	if err != nil {
		writeError(w, http.StatusBadRequest, "ping: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// Ping probes q's target through the overlay: q.Count echo requests,
// then, if asked, the path MTU search. It fails only when the target is
// no peer's; probes without reply are reported in the answer.
func (s *Server) Ping(ctx context.Context, q PingRequest) (PingReport, error) {
	q.setDefaults()
	r := s.opts.Router
	rep := PingReport{Target: q.Target, Probes: []PingProbe{}}
	dst, err := s.pingTarget(q.Target)
	if err != nil {
		return rep, err
	}
	rep.Dst = dst
	size := q.Size
	if size == 0 {
		size = 84
		if dst.Is6() {
			size = 104
		}
	}
	probe := func(size int) (router.PingResult, error) {
		pctx, cancel := context.WithTimeout(ctx, q.Timeout)
		defer cancel()
		return r.Ping(pctx, dst, size)
	}
	for i := range q.Count {
		if i > 0 {
			select {
			case <-ctx.Done():
				return rep, ctx.Err()
			case <-time.After(q.Interval):
			}
		}
		res, err := probe(size)
		if i == 0 {
			if err != nil && !errors.Is(err, router.ErrPingTimeout) {
				return rep, err // no such peer, a size out of range
			}
			rep.Peer, rep.Src = res.Peer, res.Src
		}
		p := PingProbe{Seq: i + 1, Size: size, RTT: res.RTT}
		if err != nil {
			p.RTT, p.Error = 0, fmt.Sprintf("%v within %v", err, q.Timeout)
		}
		rep.Probes = append(rep.Probes, p)
	}
	for _, pe := range r.Config().Peers {
		if pe.Name == rep.Peer {
			rep.Endpoint = pe.Endpoint
		}
	}
	if q.MTU {
		rep.MTU = s.searchMTU(ctx, &rep, size, probe)
	}
	s.log.Debug("ping", zap.String("target", q.Target), zap.String("peer", rep.Peer), zap.Int("probes", len(rep.Probes)))
	return rep, ctx.Err()
}

// searchMTU finds the largest probe that passes, up to the tunnel MTU:
// the tunnel MTU first (one probe when the path carries it), else halving
// the range between a size that passed (size, if one of rep's probes of
// it did, else the smallest probe) and one that did not.
func (s *Server) searchMTU(ctx context.Context, rep *PingReport, size int, probe func(int) (router.PingResult, error)) *PingMTU {
	m := &PingMTU{TunnelMTU: s.opts.Router.MTU()}
	pass := func(n int) bool {
		m.Probes++
		_, err := probe(n)
		return err == nil
	}
	if pass(m.TunnelMTU) {
		m.Largest = m.TunnelMTU
		return m
	}
	lo := 0
	for _, p := range rep.Probes {
		if p.Error == "" {
			lo = size
		}
	}
	if lo == 0 {
		lo = router.PingMinSize4
		if rep.Dst.Is6() {
			lo = router.PingMinSize6
		}
		if !pass(lo) {
			return m
		}
	}
	hi := m.TunnelMTU // fails
	for hi-lo > 1 && ctx.Err() == nil {
		mid := lo + (hi-lo)/2
		if pass(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	m.Largest = lo
	return m
}

// pingTarget resolves a peer's name to its overlay identity (the network
// address of its first pod CIDR of a family this router has an identity
// of, IPv4 first), and parses an IP address.
func (s *Server) pingTarget(target string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(target); err == nil {
		return a.Unmap(), nil
	}
	r := s.opts.Router
	var names []string
	for _, p := range r.Config().Peers {
		names = append(names, p.Name)
		if p.Name != target {
			continue
		}
		for _, v4 := range []bool{true, false} {
			if !r.Identity(v4).IsValid() {
				continue
			}
			for _, c := range p.PodCIDRs {
				if c.Addr().Is4() == v4 {
					return c.Masked().Addr(), nil
				}
			}
		}
		return netip.Addr{}, fmt.Errorf("peer %q has no pod CIDR of a family this router has an address of", target)
	}
	return netip.Addr{}, fmt.Errorf("%q is neither an IP address nor a peer's name (peers: %v)", target, names)
}
