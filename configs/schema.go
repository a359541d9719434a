package configs

// This file is the on-disk schema: what users write in a vrouter config
// file. Addresses, prefixes and enums are strings here so that validation
// can name the field, the value and what was expected. A File is only the
// parse input: Load and Parse turn it into a validated Config, whose
// Services are the load balancer's own typed model (config.go, parse.go,
// services.go).

// APIVersion is the only schema version this build understands.
const APIVersion = "vrouter.dev/v1alpha1"

// Kind is the kind of a router config file.
const Kind = "RouterConfig"

// Spellings of the schema's enum values, for code that writes a File. They
// are what the lb types' String methods print, which Parse matches:
// lb.TCP, lb.ModeProxy, lb.PickMaglev, lb.AffinityClientIP,
// lb.PolicyLocal, ...
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

	ServiceTypeClusterIP    = "ClusterIP"
	ServiceTypeNodePort     = "NodePort"
	ServiceTypeLoadBalancer = "LoadBalancer"

	// NodePortAddressesPrimary, alone in lb.nodePortAddresses, selects
	// the node's primary addresses (kube-proxy's "primary").
	NodePortAddressesPrimary = "primary"
)

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

	// Egress is what pods' traffic to destinations outside the cluster
	// leaves the node as.
	Egress EgressSpec `json:"egress,omitempty"`
}

// EgressSpec configures egress masquerading: pods' traffic to
// destinations outside NonMasqueradeCIDRs leaves the node with the node's
// address (flannel's --ip-masq), re-originated from the node's own
// sockets, without iptables (docs/egress.md).
type EgressSpec struct {
	// Masquerade turns it on. Default false: pods' traffic leaves with
	// their own address, as the node kernel routes it.
	Masquerade bool `json:"masquerade,omitempty"`
	// NonMasqueradeCIDRs are the destinations pods reach with their own
	// address, as ip-masq-agent's nonMasqueradeCIDRs. Default: the
	// clusterCIDRs and the serviceCIDRs.
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs,omitempty"`
	// MaxFlows caps the egress flows of each protocol (TCP, UDP, ICMP
	// echo); MaxFlowsPerPod those of one pod. Defaults
	// lb.DefaultProxyMaxConns and lb.DefaultProxyMaxPerClient.
	MaxFlows       int `json:"maxFlows,omitempty"`
	MaxFlowsPerPod int `json:"maxFlowsPerPod,omitempty"`
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
	// Default: a host address per pod CIDR (DefaultTUNAddress): an IPv4
	// one's network address (10.244.0.0/32), as flannel gives its tunnel
	// device, an IPv6 one's last address. Host bits may
	// be set (10.244.0.1/24); a bare address is a host prefix. An
	// explicit empty list means no addresses.
	Addresses []string `json:"addresses,omitempty"`
	// MultiQueue opens the device with IFF_MULTI_QUEUE.
	MultiQueue bool `json:"multiQueue,omitempty"`
	// Offload opens the device with segmentation offload (IFF_VNET_HDR,
	// TSO, and USO where the kernel has it): the kernel hands the router
	// TCP (and UDP) super-packets of up to 64 KiB. Default true; the router falls back to a plain device if the kernel
	// refuses. An adopted descriptor keeps the flags it was opened with.
	Offload *bool `json:"offload,omitempty"`
}

