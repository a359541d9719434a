package admin

import (
	"net/http"
	"time"

	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
)

func (s *Server) getStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// Status returns the router at a glance: what the process says of itself
// (Options.Process), then counts of the data path's state.
func (s *Server) Status() Status {
	var p Process
	if s.opts.Process != nil {
		p = s.opts.Process()
	}
	r := s.opts.Router
	st := Status{
		Version: p.Version, Commit: p.Commit, Mode: p.Mode, Source: p.Source,
		Started: p.Started.UTC(), LastReload: p.LastReload, Ready: p.Ready, NotReady: p.NotReady,
		TUN: tunStatus(r),
	}
	if st.LastReload != nil {
		rl := *st.LastReload
		rl.Time = rl.Time.UTC()
		st.LastReload = &rl
	}

	// Peers: the one heard from least recently is the oldest, one never
	// heard from older than any.
	peers := s.Peers()
	st.Overlay = s.overlay(peers)
	for _, pe := range peers {
		st.Peers.Total++
		if !pe.LastSeen.IsZero() {
			st.Peers.HeardFrom++
		}
		if st.Peers.Oldest == "" || olderThan(pe.LastSeen, st.Peers.OldestLastSeen) {
			st.Peers.Oldest, st.Peers.OldestLastSeen = pe.Name, pe.LastSeen
		}
	}

	if t := s.opts.Table; t != nil {
		seen := map[lb.ServiceName]bool{}
		for _, e := range t.Entries() {
			st.ServicePorts++
			name := e.Name().ServiceName
			if seen[name] {
				continue
			}
			seen[name] = true
			if svc, ok := t.Service(name.Namespace, name.Name); ok {
				st.Services++
				st.Endpoints += len(svc.Endpoints)
			}
		}
	}
	if s.opts.HostSockets != nil {
		for _, h := range s.opts.HostSockets() {
			if h.State == "listening" {
				st.HostSockets.Listening++
			} else {
				st.HostSockets.Failed++
			}
		}
	}

	drops := map[string]uint64{}
	rs := r.Stats()
	for reason, n := range rs.Drops {
		drops[reason.String()] = n
	}
	drops["no_route"] = rs.NoRoute - rs.Drops[router.DropNoPeer] // listed on its own
	drops["ttl_exceeded"] = rs.TTLExceeded
	drops["too_big"] = rs.TooBig
	if n := s.opts.NAT; n != nil {
		ns := n.Stats()
		drops["nat_no_endpoints"] = ns.RefusedNoEndpoints
		drops["nat_flow_cap"] = ns.RefusedCap
		drops["nat_no_port"] = ns.RefusedPorts
		drops["nat_fragment"] = ns.Fragments
		drops["nat_mid_stream"] = ns.MidStream
	}
	for k, v := range drops {
		if v == 0 {
			delete(drops, k)
		}
	}
	if len(drops) > 0 {
		st.Drops = drops
	}
	return st
}

// overlay is the overlay's encryption and, for WireGuard, its sessions
// among peers.
func (s *Server) overlay(peers []Peer) *OverlayStatus {
	wg := s.opts.WireGuard
	if wg == nil {
		return &OverlayStatus{Encryption: "none"}
	}
	o := &OverlayWireGuard{PublicKey: wg.PublicKey(), PeersWithoutKey: s.opts.Router.Stats().PeersWithoutKey}
	for _, p := range peers {
		if p.WireGuard == nil || p.WireGuard.Session == SessionNoKey {
			continue
		}
		o.PeersWithKey++
		if p.WireGuard.Session == SessionUp {
			o.SessionsUp++
		}
	}
	return &OverlayStatus{Encryption: "wireguard", WireGuard: o}
}

// olderThan orders last-heard times, never (the zero Time) first.
func olderThan(a, b time.Time) bool {
	switch {
	case a.IsZero():
		return !b.IsZero()
	case b.IsZero():
		return false
	}
	return a.Before(b)
}

// busyPoll formats a busy-polling window, "" for none.
func busyPoll(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

// tunStatus is the TUN line of a status.
func tunStatus(r *router.Router) TUNStatus {
	st := TUNStatus{Name: r.TUNName(), MTU: r.MTU(), Offload: r.Offload(), UDPOffload: r.UDPOffload(), BusyPoll: busyPoll(r.BusyPolling())}
	var why error
	if st.BatchIO, why = r.BatchIO(); !st.BatchIO && why != nil {
		st.BatchIOOff = why.Error()
	}
	return st
}
