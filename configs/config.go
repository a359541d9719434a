package configs

import (
	"net/netip"
	"slices"
	"time"
)

// Values of the string enums in Config. The schema spells them the same
// way.
const (
	ProtocolTCP = "TCP"
	ProtocolUDP = "UDP"

	ModeNAT   = "nat"   // per-connection DNAT inside netstack
	ModeProxy = "proxy" // terminate and splice

	PickerRandom           = "random"
	PickerRoundRobin       = "round-robin"
	PickerLeastConnections = "least-connections"
	PickerMaglev           = "maglev"

	AffinityNone     = "None"
	AffinityClientIP = "ClientIP"

	TrafficPolicyCluster = "Cluster"
	TrafficPolicyLocal   = "Local"
)

// Defaults applied by Parse when the file leaves a field out.
const (
	DefaultTUNName          = "vr0"
	DefaultOverlayPort      = 8285
	DefaultUnderlayMTU      = 1500
	DefaultNamespace        = "default"
	DefaultAffinityTimeout  = 10800 * time.Second
	MaxAffinityTimeout      = 86400 * time.Second
	OverheadIPv4            = 28 // IPv4 header + UDP header
	OverheadIPv6            = 48 // IPv6 header + UDP header
	MinTunnelMTUIPv4        = 576
	MinTunnelMTUIPv6        = 1280
	defaultRouterAddress4   = "169.254.244.1"
	defaultRouterAddress6   = "fd69:7672::1"
	supportedVersionsString = `"` + APIVersion + `"`

	DefaultProxyDialTimeout         = time.Second
	DefaultProxyIdleTimeout         = time.Hour
	DefaultProxyDrainTimeout        = 30 * time.Second
	DefaultNATMaxFlows              = 262144
	DefaultNATMaxFlowsPerClient     = 16384
	DefaultNATUDPTimeout            = 30 * time.Second
	DefaultNATTCPEstablishedTimeout = 24 * time.Hour
)

// DefaultRouterAddresses are router.addresses when the file leaves it
// out: the IPv4 one if the node has an IPv4 pod CIDR, the IPv6 one if it
// has an IPv6 pod CIDR.
var DefaultRouterAddresses = [2]netip.Addr{
	netip.MustParseAddr(defaultRouterAddress4),
	netip.MustParseAddr(defaultRouterAddress6),
}

// Config is a validated router configuration with every default applied.
// Parse and Load return it; nothing else should build one by hand except
// tests. A Config is immutable once returned: consumers keep the pointer
// and compare a new one with Equal.
//
// Slices keep the order of the file. Every netip value is valid, and
// prefixes are canonical (host bits zero) except TUN.Addresses, which are
// interface addresses.
type Config struct {
	Node    Node
	TUN     TUN
	Overlay Overlay
	// RouterAddresses are the router's own addresses inside the stack,
	// at most one per family.
	RouterAddresses []netip.Addr
	// ClusterCIDRs and ServiceCIDRs are routed by the node kernel to the
	// TUN device.
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	Peers        []Peer
	LB           LB
	Services     []Service
}

// Node is the node this router runs on.
type Node struct {
	Name string
	// PodCIDRs holds at most one prefix per family, each inside a
	// cluster CIDR.
	PodCIDRs []netip.Prefix
	Underlay netip.Addr
	Zone     string
}

// TUN is the device between the node kernel and the router.
type TUN struct {
	Name string
	// FD > 0 adopts an open descriptor instead of creating the device.
	FD        int
	MTU       int
	Configure bool
	// Addresses are the kernel's own addresses on the device.
	Addresses  []netip.Prefix
	MultiQueue bool
	// Offload asks for segmentation offload (IFF_VNET_HDR, TSO).
	Offload bool
}

// Overlay is the UDP overlay between routers.
type Overlay struct {
	// Port is the UDP port this router listens on and the default port
	// of its peers.
	Port int
	// Listen is the local address the overlay socket binds.
	Listen      netip.AddrPort
	UnderlayMTU int
	// MTU is the tunnel MTU: the largest inner IP packet carried.
	MTU int
}

// Peer is another node's router.
type Peer struct {
	Name string
	// Underlay is where the peer's overlay socket listens. Its address is
	// unique among peers and is the next hop of PodCIDRs.
	Underlay netip.AddrPort
	PodCIDRs []netip.Prefix
	Zone     string
}

// LB holds the Service load-balancing defaults and the tuning of both
// modes. Each Service carries the mode and picker resolved against them.
type LB struct {
	Mode   string // ModeNAT or ModeProxy
	Picker string // PickerRandom, PickerRoundRobin, ...
	Proxy  Proxy
	NAT    NAT
}

// Proxy tunes proxy mode; every field has its default applied.
type Proxy struct {
	DialTimeout  time.Duration
	IdleTimeout  time.Duration
	DrainTimeout time.Duration
}

