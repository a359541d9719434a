package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Configure gives the TUN interface name the state c asks for, in the
// current thread's network namespace: MTU, addresses, up, then the routes
// (main table; scope link for IPv4; proto RouteProtocol), and waits until
// the kernel uses the addresses (IPv6 ones lag). It is idempotent:
// state already in place is kept, and routes to the same destinations are
// replaced, whatever device they pointed at. It adds and never removes;
// SyncRoutes removes routes no longer wanted. It needs CAP_NET_ADMIN, and
// callers serialize calls for one device.
func Configure(name string, c LinkConfig) error {
	op := "configure TUN " + name
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	link, err := tunLink(name)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if c.MTU != 0 && link.Attrs().MTU != c.MTU {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("%s: set MTU %d: %w", op, c.MTU, netlinkError(err))
		}
	}
	for _, a := range c.Addresses {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			// A TUN is IFF_NOARP, so the kernel skips duplicate address
			// detection anyway; say so rather than rely on it.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			if a.Addr().Is6() && errors.Is(err, unix.EACCES) {
				return fmt.Errorf("%s: add address %s: IPv6 is disabled on %s (sysctl net.ipv6.conf.%s.disable_ipv6=1): %w", op, a, name, name, err)
			}
			return fmt.Errorf("%s: add address %s: %w", op, a, netlinkError(err))
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s: set up: %w", op, netlinkError(err))
		}
	}
	for _, p := range c.Routes {
		if err := netlink.RouteReplace(route(link, p)); err != nil {
			return fmt.Errorf("%s: add route %s dev %s: %w", op, p, name, netlinkError(err))
		}
	}
	for _, a := range c.Addresses {
		if err := waitLocal(a.Addr(), addressTimeout); err != nil {
			return fmt.Errorf("%s: address %s: %w", op, a, err)
		}
	}
	return nil
}

// addressTimeout bounds how long Configure waits for the kernel to start
// using an address.
const addressTimeout = 3 * time.Second

// waitLocal waits until the kernel treats addr as local. An IPv6 address
// is listed as soon as it is added, but the kernel installs its local
// route from a work queue once the link is up (after DAD, which IFA_F_NODAD
// skips, but not the queue); until then it drops packets to it
// (Ip6InAddrErrors). Waiting here lets Configure promise that the
// addresses work when it returns.
func waitLocal(addr netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		rs, err := netlink.RouteGet(addr.AsSlice())
		if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("no local route")
			}
			return fmt.Errorf("kernel not using it after %v: %w", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// SyncRoutes makes the routes into the TUN interface name that carry
// RouteProtocol (those Configure and SyncRoutes install) exactly want: it
// adds the missing ones as Configure does, then deletes the others. It
// leaves every route without RouteProtocol alone: the kernel's (an
// address's prefix route, fe80::/64) and any an operator added. It tries
// every change and reports all that failed.
func SyncRoutes(name string, want []netip.Prefix) error {
	op := "sync routes on TUN " + name
	wanted := make(map[netip.Prefix]bool, len(want))
	for i, p := range want {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%s: want[%d] %s: %w", op, i, p, err)
		}
		if p.Masked() != p {
			return fmt.Errorf("%s: want[%d] %s: host bits are set; want a network prefix such as %s", op, i, p, p.Masked())
		}
		wanted[p] = true
	}
	link, err := tunLink(name)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	have, err := ownedRoutes(link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}

	present := make(map[netip.Prefix]bool, len(have))
	var stale []netlink.Route
	for _, r := range have {
		if p, ok := prefixOf(r.Dst); ok && wanted[p] {
			present[p] = true
			continue
		}
		stale = append(stale, r)
	}

	// Add before delete, so that narrowing or moving a CIDR leaves no gap.
	var errs []error
	for _, p := range want {
		if present[p] {
			continue
		}
		present[p] = true // want may repeat a prefix
		if err := netlink.RouteReplace(route(link, p)); err != nil {
			errs = append(errs, fmt.Errorf("add route %s dev %s: %w", p, name, netlinkError(err)))
		}
	}
	for _, r := range stale {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s dev %s: %w", r.Dst, name, netlinkError(err)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// tunLink looks name up and refuses anything but a TUN, so that a wrong
// name cannot put cluster routes on, say, the node's uplink.
func tunLink(name string) (netlink.Link, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil, fmt.Errorf("no interface %s in this network namespace: open the TUN first: %w", name, err)
		}
		return nil, fmt.Errorf("look up interface %s: %w", name, err)
	}
	if t, ok := link.(*netlink.Tuntap); !ok || t.Mode != netlink.TUNTAP_MODE_TUN {
		kind := link.Type()
		if ok {
			kind = "tap"
		}
		return nil, fmt.Errorf("interface %s is a %s device, not a TUN; refusing to configure it", name, kind)
	}
	return link, nil
}

// ownedRoutes lists the main-table routes out of link index idx that carry
// RouteProtocol, both families.
func ownedRoutes(idx int) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: idx, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_OIF | netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	var all []netlink.Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		var (
			rs  []netlink.Route
			err error
		)
		// A dump the kernel interrupted (the table changed under it)
		// comes back empty with ErrDumpInterrupted; try again.
		for range 5 {
			rs, err = netlink.RouteListFiltered(family, filter, mask)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		all = append(all, rs...)
	}
	return all, nil
}

func route(link netlink.Link, p netip.Prefix) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(p),
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
	}
	if p.Addr().Is4() {
		// IPv6 routes have no scope (the kernel reports universe).
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}

// netlinkError adds what to do to a permission error from netlink.
func netlinkError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: this needs CAP_NET_ADMIN in the network namespace; if a privileged helper configures the device, turn vrouter's TUN configuration off (tun.configure: false) (%w)", ErrPermission, err)
	}
	return err
}
