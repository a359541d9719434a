package admin

import (
	"net/netip"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// The JSON the admin API serves and `vrouter <command> -o json` prints.
// Field names are part of the command line's interface: add, never rename.

// Counters are packets and bytes each way.
type Counters struct {
	RxPackets uint64 `json:"rxPackets"`
	RxBytes   uint64 `json:"rxBytes"`
	TxPackets uint64 `json:"txPackets"`
	TxBytes   uint64 `json:"txBytes"`
}

func countersOf(s router.LinkStats) Counters {
	return Counters{RxPackets: s.RxPackets, RxBytes: s.RxBytes, TxPackets: s.TxPackets, TxBytes: s.TxBytes}
}

// Route is one route of the router's table (GET /v1/routes).
type Route struct {
	Dst     netip.Prefix `json:"dst"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	Dev     string       `json:"dev,omitempty"`
	// Unreachable marks what is left of a cluster CIDR once its peers'
	// routes are taken: answered "net unreachable".
	Unreachable bool `json:"unreachable,omitempty"`
	// Peer is the peer router a route over the overlay leads to.
	Peer string `json:"peer,omitempty"`
	// Counters are the peer's counters for a route to a peer (tx: sent
	// along the route, rx: received from the peer), and the TUN device's
	// for a route to it, which all local routes share.
	Counters Counters `json:"counters"`
}

// String formats the route as `ip route` does:
// "10.244.1.0/24 via 192.168.31.202 dev overlay0".
func (r Route) String() string {
	return router.Route{Dst: r.Dst, Gateway: r.Gateway, Dev: r.Dev, Unreachable: r.Unreachable}.String()
}

// Peer is one peer router (GET /v1/peers).
type Peer struct {
	Name     string         `json:"name"`
	Endpoint netip.AddrPort `json:"endpoint"`
	PodCIDRs []netip.Prefix `json:"podCIDRs"`
	// LastSeen is when the last datagram from the peer was accepted;
	// absent if none was.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	Counters Counters  `json:"counters"`
	// PublicKey is the peer's WireGuard public key; absent if it has
	// none.
	PublicKey wireguard.Key `json:"publicKey,omitzero"`
	// WireGuard is the peer's session, when the overlay is encrypted.
	WireGuard *PeerSession `json:"wireguard,omitempty"`
}

// PeerSession is a peer's WireGuard session, as `wg show` reports it.
type PeerSession struct {
	// LatestHandshake is the last completed handshake; absent if none
	// completed.
	LatestHandshake time.Time `json:"latestHandshake,omitzero"`
	// Session is "up" (a handshake within the last 180 s, WireGuard's
	// Reject-After-Time), "down", or "no key": a peer without a public
	// key, which the router does not route to.
	Session string `json:"session"`
	// Endpoint is where the peer was last heard from, when that is not
	// its configured endpoint (WireGuard follows a peer that roams).
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	// Handshakes counts completed handshakes; Rekeys those after the
	// first, which renewed the session's keys.
	Handshakes uint64 `json:"handshakes"`
	Rekeys     uint64 `json:"rekeys"`
	// RxBytes and TxBytes count WireGuard's authenticated traffic with
	// the peer, keepalives and handshakes included.
	RxBytes uint64 `json:"rxBytes"`
	TxBytes uint64 `json:"txBytes"`
}

// Sessions of PeerSession.Session.
const (
	SessionUp    = "up"
	SessionDown  = "down"
	SessionNoKey = "no key"
)

// Service is one Service of the load balancer's table (GET /v1/services).
type Service struct {
	Namespace  string       `json:"namespace"`
	Name       string       `json:"name"`
	Type       string       `json:"type"`
	ClusterIPs []netip.Addr `json:"clusterIPs"`
	// ExternalIPs and LoadBalancerIPs are the Service's external
	// addresses; ExternalTrafficPolicy picks the endpoints of traffic
	// from outside (node ports, external addresses answered here).
	ExternalIPs           []netip.Addr  `json:"externalIPs,omitempty"`
	LoadBalancerIPs       []netip.Addr  `json:"loadBalancerIPs,omitempty"`
	ExternalTrafficPolicy string        `json:"externalTrafficPolicy,omitempty"`
	HealthCheckNodePort   uint16        `json:"healthCheckNodePort,omitempty"`
	Ports                 []ServicePort `json:"ports"`
	// HostPorts are the host sockets serving the Service's node ports,
	// external addresses and health-check node port, with their state.
	HostPorts []HostPort `json:"hostPorts,omitempty"`
}

// HostPort is one host socket of a Service.
type HostPort struct {
	// Port names the Service port ("" for the health check or an
	// unnamed port).
	Port     string         `json:"port,omitempty"`
	Address  netip.AddrPort `json:"address"`
	Protocol string         `json:"protocol"` // TCP, UDP or HTTP (health check)
	// State is "listening", or "failed" with Error saying why (it is
	// retried).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// ServicePort is one key of a Service — a (ClusterIP, port, protocol), or
// for traffic from outside (External) a node port or an external
// address — with its endpoints and counters.
type ServicePort struct {
	// Name is the Service port's name ("" for an unnamed port).
	Name string `json:"name,omitempty"`
	// ClusterIP is the key's VIP: a ClusterIP, external or
	// load-balancer IP, or for a node port 0.0.0.0 or ::.
	ClusterIP netip.Addr `json:"clusterIP"`
	Port      uint16     `json:"port"`
	Protocol  string     `json:"protocol"`
	// External marks traffic from outside the cluster; NodePort that
	// Port is a node port.
	External bool   `json:"external,omitempty"`
	NodePort bool   `json:"nodePort,omitempty"`
	Mode     string `json:"mode"`
	Picker   string `json:"picker"`
	// Status is "ok", "no endpoints" or "no local endpoints".
	Status    string     `json:"status"`
	Conns     uint64     `json:"conns"`
	Active    int64      `json:"active"`
	Refused   uint64     `json:"refused"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint of a Service port.
type Endpoint struct {
	Address     netip.AddrPort `json:"address"`
	Node        string         `json:"node,omitempty"`
	Ready       bool           `json:"ready"`
	Serving     bool           `json:"serving"`
	Terminating bool           `json:"terminating"`
	// InUse reports whether new connections may go to the endpoint: it
	// passed endpoint selection (ready, or serving and terminating when
	// none is ready; local with internalTrafficPolicy Local).
	InUse bool `json:"inUse"`
	// Ejected: outlier detection left the endpoint out of picking
	// for now, after consecutive connection failures; Ejections counts
	// the times it did.
	Ejected   bool   `json:"ejected,omitempty"`
	Ejections uint64 `json:"ejections,omitempty"`
	Conns     uint64 `json:"conns"`
	Active    int64  `json:"active"`
}

// State is the endpoint's conditions as a word: "ready", "terminating"
// (serving and terminating), "not ready".
func (e Endpoint) State() string {
	switch {
	case e.Ready:
		return "ready"
	case e.Serving && e.Terminating:
		return "terminating"
	case e.Terminating:
		return "terminating,not serving"
	}
	return "not ready"
}

// Conn is one connection or flow the load balancer carries (GET
// /v1/conns).
type Conn struct {
	// Mode is "nat" (a translated flow), "proxy" (a spliced
	// connection) or "egress" (a pod's flow to a destination outside
	// the cluster, re-originated from the node: VIP and Backend are the
	// destination, Client the pod; its protocol "icmp" for a ping, whose
	// client port is the echo identifier).
	Mode     string `json:"mode"`
	Protocol string `json:"protocol"`
	// Service names the Service port ("default/my-service", with
	// ":port name" for named ports), if it still exists.
	Service string         `json:"service,omitempty"`
	Client  netip.AddrPort `json:"client"`
	VIP     netip.AddrPort `json:"vip"`
	Backend netip.AddrPort `json:"backend"`
	// SNAT is the router address the backend sees, for hairpin flows;
	// for egress the node's address and port the destination sees.
	SNAT netip.AddrPort `json:"snat,omitzero"`
	// LastSeen is a nat flow's last packet.
	LastSeen time.Time `json:"lastSeen,omitzero"`
	// DrainAt is when a proxied connection whose backend left is reset.
	DrainAt time.Time `json:"drainAt,omitzero"`
	// State is a TCP connection's state as conntrack names it
	// (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE);
	// absent for UDP.
	State string `json:"state,omitempty"`
	// Started is when the flow or connection began; absent if unknown
	// (a nat flow adopted from the flow file).
	Started time.Time `json:"started,omitzero"`
	// Orig and Reply count what came from the client and from the
	// backend: a nat flow's packets as the router saw them (a TCP
	// super-packet counts once) and their bytes; a proxied connection's
	// bytes spliced (no packets: the proxy sees a stream).
	Orig  *FlowCount `json:"orig,omitempty"`
	Reply *FlowCount `json:"reply,omitempty"`
}

// FlowCount counts one direction of a flow.
type FlowCount struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ConnsDeleted is the answer of DELETE /v1/conns: how many nat flows were
// removed and proxied connections reset.
type ConnsDeleted struct {
	NAT   int `json:"nat"`
	Proxy int `json:"proxy"`
}

// LogLevel is the body of GET and PUT /v1/log-level.
type LogLevel struct {
	Level string `json:"level"`
}

// apiError is the body of every failed request.
type apiError struct {
	Error string `json:"error"`
}

// Status is the router at a glance (GET /v1/status).
type Status struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	// Mode is "file", "kubernetes" or "sidecar".
	Mode string `json:"mode"`
	// Source is where the desired state comes from: the config file's
	// path, or the API server's address.
	Source  string    `json:"source"`
	Started time.Time `json:"started,omitzero"`
	// LastReload is the last change of desired state the router was
	// handed after it started (a file re-read, a batch of API changes):
	// absent until there is one.
	LastReload *Reload `json:"lastReload,omitempty"`
	Ready      bool    `json:"ready"`
	// NotReady says why not: "starting", "stopping", "source
	// unavailable".
	NotReady string    `json:"notReady,omitempty"`
	TUN      TUNStatus `json:"tun"`
	// Overlay is the overlay's encryption and sessions; absent from a
	// router that predates it.
	Overlay *OverlayStatus `json:"overlay,omitempty"`
	Peers   PeerCount      `json:"peers"`
	// Services counts the Services, ServicePorts their keys (a port of
	// each ClusterIP, node port and external address), Endpoints their
	// endpoints.
	Services     int `json:"services"`
	ServicePorts int `json:"servicePorts"`
	Endpoints    int `json:"endpoints"`
	// HostSockets count the host sockets of node ports, external
	// addresses and health checks by state.
	HostSockets SocketCount `json:"hostSockets"`
	// Drops counts packets refused since the start, by reason (the
	// labels of vrouter_dropped_packets_total and the load balancer's
	// refusals); reasons with none are left out.
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// Reload is the outcome of one change of desired state.
type Reload struct {
	Time time.Time `json:"time"`
	// Applied: the data path took it. Otherwise Error says why the
	// router kept what it ran.
	Applied bool   `json:"applied"`
	Error   string `json:"error,omitempty"`
}

// TUNStatus is the TUN device as the router uses it.
type TUNStatus struct {
	Name string `json:"name"`
	// MTU is the tunnel MTU: the largest inner packet a peer is sent.
	MTU int `json:"mtu"`
	// Offload: the device takes and gives TCP super-packets
	// (IFF_VNET_HDR segmentation offload).
	Offload bool `json:"offload"`
	// UDPOffload: UDP super-packets too (UDP segmentation offload,
	// Linux 6.2 and later).
	UDPOffload bool `json:"udpOffload"`
	// BatchIO: a burst of packets crosses the TUN in one system call
	// (io_uring); BatchIOOff says why not, when not.
	BatchIO    bool   `json:"batchIO"`
	BatchIOOff string `json:"batchIOOff,omitempty"`
	// BusyPoll is the window the router busy-polls the TUN and overlay
	// socket with (router.busyPoll), "" when it does not.
	BusyPoll string `json:"busyPoll,omitempty"`
}

// OverlayStatus is the overlay between the routers.
type OverlayStatus struct {
	// Encryption is "wireguard" or "none" (the plain overlay:
	// unauthenticated UDP).
	Encryption string `json:"encryption"`
	// WireGuard is the encrypted overlay's state; absent for a plain
	// one.
	WireGuard *OverlayWireGuard `json:"wireguard,omitempty"`
}

// OverlayWireGuard is the encrypted overlay at a glance.
type OverlayWireGuard struct {
	// PublicKey is this router's key, which its peers are configured
	// with.
	PublicKey wireguard.Key `json:"publicKey"`
	// SessionsUp counts the peers whose session is up, of PeersWithKey
	// (the peers the overlay has a key for); PeersWithoutKey the peers
	// the router does not route to for want of one.
	SessionsUp      int `json:"sessionsUp"`
	PeersWithKey    int `json:"peersWithKey"`
	PeersWithoutKey int `json:"peersWithoutKey"`
}

// PeerCount counts the peers, and names the one heard from least
// recently.
type PeerCount struct {
	Total int `json:"total"`
	// HeardFrom counts the peers a datagram was accepted from since the
	// start. (The overlay has no keepalive: an idle peer is heard from
	// only when it sends.)
	HeardFrom int `json:"heardFrom"`
	// Oldest is the peer heard from least recently (one never heard
	// from first), OldestLastSeen when (absent: never).
	Oldest         string    `json:"oldest,omitempty"`
	OldestLastSeen time.Time `json:"oldestLastSeen,omitzero"`
}

// SocketCount counts host sockets by state.
type SocketCount struct {
	Listening int `json:"listening"`
	Failed    int `json:"failed"`
}

// Process is what the vrouter process knows of itself, which Status
// reports beside the data path's state.
type Process struct {
	Version, Commit string
	Mode, Source    string
	Started         time.Time
	LastReload      *Reload
	Ready           bool
	NotReady        string
}

// PingReport is the answer of GET /v1/ping: probes of a peer through the
// overlay, and the largest that passes.
type PingReport struct {
	// Target is what was asked for: a peer's name or an IP address.
	Target string `json:"target"`
	// Peer is the peer router the probes went to, Endpoint its overlay
	// address; Src and Dst the probes' addresses (Src this router's
	// overlay identity, Dst the peer's or the pod's).
	Peer     string         `json:"peer"`
	Endpoint netip.AddrPort `json:"endpoint"`
	Src      netip.Addr     `json:"src"`
	Dst      netip.Addr     `json:"dst"`
	Probes   []PingProbe    `json:"probes"`
	// MTU is the path MTU search, when asked for.
	MTU *PingMTU `json:"mtu,omitempty"`
}

// PingProbe is one probe: its IP packet size, and the round trip of its
// reply (in nanoseconds) or why there was none.
type PingProbe struct {
	Seq   int           `json:"seq"`
	Size  int           `json:"size"`
	RTT   time.Duration `json:"rtt,omitempty"`
	Error string        `json:"error,omitempty"`
}

// PingMTU is the outcome of a path MTU search: the largest inner packet
// that passed (0: none did), found by halving the range between a size
// that passed and one that did not, up to the tunnel MTU.
type PingMTU struct {
	Largest   int `json:"largest"`
	TunnelMTU int `json:"tunnelMTU"`
	// Probes is how many probes the search sent.
	Probes int `json:"probes"`
}
