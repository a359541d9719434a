package configs

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/vrouter/vrouter/lb"
)

// services validates the Service table against the rest of c, which is
// already parsed (names of nodes, service CIDRs, router addresses, pods),
// and returns it in the load balancer's model.
func (ck *checker) services(in []ServiceSpec, c *Config, pods []podCIDR) []lb.Service {
	if len(in) == 0 {
		return nil
	}
	out := make([]lb.Service, len(in))
	// Pass 1: everything but endpoints, gathering every VIP so that pass
	// 2 can keep endpoints off all of them.
	names := map[string]string{}
	vips := map[netip.Addr]string{}
	ports := map[lb.ServiceKey]string{}
	for i := range in {
		ss, s, field := &in[i], &out[i], fmt.Sprintf("services[%d]", i)
		s.Namespace = cmp.Or(ss.Namespace, DefaultNamespace)
		if s.Name = ss.Name; s.Name == "" {
			ck.addf(field+".name", "missing (want the Service's name, e.g. my-service)")
		} else if prev, dup := names[s.Namespace+"/"+s.Name]; dup {
			ck.addf(field+".name", "%s/%s is already defined by %s (want unique namespace/name)", s.Namespace, s.Name, prev)
		} else {
			names[s.Namespace+"/"+s.Name] = field
		}
		ck.clusterIPs(field, ss, s, c, vips)
		ck.servicePorts(field, ss, s, ports)

		s.Mode = oneOf(ck, field+".mode", ss.Mode, c.LB.Mode, modes...)
		s.Picker = oneOf(ck, field+".picker", ss.Picker, c.LB.Picker, pickers...)
		s.SessionAffinity = oneOf(ck, field+".sessionAffinity", ss.SessionAffinity, lb.AffinityNone, affinities...)
		switch secs := ss.SessionAffinityTimeoutSeconds; {
		case s.SessionAffinity != lb.AffinityClientIP:
			if secs != 0 {
				ck.addf(field+".sessionAffinityTimeoutSeconds", "%d is set but sessionAffinity is %q (want it only with sessionAffinity %q)", secs, s.SessionAffinity, lb.AffinityClientIP)
			}
		case secs == 0:
			s.SessionAffinityTimeout = lb.DefaultAffinityTimeout
		case secs < 1 || time.Duration(secs)*time.Second > MaxAffinityTimeout:
			ck.addf(field+".sessionAffinityTimeoutSeconds", "%d is out of range (want 1..%d)", secs, int(MaxAffinityTimeout.Seconds()))
		default:
			s.SessionAffinityTimeout = time.Duration(secs) * time.Second
		}
		s.InternalTrafficPolicy = oneOf(ck, field+".internalTrafficPolicy", ss.InternalTrafficPolicy, lb.PolicyCluster, policies...)
		if s.ProxyProtocol = ss.ProxyProtocol; s.ProxyProtocol && s.Mode != lb.ModeProxy {
			ck.addf(field+".proxyProtocol", "true needs mode %q, but the Service's mode is %q (want mode: proxy, or no proxyProtocol)", lb.ModeProxy, s.Mode)
		}
	}

	// Pass 2: endpoints. An endpoint of the file lists one address per
	// family; each address becomes one lb.Endpoint.
	nodes := map[string]bool{c.Node.Name: c.Node.Name != ""}
	for _, p := range c.Peers {
		nodes[p.Name] = p.Name != ""
	}
	for i := range in {
		ss, s, field := &in[i], &out[i], fmt.Sprintf("services[%d]", i)
		seen := map[netip.Addr]string{}
		eps := make([]fileEndpoint, len(ss.Endpoints))
		for j := range ss.Endpoints {
			eps[j] = ck.endpoint(fmt.Sprintf("%s.endpoints[%d]", field, j), &ss.Endpoints[j], s, c, pods, vips, nodes, seen)
		}
		for j, sp := range s.Ports {
			if sp.TargetPortName == "" {
				continue
			}
			for k := range eps {
				e := &eps[k].tmpl
				if hasPort(e.Ports, sp.TargetPortName, sp.Proto) {
					continue
				}
				ef := fmt.Sprintf("%s.endpoints[%d].ports", field, k)
				if len(e.Ports) == 0 {
					ck.addf(ef, "missing (want a %s port named %q for %s.ports[%d].targetPort)", sp.Proto, sp.TargetPortName, field, j)
				} else {
					ck.addf(ef, "has no %s port named %q (want one for %s.ports[%d].targetPort %q)", sp.Proto, sp.TargetPortName, field, j, sp.TargetPortName)
				}
			}
		}
		for _, fe := range eps {
			for _, a := range fe.addrs {
				e := fe.tmpl
				e.Addr, e.Ports = a, slices.Clone(fe.tmpl.Ports)
				s.Endpoints = append(s.Endpoints, e)
			}
		}
	}
	return out
}

