package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Protocol is a transport protocol, numbered as in the IP header (IANA), so
// that the data path can compare it with a packet's protocol field directly.
type Protocol uint8

// The protocols a Service port can use.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// ParseProtocol parses "TCP" or "UDP" (any case).
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: want TCP or UDP", s)
}

// Mode is how the data path carries a Service's connections to a backend.
type Mode uint8

const (
	// ModeDefault takes the Table's Options.Mode.
	ModeDefault Mode = iota
	// ModeNAT rewrites the destination per connection inside the stack;
	// backends see the client's address.
	ModeNAT
	// ModeProxy terminates the client's connection and splices it to one
	// the router dials to the backend.
	ModeProxy
)

func (m Mode) String() string {
	switch m {
	case ModeDefault:
		return "default"
	case ModeNAT:
		return "nat"
	case ModeProxy:
		return "proxy"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses "nat" or "proxy"; "" is ModeDefault.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "":
		return ModeDefault, nil
	case "nat":
		return ModeNAT, nil
	case "proxy":
		return ModeProxy, nil
	}
	return 0, fmt.Errorf("mode %q: want nat or proxy", s)
}

// PickerKind names a load-balancing algorithm (see picker.go).
type PickerKind uint8

const (
	// PickDefault takes the Table's Options.Picker.
	PickDefault PickerKind = iota
	// PickRandom picks a backend uniformly at random per connection, as
	// kube-proxy's iptables "statistic mode random" chains do.
	PickRandom
	// PickRoundRobin rotates through the backends in order.
	PickRoundRobin
	// PickLeastConn picks the backend with the fewest active connections.
	PickLeastConn
	// PickMaglev hashes the flow onto a Maglev lookup table: the same
	// flow (or client, see Options.MaglevHash) gets the same backend on
	// every node, and a backend change moves few flows.
	PickMaglev
)

var pickerNames = [...]string{
	PickDefault:    "default",
	PickRandom:     "random",
	PickRoundRobin: "round-robin",
	PickLeastConn:  "least-connections",
	PickMaglev:     "maglev",
}

func (k PickerKind) String() string {
	if int(k) < len(pickerNames) {
		return pickerNames[k]
	}
	return fmt.Sprintf("PickerKind(%d)", uint8(k))
}

// ParsePickerKind parses "random", "round-robin", "least-connections" or
// "maglev"; "" is PickDefault.
func ParsePickerKind(s string) (PickerKind, error) {
	if s == "" {
		return PickDefault, nil
	}
	for k, name := range pickerNames {
		if k != int(PickDefault) && name == s {
			return PickerKind(k), nil
		}
	}
	return 0, fmt.Errorf("picker %q: want random, round-robin, least-connections or maglev", s)
}

// Affinity is a Service's sessionAffinity.
type Affinity uint8

const (
	// AffinityNone picks a backend per connection.
	AffinityNone Affinity = iota
	// AffinityClientIP sends a client's connections to the backend its
	// last connection went to, while that was less than the Service's
	// SessionAffinityTimeout ago and the backend is still usable.
	AffinityClientIP
)

func (a Affinity) String() string {
	switch a {
	case AffinityNone:
		return "None"
	case AffinityClientIP:
		return "ClientIP"
	}
	return fmt.Sprintf("Affinity(%d)", uint8(a))
}

// ParseAffinity parses "None" or "ClientIP"; "" is AffinityNone.
func ParseAffinity(s string) (Affinity, error) {
	switch s {
	case "", "None":
		return AffinityNone, nil
	case "ClientIP":
		return AffinityClientIP, nil
	}
	return 0, fmt.Errorf("sessionAffinity %q: want None or ClientIP", s)
}

// TrafficPolicy is a Service's internalTrafficPolicy.
type TrafficPolicy uint8

const (
	// PolicyCluster uses endpoints on every node.
	PolicyCluster TrafficPolicy = iota
	// PolicyLocal uses only endpoints on this node (Options.NodeName).
	PolicyLocal
)

func (p TrafficPolicy) String() string {
	switch p {
	case PolicyCluster:
		return "Cluster"
	case PolicyLocal:
		return "Local"
	}
	return fmt.Sprintf("TrafficPolicy(%d)", uint8(p))
}

// ServiceType is a Service's spec.type, as far as the data path cares.
// A Service of any type is served on its ClusterIPs, external IPs and
// load-balancer IPs; node ports are served for every port with a
// NodePort, whatever the type says (a LoadBalancer Service may have
// none).
type ServiceType uint8

const (
	TypeClusterIP ServiceType = iota
	TypeNodePort
	TypeLoadBalancer
)

