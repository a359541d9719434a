package lb

import (
	"cmp"
	"net/netip"
	"slices"
)

// Status says whether an Entry can take new connections and, if not, how
// the data path refuses them. It follows kube-proxy's iptables proxier.
type Status uint8

const (
	// StatusOK: the Entry has at least one backend.
	StatusOK Status = iota
	// StatusNoEndpoints: the Service has no usable endpoint anywhere.
	// kube-proxy REJECTs: answer TCP with RST, UDP with ICMP port
	// unreachable, at once.
	StatusNoEndpoints
	// StatusNoLocalEndpoints: the key's traffic policy is Local and this
	// node has no usable endpoint, though other nodes do. kube-proxy
	// DROPs such traffic (KUBE-MARK-DROP) rather than rejecting it.
	StatusNoLocalEndpoints
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNoEndpoints:
		return "no endpoints"
	case StatusNoLocalEndpoints:
		return "no local endpoints"
	}
	return "Status(?)"
}

// candidate is an endpoint that backs one Service port in one address
// family, with its target port resolved.
type candidate struct {
	ep   *Endpoint
	addr netip.Addr
	port uint16
}

func (c *candidate) ready() bool { return c.ep.Ready }

// servingTerminating reports whether c may take traffic when no endpoint
// is ready: it is terminating but still passes its readiness probe.
func (c *candidate) servingTerminating() bool { return c.ep.Serving && c.ep.Terminating }

// usableEndpoints returns the endpoints of s that back port p on the
// address family of vip, chosen with kube-proxy's rules and policy (the
// internal or the external traffic policy, by the key)
// (pkg/proxy/topology.go CategorizeEndpoints), sorted by address and port
// without duplicates:
//
//   - Cluster policy: the ready endpoints (narrowed by topology hints
//     when every ready endpoint has hints and some name this node or
//     zone); if none is ready, the serving and terminating ones.
//   - Local policy: the ready endpoints on node; if none, the serving and
//     terminating ones on node. Topology hints do not apply.
//
// With none usable it reports why (StatusNoEndpoints or
// StatusNoLocalEndpoints).
func usableEndpoints(s *Service, p *ServicePort, vip netip.Addr, policy TrafficPolicy, node, zone string) ([]candidate, Status) {
	is4 := vip.Is4()
	all := make([]candidate, 0, len(s.Endpoints))
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		a := e.Addr.Unmap()
		if !a.IsValid() || a.Is4() != is4 {
			continue
		}
		port, ok := p.Target(e)
		if !ok {
			continue
		}
		all = append(all, candidate{ep: e, addr: a, port: port})
	}

	var out []candidate
	if policy == PolicyLocal {
		local := func(c *candidate) bool { return node != "" && c.ep.NodeName == node }
		out = filterCandidates(all, func(c *candidate) bool { return local(c) && c.ready() })
		if len(out) == 0 {
			out = filterCandidates(all, func(c *candidate) bool { return local(c) && c.servingTerminating() })
		}
		if len(out) == 0 {
			if slices.ContainsFunc(all, func(c candidate) bool { return c.ready() || c.servingTerminating() }) {
				return nil, StatusNoLocalEndpoints
			}
			return nil, StatusNoEndpoints
		}
	} else {
		hinted := topologyFilter(all, node, zone)
		out = filterCandidates(all, func(c *candidate) bool { return c.ready() && hinted(c) })
		if len(out) == 0 {
			// As kube-proxy: the fallback ignores topology, as a best
			// effort not to drop connections.
			out = filterCandidates(all, (*candidate).servingTerminating)
		}
		if len(out) == 0 {
			return nil, StatusNoEndpoints
		}
	}

	slices.SortStableFunc(out, func(a, b candidate) int {
		return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port))
	})
	out = slices.CompactFunc(out, func(a, b candidate) bool { return a.addr == b.addr && a.port == b.port })
	return out, StatusOK
}

// topologyFilter returns the predicate kube-proxy's canUseTopology and
// availableForTopology make of the ready endpoints' hints: if every ready
// endpoint has node hints and one names node, keep those naming node;
// else the same with zone hints and zone; else keep everything.
func topologyFilter(all []candidate, node, zone string) func(*candidate) bool {
	allNode, forNode := true, false
	allZone, forZone := true, false
	for i := range all {
		e := all[i].ep
		if !e.Ready {
			continue
		}
		if len(e.ForNodes) == 0 {
			allNode = false
		} else if node != "" && slices.Contains(e.ForNodes, node) {
			forNode = true
		}
		if len(e.ForZones) == 0 {
			allZone = false
		} else if zone != "" && slices.Contains(e.ForZones, zone) {
			forZone = true
		}
	}
	switch {
	case allNode && forNode:
		return func(c *candidate) bool { return slices.Contains(c.ep.ForNodes, node) }
	case allZone && forZone:
		return func(c *candidate) bool { return slices.Contains(c.ep.ForZones, zone) }
	}
	return func(*candidate) bool { return true }
}

func filterCandidates(all []candidate, keep func(*candidate) bool) []candidate {
	var out []candidate
	for i := range all {
		if keep(&all[i]) {
			out = append(out, all[i])
		}
	}
	return out
}