// OverlaySpec configures the UDP overlay between routers.
type OverlaySpec struct {
	// Port is the UDP port routers send to and listen on. Default 8285.
	Port int `json:"port,omitempty"`
	// ListenAddress is the local IP address (no port) the overlay socket
	// binds; the port is always Port. Default: node.underlayAddress. An
	// unspecified address (0.0.0.0, ::) binds every local address.
	ListenAddress string `json:"listenAddress,omitempty"`
	// UnderlayMTU is the MTU of the underlay network. Default 1500.
	UnderlayMTU int `json:"underlayMTU,omitempty"`
	// MTU is the tunnel MTU: the largest inner IP packet carried. Default
	// underlayMTU - 28 (IPv4 underlay) or - 48 (IPv6 underlay), and 32
	// less with encryption.
	MTU int `json:"mtu,omitempty"`
	// Encryption is "none" (the default: the plain overlay, one IP packet
	// per UDP datagram, for trusted underlays) or "wireguard": every
	// datagram authenticated and encrypted with WireGuard, which needs
	// every peer's publicKey. Every node must agree.
	Encryption string `json:"encryption,omitempty"`
	// PrivateKeyFile is where this router's WireGuard private key is
	// kept (base64, as `vrouter genkey` writes it), mode 0600. A missing
	// file is generated on start. Default /var/lib/vrouter/wireguard.key.
	PrivateKeyFile string `json:"privateKeyFile,omitempty"`
}

// RouterSpec configures the userspace stack itself.
type RouterSpec struct {
	// Addresses are the router's own addresses inside the userspace
	// stack: the source of the ICMP errors it sends and the hairpin SNAT
	// address. At most one per address family; they must lie outside
	// every pod, cluster and service CIDR. Default 169.254.244.1 if a pod
	// CIDR of this node is IPv4, plus fd69:7672::1 if one is IPv6.
	Addresses []string `json:"addresses,omitempty"`
	// BusyPoll, a duration such as "5ms" (1µs..1s), has the router keep
	// reading its TUN and overlay socket without waiting for this long
	// after each packet: round trips pay fewer thread wakeups, for a core
	// kept busy while packets come at least this often, and none while
	// idle (docs/performance.md). Default off. Takes effect on restart;
	// not with overlay.encryption wireguard.
	BusyPoll string `json:"busyPoll,omitempty"`
}

// PeerSpec is another node's router.
type PeerSpec struct {
	// Name is the peer node's name, unique among node.name and peers.
	Name string `json:"name"`
	// UnderlayAddress is the peer's IP address (no port) on the underlay,
	// of the same family as node.underlayAddress. It is the next hop of
	// the peer's pod CIDRs, so it is unique among peers.
	UnderlayAddress string `json:"underlayAddress"`
	// PodCIDRs are the peer's pod subnets, one per address family.
	PodCIDRs []string `json:"podCIDRs"`
	// Port overrides overlay.port for this peer.
	Port int `json:"port,omitempty"`
	// Zone is the peer node's topology zone.
	Zone string `json:"zone,omitempty"`
	// PublicKey is the peer router's WireGuard public key (base64, as
	// `vrouter pubkey` prints it); required with overlay.encryption
	// wireguard.
	PublicKey string `json:"publicKey,omitempty"`
}

// LBSpec holds Service load-balancing defaults and the tuning of both
// modes.
type LBSpec struct {
	// Mode is "nat" or "proxy". Default lb.DefaultMode.
	Mode string `json:"mode,omitempty"`
	// Picker is "random", "round-robin", "least-connections" or
	// "maglev". Default lb.DefaultPicker.
	Picker string `json:"picker,omitempty"`
	// Proxy tunes proxy mode (TCP ports of proxy-mode Services).
	Proxy ProxySpec `json:"proxy,omitempty"`
	// NAT tunes nat mode (and the UDP ports of proxy-mode Services).
	NAT NATSpec `json:"nat,omitempty"`
	// Outlier tunes the ejection of endpoints whose connections fail
	// repeatedly, in both modes.
	Outlier OutlierSpec `json:"outlier,omitempty"`
	// NodePortRange is the range every nodePort and healthCheckNodePort
	// of the file lies in, "MIN-MAX" as the API server's
	// --service-node-port-range. Default "30000-32767".
	NodePortRange string `json:"nodePortRange,omitempty"`
	// NodePortAddresses select the node addresses node ports are served
	// on: CIDR prefixes (every node address inside one), or ["primary"],
	// the node's primary addresses, as kube-proxy's
	// --nodeport-addresses. Default ["primary"].
	NodePortAddresses []string `json:"nodePortAddresses,omitempty"`
	// LocalhostNodePorts also serves node ports on 127.0.0.1, as
	// kube-proxy's iptables mode does. Default true.
	LocalhostNodePorts *bool `json:"localhostNodePorts,omitempty"`
}

