package main

import (
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
)

// proxyVIPs are the ClusterIPs the router's stack terminates: those of
// proxy-mode Services with a TCP port (proxy mode applies to TCP; a
// Service's UDP ports are translated by the NAT in either mode), each
// once, in file order.
func proxyVIPs(cfg *configs.Config) []netip.Addr {
	var out []netip.Addr
	for _, s := range cfg.Services {
		if s.Mode != lb.ModeProxy || !slices.ContainsFunc(s.Ports, func(p lb.ServicePort) bool { return p.Proto == lb.TCP }) {
			continue
		}
		out = mergeAddrs(out, s.ClusterIPs)
	}
	return out
}

// mergeAddrs appends to a the addresses of b it lacks.
func mergeAddrs(a, b []netip.Addr) []netip.Addr {
	for _, x := range b {
		if !slices.Contains(a, x) {
			a = append(a, x)
		}
	}
	return a
}
