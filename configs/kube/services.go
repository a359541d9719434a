package kube

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/vrouter/vrouter/lb"
)

// Labels and annotations the Source reads besides the API's own fields.
const (
	// LabelServiceProxyName hands a Service to the proxy of that name
	// (kube-proxy's apis.LabelServiceProxyName): kube-proxy skips every
	// Service that carries it, vrouter skips those whose value is not
	// Options.ProxyName.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// AnnotationMode sets a Service's lb.Mode: "nat" or "proxy".
	AnnotationMode = "vrouter.dev/mode"
	// AnnotationPicker sets a Service's lb.PickerKind: "random",
	// "round-robin", "least-connections" or "maglev".
	AnnotationPicker = "vrouter.dev/picker"
)

// unnamedPort is the lb.ServicePort.TargetPortName of a Service's unnamed
// port (a Service with one port may leave it unnamed; its EndpointSlice
// ports are unnamed too). No Kubernetes port name contains '<'.
const unnamedPort = "<unnamed>"

// portKey is the TargetPortName that matches Service port name to the
// EndpointSlice ports of the same name.
func portKey(name string) string { return cmp.Or(name, unnamedPort) }

// skipReason says why a Service is not load-balanced at all, or "" if it
// is: kube-proxy's ShouldSkipService plus the proxy-name label.
func skipReason(svc *corev1.Service, proxyName string) string {
	if name, ok := svc.Labels[LabelServiceProxyName]; ok && name != proxyName {
		return fmt.Sprintf("label %s is %q, not %q", LabelServiceProxyName, name, proxyName)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return "type ExternalName"
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "headless (no ClusterIP)"
	}
	return ""
}

// built is the desired state of one Service and what building it had to
// leave out.
type built struct {
	// svc is nil when the Service is not load-balanced: skipped (skip
	// says why, an expected case) or unusable (problems say why).
	svc  *lb.Service
	skip string
	// problems are sentences for the log, one per thing ignored.
	problems []string
	// sctpPorts counts the Service's SCTP ports, which are not served.
	sctpPorts int
}

