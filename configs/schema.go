package configs

// This file is the on-disk schema: what users write in a vrouter config
// file. Addresses and prefixes are strings here so that validation can name
// the field, the value and what was expected. Load turns a File into a
// validated Config (config.go).

// APIVersion is the only schema version this build understands.
const APIVersion = "vrouter.dev/v1alpha1"

// Kind is the kind of a router config file.
const Kind = "RouterConfig"

// File is one vrouter config file.
type File struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	Node    NodeSpec    `json:"node"`
	TUN     TUNSpec     `json:"tun,omitempty"`
	Overlay OverlaySpec `json:"overlay,omitempty"`
	Router  RouterSpec  `json:"router,omitempty"`

	// ClusterCIDRs are the pod network of the whole cluster
	// (10.244.0.0/16). The node kernel routes them to the TUN.
	ClusterCIDRs []string `json:"clusterCIDRs"`
	// ServiceCIDRs hold the Services' ClusterIPs (10.96.0.0/12). The node
	// kernel routes them to the TUN.
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`

	Peers []PeerSpec `json:"peers,omitempty"`

	// LB holds load-balancer defaults; Services the static Service table.
	LB       LBSpec        `json:"lb,omitempty"`
	Services []ServiceSpec `json:"services,omitempty"`
}

// NodeSpec describes the node this router runs on.
type NodeSpec struct {
	Name string `json:"name"`
	// PodCIDRs are this node's pod subnets, one per address family.
	PodCIDRs []string `json:"podCIDRs"`
	// UnderlayAddress is the node's address on the underlay network; peers
	// send overlay datagrams to it.
	UnderlayAddress string `json:"underlayAddress"`
	// Zone is the node's topology zone (topology.kubernetes.io/zone).
	Zone string `json:"zone,omitempty"`
}

// TUNSpec configures the TUN device that joins the node kernel to the router.
type TUNSpec struct {
	// Name of the device. Default "vr0".
	Name string `json:"name,omitempty"`
	// FD adopts an already-open TUN file descriptor instead of creating the
	// device (0 or absent: create). The --tun-fd flag overrides it.
	FD int `json:"fd,omitempty"`
	// MTU of the device. Default: the overlay's tunnel MTU.
	MTU int `json:"mtu,omitempty"`
	// Configure sets the device's addresses, MTU, up state and routes
	// through netlink. Default true; needs CAP_NET_ADMIN in the node's
	// network namespace. Set false when a privileged helper did it.
	Configure *bool `json:"configure,omitempty"`
	// Addresses are the node kernel's own addresses on the device.
	// Default: the network address of each pod CIDR as a host address
	// (10.244.0.0/32), as flannel gives its tunnel device.
	Addresses []string `json:"addresses,omitempty"`
	// MultiQueue opens the device with IFF_MULTI_QUEUE.
	MultiQueue bool `json:"multiQueue,omitempty"`
}

// OverlaySpec configures the UDP overlay between routers.
type OverlaySpec struct {
	// Port is the UDP port routers send to and listen on. Default 8285.
	Port int `json:"port,omitempty"`
	// ListenAddress is the local address the overlay socket binds.
	// Default: node.underlayAddress.
	ListenAddress string `json:"listenAddress,omitempty"`
	// UnderlayMTU is the MTU of the underlay network. Default 1500.
	UnderlayMTU int `json:"underlayMTU,omitempty"`
	// MTU is the tunnel MTU: the largest inner IP packet carried. Default
	// underlayMTU - 28 (IPv4 underlay) or - 48 (IPv6 underlay).
	MTU int `json:"mtu,omitempty"`
}

// RouterSpec configures the userspace stack itself.
type RouterSpec struct {
	// Addresses are the router's own addresses inside the userspace
	// stack: the source of the ICMP errors it sends and the hairpin SNAT
	// address. They must lie outside every pod CIDR. Default
	// 169.254.244.1 and fd69:7672::1 (one per address family in use).
	Addresses []string `json:"addresses,omitempty"`
}

// PeerSpec is another node's router.
type PeerSpec struct {
	Name            string   `json:"name"`
	UnderlayAddress string   `json:"underlayAddress"`
	PodCIDRs        []string `json:"podCIDRs"`
	// Port overrides overlay.port for this peer.
	Port int `json:"port,omitempty"`
	// Zone is the peer node's topology zone.
	Zone string `json:"zone,omitempty"`
}

// LBSpec holds Service load-balancing defaults.
type LBSpec struct {
	// Mode is "nat" (default) or "proxy".
	Mode string `json:"mode,omitempty"`
	// Picker is "random" (default), "round-robin", "least-connections" or
	// "maglev".
	Picker string `json:"picker,omitempty"`
}

// ServiceSpec is one Service in the static Service table.
type ServiceSpec struct {
	Namespace  string            `json:"namespace,omitempty"`
	Name       string            `json:"name"`
	ClusterIPs []string          `json:"clusterIPs"`
	Ports      []ServicePortSpec `json:"ports"`
	// Mode and Picker override lb.mode and lb.picker for this Service.
	Mode   string `json:"mode,omitempty"`
	Picker string `json:"picker,omitempty"`
	// SessionAffinity is "None" (default) or "ClientIP".
	SessionAffinity string `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeoutSeconds defaults to 10800.
	SessionAffinityTimeoutSeconds int `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// InternalTrafficPolicy is "Cluster" (default) or "Local".
	InternalTrafficPolicy string `json:"internalTrafficPolicy,omitempty"`
	// ProxyProtocol enables PROXY protocol v2 towards backends in proxy mode.
	ProxyProtocol bool           `json:"proxyProtocol,omitempty"`
	Endpoints     []EndpointSpec `json:"endpoints,omitempty"`
}

// ServicePortSpec is one port of a Service.
type ServicePortSpec struct {
	Name string `json:"name,omitempty"`
	Port int    `json:"port"`
	// Protocol is "TCP" (default) or "UDP".
	Protocol string `json:"protocol,omitempty"`
	// TargetPort is a number or the name of an endpoint port. Default: port.
	TargetPort string `json:"targetPort,omitempty"`
}

// EndpointSpec is one backend of a Service.
type EndpointSpec struct {
	Addresses []string `json:"addresses"`
	NodeName  string   `json:"nodeName,omitempty"`
	Zone      string   `json:"zone,omitempty"`
	// Ready, Serving and Terminating are the EndpointSlice conditions.
	// Ready and Serving default to true, Terminating to false.
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating bool  `json:"terminating,omitempty"`
	// Ports name the endpoint's ports for named target ports.
	Ports []EndpointPortSpec `json:"ports,omitempty"`
}

// EndpointPortSpec is a named port on an endpoint.
type EndpointPortSpec struct {
	Name     string `json:"name,omitempty"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}
