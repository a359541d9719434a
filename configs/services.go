package configs

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
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
	nodePorts := map[int][]nodePortUse{}
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
		s.Type = oneOf(ck, field+".type", ss.Type, lb.TypeClusterIP, types...)
		ck.clusterIPs(field, ss, s, c, vips)
		ck.servicePorts(field, ss, s, ports)
		// What depends on the type or the external policy is checked
		// only when they are valid: a misspelt type is reported once,
		// not again as every field it allows.
		typeOK := valid(ss.Type, types...)
		ck.externalAddrs(field, ss, s, c, pods, vips, ports, typeOK)
		ck.nodePorts(field, ss, s, c, nodePorts, typeOK)

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
		s.ExternalTrafficPolicy = oneOf(ck, field+".externalTrafficPolicy", ss.ExternalTrafficPolicy, lb.PolicyCluster, policies...)
		// The API server's rule: the policy of traffic from outside is
		// only for a Service reachable from outside.
		if s.ExternalTrafficPolicy == lb.PolicyLocal && typeOK && s.Type == lb.TypeClusterIP && len(ss.ExternalIPs) == 0 {
			ck.addf(field+".externalTrafficPolicy", "%q on a Service of type %s without externalIPs (want it only with type %s or %s, or with externalIPs: it governs traffic from outside the cluster)",
				ss.ExternalTrafficPolicy, s.Type, lb.TypeNodePort, lb.TypeLoadBalancer)
		}
		ck.healthCheckNodePort(field, ss, s, c, nodePorts, typeOK && valid(ss.ExternalTrafficPolicy, policies...))
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

// vipNoun names the Service address at field for a message: "the
// ClusterIP services[0].clusterIPs[0]".
func vipNoun(field string) string {
	switch {
	case strings.Contains(field, ".externalIPs["):
		return "the external IP " + field
	case strings.Contains(field, ".loadBalancerIPs["):
		return "the load-balancer IP " + field
	}
	return "the ClusterIP " + field
}

// externalAddrs parses the external and load-balancer IPs of a Service
// into s and vips, keeping the (address, port, protocol) keys of all
// Services unique, as a ClusterIP's.
func (ck *checker) externalAddrs(field string, ss *ServiceSpec, s *lb.Service, c *Config, pods []podCIDR, vips map[netip.Addr]string, keys map[lb.ServiceKey]string, typeOK bool) {
	if len(ss.LoadBalancerIPs) > 0 && typeOK && s.Type != lb.TypeLoadBalancer {
		ck.addf(field+".loadBalancerIPs", "set on a Service of type %s (want them only with type %s: they stand for status.loadBalancer.ingress)", s.Type, lb.TypeLoadBalancer)
	}
	seen := map[netip.Addr]string{}
	for _, l := range []struct {
		name string
		in   []string
		out  *[]netip.Addr
	}{{"externalIPs", ss.ExternalIPs, &s.ExternalIPs}, {"loadBalancerIPs", ss.LoadBalancerIPs, &s.LoadBalancerIPs}} {
		for i, str := range l.in {
			f := fmt.Sprintf("%s.%s[%d]", field, l.name, i)
			a := ck.addr(f, str, exExternalIP)
			if !a.IsValid() {
				continue
			}
			switch in := insideAny(a, pods, c.ClusterCIDRs, c.ServiceCIDRs); {
			case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast():
				ck.addf(f, "%s is not a routable unicast address (want an address outside the cluster, e.g. %s)", a, exExternalIP.pick(str))
				continue
			case in != "":
				ck.addf(f, "%s is inside %s (want an address outside the cluster's pod and service ranges, e.g. %s)", a, in, exExternalIP.pick(str))
				continue
			case slices.Contains(c.RouterAddresses, a):
				ck.addf(f, "%s is a router address (want an address outside the cluster, e.g. %s)", a, exExternalIP.pick(str))
				continue
			case seen[a] != "":
				ck.addf(f, "%s is already listed by %s (want each address once per Service)", a, seen[a])
				continue
			case len(s.ClusterIPs) > 0 && !slices.ContainsFunc(s.ClusterIPs, func(v netip.Addr) bool { return v.Is4() == a.Is4() }):
				ck.addf(f, "%s is %s but the Service has no %s ClusterIP (want an address of the family of %s)", a, family(a), family(a), addrList(s.ClusterIPs))
				continue
			}
			seen[a] = f
			if _, ok := vips[a]; !ok {
				vips[a] = f
			}
			*l.out = append(*l.out, a)
			for _, p := range s.Ports {
				if p.Port == 0 {
					continue // an invalid port, reported
				}
				k := lb.ServiceKey{VIP: a, Port: p.Port, Proto: p.Proto}
				if prev, dup := keys[k]; dup {
					ck.addf(f, "%s is already served by %s (want each address, port and protocol once)", k, prev)
					continue
				}
				keys[k] = fmt.Sprintf("%s (%s/%s)", f, s.Namespace, s.Name)
			}
		}
	}
}

