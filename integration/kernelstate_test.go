package integration

// TestKernelState checks that vrouter leaves no filter rules and no routes
// of its own in the kernel beyond the ones on its TUN device, after the
// seed's cluster has carried traffic:
//
//	underlay br0 192.168.31.0/24          no addresses, no routes
//	 ├─ hostgw-master eth0 192.168.31.201/24   cni0 10.244.0.1/24   vr0
//	 │     pods nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 192.168.31.202/24   cni0 10.244.1.1/24   vr0
//	       pods nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
//	node main table (IPv4), exactly:
//	  192.168.31.0/24 dev eth0 proto kernel     (connected)
//	  10.244.N.0/24   dev cni0 proto kernel     (connected)
//	  10.244.0.0/16   dev vr0  proto 118        (vrouter: cluster CIDR)
//	  10.96.0.0/12    dev vr0  proto 118        (vrouter: service CIDR)
//	  169.254.244.1   dev vr0  proto 118        (vrouter: router address)
//	node main table (IPv6): only fe80::/64 link-local routes
//	pod main table: 10.244.N.0/24 dev eth0, default via 10.244.N.1 (what the CNI set up)
//	every namespace: no iptables/ip6tables rules, empty nft ruleset,
//	only the three default policy routing rules

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// vrouterProto is the routing protocol number vrouter's kernel routes
// carry (tun.RouteProtocol).
const vrouterProto = 118

func TestKernelState(t *testing.T) {
	e := newEnv(t, "kstate", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	// Traffic first, so that anything installed lazily is there.
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
	e.mustPing(workerNode, nginxTh5pz.addr, ttlNodeToPod)
	if err := e.unreachableWith(nginxJ6zwk.name, unrouted, netUnreachable); err != nil {
		t.Error(err)
	}

	t.Run("no filter rules", func(t *testing.T) {
		type tool struct {
			name string
			args []string
			// clean reports what in out is not an empty ruleset.
			clean func(out string) []string
		}
		tools := []tool{
			{"iptables-save", nil, iptablesRules},
			{"ip6tables-save", nil, iptablesRules},
			{"nft", []string{"list", "ruleset"}, nonEmptyLines},
		}
		// On a system whose iptables is the nft variant, rules added
		// through the legacy interface only show in the legacy tools.
		for _, legacy := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
			if _, err := exec.LookPath(legacy); err == nil {
				tools = append(tools, tool{legacy, nil, iptablesRules})
			}
		}
		for _, ns := range e.c.Namespaces() {
			for _, tl := range tools {
				out, err := e.command(ns, tl.name, tl.args...)
				if err != nil {
					t.Errorf("%s: %s %s: %v\n%s", ns, tl.name, strings.Join(tl.args, " "), err, out)
					continue
				}
				if extra := tl.clean(out); len(extra) > 0 {
					t.Errorf("%s: %s %s shows rules, want none:\n%s", ns, tl.name, strings.Join(tl.args, " "), strings.Join(extra, "\n"))
				}
			}
		}
	})

	t.Run("routes", func(t *testing.T) {
		for _, n := range e.c.Spec().Nodes {
			want := []string{
				fmt.Sprintf("%s dev eth0 proto kernel", e.c.Spec().Underlay),
				fmt.Sprintf("%s dev cni0 proto kernel", n.PodCIDR),
				fmt.Sprintf("10.244.0.0/16 dev vr0 proto %d", vrouterProto),
				fmt.Sprintf("10.96.0.0/12 dev vr0 proto %d", vrouterProto),
				fmt.Sprintf("%s/32 dev vr0 proto %d", stackAddr, vrouterProto),
			}
			e.checkRoutes(t, n.Name, want)
			for _, p := range n.Pods {
				e.checkRoutes(t, p.Name, []string{
					fmt.Sprintf("%s dev eth0 proto kernel", n.PodCIDR),
					fmt.Sprintf("default via %s dev eth0 proto boot", n.Gateway()),
				})
			}
		}
		e.checkRoutes(t, topology.UnderlayNS, nil)
	})
}

// iptablesRules returns the lines of iptables-save output that are more
// than empty tables: rules, user chains, built-in chains whose policy is
// not ACCEPT.
func iptablesRules(out string) []string {
	builtin := []string{"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"}
	var extra []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", strings.HasPrefix(line, "#"), strings.HasPrefix(line, "*"), line == "COMMIT":
			continue
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) >= 2 && slices.Contains(builtin, f[0]) && f[1] == "ACCEPT" {
				continue
			}
		}
		extra = append(extra, line)
	}
	return extra
}

// nonEmptyLines returns the non-blank lines of out.
func nonEmptyLines(out string) []string {
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

// checkRoutes checks namespace ns's main routing table: its IPv4 routes
// are exactly want (as formatRoute spells them), its IPv6 routes only
// kernel link-local ones, and its policy routing rules the defaults.
func (e *env) checkRoutes(t *testing.T, ns string, want []string) {
	t.Helper()
	var v4, v6 []netlink.Route
	var rules []netlink.Rule
	err := e.c.Do(ns, func() error {
		var err error
		filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
		if v4, err = netlink.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE); err != nil {
			return fmt.Errorf("list IPv4 routes: %w", err)
		}
		if v6, err = netlink.RouteListFiltered(netlink.FAMILY_V6, filter, netlink.RT_FILTER_TABLE); err != nil {
			return fmt.Errorf("list IPv6 routes: %w", err)
		}
		if rules, err = netlink.RuleList(netlink.FAMILY_V4); err != nil {
			return fmt.Errorf("list rules: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: %v", ns, err)
		return
	}
	names, err := e.linkNames(ns)
	if err != nil {
		t.Errorf("%s: %v", ns, err)
		return
	}
	var got []string
	for _, r := range v4 {
		got = append(got, formatRoute(r, names))
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s: IPv4 main table:\n  %s\nwant exactly:\n  %s", ns, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, r := range v6 {
		if s := formatRoute(r, names); !strings.HasPrefix(s, "fe80::/64 dev ") || !strings.HasSuffix(s, " proto kernel") {
			t.Errorf("%s: IPv6 route %q, want only fe80::/64 link-local routes", ns, s)
		}
	}
	var tables []int
	for _, r := range rules {
		tables = append(tables, r.Table)
	}
	slices.Sort(tables)
	if want := []int{unix.RT_TABLE_DEFAULT, unix.RT_TABLE_MAIN, unix.RT_TABLE_LOCAL}; !slices.Equal(tables, want) {
		t.Errorf("%s: policy routing rules look up tables %v, want only the defaults %v", ns, tables, want)
	}
}

// linkNames maps link indexes to names in namespace ns.
func (e *env) linkNames(ns string) (map[int]string, error) {
	names := map[int]string{}
	err := e.c.Do(ns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		return nil
	})
	return names, err
}

// formatRoute spells r like `ip route` does, reduced to what the tests
// compare: "10.244.0.0/16 dev vr0 proto 118", "default via 10.244.0.1 dev
// eth0 proto boot".
func formatRoute(r netlink.Route, names map[int]string) string {
	var b strings.Builder
	if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gw != nil {
		fmt.Fprintf(&b, " via %s", r.Gw)
	}
	fmt.Fprintf(&b, " dev %s", names[r.LinkIndex])
	switch r.Protocol {
	case unix.RTPROT_KERNEL:
		b.WriteString(" proto kernel")
	case unix.RTPROT_BOOT:
		b.WriteString(" proto boot")
	default:
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	return b.String()
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}
