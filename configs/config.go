package configs

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router/wireguard"
)

// Defaults applied by Parse when the file leaves a field out. The load
// balancer's defaults are lb's (lb.DefaultMode, lb.DefaultPicker,
// lb.DefaultAffinityTimeout, lb.DefaultProxy*, lb.DefaultNAT*): Parse
// resolves a missing field to them, and a Config built in code may leave
// those fields zero.
const (
	DefaultTUNName     = "vr0"
	DefaultOverlayPort = 8285
	DefaultUnderlayMTU = 1500
	DefaultNamespace   = "default"
	MaxAffinityTimeout = 86400 * time.Second
	OverheadIPv4       = 28 // IPv4 header + UDP header
	OverheadIPv6       = 48 // IPv6 header + UDP header
	// OverheadWireGuard is what WireGuard adds to each packet on top of
	// the UDP header: a 16-byte transport header and a 16-byte tag.
	OverheadWireGuard = 32
	// DefaultWireGuardKeyFile is overlay.privateKeyFile's default: on
	// the node's disk, so a router keeps its key across restarts and
	// reboots, and its peers keep trusting it.
	DefaultWireGuardKeyFile = "/var/lib/vrouter/wireguard.key"
	MinTunnelMTUIPv4        = 576
	MinTunnelMTUIPv6        = 1280
	defaultRouterAddress4   = "169.254.244.1"
	defaultRouterAddress6   = "fd69:7672::1"
	supportedVersionsString = `"` + APIVersion + `"`
)

// DefaultRouterAddresses are router.addresses when the file leaves it
// out: the IPv4 one if the node has an IPv4 pod CIDR, the IPv6 one if it
// has an IPv6 pod CIDR.
var DefaultRouterAddresses = [2]netip.Addr{
	netip.MustParseAddr(defaultRouterAddress4),
	netip.MustParseAddr(defaultRouterAddress6),
}

// Config is a validated router configuration with every default applied.
// Parse, Load, File.Config and File.ForNode return it. A Config is
// immutable once returned: consumers keep the pointer and compare a new
// one with Equal.
//
// Slices keep the order of the file. Every netip value is valid, and
// prefixes are canonical (host bits zero) except TUN.Addresses, which are
// interface addresses.
//
// Code may also build a Config as a struct literal, for a router that no
// file describes (a sidecar). It is then the caller's to keep it
// consistent, as Parse would; the LB fields and the Services' tuning may
// stay zero, which lb reads as its documented defaults.
type Config struct {
	Node    Node
	TUN     TUN
	Overlay Overlay
	// RouterAddresses are the router's own addresses inside the stack,
	// at most one per family.
	RouterAddresses []netip.Addr
	// BusyPoll is router.busyPoll; zero is off.
	BusyPoll time.Duration
	// ClusterCIDRs and ServiceCIDRs are routed by the node kernel to the
	// TUN device.
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	Peers        []Peer
	LB           LB
	// Services are the static Service table, in the load balancer's own
	// model: each endpoint address of the file is one lb.Endpoint, and
	// every field the file leaves out holds its resolved default (the
	// Service's mode and picker are its own, else lb's).
	Services []lb.Service
	// Egress is the egress section (egress masquerading).
	Egress Egress
}

// Egress is the egress section, parsed.
type Egress struct {
	// Masquerade is egress.masquerade.
	Masquerade bool
	// NonMasqueradeCIDRs is egress.nonMasqueradeCIDRs; nil means the
	// default, the cluster and Service CIDRs.
	NonMasqueradeCIDRs []netip.Prefix
	// MaxFlows and MaxFlowsPerPod are egress.maxFlows and
	// egress.maxFlowsPerPod; 0 is lb's default.
	MaxFlows, MaxFlowsPerPod int64
}

// Equal reports whether e and o are the same.
func (e *Egress) Equal(o *Egress) bool {
	return e.Masquerade == o.Masquerade && slices.Equal(e.NonMasqueradeCIDRs, o.NonMasqueradeCIDRs) &&
		e.MaxFlows == o.MaxFlows && e.MaxFlowsPerPod == o.MaxFlowsPerPod
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
	// Encryption is EncryptionNone or EncryptionWireGuard.
	Encryption string
	// PrivateKeyFile holds this router's WireGuard private key (with
	// EncryptionWireGuard); the router generates it there if it is
	// missing.
	PrivateKeyFile string
}