// nodePortUse is a node port claimed by a Service of the file.
type nodePortUse struct {
	field string // services[0].ports[1].nodePort
	svc   string // namespace/name
	proto lb.Protocol
	// health marks a healthCheckNodePort (TCP), which no nodePort of any
	// protocol may share.
	health bool
}

// claimNodePort records use of port in used, reporting a clash with an
// earlier use: the same nodePort and protocol twice, or a
// healthCheckNodePort and any other use.
func (ck *checker) claimNodePort(used map[int][]nodePortUse, port int, u nodePortUse) {
clashes:
	for _, prev := range used[port] {
		switch {
		case !u.health && !prev.health && u.proto == prev.proto:
			ck.addf(u.field, "%d/%s is already the nodePort of %s (%s) (want each node port and protocol once)", port, u.proto, prev.field, prev.svc)
		case u.health && prev.health:
			ck.addf(u.field, "%d is already the healthCheckNodePort of %s (%s) (want each health check node port once)", port, prev.field, prev.svc)
		case u.health:
			ck.addf(u.field, "%d is already the nodePort of %s (%s) (want a port that no nodePort uses)", port, prev.field, prev.svc)
		case prev.health:
			ck.addf(u.field, "%d is already the healthCheckNodePort of %s (%s) (want a port that no healthCheckNodePort uses)", port, prev.field, prev.svc)
		default:
			continue
		}
		break clashes // one message names the first clash
	}
	used[port] = append(used[port], u)
}

// nodePorts checks the nodePort of each port of a Service, whose type
// (valid if typeOK) and ports are parsed, and sets it in s.Ports.
func (ck *checker) nodePorts(field string, ss *ServiceSpec, s *lb.Service, c *Config, used map[int][]nodePortUse, typeOK bool) {
	r := c.LB.NodePortRange
	for i, ps := range ss.Ports {
		f := fmt.Sprintf("%s.ports[%d].nodePort", field, i)
		switch np := ps.NodePort; {
		case np == 0 && s.Type == lb.TypeNodePort:
			ck.addf(f, "missing (want nodePort on every port of a NodePort Service; the file has no allocator: pick one in lb.nodePortRange %s, e.g. %d)", r, r.Min)
		case np == 0:
		case typeOK && s.Type == lb.TypeClusterIP:
			ck.addf(f, "%d may not be used when type is %s (want type %s or %s, or no nodePort)", np, s.Type, lb.TypeNodePort, lb.TypeLoadBalancer)
		case !r.Contains(np):
			ck.addf(f, "%d is outside lb.nodePortRange %s (want a port in %d..%d)", np, r, r.Min, r.Max)
		default:
			ck.claimNodePort(used, np, nodePortUse{field: f, svc: s.Namespace + "/" + s.Name, proto: s.Ports[i].Proto})
			s.Ports[i].NodePort = uint16(np)
		}
	}
}

// healthCheckNodePort checks a Service's healthCheckNodePort, once its
// type and externalTrafficPolicy are parsed (both valid if
// knownPolicy), and sets it in s.
func (ck *checker) healthCheckNodePort(field string, ss *ServiceSpec, s *lb.Service, c *Config, used map[int][]nodePortUse, knownPolicy bool) {
	f, hc, r := field+".healthCheckNodePort", ss.HealthCheckNodePort, c.LB.NodePortRange
	switch {
	case hc == 0:
	case knownPolicy && (s.Type != lb.TypeLoadBalancer || s.ExternalTrafficPolicy != lb.PolicyLocal):
		ck.addf(f, "%d is set on a Service of type %s with externalTrafficPolicy %s (want it only with type %s and externalTrafficPolicy %s)",
			hc, s.Type, s.ExternalTrafficPolicy, lb.TypeLoadBalancer, lb.PolicyLocal)
	case !r.Contains(hc):
		ck.addf(f, "%d is outside lb.nodePortRange %s (want a port in %d..%d)", hc, r, r.Min, r.Max)
	default:
		ck.claimNodePort(used, hc, nodePortUse{field: f, svc: s.Namespace + "/" + s.Name, proto: lb.TCP, health: true})
		s.HealthCheckNodePort = uint16(hc)
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
			ck.addf(f, "%s is %s (want a backend address, not a Service VIP)", a, vipNoun(vips[a]))
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