// fileEndpoint is one endpoint of the file: its addresses, and what each
// of them shares as an lb.Endpoint.
type fileEndpoint struct {
	addrs []netip.Addr
	tmpl  lb.Endpoint
}

// hasPort reports whether ports has one named name for proto.
func hasPort(ports []lb.EndpointPort, name string, proto lb.Protocol) bool {
	return slices.ContainsFunc(ports, func(p lb.EndpointPort) bool { return p.Name == name && p.Proto == proto })
}

// clusterIPs parses the VIPs of a Service into s and vips.
func (ck *checker) clusterIPs(field string, ss *ServiceSpec, s *lb.Service, c *Config, vips map[netip.Addr]string) {
	if len(ss.ClusterIPs) == 0 {
		ck.addf(field+".clusterIPs", "missing (want the Service's virtual IPs, e.g. [%s])", exClusterIP.v4)
	}
	var fams [2]string
	for i, str := range ss.ClusterIPs {
		f := fmt.Sprintf("%s.clusterIPs[%d]", field, i)
		a := ck.addr(f, str, exClusterIP)
		if !a.IsValid() {
			continue
		}
		fam := familyIndex(a)
		switch {
		case fams[fam] != "":
			ck.addf(f, "%s is a second %s ClusterIP (want at most one per family; the first is %s)", a, family(a), fams[fam])
			continue
		case len(c.ServiceCIDRs) > 0 && !slices.ContainsFunc(c.ServiceCIDRs, func(p netip.Prefix) bool { return p.Contains(a) }):
			ck.addf(f, "%s is outside every service CIDR (want an address in %s)", a, prefixList(c.ServiceCIDRs))
		case slices.Contains(c.RouterAddresses, a):
			ck.addf(f, "%s is a router address (want a Service address in %s)", a, prefixList(c.ServiceCIDRs))
		}
		fams[fam] = f
		if _, ok := vips[a]; !ok {
			vips[a] = f
		}
		s.ClusterIPs = append(s.ClusterIPs, a)
	}
}

// servicePorts parses the ports of a Service into s, keeping the
// (ClusterIP, port, protocol) keys of all Services unique.
func (ck *checker) servicePorts(field string, ss *ServiceSpec, s *lb.Service, keys map[lb.ServiceKey]string) {
	if len(ss.Ports) == 0 {
		ck.addf(field+".ports", "missing (want at least one port, e.g. [{port: 80}])")
	}
	names := map[string]string{}
	for i, ps := range ss.Ports {
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		p := lb.ServicePort{Name: ps.Name}
		switch prev, dup := names[p.Name]; {
		case p.Name == "" && len(ss.Ports) > 1:
			ck.addf(f+".name", "missing (want a name: a Service with several ports names each, e.g. http)")
		case dup:
			ck.addf(f+".name", "%q is already used by %s (want unique port names)", p.Name, prev)
		default:
			names[p.Name] = f
		}
		p.Proto = oneOf(ck, f+".protocol", ps.Protocol, lb.TCP, protocols...)
		portOK := ck.portNumber(f+".port", ps.Port)
		if portOK {
			p.Port = uint16(ps.Port)
		}
		switch tp := ps.TargetPort; {
		case tp == "":
			p.TargetPort = p.Port
		case isDigits(tp):
			n, _ := strconv.Atoi(tp)
			if ck.portNumber(f+".targetPort", n) {
				p.TargetPort = uint16(n)
			}
		case isPortName(tp):
			p.TargetPortName = tp
		default:
			ck.addf(f+".targetPort", "%q is neither a port number nor a port name (want 1..65535, or up to 15 lowercase letters, digits and inner '-', e.g. http)", tp)
		}
		if portOK {
			for _, ip := range s.ClusterIPs {
				k := lb.ServiceKey{VIP: ip, Port: p.Port, Proto: p.Proto}
				if prev, dup := keys[k]; dup {
					ck.addf(f, "%s is already served by %s (want each ClusterIP, port and protocol once)", k, prev)
					continue
				}
				keys[k] = fmt.Sprintf("%s (%s/%s)", f, s.Namespace, s.Name)
			}
		}
		s.Ports = append(s.Ports, p)
	}
}