// buildService derives the lb.Service of svc and its EndpointSlices with
// kube-proxy's rules:
//
//   - ClusterIPs from spec.clusterIPs (spec.clusterIP if that is empty);
//     headless and ExternalName Services and those labelled for another
//     proxy are skipped; SCTP ports are skipped and counted.
//   - Each Service port is backed by the EndpointSlice ports of the same
//     name and protocol: the slice carries the resolved backend port, for
//     a numeric targetPort as for a named one (resolved per pod by the
//     EndpointSlice controller) and for Services whose slices are written
//     by hand. So every lb.ServicePort sets TargetPortName to the port's
//     name, and an endpoint whose slices lack that port does not back it,
//     as in kube-proxy.
//   - The endpoints are the union of the slices, one per address: the
//     first slice by name that lists an address gives its conditions and
//     topology; the ports of every slice that lists it are merged.
//     Endpoints are sorted by address, so that the same objects always
//     build an Equal Service.
//   - Conditions: nil ready and nil serving mean true and nil terminating
//     means false, as the discovery/v1 API documents (and kube-proxy reads).
//   - Slices labelled service.kubernetes.io/headless, FQDN slices and
//     ports without a name or number are ignored (kube-proxy ignores them).
//   - Traffic from outside (see externalAccess): spec.type, each port's
//     nodePort, spec.externalIPs, the IPs of status.loadBalancer.ingress,
//     spec.externalTrafficPolicy and spec.healthCheckNodePort, each read
//     as kube-proxy reads it.
//
// An object the API server would not have written (an address that does
// not parse, a port out of range) never makes a wrong Service: what is
// odd is left out with a problem sentence, and the rest is served.
func buildService(svc *corev1.Service, eps []*discoveryv1.EndpointSlice, proxyName string) built {
	var b built
	if b.skip = skipReason(svc, proxyName); b.skip != "" {
		return b
	}
	problem := func(format string, args ...any) { b.problems = append(b.problems, fmt.Sprintf(format, args...)) }
	out := &lb.Service{Namespace: svc.Namespace, Name: svc.Name}

	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	for i, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			problem("spec.clusterIPs[%d] %q is not an IP address; ignoring it", i, s)
			continue
		}
		out.ClusterIPs = append(out.ClusterIPs, a.Unmap())
	}

	for i, p := range svc.Spec.Ports {
		var proto lb.Protocol
		switch p.Protocol {
		case corev1.ProtocolTCP, "":
			proto = lb.TCP
		case corev1.ProtocolUDP:
			proto = lb.UDP
		case corev1.ProtocolSCTP:
			b.sctpPorts++
			problem("spec.ports[%d] %d/SCTP: SCTP is not supported; not serving this port", i, p.Port)
			continue
		default:
			problem("spec.ports[%d] %d/%s: unknown protocol (want TCP or UDP); not serving this port", i, p.Port, p.Protocol)
			continue
		}
		if p.Port < 1 || p.Port > 65535 {
			problem("spec.ports[%d].port %d is out of range (want 1..65535); not serving this port", i, p.Port)
			continue
		}
		sp := lb.ServicePort{Name: p.Name, Port: uint16(p.Port), Proto: proto, TargetPortName: portKey(p.Name)}
		// kube-proxy serves a port's nodePort whatever the type (the
		// API server allows one only on NodePort and LoadBalancer
		// Services, and drops it when the type changes).
		switch np := p.NodePort; {
		case np == 0:
		case np < 1 || np > 65535:
			problem("spec.ports[%d].nodePort %d is out of range (want 1..65535); not serving a node port for this port", i, np)
		case slices.ContainsFunc(out.Ports, func(q lb.ServicePort) bool { return q.NodePort == uint16(np) && q.Proto == proto }):
			problem("spec.ports[%d].nodePort %d/%v is another port's node port too; serving it for the first only", i, np, proto)
		default:
			sp.NodePort = uint16(np)
		}
		out.Ports = append(out.Ports, sp)
	}

	if v, ok := svc.Annotations[AnnotationMode]; ok {
		if m, err := lb.ParseMode(v); err != nil {
			problem("annotation %s: %v; using the default mode", AnnotationMode, err)
		} else {
			out.Mode = m
		}
	}
	if v, ok := svc.Annotations[AnnotationPicker]; ok {
		if k, err := lb.ParsePickerKind(v); err != nil {
			problem("annotation %s: %v; using the default picker", AnnotationPicker, err)
		} else {
			out.Picker = k
		}
	}
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.SessionAffinity = lb.AffinityClientIP
		out.SessionAffinityTimeout = lb.DefaultAffinityTimeout
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.SessionAffinityTimeout = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		out.InternalTrafficPolicy = lb.PolicyLocal
	}

	externalAccess(svc, out, problem)

	out.Endpoints = mergeSlices(eps, problem)

	if len(out.Ports) == 0 {
		// Every port was skipped (SCTP only, say): nothing to serve.
		// The problems say why.
		b.skip = "no TCP or UDP port"
		return b
	}
	if err := out.Validate(); err != nil {
		problem("not load-balanced: %v", err)
		return b
	}
	b.svc = out
	return b
}