var serviceTypeNames = [...]string{TypeClusterIP: "ClusterIP", TypeNodePort: "NodePort", TypeLoadBalancer: "LoadBalancer"}

func (t ServiceType) String() string {
	if int(t) < len(serviceTypeNames) {
		return serviceTypeNames[t]
	}
	return fmt.Sprintf("ServiceType(%d)", uint8(t))
}

// ParseServiceType parses "ClusterIP", "NodePort" or "LoadBalancer"; ""
// is TypeClusterIP.
func ParseServiceType(s string) (ServiceType, error) {
	if s == "" {
		return TypeClusterIP, nil
	}
	for t, name := range serviceTypeNames {
		if name == s {
			return ServiceType(t), nil
		}
	}
	return 0, fmt.Errorf("type %q: want ClusterIP, NodePort or LoadBalancer", s)
}

// ParseTrafficPolicy parses "Cluster" or "Local"; "" is PolicyCluster.
func ParseTrafficPolicy(s string) (TrafficPolicy, error) {
	switch s {
	case "", "Cluster":
		return PolicyCluster, nil
	case "Local":
		return PolicyLocal, nil
	}
	return 0, fmt.Errorf("internalTrafficPolicy %q: want Cluster or Local", s)
}

// DefaultAffinityTimeout is Kubernetes' default
// sessionAffinityConfig.clientIP.timeoutSeconds: 3 hours.
const DefaultAffinityTimeout = 10800 * time.Second

// ServiceKey is what the data path matches a connection against: a
// virtual IP, a port and a protocol. One Service expands into one key per
// VIP (ClusterIP, external IP or load-balancer IP) per port, which the
// router's data path serves to pods and nodes, and, for traffic that
// enters the node from outside (External keys), one key per node port
// and per external and load-balancer IP, which the node's host sockets
// serve (see HostPorts).
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16
	Proto Protocol
	// External marks a key for traffic from outside the cluster:
	// endpoints are chosen by externalTrafficPolicy. A node port's key
	// has the unspecified address of its family as VIP (0.0.0.0 or ::)
	// and the node port as Port.
	External bool
}

// NodePortKey returns the External key of node port port/proto for
// endpoints of family is4.
func NodePortKey(port uint16, proto Protocol, is4 bool) ServiceKey {
	vip := netip.IPv6Unspecified()
	if is4 {
		vip = netip.IPv4Unspecified()
	}
	return ServiceKey{VIP: vip, Port: port, Proto: proto, External: true}
}

// IsNodePort reports whether k is a node port's key.
func (k ServiceKey) IsNodePort() bool { return k.External && k.VIP.IsUnspecified() }

func (k ServiceKey) String() string {
	switch {
	case k.IsNodePort():
		fam := "IPv4"
		if k.VIP.Is6() {
			fam = "IPv6"
		}
		return fmt.Sprintf("nodePort %d/%v (%s)", k.Port, k.Proto, fam)
	case k.External:
		return netip.AddrPortFrom(k.VIP, k.Port).String() + "/" + k.Proto.String() + " (external)"
	}
	return netip.AddrPortFrom(k.VIP, k.Port).String() + "/" + k.Proto.String()
}

// ServiceName names a Kubernetes Service.
type ServiceName struct {
	Namespace, Name string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// ServicePortName names one port of a Service, as kube-proxy's
// ServicePortName does ("kube-system/kube-dns:dns-tcp").
type ServicePortName struct {
	ServiceName
	Port string
}

func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.ServiceName.String()
	}
	return n.ServiceName.String() + ":" + n.Port
}

