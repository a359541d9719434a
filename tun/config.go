package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DefaultName is the device name Open uses when Options.Name is empty.
const DefaultName = "vr0"

// RouteProtocol marks the routes Configure and SyncRoutes install (the
// rtm_protocol of each route). SyncRoutes removes only routes on the device
// that carry it, so it never touches routes the kernel made (proto kernel:
// an address's prefix route, fe80::/64, multicast) nor ones an operator
// added by hand (proto boot or static).
//
// 118 is 0x76, 'v'. It is unassigned both in the kernel's RTPROT_* list
// (linux/rtnetlink.h) and in iproute2's rt_protos; `ip route` prints it as
// "proto 118", or as a name if /etc/iproute2/rt_protos.d/ maps it
// ("118 vrouter").
const RouteProtocol = 118

// Options configures Open. The zero value opens a single-queue TUN named
// DefaultName.
type Options struct {
	// Name is the interface name. Default DefaultName ("vr0"). A name with
	// "%d" lets the kernel pick a free number (Device.Name reports it).
	Name string
	// MultiQueue opens the device with IFF_MULTI_QUEUE. Every queue of a
	// multiqueue device is opened with MultiQueue set; a second Open of the
	// same name then attaches another queue instead of failing with
	// ErrBusy. Default false.
	MultiQueue bool
	// Offload opens the device with IFF_VNET_HDR and turns on its offloads
	// (TUNSETOFFLOAD TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): the Device's
	// Offload is then true, and it reads and writes TCP super-packets of
	// up to 64 KiB. If the kernel refuses the offloads, Open fails with an error
	// wrapping ErrOffloadRefused; open again without Offload. The offload
	// setting belongs to the interface, not the queue: open every queue of
	// a multiqueue TUN with the same Offload. Default false.
	Offload bool
}

func (o Options) name() string {
	if o.Name == "" {
		return DefaultName
	}
	return o.Name
}

// LinkConfig is the kernel-side state Configure gives a device. The zero
// value changes nothing but bringing the device up.
type LinkConfig struct {
	// Addresses are the node kernel's own addresses on the device, with
	// their prefix length (10.244.0.0/32, fd00:10:244::1/128). Addresses
	// the device already has stay; others on it are left alone too.
	Addresses []netip.Prefix
	// MTU of the device. 0 leaves it unchanged; otherwise 68..65535, and at
	// least 1280 when any address or route is IPv6.
	MTU int
	// Routes are destinations (10.244.0.0/16, 10.96.0.0/12) the kernel
	// routes into the device: main table, scope link, proto RouteProtocol.
	// Host bits must be zero.
	Routes []netip.Prefix
}

// Validate reports the first field that Configure would reject, naming
// the field, the value and what was expected.
func (c LinkConfig) Validate() error {
	hasV6 := false
	for i, a := range c.Addresses {
		if err := checkPrefix(a); err != nil {
			return fmt.Errorf("LinkConfig.Addresses[%d] %s: %w", i, a, err)
		}
		hasV6 = hasV6 || a.Addr().Is6()
	}
	for i, r := range c.Routes {
		if err := checkPrefix(r); err != nil {
			return fmt.Errorf("LinkConfig.Routes[%d] %s: %w", i, r, err)
		}
		if r.Masked() != r {
			return fmt.Errorf("LinkConfig.Routes[%d] %s: host bits are set; want a network prefix such as %s", i, r, r.Masked())
		}
		hasV6 = hasV6 || r.Addr().Is6()
	}
	switch {
	case c.MTU == 0:
	case c.MTU < 68 || c.MTU > 65535:
		return fmt.Errorf("LinkConfig.MTU %d: want 0 (unchanged) or 68..65535", c.MTU)
	case hasV6 && c.MTU < 1280:
		return fmt.Errorf("LinkConfig.MTU %d: below 1280, the IPv6 minimum, but the config has IPv6 addresses or routes (the kernel disables IPv6 on such a link)", c.MTU)
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("not a valid prefix; want an address with a prefix length such as 10.244.0.0/16")
	case p.Addr().Is4In6():
		return fmt.Errorf("IPv4-mapped IPv6 address; write it as IPv4 (%s/%d)", p.Addr().Unmap(), p.Bits()-96)
	case p.Addr().Zone() != "":
		return errors.New("has an IPv6 zone; want a plain address")
	}
	return nil
}

// checkName checks an interface name as the kernel's dev_valid_name does,
// so that a bad name fails with a message rather than EINVAL or silent
// truncation.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is %d bytes; the kernel allows at most 15", name, len(name))
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\v\f\r"):
		return fmt.Errorf("interface name %q contains '/', ':' or whitespace", name)
	}
	return nil
}