// externalAccess reads into out, whose ClusterIPs and ports are set, how
// svc is reached from outside the cluster, as kube-proxy reads it:
//
//   - spec.type; ExternalName never gets here (skipReason).
//   - spec.externalIPs, and the IPs of status.loadBalancer.ingress of a
//     LoadBalancer Service. An ingress entry with a hostname only has no
//     IP to serve; one whose ipMode is Proxy is not served either:
//     kube-proxy does not short-circuit such an IP to the Service, so
//     that traffic to it from inside the cluster goes out to the load
//     balancer, which proxies it to a node port or a pod as it does for
//     clients outside. An address of a family the Service has no
//     ClusterIP of is dropped, as kube-proxy drops it; one listed twice
//     (in both lists, as some controllers publish an external IP as
//     ingress too) is served once.
//   - spec.externalTrafficPolicy Local only for a Service reachable from
//     outside (type NodePort or LoadBalancer, or with externalIPs), as
//     kube-proxy's ExternalPolicyLocal.
//   - spec.healthCheckNodePort only with type LoadBalancer and the
//     Local policy, as kube-proxy serves it.
func externalAccess(svc *corev1.Service, out *lb.Service, problem func(string, ...any)) {
	switch t := svc.Spec.Type; t {
	case corev1.ServiceTypeClusterIP, "":
		out.Type = lb.TypeClusterIP
	case corev1.ServiceTypeNodePort:
		out.Type = lb.TypeNodePort
	case corev1.ServiceTypeLoadBalancer:
		out.Type = lb.TypeLoadBalancer
	default:
		problem("spec.type %q is not ClusterIP, NodePort, LoadBalancer or ExternalName; serving it as ClusterIP", t)
	}

	type source struct{ field, ip string }
	var ext, ing []source
	for i, ip := range svc.Spec.ExternalIPs {
		ext = append(ext, source{fmt.Sprintf("spec.externalIPs[%d]", i), ip})
	}
	ingress := svc.Status.LoadBalancer.Ingress
	if len(ingress) > 0 && out.Type != lb.TypeLoadBalancer {
		problem("status.loadBalancer.ingress is set on a Service of type %v; ignoring it (want it only with type LoadBalancer)", out.Type)
		ingress = nil
	}
	for i, e := range ingress {
		switch {
		case e.IP == "":
			continue // a hostname: nothing to serve
		case e.IPMode != nil && *e.IPMode == corev1.LoadBalancerIPModeProxy:
			continue // the load balancer proxies: see the doc comment
		}
		ing = append(ing, source{fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), e.IP})
	}
	seen := map[netip.Addr]bool{}
	for _, l := range []struct {
		in  []source
		out *[]netip.Addr
	}{{ext, &out.ExternalIPs}, {ing, &out.LoadBalancerIPs}} {
		for _, src := range l.in {
			a, err := netip.ParseAddr(src.ip)
			if err != nil || a.Zone() != "" {
				problem("%s %q is not an IP address; ignoring it", src.field, src.ip)
				continue
			}
			a = a.Unmap()
			switch {
			case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast():
				problem("%s %s is not a unicast address; ignoring it", src.field, a)
			case slices.Contains(out.ClusterIPs, a):
				problem("%s %s is also a ClusterIP of the Service; ignoring it", src.field, a)
			case !slices.ContainsFunc(out.ClusterIPs, func(c netip.Addr) bool { return c.Is4() == a.Is4() }):
				problem("%s %s has no ClusterIP of its family; ignoring it", src.field, a)
			case seen[a]:
				// Listed twice: served once.
			default:
				seen[a] = true
				*l.out = append(*l.out, a)
			}
		}
	}

	external := out.Type != lb.TypeClusterIP || len(svc.Spec.ExternalIPs) > 0
	switch p := svc.Spec.ExternalTrafficPolicy; p {
	case corev1.ServiceExternalTrafficPolicyLocal:
		if external {
			out.ExternalTrafficPolicy = lb.PolicyLocal
		}
	case corev1.ServiceExternalTrafficPolicyCluster, "":
	default:
		problem("spec.externalTrafficPolicy %q is not Cluster or Local; using Cluster", p)
	}

	if out.Type != lb.TypeLoadBalancer || out.ExternalTrafficPolicy != lb.PolicyLocal {
		return
	}
	switch hc := svc.Spec.HealthCheckNodePort; {
	case hc == 0:
		problem("spec.healthCheckNodePort is not set on a LoadBalancer Service with externalTrafficPolicy Local; not serving a health check")
	case hc < 1 || hc > 65535:
		problem("spec.healthCheckNodePort %d is out of range (want 1..65535); not serving a health check", hc)
	case slices.ContainsFunc(out.Ports, func(p lb.ServicePort) bool { return p.NodePort == uint16(hc) && p.Proto == lb.TCP }):
		problem("spec.healthCheckNodePort %d is also a TCP node port of the Service; not serving a health check", hc)
	default:
		out.HealthCheckNodePort = uint16(hc)
	}
}

