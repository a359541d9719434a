package tun

import (
	"fmt"
	"net/netip"
	"strings"
)

// Egress policy routing. With masquerading on, the node kernel steers
// pods' traffic to destinations outside the cluster into the TUN, where
// the router re-originates it from the node's own sockets (lb.Egress),
// with policy rules beside the main table instead of iptables:
//
//	6200: iif vr0 lookup main                        what the router hands back routes as before
//	6201: from 10.244.0.0/24 to 10.244.0.0/16 lookup main   one per pod CIDR and non-masquerade CIDR:
//	6201: from 10.244.0.0/24 to 10.96.0.0/12 lookup main    cluster-internal traffic routes as before
//	6202: from 10.244.0.0/24 lookup 118              the rest of the pods' traffic: table 118 is
//	                                                 only "default dev vr0"
//
// The local table's rule (priority 0) comes first, so pods still reach
// the node's own addresses directly; the node's own traffic never matches
// a "from pod CIDR" rule, and the main table and its default route are
// not touched. Every rule and route carries RouteProtocol, by which
// SyncEgress and RemoveEgress find their own, also a crashed run's.
const (
	// EgressTable is the routing table holding the default routes into
	// the TUN (118, like RouteProtocol).
	EgressTable = 118
	// EgressPriority is the priority of the first egress rule; the
	// others follow it (EgressPriority+1, +2).
	EgressPriority = 6200
)

// EgressRules is the egress policy routing wanted: traffic from PodCIDRs
// to anywhere outside NonMasquerade goes to the TUN. Without PodCIDRs
// there are no rules.
type EgressRules struct {
	PodCIDRs, NonMasquerade []netip.Prefix
}

// Validate reports the first prefix that is not a valid network prefix.
func (r EgressRules) Validate() error {
	for i, p := range r.PodCIDRs {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("EgressRules.PodCIDRs[%d] %s: want a network prefix such as 10.244.0.0/24", i, p)
		}
	}
	for i, p := range r.NonMasquerade {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("EgressRules.NonMasquerade[%d] %s: want a network prefix such as 10.96.0.0/12", i, p)
		}
	}
	return nil
}

// families reports which families (IPv4, IPv6) have pod CIDRs.
func (r EgressRules) families() [2]bool {
	var f [2]bool
	for _, p := range r.PodCIDRs {
		f[boolIndex(p.Addr().Is6())] = true
	}
	return f
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rules are r's rules for the TUN name.
func (r EgressRules) rules(name string) []EgressRule {
	var out []EgressRule
	fams := r.families()
	for i, v6 := range []bool{false, true} {
		if fams[i] {
			out = append(out, EgressRule{V6: v6, Priority: EgressPriority, IIF: name, Table: mainTable})
		}
	}
	for _, pod := range r.PodCIDRs {
		for _, nm := range r.NonMasquerade {
			if nm.Addr().Is4() == pod.Addr().Is4() {
				out = append(out, EgressRule{V6: pod.Addr().Is6(), Priority: EgressPriority + 1, From: pod, To: nm, Table: mainTable})
			}
		}
	}
	for _, pod := range r.PodCIDRs {
		out = append(out, EgressRule{V6: pod.Addr().Is6(), Priority: EgressPriority + 2, From: pod, Table: EgressTable})
	}
	return out
}

// mainTable is RT_TABLE_MAIN.
const mainTable = 254

// EgressRule is one policy rule, as `ip rule` shows it.
type EgressRule struct {
	V6       bool
	Priority int
	From, To netip.Prefix
	IIF      string
	Table    int
}

// String formats the rule as `ip rule` does:
// "6201: from 10.244.0.0/24 to 10.96.0.0/12 lookup main".
func (r EgressRule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", r.Priority)
	if r.V6 {
		b.WriteString(" (v6)")
	}
	if r.From.IsValid() {
		fmt.Fprintf(&b, " from %s", r.From)
	} else {
		b.WriteString(" from all")
	}
	if r.To.IsValid() {
		fmt.Fprintf(&b, " to %s", r.To)
	}
	if r.IIF != "" {
		fmt.Fprintf(&b, " iif %s", r.IIF)
	}
	if r.Table == mainTable {
		b.WriteString(" lookup main")
	} else {
		fmt.Fprintf(&b, " lookup %d", r.Table)
	}
	return b.String()
}