// NAT tunes nat mode; every field has its default applied.
type NAT struct {
	// MaxFlows caps the flows of each protocol; MaxFlowsPerClient one
	// client's, at most MaxFlows.
	MaxFlows              int
	MaxFlowsPerClient     int
	UDPTimeout            time.Duration
	TCPEstablishedTimeout time.Duration
}

// Service is one Service of the static Service table.
type Service struct {
	Namespace string
	Name      string
	// ClusterIPs holds at most one address per family.
	ClusterIPs []netip.Addr
	Ports      []ServicePort
	// Mode and Picker are the Service's own or else LB's.
	Mode            string
	Picker          string
	SessionAffinity string // AffinityNone or AffinityClientIP
	// SessionAffinityTimeout is 0 with AffinityNone, else 1s..24h.
	SessionAffinityTimeout time.Duration
	InternalTrafficPolicy  string // TrafficPolicyCluster or TrafficPolicyLocal
	ProxyProtocol          bool
	Endpoints              []Endpoint
}

// ServicePort is one port of a Service. Exactly one of TargetPort and
// TargetPortName is set.
type ServicePort struct {
	Name     string
	Port     int
	Protocol string // ProtocolTCP or ProtocolUDP
	// TargetPort is the backend port, or 0 when TargetPortName names an
	// endpoint port.
	TargetPort     int
	TargetPortName string
}

// Endpoint is one backend of a Service with its conditions resolved.
type Endpoint struct {
	Addresses   []netip.Addr
	NodeName    string
	Zone        string
	Ready       bool
	Serving     bool
	Terminating bool
	Ports       []EndpointPort
}

// EndpointPort is a named port on an endpoint.
type EndpointPort struct {
	Name     string
	Port     int
	Protocol string
}

// Target returns the port that traffic for p goes to on e: p.TargetPort,
// or the port of e named p.TargetPortName with p's protocol. It reports
// false if e has no such port, which Parse rules out.
func (p ServicePort) Target(e *Endpoint) (int, bool) {
	if p.TargetPortName == "" {
		return p.TargetPort, true
	}
	for _, ep := range e.Ports {
		if ep.Name == p.TargetPortName && ep.Protocol == p.Protocol {
			return ep.Port, true
		}
	}
	return 0, false
}

// Equal reports whether c and o describe the same configuration, so that
// a reload that changes nothing can be skipped. Two nil configs are equal.
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Node.Equal(&o.Node) &&
		c.TUN.Equal(&o.TUN) &&
		c.Overlay == o.Overlay &&
		slices.Equal(c.RouterAddresses, o.RouterAddresses) &&
		slices.Equal(c.ClusterCIDRs, o.ClusterCIDRs) &&
		slices.Equal(c.ServiceCIDRs, o.ServiceCIDRs) &&
		slices.EqualFunc(c.Peers, o.Peers, func(a, b Peer) bool { return a.Equal(&b) }) &&
		c.LB == o.LB &&
		slices.EqualFunc(c.Services, o.Services, func(a, b Service) bool { return a.Equal(&b) })
}

// Equal reports whether n and o are the same.
func (n *Node) Equal(o *Node) bool {
	return n.Name == o.Name && n.Underlay == o.Underlay && n.Zone == o.Zone &&
		slices.Equal(n.PodCIDRs, o.PodCIDRs)
}

// Equal reports whether t and o are the same.
func (t *TUN) Equal(o *TUN) bool {
	return t.Name == o.Name && t.FD == o.FD && t.MTU == o.MTU &&
		t.Configure == o.Configure && t.MultiQueue == o.MultiQueue && t.Offload == o.Offload &&
		slices.Equal(t.Addresses, o.Addresses)
}

// Equal reports whether p and o are the same.
func (p *Peer) Equal(o *Peer) bool {
	return p.Name == o.Name && p.Underlay == o.Underlay && p.Zone == o.Zone &&
		slices.Equal(p.PodCIDRs, o.PodCIDRs)
}

// Equal reports whether s and o are the same, endpoints included.
func (s *Service) Equal(o *Service) bool {
	return s.Namespace == o.Namespace && s.Name == o.Name &&
		slices.Equal(s.ClusterIPs, o.ClusterIPs) &&
		slices.Equal(s.Ports, o.Ports) &&
		s.Mode == o.Mode && s.Picker == o.Picker &&
		s.SessionAffinity == o.SessionAffinity &&
		s.SessionAffinityTimeout == o.SessionAffinityTimeout &&
		s.InternalTrafficPolicy == o.InternalTrafficPolicy &&
		s.ProxyProtocol == o.ProxyProtocol &&
		slices.EqualFunc(s.Endpoints, o.Endpoints, func(a, b Endpoint) bool { return a.Equal(&b) })
}

// Equal reports whether e and o are the same.
func (e *Endpoint) Equal(o *Endpoint) bool {
	return e.NodeName == o.NodeName && e.Zone == o.Zone &&
		e.Ready == o.Ready && e.Serving == o.Serving && e.Terminating == o.Terminating &&
		slices.Equal(e.Addresses, o.Addresses) &&
		slices.Equal(e.Ports, o.Ports)
}