// mergeSlices returns the endpoints of a Service's EndpointSlices, one per
// address, sorted by address.
func mergeSlices(eps []*discoveryv1.EndpointSlice, problem func(string, ...any)) []lb.Endpoint {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	var out []lb.Endpoint
	index := map[netip.Addr]int{}
	for _, es := range eps {
		if _, ok := es.Labels[corev1.IsHeadlessService]; ok {
			continue
		}
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var ports []lb.EndpointPort
		for i, p := range es.Ports {
			if p.Name == nil || p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
				problem("EndpointSlice %s ports[%d] has no name or no valid port; ignoring it", es.Name, i)
				continue
			}
			proto := lb.TCP
			if p.Protocol != nil {
				switch *p.Protocol {
				case corev1.ProtocolTCP:
				case corev1.ProtocolUDP:
					proto = lb.UDP
				default:
					continue // SCTP: its Service port is skipped and counted
				}
			}
			ports = append(ports, lb.EndpointPort{Name: portKey(*p.Name), Port: uint16(*p.Port), Proto: proto})
		}
		for i, e := range es.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			// Addresses[0] is the endpoint's address; the API keeps
			// the rest for future use, as kube-proxy notes.
			a, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || a.Zone() != "" {
				problem("EndpointSlice %s endpoints[%d] address %q is not an IP address; ignoring it", es.Name, i, e.Addresses[0])
				continue
			}
			a = a.Unmap()
			if j, dup := index[a]; dup {
				mergePorts(&out[j], ports)
				continue
			}
			c := e.Conditions
			ep := lb.Endpoint{
				Addr:        a,
				Ports:       slices.Clone(ports),
				Ready:       c.Ready == nil || *c.Ready,
				Serving:     c.Serving == nil || *c.Serving,
				Terminating: c.Terminating != nil && *c.Terminating,
			}
			if e.NodeName != nil {
				ep.NodeName = *e.NodeName
			}
			if e.Zone != nil {
				ep.Zone = *e.Zone
			}
			if h := e.Hints; h != nil {
				for _, z := range h.ForZones {
					ep.ForZones = append(ep.ForZones, z.Name)
				}
				for _, n := range h.ForNodes {
					ep.ForNodes = append(ep.ForNodes, n.Name)
				}
			}
			index[a] = len(out)
			out = append(out, ep)
		}
	}
	for i := range out {
		slices.SortFunc(out[i].Ports, func(a, b lb.EndpointPort) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Proto, b.Proto))
		})
	}
	slices.SortFunc(out, func(a, b lb.Endpoint) int { return a.Addr.Compare(b.Addr) })
	return out
}

// mergePorts adds to e the ports it does not have yet (by name and
// protocol).
func mergePorts(e *lb.Endpoint, ports []lb.EndpointPort) {
	for _, p := range ports {
		if !slices.ContainsFunc(e.Ports, func(q lb.EndpointPort) bool { return q.Name == p.Name && q.Proto == p.Proto }) {
			e.Ports = append(e.Ports, p)
		}
	}
}

// trimService keeps what buildService reads, dropping managed fields and
// annotations that are not vrouter's (kubectl's last-applied-configuration
// can be larger than the rest of the Service), and of the status all but
// the load balancer's ingress IPs and their mode.
func trimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	c := *s
	c.ManagedFields = nil
	c.Annotations = keep(s.Annotations, AnnotationMode, AnnotationPicker)
	c.Status = corev1.ServiceStatus{}
	for _, e := range s.Status.LoadBalancer.Ingress {
		if e.IP != "" {
			c.Status.LoadBalancer.Ingress = append(c.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: e.IP, IPMode: e.IPMode})
		}
	}
	return &c, nil
}

// trimSlice drops an EndpointSlice's managed fields and annotations other
// than the trigger time.
func trimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	c := *s
	c.ManagedFields = nil
	c.Annotations = keep(s.Annotations, corev1.EndpointsLastChangeTriggerTime)
	return &c, nil
}