// Service is the desired state of one Kubernetes Service: its ClusterIPs,
// ports and endpoints. It expands into one Entry per (ClusterIP, port):
// kube-dns with ClusterIP 10.96.0.10 and ports 53/UDP, 53/TCP, 9153/TCP is
// three entries; a dual-stack Service with one port is two.
//
// The Table copies what it keeps; callers may reuse a Service after Set or
// Upsert returns.
type Service struct {
	Namespace, Name string
	// ClusterIPs are the Service's virtual IPs, at most one per family in
	// Kubernetes (not enforced here beyond uniqueness).
	ClusterIPs []netip.Addr
	Ports      []ServicePort
	// Endpoints are the Service's endpoints with their conditions, as
	// EndpointSlices list them. An endpoint backs the keys of its own
	// address family only.
	Endpoints []Endpoint

	Mode   Mode
	Picker PickerKind
	// SessionAffinity and SessionAffinityTimeout are
	// spec.sessionAffinity and its clientIP.timeoutSeconds. A zero
	// timeout means DefaultAffinityTimeout.
	SessionAffinity        Affinity
	SessionAffinityTimeout time.Duration
	InternalTrafficPolicy  TrafficPolicy
	// ProxyProtocol sends a PROXY protocol v2 header to backends in
	// proxy mode, and from the host relays of node ports and external
	// addresses.
	ProxyProtocol bool

	// Type is spec.type.
	Type ServiceType
	// ExternalIPs are spec.externalIPs, LoadBalancerIPs the IPs of
	// status.loadBalancer.ingress. Each is a VIP for pods and nodes
	// (as a ClusterIP, with the Cluster policy, as kube-proxy
	// short-circuits such traffic) and, for traffic from outside, an
	// External key with ExternalTrafficPolicy.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// ExternalTrafficPolicy is spec.externalTrafficPolicy: which
	// endpoints serve traffic from outside the cluster (External
	// keys).
	ExternalTrafficPolicy TrafficPolicy
	// HealthCheckNodePort is spec.healthCheckNodePort (0: none): with
	// ExternalTrafficPolicy Local the node answers HTTP there with its
	// count of local ready endpoints, 200 while there are some and 503
	// otherwise, as kube-proxy does.
	HealthCheckNodePort uint16
}

// ServicePort is one port of a Service.
//
// A connection to the port goes to each endpoint's TargetPortName port if
// TargetPortName is set, else to TargetPort, else to Port. Sources whose
// endpoints already carry resolved ports per Service port (EndpointSlices)
// set TargetPortName to the Service port's name (any non-empty key for an
// unnamed port) and list each endpoint's port under that name.
type ServicePort struct {
	Name  string
	Port  uint16
	Proto Protocol
	// TargetPort is the backend port; 0 means Port.
	TargetPort uint16
	// TargetPortName names a port of each endpoint (Endpoint.Ports). An
	// endpoint without such a port does not back this Service port.
	TargetPortName string
	// NodePort is the port every node serves this Service port on from
	// outside (0: none).
	NodePort uint16
}

// Endpoint is one endpoint of a Service: one address with its
// EndpointSlice conditions and topology.
type Endpoint struct {
	Addr netip.Addr
	// Ports are the endpoint's named ports, for ServicePort.TargetPortName.
	Ports []EndpointPort
	// Ready, Serving and Terminating are the EndpointSlice conditions.
	Ready, Serving, Terminating bool
	NodeName                    string
	Zone                        string
	// ForZones and ForNodes are EndpointSlice topology hints
	// (trafficDistribution). When every ready endpoint carries hints and
	// one names this node (or its zone), only the hinted endpoints are
	// used, as kube-proxy does.
	ForZones []string
	ForNodes []string
}

// EndpointPort is a named port of an endpoint.
type EndpointPort struct {
	Name string
	Port uint16
	// Proto is the port's protocol; 0 matches any.
	Proto Protocol
}

// Key returns s's name.
func (s *Service) Key() ServiceName { return ServiceName{s.Namespace, s.Name} }

// Keys returns the keys s expands into: one per VIP (ClusterIP, external
// IP, load-balancer IP) per port; one External key per external and
// load-balancer IP per port; and one External key per node port per
// address family of the ClusterIPs.
func (s *Service) Keys() []ServiceKey {
	specs := s.keySpecs()
	keys := make([]ServiceKey, len(specs))
	for i, k := range specs {
		keys[i] = k.key
	}
	return keys
}

// keySpec is one key of a Service with the port it serves and the
// traffic policy that picks its endpoints.
type keySpec struct {
	key    ServiceKey
	port   int // index into Service.Ports
	policy TrafficPolicy
}

// keySpecs lists s's keys in a fixed order (see Keys).
func (s *Service) keySpecs() []keySpec {
	n := (len(s.ClusterIPs) + 2*len(s.ExternalIPs) + 2*len(s.LoadBalancerIPs) + 2) * len(s.Ports)
	out := make([]keySpec, 0, n)
	for _, vip := range s.ClusterIPs {
		for i, p := range s.Ports {
			out = append(out, keySpec{ServiceKey{VIP: vip.Unmap(), Port: p.Port, Proto: p.Proto}, i, s.InternalTrafficPolicy})
		}
	}
	for _, ips := range [][]netip.Addr{s.ExternalIPs, s.LoadBalancerIPs} {
		for _, vip := range ips {
			for i, p := range s.Ports {
				k := ServiceKey{VIP: vip.Unmap(), Port: p.Port, Proto: p.Proto}
				out = append(out, keySpec{k, i, PolicyCluster})
				k.External = true
				out = append(out, keySpec{k, i, s.ExternalTrafficPolicy})
			}
		}
	}
	var has4, has6 bool
	for _, vip := range s.ClusterIPs {
		if vip.Unmap().Is4() {
			has4 = true
		} else {
			has6 = true
		}
	}
	for i, p := range s.Ports {
		if p.NodePort == 0 {
			continue
		}
		if has4 {
			out = append(out, keySpec{NodePortKey(p.NodePort, p.Proto, true), i, s.ExternalTrafficPolicy})
		}
		if has6 {
			out = append(out, keySpec{NodePortKey(p.NodePort, p.Proto, false), i, s.ExternalTrafficPolicy})
		}
	}
	return out
}