// endpoint parses one endpoint of s. seen holds the addresses of s's
// endpoints so far.
func (ck *checker) endpoint(field string, es *EndpointSpec, s *lb.Service, c *Config, pods []podCIDR, vips map[netip.Addr]string, nodes map[string]bool, seen map[netip.Addr]string) fileEndpoint {
	var fe fileEndpoint
	e := &fe.tmpl
	e.NodeName, e.Zone, e.Terminating = es.NodeName, es.Zone, es.Terminating
	if e.NodeName != "" && !nodes[e.NodeName] {
		var known []string
		for n, ok := range nodes {
			if ok {
				known = append(known, n)
			}
		}
		slices.Sort(known)
		ck.addf(field+".nodeName", "%q is not a known node (want node.name or a peer's name: %s)", e.NodeName, quoteList(known))
	}
	if len(es.Addresses) == 0 {
		ck.addf(field+".addresses", "missing (want the backend's IP, e.g. [%s])", exEndpoint.v4)
	}
	var fams [2]string
	for i, str := range es.Addresses {
		f := fmt.Sprintf("%s.addresses[%d]", field, i)
		a := ck.addr(f, str, exEndpoint)
		if !a.IsValid() {
			continue
		}
		fam := familyIndex(a)
		switch {
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast():
			ck.addf(f, "%s is not a routable unicast address (want a pod or node IP, e.g. %s)", a, exEndpoint.pick(str))
			continue
		case vips[a] != "":
			ck.addf(f, "%s is the ClusterIP %s (want a backend address, not a Service VIP)", a, vips[a])
			continue
		case slices.Contains(c.RouterAddresses, a):
			ck.addf(f, "%s is a router address (want a backend address)", a)
			continue
		case fams[fam] != "":
			ck.addf(f, "%s is a second %s address (want at most one per family; the first is %s)", a, family(a), fams[fam])
			continue
		case seen[a] != "":
			ck.addf(f, "%s is already listed by %s (want each backend once per Service)", a, seen[a])
			continue
		case !slices.ContainsFunc(s.ClusterIPs, func(v netip.Addr) bool { return v.Is4() == a.Is4() }) && len(s.ClusterIPs) > 0:
			ck.addf(f, "%s is %s but the Service has no %s ClusterIP (want an address of the family of %s)", a, family(a), family(a), addrList(s.ClusterIPs))
			continue
		}
		if in := insideAny(a, nil, nil, c.ServiceCIDRs); in != "" {
			ck.addf(f, "%s is inside %s (want a backend address outside the service range)", a, in)
			continue
		}
		if i := slices.IndexFunc(pods, func(p podCIDR) bool { return p.prefix.Contains(a) }); i >= 0 && nodes[e.NodeName] && pods[i].node != e.NodeName {
			ck.addf(field+".nodeName", "%q does not match address %s, which is in %s %s of node %q (want nodeName: %s)", e.NodeName, a, pods[i].field, pods[i].prefix, pods[i].node, pods[i].node)
		}
		fams[fam], seen[a] = f, f
		fe.addrs = append(fe.addrs, a)
	}

	e.Serving = es.Serving == nil || *es.Serving
	e.Ready = !e.Terminating
	if es.Ready != nil {
		if e.Ready = *es.Ready; e.Ready && e.Terminating {
			ck.addf(field+".ready", "true while terminating is true (want ready: false or left out: a terminating endpoint is never ready; serving: true keeps it as a fallback)")
		}
	}

	type portName struct {
		name  string
		proto lb.Protocol
	}
	ports := map[portName]string{}
	for i, ps := range es.Ports {
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		p := lb.EndpointPort{Name: ps.Name}
		p.Proto = oneOf(ck, f+".protocol", ps.Protocol, lb.TCP, protocols...)
		switch k := (portName{p.Name, p.Proto}); {
		case p.Name == "":
			ck.addf(f+".name", "missing (want the port's name, which a Service targetPort refers to, e.g. http)")
		case !isPortName(p.Name):
			ck.addf(f+".name", "%q is not a port name (want up to 15 lowercase letters, digits and inner '-', with a letter, e.g. http)", p.Name)
		case ports[k] != "":
			ck.addf(f+".name", "%q/%s is already used by %s (want unique port names per protocol)", p.Name, p.Proto, ports[k])
		default:
			ports[k] = f
		}
		if ck.portNumber(f+".port", ps.Port) {
			p.Port = uint16(ps.Port)
		}
		e.Ports = append(e.Ports, p)
	}
	return fe
}

func addrList(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// isPortName reports whether s is an IANA service name, as Kubernetes
// requires of named ports: 1..15 lowercase letters, digits and '-', with
// at least one letter, no '-' at either end and no "--".
func isPortName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := range len(s) {
		switch ch := s[i]; {
		case ch >= 'a' && ch <= 'z':
			letter = true
		case ch >= '0' && ch <= '9':
		case ch == '-':
			if s[i-1] == '-' {
				return false
			}
		default:
			return false
		}
	}
	return letter
}
