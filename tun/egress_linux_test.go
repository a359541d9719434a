package tun

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestSyncEgress: the egress rules and table 118's default route follow
// the pod and non-masquerade CIDRs; a stale rule of ours goes, an
// operator's rule stays; and RemoveEgress leaves nothing of ours.
func TestSyncEgress(t *testing.T) {
	inNewNetns(t)
	mustOpen(t, Options{})
	if err := Configure("vr0", LinkConfig{Addresses: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/32")}}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	// A stale rule of a crashed run, and one an operator made.
	stale := netlink.NewRule()
	stale.Priority, stale.Table, stale.Protocol = EgressPriority+2, EgressTable, RouteProtocol
	stale.Src = ipNet(netip.MustParsePrefix("10.99.0.0/24"))
	operator := netlink.NewRule()
	operator.Priority, operator.Table = 6300, 200
	operator.Src = ipNet(netip.MustParsePrefix("10.244.0.0/24"))
	for _, r := range []*netlink.Rule{stale, operator} {
		if err := netlink.RuleAdd(r); err != nil {
			t.Fatalf("RuleAdd(%v): %v", r, err)
		}
	}
	pod := netip.MustParsePrefix("10.244.0.0/24")
	r := EgressRules{PodCIDRs: []netip.Prefix{pod}, NonMasquerade: []netip.Prefix{clusterCIDR4, serviceCIDR4}}
	want := []string{
		"6200: from all iif vr0 lookup main",
		"6201: from 10.244.0.0/24 to " + clusterCIDR4.String() + " lookup main",
		"6201: from 10.244.0.0/24 to " + serviceCIDR4.String() + " lookup main",
		"6202: from 10.244.0.0/24 lookup 118",
	}
	for range 2 { // the second sync changes nothing
		if err := SyncEgress("vr0", r); err != nil {
			t.Fatalf("SyncEgress(%+v): %v", r, err)
		}
		if got := installed(t); !slices.Equal(got, want) {
			t.Errorf("rules after SyncEgress = %q, want %q", got, want)
		}
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: EgressTable}, netlink.RT_FILTER_TABLE)
	if err != nil || len(rs) != 1 || rs[0].Dst != nil && rs[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("table %d = %v (%v), want one default route", EgressTable, rs, err)
	}

	if err := RemoveEgress(); err != nil {
		t.Fatalf("RemoveEgress: %v", err)
	}
	if got := installed(t); len(got) != 0 {
		t.Errorf("rules after RemoveEgress = %q, want none", got)
	}
	if rs, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: EgressTable}, netlink.RT_FILTER_TABLE); len(rs) != 0 {
		t.Errorf("table %d after RemoveEgress = %v, want empty", EgressTable, rs)
	}
	all, err := netlink.RuleList(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(all, func(r netlink.Rule) bool { return r.Priority == 6300 && r.Table == 200 }) {
		t.Errorf("the operator's rule (6300: lookup 200) is gone: %v", all)
	}
}

func installed(t *testing.T) []string {
	t.Helper()
	rs, err := EgressRulesInstalled()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}
