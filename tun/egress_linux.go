package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SyncEgress makes the node kernel's egress policy routing (see
// EgressRules) exactly r for the TUN interface name: it adds the rules and
// the default routes of EgressTable that are missing, then deletes every
// other rule carrying RouteProtocol, whatever its device (a previous
// run's, say), and the other routes of EgressTable. The zero EgressRules
// removes them all (RemoveEgress). It needs CAP_NET_ADMIN and leaves every
// rule and route it did not make alone.
func SyncEgress(name string, r EgressRules) error {
	op := "sync egress rules for TUN " + name
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	want := r.rules(name)
	var link netlink.Link
	if len(want) > 0 {
		var err error
		if link, err = tunLink(name); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if err := syncEgress(link, want, r.families()); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// RemoveEgress deletes every rule carrying RouteProtocol and every route
// of EgressTable: what SyncEgress made, in this run or an earlier one.
func RemoveEgress() error {
	if err := syncEgress(nil, nil, [2]bool{}); err != nil {
		return fmt.Errorf("remove egress rules: %w", err)
	}
	return nil
}

func syncEgress(link netlink.Link, want []EgressRule, families [2]bool) error {
	var errs []error
	// Routes first: a rule must never send packets to an empty table
	// (they would fall through to main, unmasqueraded, which is harmless,
	// but not what the rule says).
	for i, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := egressRoutes(fam)
		if err != nil {
			return err
		}
		for _, rt := range have {
			if link != nil && families[i] && rt.LinkIndex == link.Attrs().Index {
				continue
			}
			if err := netlink.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %v table %d: %w", rt.Dst, EgressTable, netlinkError(err)))
			}
		}
		if link == nil || !families[i] {
			continue
		}
		dst := netip.MustParsePrefix("0.0.0.0/0")
		if fam == netlink.FAMILY_V6 {
			dst = netip.MustParsePrefix("::/0")
		}
		rt := route(link, dst)
		rt.Table = EgressTable
		if err := netlink.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("add route %s dev %s table %d: %w", dst, link.Attrs().Name, EgressTable, netlinkError(err)))
		}
	}
	wanted := make(map[string]bool, len(want))
	for _, r := range want {
		wanted[r.String()] = true
	}
	present := make(map[string]bool)
	var stale []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := netlink.RuleListFiltered(fam, nil, 0)
		if err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		for _, r := range have {
			if r.Protocol != RouteProtocol {
				continue
			}
			if k := ruleOf(r).String(); wanted[k] && !present[k] {
				present[k] = true
				continue
			}
			stale = append(stale, r)
		}
	}
	for _, r := range want {
		if present[r.String()] {
			continue
		}
		present[r.String()] = true
		if err := netlink.RuleAdd(r.netlink()); err != nil {
			errs = append(errs, fmt.Errorf("add rule %s: %w", r, netlinkError(err)))
		}
	}
	for _, r := range stale {
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule %s: %w", ruleOf(r), netlinkError(err)))
		}
	}
	return errors.Join(errs...)
}

// egressRoutes lists the routes of EgressTable of one family.
func egressRoutes(fam int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: EgressTable}
	var (
		rs  []netlink.Route
		err error
	)
	for range 5 {
		rs, err = netlink.RouteListFiltered(fam, filter, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", EgressTable, err)
	}
	return rs, nil
}

// EgressRulesInstalled lists the rules carrying RouteProtocol in this
// network namespace, as `ip rule` would show them (for tests and status).
func EgressRulesInstalled() ([]EgressRule, error) {
	var out []EgressRule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		have, err := netlink.RuleListFiltered(fam, nil, 0)
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		for _, r := range have {
			if r.Protocol == RouteProtocol {
				out = append(out, ruleOf(r))
			}
		}
	}
	return out, nil
}

func (r EgressRule) netlink() *netlink.Rule {
	nr := netlink.NewRule()
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = RouteProtocol
	nr.Family = netlink.FAMILY_V4
	if r.V6 {
		nr.Family = netlink.FAMILY_V6
	}
	if r.From.IsValid() {
		nr.Src = ipNet(r.From)
	}
	if r.To.IsValid() {
		nr.Dst = ipNet(r.To)
	}
	nr.IifName = r.IIF
	return nr
}

func ruleOf(nr netlink.Rule) EgressRule {
	r := EgressRule{Priority: nr.Priority, Table: nr.Table, IIF: nr.IifName, V6: nr.Family == netlink.FAMILY_V6}
	if p, ok := prefixOf(nr.Src); ok {
		r.From = p
	}
	if p, ok := prefixOf(nr.Dst); ok {
		r.To = p
	}
	return r
}