// ProxySpec tunes proxy mode. Durations are strings such as "1s", "30s",
// "1h30m". The defaults are lb.ProxyOptions' (REFERENCE.md lists them).
type ProxySpec struct {
	// DialTimeout bounds one dial to a backend; a backend that does not
	// answer in time is skipped for another. Default
	// lb.DefaultProxyDialTimeout.
	DialTimeout string `json:"dialTimeout,omitempty"`
	// IdleTimeout closes a connection without data either way for this
	// long. Default lb.DefaultProxyIdleTimeout.
	IdleTimeout string `json:"idleTimeout,omitempty"`
	// DrainTimeout is how long a connection whose endpoint left its
	// Service keeps working before it is reset. Default
	// lb.DefaultProxyDrainTimeout.
	DrainTimeout string `json:"drainTimeout,omitempty"`
}

// NATSpec tunes nat mode's flow table. The defaults are lb.NATOptions'
// (REFERENCE.md lists them).
type NATSpec struct {
	// MaxFlows caps the tracked flows of each protocol (TCP, UDP).
	// Default lb.DefaultNATMaxFlows.
	MaxFlows int `json:"maxFlows,omitempty"`
	// MaxFlowsPerClient caps one client address's flows of each
	// protocol, at most MaxFlows. Default lb.DefaultNATMaxPerClient, or
	// MaxFlows if that is less.
	MaxFlowsPerClient int `json:"maxFlowsPerClient,omitempty"`
	// UDPTimeout ends an idle UDP flow. Default lb.DefaultNATUDPTimeout.
	UDPTimeout string `json:"udpTimeout,omitempty"`
	// TCPEstablishedTimeout ends an idle established TCP flow. Default
	// lb.DefaultNATTCPEstablishedTimeout.
	TCPEstablishedTimeout string `json:"tcpEstablishedTimeout,omitempty"`
}

// OutlierSpec tunes passive outlier detection: an endpoint whose new
// connections fail ConsecutiveFailures times in a row is left out of
// picking for a while. The defaults are lb.OutlierOptions' (REFERENCE.md
// lists them).
type OutlierSpec struct {
	// Enabled turns ejection on or off. Default true.
	Enabled *bool `json:"enabled,omitempty"`
	// ConsecutiveFailures eject an endpoint. Default
	// lb.DefaultOutlierFailures.
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty"`
	// BaseEjectionTime is the first ejection's length, doubled for each
	// ejection in a row. Default lb.DefaultOutlierBaseEjection.
	BaseEjectionTime string `json:"baseEjectionTime,omitempty"`
	// MaxEjectionTime caps an ejection. Default
	// lb.DefaultOutlierMaxEjection.
	MaxEjectionTime string `json:"maxEjectionTime,omitempty"`
	// MaxEjectionPercent bounds the share of a Service port's endpoints
	// ejected at once. Default lb.DefaultOutlierMaxEjectionPercent.
	MaxEjectionPercent int `json:"maxEjectionPercent,omitempty"`
}

