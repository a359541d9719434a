package configs

import (
	"fmt"
	"net/netip"
)

// DefaultTUNAddress is tun.addresses' default for a pod CIDR: the node
// kernel's own address on the TUN, inside the pod CIDR so that peers route
// the replies to it back to this node and admit it as this node's source.
//
// For IPv4 it is the network address (10.244.0.0/32), as flannel gives its
// tunnel device: nothing on the node claims an IPv4 network address. For
// IPv6 it is the last address (fd00:10:244:0:ffff:ffff:ffff:ffff/128). The
// IPv6 network address cannot be used: Linux owns the network address of
// every prefix on an interface as its subnet-router anycast address (RFC
// 4291), so on a node whose bridge (cni0) holds an address in the pod /64,
// as the bridge CNI plugin gives it, the anycast route beats vr0's /128
// and the kernel never uses the address. An all-ones interface ID is no
// prefix's subnet-router anycast whatever the bridge's prefix length, is
// not a reserved subnet anycast address (RFC 2526 reserves interface IDs
// with the universal/local bit clear), is not the gateway address IPAM
// gives the bridge (the first), and is the last one IPAM hands a pod.
func DefaultTUNAddress(pods netip.Prefix) netip.Prefix {
	a := pods.Masked().Addr()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	b := a.As16()
	for i := pods.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 128)
}

// subnetRouterAnycast reports the prefix whose subnet-router anycast
// address a is, when a is an IPv6 address inside one of pods and the node
// kernel would claim it on the bridge that holds that pod CIDR: a is the
// network address of the pod CIDR, or of the /64 inside it (the bridge's
// usual prefix when the pod CIDR is wider).
func subnetRouterAnycast(a netip.Addr, pods []netip.Prefix) (netip.Prefix, bool) {
	if !a.Is6() || a.Is4In6() {
		return netip.Prefix{}, false
	}
	for _, p := range pods {
		if !p.Contains(a) || !p.Addr().Is6() {
			continue
		}
		if a == p.Masked().Addr() {
			return p.Masked(), true
		}
		if p.Bits() < 64 {
			if s := netip.PrefixFrom(a, 64).Masked(); s.Addr() == a {
				return s, true
			}
		}
	}
	return netip.Prefix{}, false
}

// Warnings lists what c allows but is likely not to work on the node, one
// line each as FIELD: PROBLEM. vrouter validate prints them; they do not
// make the file invalid.
func (c *Config) Warnings() []string {
	var w []string
	for i, p := range c.TUN.Addresses {
		if s, ok := subnetRouterAnycast(p.Addr(), c.Node.PodCIDRs); ok {
			w = append(w, fmt.Sprintf("tun.addresses[%d]: %s is the subnet-router anycast address of %s, which the node kernel owns on the bridge holding an address in %s (cni0) and will not use on %s (want another address in the pod CIDR, e.g. %s, or leave tun.addresses out for that default)",
				i, p, s, s, c.TUN.Name, DefaultTUNAddress(s).Addr()))
		}
	}
	return w
}