// Target returns the port that traffic for p goes to on e, and false if e
// does not back p (it lacks the named target port).
func (p *ServicePort) Target(e *Endpoint) (uint16, bool) {
	if p.TargetPortName == "" {
		if p.TargetPort != 0 {
			return p.TargetPort, true
		}
		return p.Port, true
	}
	for _, ep := range e.Ports {
		if ep.Name == p.TargetPortName && (ep.Proto == 0 || ep.Proto == p.Proto) && ep.Port != 0 {
			return ep.Port, true
		}
	}
	return 0, false
}

// Validate reports every problem with s, naming the field, the value and
// what was expected. The Table refuses a Service that does not validate.
func (s *Service) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("service %s/%s: %s: "+format, append([]any{s.Namespace, s.Name, field}, args...)...))
	}
	if s.Name == "" {
		bad("name", "missing (want the Service's name, e.g. my-service)")
	}
	if len(s.ClusterIPs) == 0 {
		bad("clusterIPs", "missing (want at least one ClusterIP, e.g. 10.103.92.81)")
	}
	for i, a := range s.ClusterIPs {
		switch {
		case !a.IsValid():
			bad(fmt.Sprintf("clusterIPs[%d]", i), "invalid address (want an IPv4 or IPv6 address)")
		case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast():
			bad(fmt.Sprintf("clusterIPs[%d]", i), "%s is not a unicast address without zone", a)
		case slices.ContainsFunc(s.ClusterIPs[:i], func(b netip.Addr) bool { return b.Unmap() == a.Unmap() }):
			bad(fmt.Sprintf("clusterIPs[%d]", i), "%s is listed twice (want unique ClusterIPs)", a)
		}
	}
	if len(s.Ports) == 0 {
		bad("ports", "missing (want at least one port, e.g. 80/TCP)")
	}
	for i, p := range s.Ports {
		f := func() string { return fmt.Sprintf("ports[%d]", i) }
		if p.Port == 0 {
			bad(f()+".port", "0 (want 1..65535)")
		}
		if p.Proto != TCP && p.Proto != UDP {
			bad(f()+".proto", "%v (want TCP or UDP)", p.Proto)
		}
		if p.TargetPort != 0 && p.TargetPortName != "" {
			bad(f(), "both targetPort %d and targetPortName %q are set (want at most one)", p.TargetPort, p.TargetPortName)
		}
		for j, q := range s.Ports[:i] {
			if q.Port == p.Port && q.Proto == p.Proto {
				bad(f(), "%d/%v is also ports[%d] (want each port and protocol once)", p.Port, p.Proto, j)
			}
			if p.Name != "" && q.Name == p.Name {
				bad(f()+".name", "%q is also ports[%d].name (want unique port names)", p.Name, j)
			}
		}
	}
	for i, e := range s.Endpoints {
		f := func() string { return fmt.Sprintf("endpoints[%d]", i) }
		if !e.Addr.IsValid() {
			bad(f()+".addr", "invalid address (want the endpoint's IP, e.g. 10.244.0.4)")
		}
		for j, p := range e.Ports {
			if p.Port == 0 {
				bad(fmt.Sprintf("%s.ports[%d].port", f(), j), "0 (want 1..65535)")
			}
		}
	}
	switch s.Mode {
	case ModeDefault, ModeNAT, ModeProxy:
	default:
		bad("mode", "%v (want nat or proxy)", s.Mode)
	}
	if s.Picker > PickMaglev {
		bad("picker", "%v (want random, round-robin, least-connections or maglev)", s.Picker)
	}
	switch s.SessionAffinity {
	case AffinityNone, AffinityClientIP:
	default:
		bad("sessionAffinity", "%v (want None or ClientIP)", s.SessionAffinity)
	}
	if s.SessionAffinityTimeout < 0 {
		bad("sessionAffinityTimeout", "%v (want a positive duration, or 0 for %v)", s.SessionAffinityTimeout, DefaultAffinityTimeout)
	}
	switch s.InternalTrafficPolicy {
	case PolicyCluster, PolicyLocal:
	default:
		bad("internalTrafficPolicy", "%v (want Cluster or Local)", s.InternalTrafficPolicy)
	}
	switch s.ExternalTrafficPolicy {
	case PolicyCluster, PolicyLocal:
	default:
		bad("externalTrafficPolicy", "%v (want Cluster or Local)", s.ExternalTrafficPolicy)
	}
	if s.Type > TypeLoadBalancer {
		bad("type", "%v (want ClusterIP, NodePort or LoadBalancer)", s.Type)
	}
	for _, l := range []struct {
		field string
		ips   []netip.Addr
	}{{"externalIPs", s.ExternalIPs}, {"loadBalancerIPs", s.LoadBalancerIPs}} {
		for i, a := range l.ips {
			f := fmt.Sprintf("%s[%d]", l.field, i)
			switch {
			case !a.IsValid():
				bad(f, "invalid address (want an IPv4 or IPv6 address)")
			case a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
				bad(f, "%s is not a unicast address without zone", a)
			case slices.ContainsFunc(l.ips[:i], func(b netip.Addr) bool { return b.Unmap() == a.Unmap() }):
				bad(f, "%s is listed twice (want unique addresses)", a)
			case slices.ContainsFunc(s.ClusterIPs, func(b netip.Addr) bool { return b.Unmap() == a.Unmap() }):
				bad(f, "%s is also a ClusterIP of the Service", a)
			}
		}
	}
	for i, p := range s.Ports {
		if p.NodePort == 0 {
			continue
		}
		for j, q := range s.Ports[:i] {
			if q.NodePort == p.NodePort && q.Proto == p.Proto {
				bad(fmt.Sprintf("ports[%d].nodePort", i), "%d/%v is also ports[%d].nodePort (want each node port and protocol once)", p.NodePort, p.Proto, j)
			}
		}
		if p.NodePort == s.HealthCheckNodePort && p.Proto == TCP {
			bad(fmt.Sprintf("ports[%d].nodePort", i), "%d/TCP is also the healthCheckNodePort", p.NodePort)
		}
	}
	return errors.Join(errs...)
}