// Overlay encryptions: overlay.encryption's values.
const (
	// EncryptionNone is the plain overlay: one IP packet per UDP
	// datagram, for trusted underlays.
	EncryptionNone = "none"
	// EncryptionWireGuard authenticates and encrypts every datagram
	// with WireGuard, one session per pair of routers.
	EncryptionWireGuard = "wireguard"
)

// Peer is another node's router.
type Peer struct {
	Name string
	// Underlay is where the peer's overlay socket listens. Its address is
	// unique among peers and is the next hop of PodCIDRs.
	Underlay netip.AddrPort
	PodCIDRs []netip.Prefix
	Zone     string
	// PublicKey is the peer's WireGuard public key; required when
	// overlay.encryption is wireguard.
	PublicKey wireguard.Key
}

// LB holds the Service load-balancing defaults and the tuning of both
// modes, as the load balancer takes them.
type LB struct {
	// Mode and Picker are the Services' defaults: lb.mode and
	// lb.picker, resolved (never lb.ModeDefault or lb.PickDefault after
	// Parse).
	Mode   lb.Mode
	Picker lb.PickerKind
	// Proxy holds lb.proxy: DialTimeout, IdleTimeout and DrainTimeout,
	// resolved; the other fields are zero (lb's defaults).
	Proxy lb.ProxyOptions
	// NAT holds lb.nat: maxFlows is MaxTCP and MaxUDP alike,
	// maxFlowsPerClient MaxPerClient, and the two timeouts, resolved; the
	// other fields are zero (lb's defaults).
	NAT lb.NATOptions
	// Outlier holds lb.outlier, resolved.
	Outlier lb.OutlierOptions

	// NodePortRange is lb.nodePortRange, resolved: every nodePort and
	// healthCheckNodePort of the file's Services lies in it. The
	// Kubernetes source does not check it (the API server does), and
	// nothing reads it after Parse: a Config built in code may leave it
	// zero.
	NodePortRange NodePortRange
	// NodePortAddresses are lb.nodePortAddresses: node ports are served
	// on the node's addresses inside any of them. nil means "primary":
	// the node's primary addresses (Node.Underlay), as kube-proxy's
	// --nodeport-addresses primary.
	NodePortAddresses []netip.Prefix
	// LocalhostNodePorts is lb.localhostNodePorts, resolved (Parse's
	// default is true): node ports are also served on 127.0.0.1. A
	// Config built in code has false unless it sets it.
	LocalhostNodePorts bool
}

// NodePortRange is an inclusive range of node ports, as the API server's
// --service-node-port-range.
type NodePortRange struct{ Min, Max uint16 }

// DefaultNodePortRange is lb.nodePortRange's default, the API server's.
var DefaultNodePortRange = NodePortRange{Min: 30000, Max: 32767}

// Contains reports whether port p lies in r.
func (r NodePortRange) Contains(p int) bool { return p >= int(r.Min) && p <= int(r.Max) }

// String formats r as the file writes it: "30000-32767".
func (r NodePortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Equal reports whether c and o describe the same configuration, so that
// a reload that changes nothing can be skipped. Two nil configs are equal.
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	return c.Node.Equal(&o.Node) &&
		c.TUN.Equal(&o.TUN) &&
		c.Overlay == o.Overlay &&
		slices.Equal(c.RouterAddresses, o.RouterAddresses) && c.BusyPoll == o.BusyPoll &&
		slices.Equal(c.ClusterCIDRs, o.ClusterCIDRs) &&
		slices.Equal(c.ServiceCIDRs, o.ServiceCIDRs) &&
		slices.EqualFunc(c.Peers, o.Peers, func(a, b Peer) bool { return a.Equal(&b) }) &&
		c.LB.Equal(&o.LB) &&
		c.Egress.Equal(&o.Egress) &&
		slices.EqualFunc(c.Services, o.Services, func(a, b lb.Service) bool { return a.Equal(&b) })
}

// Equal reports whether l and o are the same.
func (l *LB) Equal(o *LB) bool {
	return l.Mode == o.Mode && l.Picker == o.Picker && l.Proxy == o.Proxy && l.NAT == o.NAT && l.Outlier == o.Outlier &&
		l.NodePortRange == o.NodePortRange && slices.Equal(l.NodePortAddresses, o.NodePortAddresses) &&
		l.LocalhostNodePorts == o.LocalhostNodePorts
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
	return p.Name == o.Name && p.Underlay == o.Underlay && p.Zone == o.Zone && p.PublicKey == o.PublicKey &&
		slices.Equal(p.PodCIDRs, o.PodCIDRs)
}