// ServiceSpec is one Service in the static Service table.
type ServiceSpec struct {
	// Namespace defaults to "default"; namespace/name is unique.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// ClusterIPs are the Service's virtual IPs, at most one per address
	// family, each inside a service CIDR.
	ClusterIPs []string          `json:"clusterIPs"`
	Ports      []ServicePortSpec `json:"ports"`
	// Mode and Picker override lb.mode and lb.picker for this Service.
	Mode   string `json:"mode,omitempty"`
	Picker string `json:"picker,omitempty"`
	// SessionAffinity is "None" (default) or "ClientIP".
	SessionAffinity string `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeoutSeconds is 1..86400, default
	// lb.DefaultAffinityTimeout; only valid with sessionAffinity
	// ClientIP.
	SessionAffinityTimeoutSeconds int `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// InternalTrafficPolicy is "Cluster" (default) or "Local".
	InternalTrafficPolicy string `json:"internalTrafficPolicy,omitempty"`
	// ProxyProtocol enables PROXY protocol v2 towards backends; only
	// valid in proxy mode.
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`
	// Type is "ClusterIP" (default), "NodePort" or "LoadBalancer". A
	// NodePort Service has a nodePort on every port; a LoadBalancer
	// Service may (allocateLoadBalancerNodePorts false) or may not.
	Type string `json:"type,omitempty"`
	// ExternalIPs are addresses outside the cluster's ranges that the
	// Service is also served on (spec.externalIPs).
	ExternalIPs []string `json:"externalIPs,omitempty"`
	// LoadBalancerIPs are the addresses a load balancer sends the
	// Service's traffic to, the file's stand-in for
	// status.loadBalancer.ingress[].ip; only with type LoadBalancer.
	LoadBalancerIPs []string `json:"loadBalancerIPs,omitempty"`
	// ExternalTrafficPolicy is "Cluster" (default) or "Local" for
	// traffic from outside the cluster (node ports, external and
	// load-balancer IPs); Local only with type NodePort or
	// LoadBalancer, or with externalIPs.
	ExternalTrafficPolicy string `json:"externalTrafficPolicy,omitempty"`
	// HealthCheckNodePort is the TCP node port of the load balancer's
	// health check; only with type LoadBalancer and
	// externalTrafficPolicy Local, inside lb.nodePortRange.
	HealthCheckNodePort int            `json:"healthCheckNodePort,omitempty"`
	Endpoints           []EndpointSpec `json:"endpoints,omitempty"`
}

// ServicePortSpec is one port of a Service.
type ServicePortSpec struct {
	Name string `json:"name,omitempty"`
	Port int    `json:"port"`
	// Protocol is "TCP" (default) or "UDP".
	Protocol string `json:"protocol,omitempty"`
	// TargetPort is a port number (YAML 8080 or "8080") or the name of a
	// port listed by every endpoint (http). Default: port. A YAML number
	// decodes into this string (sigs.k8s.io/yaml converts it).
	TargetPort string `json:"targetPort,omitempty"`
	// NodePort is the port every node serves this port on from outside,
	// inside lb.nodePortRange; only with type NodePort (required) or
	// LoadBalancer (optional).
	NodePort int `json:"nodePort,omitempty"`
}

// EndpointSpec is one backend of a Service.
type EndpointSpec struct {
	// Addresses are the backend's IPs (a pod has one per family); each
	// must share a family with one of the Service's ClusterIPs. Each
	// becomes one lb.Endpoint with the rest of this spec.
	Addresses []string `json:"addresses"`
	// NodeName is the node hosting the endpoint: node.name or a peer's
	// name. internalTrafficPolicy Local uses it.
	NodeName string `json:"nodeName,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// Ready, Serving and Terminating are the EndpointSlice conditions.
	// Terminating defaults to false, Serving to true, Ready to true
	// unless Terminating (a terminating endpoint is never ready:
	// ready: true with terminating: true is an error).
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating bool  `json:"terminating,omitempty"`
	// Ports name the endpoint's ports for named target ports.
	Ports []EndpointPortSpec `json:"ports,omitempty"`
}

// EndpointPortSpec is a named port on an endpoint (a container port). A
// Service port whose targetPort is a name uses the endpoint port with that
// name and the Service port's protocol.
type EndpointPortSpec struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	// Protocol is "TCP" (default) or "UDP".
	Protocol string `json:"protocol,omitempty"`
}