// Equal reports whether s and o are the same desired state, so that an
// update that changes nothing keeps the Service's entries as they are.
// Order matters: endpoints listed in another order count as a change.
func (s *Service) Equal(o *Service) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name &&
		slices.Equal(s.ClusterIPs, o.ClusterIPs) &&
		slices.Equal(s.Ports, o.Ports) &&
		s.Mode == o.Mode && s.Picker == o.Picker &&
		s.SessionAffinity == o.SessionAffinity &&
		s.SessionAffinityTimeout == o.SessionAffinityTimeout &&
		s.InternalTrafficPolicy == o.InternalTrafficPolicy &&
		s.ProxyProtocol == o.ProxyProtocol &&
		s.Type == o.Type &&
		slices.Equal(s.ExternalIPs, o.ExternalIPs) &&
		slices.Equal(s.LoadBalancerIPs, o.LoadBalancerIPs) &&
		s.ExternalTrafficPolicy == o.ExternalTrafficPolicy &&
		s.HealthCheckNodePort == o.HealthCheckNodePort &&
		endpointsEqual(s.Endpoints, o.Endpoints)
}

func endpointsEqual(a, b []Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(&b[i]) {
			return false
		}
	}
	return true
}

func (e *Endpoint) equal(o *Endpoint) bool {
	return e.Addr == o.Addr && e.Ready == o.Ready && e.Serving == o.Serving &&
		e.Terminating == o.Terminating && e.NodeName == o.NodeName && e.Zone == o.Zone &&
		slices.Equal(e.Ports, o.Ports) &&
		slices.Equal(e.ForZones, o.ForZones) && slices.Equal(e.ForNodes, o.ForNodes)
}

// clone returns a deep copy of s.
func (s *Service) clone() *Service {
	c := *s
	c.ClusterIPs = slices.Clone(s.ClusterIPs)
	c.ExternalIPs = slices.Clone(s.ExternalIPs)
	c.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
	c.Ports = slices.Clone(s.Ports)
	c.Endpoints = slices.Clone(s.Endpoints)
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		e.Ports = slices.Clone(e.Ports)
		e.ForZones = slices.Clone(e.ForZones)
		e.ForNodes = slices.Clone(e.ForNodes)
	}
	return &c
}
