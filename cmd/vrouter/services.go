package main

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
)

// lbServices converts the config file's Services to the load balancer's.
// The file was validated, so a parse error here is a bug that is reported,
// not a panic.
func lbServices(cfg *configs.Config) ([]lb.Service, error) {
	out := make([]lb.Service, 0, len(cfg.Services))
	for _, s := range cfg.Services {
		mode, err := lb.ParseMode(s.Mode)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		picker, err := lb.ParsePickerKind(s.Picker)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		aff, err := lb.ParseAffinity(s.SessionAffinity)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		tp, err := lb.ParseTrafficPolicy(s.InternalTrafficPolicy)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: %w", s.Namespace, s.Name, err)
		}
		ls := lb.Service{
			Namespace: s.Namespace, Name: s.Name,
			ClusterIPs:             s.ClusterIPs,
			Mode:                   mode,
			Picker:                 picker,
			SessionAffinity:        aff,
			SessionAffinityTimeout: s.SessionAffinityTimeout,
			InternalTrafficPolicy:  tp,
			ProxyProtocol:          s.ProxyProtocol,
		}
		for _, p := range s.Ports {
			proto, err := lb.ParseProtocol(p.Protocol)
			if err != nil {
				return nil, fmt.Errorf("service %s/%s port %d: %w", s.Namespace, s.Name, p.Port, err)
			}
			ls.Ports = append(ls.Ports, lb.ServicePort{
				Name: p.Name, Port: uint16(p.Port), Proto: proto,
				TargetPort: uint16(p.TargetPort), TargetPortName: p.TargetPortName,
			})
		}
		for _, e := range s.Endpoints {
			var ports []lb.EndpointPort
			for _, ep := range e.Ports {
				var proto lb.Protocol
				if ep.Protocol != "" {
					if proto, err = lb.ParseProtocol(ep.Protocol); err != nil {
						return nil, fmt.Errorf("service %s/%s endpoint port %q: %w", s.Namespace, s.Name, ep.Name, err)
					}
				}
				ports = append(ports, lb.EndpointPort{Name: ep.Name, Port: uint16(ep.Port), Proto: proto})
			}
			for _, a := range e.Addresses {
				ls.Endpoints = append(ls.Endpoints, lb.Endpoint{
					Addr: a, Ports: ports,
					Ready: e.Ready, Serving: e.Serving, Terminating: e.Terminating,
					NodeName: e.NodeName, Zone: e.Zone,
				})
			}
		}
		out = append(out, ls)
	}
	return out, nil
}

// proxyVIPs are the ClusterIPs the router's stack terminates: those of
// proxy-mode Services with a TCP port (proxy mode applies to TCP; a
// Service's UDP ports are translated by the NAT in either mode), each
// once, in file order.
func proxyVIPs(cfg *configs.Config) []netip.Addr {
	var out []netip.Addr
	for _, s := range cfg.Services {
		if s.Mode != configs.ModeProxy || !slices.ContainsFunc(s.Ports, func(p configs.ServicePort) bool { return p.Protocol == configs.ProtocolTCP }) {
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
