package topology

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostGWRoute is one route flannel's host-gw backend would add on a node.
type hostGWRoute struct {
	dst netip.Prefix
	gw  netip.Addr
}

// hostGWRoutes returns, for node n, a route to every other node's pod
// CIDRs via that node's underlay address of the same family.
func (c *Cluster) hostGWRoutes(n NodeSpec) []hostGWRoute {
	var rs []hostGWRoute
	for _, peer := range c.spec.Nodes {
		if peer.Name == n.Name || !peer.PodCIDR.IsValid() {
			continue
		}
		rs = append(rs, hostGWRoute{peer.PodCIDR.Masked(), peer.Underlay})
		if peer.PodCIDR6.IsValid() && peer.Underlay6.IsValid() && n.Underlay6.IsValid() {
			rs = append(rs, hostGWRoute{peer.PodCIDR6.Masked(), peer.Underlay6})
		}
	}
	return rs
}

// InstallKernelHostGW makes the node kernels route between pods the way
// flannel's host-gw backend does: on every node, `<peer podCIDR> via <peer
// underlay address> dev eth0` for every other node (and the IPv6
// equivalents where both ends have them). Pods then reach each other
// across nodes without vrouter; this is the baseline vrouter is measured
// against. Idempotent.
func (c *Cluster) InstallKernelHostGW() error {
	return c.eachHostGWRoute(func(h *netlink.Handle, r *netlink.Route) error {
		return h.RouteReplace(r)
	})
}

// RemoveKernelHostGW deletes the routes InstallKernelHostGW adds. Routes
// already gone are not an error.
func (c *Cluster) RemoveKernelHostGW() error {
	return c.eachHostGWRoute(func(h *netlink.Handle, r *netlink.Route) error {
		err := h.RouteDel(r)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	})
}

func (c *Cluster) eachHostGWRoute(op func(*netlink.Handle, *netlink.Route) error) error {
	var errs []error
	for _, n := range c.spec.Nodes {
		err := c.withHandle(n.Name, func(h *netlink.Handle) error {
			link, err := h.LinkByName(NodeUplink)
			if err != nil {
				return fmt.Errorf("find %s: %w", NodeUplink, err)
			}
			for _, r := range c.hostGWRoutes(n) {
				nr := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(r.dst), Gw: r.gw.AsSlice()}
				if err := op(h, nr); err != nil {
					return fmt.Errorf("route %v via %v dev %s: %w", r.dst, r.gw, NodeUplink, err)
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}
