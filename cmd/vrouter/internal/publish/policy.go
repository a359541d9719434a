package publish

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// PortRange is the ports Min to Max, both included.
type PortRange struct {
	Min, Max uint16
}

// NodePortRange is Kubernetes' default node-port range
// (--service-node-port-range), the ports a Server binds unless told
// otherwise.
var NodePortRange = PortRange{30000, 32767}

// privilegedPorts ends where the kernel's default
// net.ipv4.ip_unprivileged_port_start begins.
const privilegedPorts = 1024

func (r PortRange) contains(port uint16) bool { return r.Min <= port && port <= r.Max }

// String formats r as ParsePorts reads it: "30000-32767", or "53" for one
// port.
func (r PortRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(int(r.Min))
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// ParsePorts reads a comma-separated list of ports and port ranges, such
// as "30000-32767,8080": the form of `vrouter publish --ports`.
func ParsePorts(s string) ([]PortRange, error) {
	var out []PortRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		first, err1 := parsePort(lo)
		last, err2 := parsePort(hi)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("ports %q: %q: want a port from 1 to 65535 or a range of them, such as 30000-32767", s, part)
		}
		if first > last {
			return nil, fmt.Errorf("ports %q: %q: the range ends before it starts", s, part)
		}
		out = append(out, PortRange{first, last})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err == nil && n == 0 {
		err = errors.New("port 0")
	}
	return uint16(n), err
}

// Options are a Server's policy and logger. Their zero values are the
// defaults.
type Options struct {
	// Ports are the ports the Server binds. Empty means NodePortRange.
	Ports []PortRange
	// AllowPrivileged lets it bind ports below 1024 that Ports include;
	// without it they are refused whatever Ports says. (The kernel may
	// refuse them too: binding them needs CAP_NET_BIND_SERVICE or a
	// lower net.ipv4.ip_unprivileged_port_start.)
	AllowPrivileged bool
	// Addrs, if not empty, are the only addresses it binds, as prefixes
	// (127.0.0.1/32, 192.168.0.0/16, 0.0.0.0/32 for the unspecified
	// address). Empty means any address bind(2) accepts: loopback, the
	// namespace's own addresses and the unspecified address.
	Addrs []netip.Prefix
}

// allowed says why the policy refuses to bind addr, or returns nil.
func (o *Options) allowed(addr netip.AddrPort) error {
	ports := o.Ports
	if len(ports) == 0 {
		ports = []PortRange{NodePortRange}
	}
	port := addr.Port()
	if !slices.ContainsFunc(ports, func(r PortRange) bool { return r.contains(port) }) {
		return fmt.Errorf("port %d is outside the ports this helper publishes (%s); start it with --ports to allow it", port, formatPorts(ports))
	}
	if port < privilegedPorts && !o.AllowPrivileged {
		return fmt.Errorf("port %d is privileged (below %d) and this helper publishes none; start it with --allow-privileged to allow it", port, privilegedPorts)
	}
	if len(o.Addrs) > 0 && !slices.ContainsFunc(o.Addrs, func(p netip.Prefix) bool { return p.Contains(addr.Addr().Unmap()) }) {
		return fmt.Errorf("address %s is outside the addresses this helper publishes on (%s); start it with --addresses to allow it", addr.Addr(), formatPrefixes(o.Addrs))
	}
	return nil
}

func formatPorts(rs []PortRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

func formatPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ParseAddrs reads a comma-separated list of addresses and prefixes, such
// as "127.0.0.1,192.168.1.0/24": the form of `vrouter publish --addresses`.
// An address stands for itself alone.
func ParseAddrs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("addresses %q: %q: want an IP address or a prefix, such as 127.0.0.1 or 192.168.1.0/24", s, part)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
