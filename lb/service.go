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

// ServiceKey is what the data path matches a packet against: a ClusterIP,
// a port and a protocol. One Service expands into one key per ClusterIP
// per port.
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16
	Proto Protocol
}

func (k ServiceKey) String() string {
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
	// proxy mode.
	ProxyProtocol bool
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

// Keys returns the keys s expands into: one per ClusterIP per port.
func (s *Service) Keys() []ServiceKey {
	keys := make([]ServiceKey, 0, len(s.ClusterIPs)*len(s.Ports))
	for _, vip := range s.ClusterIPs {
		for _, p := range s.Ports {
			keys = append(keys, ServiceKey{vip.Unmap(), p.Port, p.Proto})
		}
	}
	return keys
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
