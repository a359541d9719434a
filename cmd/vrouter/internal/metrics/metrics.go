package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// Sources are what the Collector reads. Router is required; the others
// may be nil: no Service metrics without a Table, no nat mode metrics
// without a NAT, no proxy mode metrics without a Proxy.
type Sources struct {
	Router *router.Router
	Table  *lb.Table
	NAT    *lb.NAT
	Proxy  *lb.Proxy
	// HostPorts are the host sockets of node ports, external addresses
	// and health checks.
	HostPorts *lb.HostPorts
	// Egress is the egress masquerade, nil when it is off.
	Egress *lb.Egress
	// WireGuard is the encrypted overlay, the Router's overlay
	// transport; nil for a plain overlay (no vrouter_wireguard_*
	// metrics).
	WireGuard *wireguard.Conn
}

// Collector is a prometheus.Collector over the router's and the load
// balancer's counters. Collect may run concurrently with the data path
// and with itself.
type Collector struct {
	src Sources
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector reading src.
func NewCollector(src Sources) *Collector { return &Collector{src: src} }

// Label sets.
var (
	// scope is "cluster" for a key pods and nodes reach through the
	// router, "external" for one served by host sockets (a node port,
	// whose cluster_ip is 0.0.0.0 or :: and port the node port, or an
	// external address from outside).
	serviceLabels = []string{"namespace", "service", "port_name", "cluster_ip", "port", "protocol", "scope"}
	backendLabels = append(append([]string(nil), serviceLabels...), "backend")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics the Collector exports.
var (
	peerPackets = desc("vrouter_peer_packets_total",
		"Inner packets exchanged with a peer router over the overlay, by direction (rx: accepted from the peer, tx: sent to it).", "peer", "direction")
	peerBytes = desc("vrouter_peer_bytes_total",
		"Bytes of inner packets exchanged with a peer router over the overlay, by direction.", "peer", "direction")
	peerLastSeen = desc("vrouter_peer_last_seen_timestamp_seconds",
		"When the last datagram from a peer was accepted, in seconds since the epoch (0: never, so time() minus it is large for a peer never heard from).", "peer")
	nicPackets = desc("vrouter_nic_packets_total",
		"Packets that crossed a router NIC (the TUN device, or overlay0 for all peers), by direction.", "nic", "direction")
	nicBytes = desc("vrouter_nic_bytes_total",
		"Bytes of packets that crossed a router NIC, by direction.", "nic", "direction")
	tunBatches = desc("vrouter_tun_write_batches_total",
		"Bursts of more than one packet the router wrote to the TUN in one write: one system call each where the TUN has batched I/O (io_uring; vrouter status says).")
	tunBatchPackets = desc("vrouter_tun_write_batch_packets_total",
		"Packets the bursts of vrouter_tun_write_batches_total carried.")
	dropped = desc("vrouter_packets_dropped_total",
		"Packets or datagrams the router refused or could not forward, by reason.", "reason")
	icmpErrors = desc("vrouter_icmp_errors_sent_total",
		"ICMP errors the router sent (destination unreachable, time exceeded, fragmentation needed / packet too big).")
	routes = desc("vrouter_routes", "Routes in the router's table.")
	peers  = desc("vrouter_peers", "Peer routers configured.")
	// peersWithoutKey is 0 on a plain overlay, which needs no keys.
	peersWithoutKey = desc("vrouter_overlay_peers_without_key",
		"Configured peer routers an encrypted overlay does not route to because they have no WireGuard public key (0 on a plain overlay).")

	services = desc("vrouter_services", "Services in the load balancer's table.")
	// endpoints counts usable backends per Service key, summed.
	endpoints = desc("vrouter_endpoints",
		"Usable endpoints, summed over Service ports (one ClusterIP, port and protocol each).")
	serviceEndpoints = desc("vrouter_service_endpoints",
		"Usable endpoints of a Service port.", serviceLabels...)
	serviceConns = desc("vrouter_service_connections_total",
		"Connections (TCP) or flows (UDP) carried to a Service port's endpoints.", serviceLabels...)
	serviceActive = desc("vrouter_service_connections_active",
		"Connections or flows of a Service port that are open now.", serviceLabels...)
	serviceRefused = desc("vrouter_service_picker_refusals_total",
		"New connections to a Service port for which the picker had no endpoint.", serviceLabels...)
	backendConns = desc("vrouter_backend_connections_total",
		"Connections (TCP) or flows (UDP) carried to one endpoint of a Service port.", backendLabels...)
	backendActive = desc("vrouter_backend_connections_active",
		"Connections or flows to one endpoint of a Service port that are open now.", backendLabels...)
	backendEjections = desc("vrouter_backend_ejections_total",
		"Times outlier detection ejected one endpoint of a Service port after consecutive connection failures (refused or unanswered connections).", backendLabels...)
	backendsEjected = desc("vrouter_backends_ejected",
		"Endpoints ejected now by outlier detection, summed over Service ports: left out of picking until their ejection ends.")

	natFlows = desc("vrouter_nat_flows",
		"Flows the nat mode data path tracks now.")
	natFlowsTotal = desc("vrouter_nat_flows_total",
		"Flows the nat mode data path created.")
	natRefused = desc("vrouter_nat_refused_total",
		"New flows the nat mode data path refused, by reason: no_endpoints (answered with ICMP port unreachable), cap (flow limits) or ports (no source port free for the translation).", "reason")
	natEvicted = desc("vrouter_nat_evicted_total",
		"Unconfirmed flows (TCP handshake not completed, UDP never answered) ended to admit a new flow at a flow limit (early drop), by reason: cap (the table's limit per protocol) or client_cap (the new flow's client's own limit; its own flow ended).", "reason")
	natMigrated = desc("vrouter_nat_udp_migrations_total",
		"UDP flows moved off an endpoint that left their Service.")
	natFragments = desc("vrouter_nat_fragments_dropped_total",
		"Fragmented datagrams of nat flows whose later fragments could not be translated (fragment table full, or a fragment after 30 s).")
	natExpired = desc("vrouter_nat_flows_expired_total",
		"Flows ended by timeout or close.")
	natHalfOpenExpired = desc("vrouter_nat_half_open_expired_total",
		"TCP flows that timed out before their handshake completed (no SYN-ACK, or no ACK of it): SYN floods, unanswering backends.")
	natFileRecords = desc("vrouter_nat_flow_file_records_total",
		"Records of the flow file a previous router left, by what this one made of them at start: restored, dropped (the flow no longer holds), corrupt or foreign (not trusted).", "result")
	natFileRefused = desc("vrouter_nat_flow_file_refused_total",
		"Flow files refused whole at start: not a flow file, another format version, a damaged header, or written before the node last booted.")
	natFileUnrecorded = desc("vrouter_nat_flow_file_unrecorded_total",
		"Flows the flow file had no free record for: they will not survive a restart.")
	natHairpin = desc("vrouter_nat_hairpin_flows_total",
		"Flows whose source was translated to the router address because client and endpoint are on this node.")

	proxyConns = desc("vrouter_proxy_connections_total",
		"Connections the proxy mode data path spliced to a backend.")
	proxyActive = desc("vrouter_proxy_connections_active",
		"Proxied connections open now.")
	proxyDraining = desc("vrouter_proxy_connections_draining",
		"Proxied connections open now whose backend left its Service.")
	proxyRefused = desc("vrouter_proxy_refused_total",
		"Connections the proxy refused, by reason: no_endpoints, cap (connection limits), unreachable (no backend answered), not_proxy (no proxy-mode Service at that address), in_flight (too many being set up; the SYN was dropped), in_flight_client (too many of its client's being set up; the SYN was dropped).", "reason")
	proxyDialFailures = desc("vrouter_proxy_dial_failures_total",
		"Failed dials to backends.")
	proxyRetries = desc("vrouter_proxy_dial_retries_total",
		"Dials to another backend after one failed.")
	proxyHandshakeFirst = desc("vrouter_proxy_handshake_first_total",
		"Proxied connections whose client handshake was completed before the backend was dialed, because many connections (or many of its client's) were being set up: a SYN flood costs no backend connection.")
	proxyUnproven = desc("vrouter_proxy_unproven_clients_total",
		"Clients of handshake-first connections that did not complete their handshake, so no backend was dialed for them (spoofed SYNs).")
	proxyInFlight = desc("vrouter_proxy_connections_in_flight",
		"Proxied connections being set up now (backend dial and client handshake).")
	proxyHandshakeFailures = desc("vrouter_proxy_handshake_failures_total",
		"Clients that went away after their backend answered and before their handshake completed.")
	proxyClosed = desc("vrouter_proxy_closed_total",
		"Proxied connections the router closed, by reason: idle (idle timeout) or drained (reset after their backend left).", "reason")

	hostSockets = desc("vrouter_hostport_sockets",
		"Host sockets of node ports, external addresses and health-check node ports, by state: listening, failed (could not be bound; retried) or pending.", "state")
	hostBindFailures = desc("vrouter_hostport_bind_failures_total",
		"Host sockets that could not be bound (port in use, privileged port), each counted once until it binds.")
	hostConns = desc("vrouter_hostport_connections_total",
		"Connections (TCP) or flows (UDP) relayed from host sockets to endpoints.", "protocol")
	hostActive = desc("vrouter_hostport_connections_active",
		"Connections (TCP) or flows (UDP) from host sockets open now.", "protocol")
	hostRefused = desc("vrouter_hostport_refused_total",
		"Connections (TCP, reset) or datagrams (UDP, dropped) on host sockets that could not be served, by reason: no_endpoints, no_local_endpoints (externalTrafficPolicy Local), cap, unreachable (no endpoint answered).", "reason")
	hostUDPIdle = desc("vrouter_hostport_udp_flows_expired_total",
		"UDP flows from host sockets ended by the UDP timeout.")
	hostHealth = desc("vrouter_healthcheck_requests_total",
		"Requests answered on health-check node ports.")
	hostAcceptErrors = desc("vrouter_hostport_accept_errors_total",
		"Failed accepts on host TCP sockets (out of file descriptors, say).")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		peerPackets, peerBytes, peerLastSeen, nicPackets, nicBytes, tunBatches, tunBatchPackets, dropped, icmpErrors, routes, peers,
		services, endpoints, serviceEndpoints, serviceConns, serviceActive, serviceRefused, backendConns, backendActive,
		backendEjections, backendsEjected,
		natFlows, natFlowsTotal, natRefused, natEvicted, natMigrated, natFragments, natExpired, natHalfOpenExpired, natHairpin,
		natFileRecords, natFileRefused, natFileUnrecorded,
		proxyConns, proxyActive, proxyDraining, proxyRefused, proxyDialFailures, proxyRetries,
		proxyHandshakeFailures, proxyHandshakeFirst, proxyUnproven, proxyInFlight, proxyClosed,
		hostSockets, hostBindFailures, hostConns, hostActive, hostRefused, hostUDPIdle, hostHealth, hostAcceptErrors,
		egressFlows, egressActive, egressRefused, egressICMPErrors, egressClosed, egressUnsupported,
		peersWithoutKey, wgHandshakeMessages, wgRefused, wgPeerLastHandshake, wgPeerHandshakes, wgPeerRekeys, wgPeerSessionUp,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectRouter(ch)
	if c.src.Table != nil {
		c.collectTable(ch)
	}
	if c.src.NAT != nil {
		c.collectNAT(ch)
	}
	if c.src.Proxy != nil {
		c.collectProxy(ch)
	}
	if c.src.HostPorts != nil {
		c.collectHostPorts(ch)
	}
	if c.src.Egress != nil {
		c.collectEgress(ch)
	}
	if c.src.WireGuard != nil {
		c.collectWireGuard(ch)
	}
}

// The encrypted overlay's metrics.
var (
	wgHandshakeMessages = desc("vrouter_wireguard_handshake_messages_total",
		"WireGuard handshake messages, by message (initiation, response) and direction (sent, received); each response completes a handshake. Initiations include retries; refused messages are not counted.", "message", "direction")
	wgRefused = desc("vrouter_wireguard_refused_total",
		"Datagrams the encrypted overlay refused before they reached the router, by reason: bad_mac (a handshake not keyed to this router's public key), unknown_key (a handshake from a key that is no peer's), stale_response (a response to no initiation in progress), replay (a replayed or flooding initiation), disallowed_source (an authenticated packet from outside its peer's pod CIDRs and node address), not_wireguard (a datagram that is no WireGuard message, such as a plain overlay's), unauthenticated (a transport message for no session of this router's, whose tag fails, or whose counter was seen before), under_load (a handshake message answered with a cookie reply, or over its source's rate, while the router was flooded with them).", "reason")
	wgPeerLastHandshake = desc("vrouter_wireguard_peer_last_handshake_timestamp_seconds",
		"When the last WireGuard handshake with a peer router completed, in seconds since the epoch (0: never, so time() minus it is large for a peer that never completed one).", "peer")
	wgPeerHandshakes = desc("vrouter_wireguard_peer_handshakes_total",
		"WireGuard handshakes completed with a peer router.", "peer")
	wgPeerRekeys = desc("vrouter_wireguard_peer_rekeys_total",
		"WireGuard handshakes with a peer router after the first, each of which renewed the session's keys.", "peer")
	wgPeerSessionUp = desc("vrouter_wireguard_peer_session_up",
		"1 if the WireGuard session with a peer router is up (a handshake within the last 180 s), else 0.", "peer")
)

func (c *Collector) collectWireGuard(ch chan<- prometheus.Metric) {
	wg := c.src.WireGuard
	st := wg.Stats()
	counter(ch, wgHandshakeMessages, st.InitiationsSent, "initiation", "sent")
	counter(ch, wgHandshakeMessages, st.InitiationsReceived, "initiation", "received")
	counter(ch, wgHandshakeMessages, st.ResponsesSent, "response", "sent")
	counter(ch, wgHandshakeMessages, st.ResponsesReceived, "response", "received")
	for _, r := range wireguard.Refusals() {
		counter(ch, wgRefused, st.Refused[r], r.String())
	}
	// The device's peers are the configured peers with a key. It cannot
	// report them only once closed, when the router stops.
	peers, err := wg.Peers()
	if err != nil {
		return
	}
	now := time.Now()
	for _, p := range peers {
		var last float64
		if !p.LastHandshake.IsZero() {
			last = float64(p.LastHandshake.UnixNano()) / 1e9
		}
		// 0 for a peer never handshaken with, so that an alert on
		// time() - last_handshake fires for it too.
		gauge(ch, wgPeerLastHandshake, last, p.Name)
		counter(ch, wgPeerHandshakes, p.Handshakes, p.Name)
		counter(ch, wgPeerRekeys, p.Rekeys, p.Name)
		up := 0.0
		if p.Up(now) {
			up = 1
		}
		gauge(ch, wgPeerSessionUp, up, p.Name)
	}
}

// The egress masquerade's metrics.
var (
	egressFlows = desc("vrouter_egress_flows_total",
		"Pods' flows to destinations outside the cluster re-originated from the node (egress masquerade), by protocol (tcp, udp, icmp: echo).", "protocol")
	egressActive = desc("vrouter_egress_flows_active",
		"Egress flows open now, by protocol.", "protocol")
	egressRefused = desc("vrouter_egress_refused_total",
		"Egress flows refused, by protocol and reason: cap (egress.maxFlows, maxFlowsPerPod), conn_refused (the destination refused the node's dial: RST to the pod), unreachable (no route or host: ICMP unreachable to the pod), dial_failure (other failed dials, such as timeouts), ping_unavailable (icmp: the node allows no unprivileged ping socket, see net.ipv4.ping_group_range).", "protocol", "reason")
	egressICMPErrors = desc("vrouter_egress_icmp_errors_sent_total",
		"ICMP errors sent to pods for their egress flows, by protocol.", "protocol")
	egressClosed = desc("vrouter_egress_closed_total",
		"Egress flows ended by their idle timeout, by protocol.", "protocol", "reason")
	egressUnsupported = desc("vrouter_egress_unsupported_dropped_total",
		"Pods' packets to outside destinations dropped because egress carries only TCP, UDP, ICMP echo and ICMP errors.")
)

func (c *Collector) collectEgress(ch chan<- prometheus.Metric) {
	st := c.src.Egress.Stats()
	for i, ps := range st.Protos {
		proto := lb.EgressProto(i).String()
		counter(ch, egressFlows, ps.Flows, proto)
		gauge(ch, egressActive, float64(ps.Active), proto)
		counter(ch, egressRefused, ps.RefusedCap, proto, "cap")
		counter(ch, egressRefused, ps.RefusedConnRefused, proto, "conn_refused")
		counter(ch, egressRefused, ps.RefusedUnreachable, proto, "unreachable")
		counter(ch, egressRefused, ps.DialFailures, proto, "dial_failure")
		if lb.EgressProto(i) == lb.EgressICMP {
			counter(ch, egressRefused, st.PingUnavailable, proto, "ping_unavailable")
		}
		counter(ch, egressICMPErrors, ps.ICMPErrors, proto)
		counter(ch, egressClosed, ps.IdleClosed, proto, "idle")
	}
	counter(ch, egressUnsupported, st.Unsupported)
}

func (c *Collector) collectHostPorts(ch chan<- prometheus.Metric) {
	st := c.src.HostPorts.Stats()
	pending := 0
	for _, b := range c.src.HostPorts.Bindings() {
		if b.State == lb.BindPending {
			pending++
		}
	}
	gauge(ch, hostSockets, float64(st.Listening), "listening")
	gauge(ch, hostSockets, float64(st.Failed), "failed")
	gauge(ch, hostSockets, float64(pending), "pending")
	counter(ch, hostBindFailures, st.BindFailures)
	counter(ch, hostConns, st.TCPConns, "TCP")
	counter(ch, hostConns, st.UDPFlows, "UDP")
	gauge(ch, hostActive, float64(st.TCPActive), "TCP")
	gauge(ch, hostActive, float64(st.UDPActive), "UDP")
	counter(ch, hostRefused, st.RefusedNoEndpoints, "no_endpoints")
	counter(ch, hostRefused, st.RefusedNoLocalEndpoints, "no_local_endpoints")
	counter(ch, hostRefused, st.RefusedCap, "cap")
	counter(ch, hostRefused, st.RefusedUnreachable, "unreachable")
	counter(ch, hostUDPIdle, st.UDPIdleClosed)
	counter(ch, hostHealth, st.HealthRequests)
	counter(ch, hostAcceptErrors, st.AcceptErrors)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (c *Collector) collectRouter(ch chan<- prometheus.Metric) {
	r := c.src.Router
	st := r.Stats()
	for name, p := range st.Peers {
		counter(ch, peerPackets, p.RxPackets, name, "rx")
		counter(ch, peerPackets, p.TxPackets, name, "tx")
		counter(ch, peerBytes, p.RxBytes, name, "rx")
		counter(ch, peerBytes, p.TxBytes, name, "tx")
		// 0 for a peer never heard from, so that an alert on
		// time() - last_seen fires for it too.
		gauge(ch, peerLastSeen, float64(p.LastSeenUnixNano)/1e9, name)
	}
	tunName := r.Stack().FindNICNameFromID(router.TUNNIC)
	for _, l := range []struct {
		nic string
		st  router.LinkStats
	}{{tunName, st.TUN}, {router.OverlayNICName, st.Overlay}} {
		counter(ch, nicPackets, l.st.RxPackets, l.nic, "rx")
		counter(ch, nicPackets, l.st.TxPackets, l.nic, "tx")
		counter(ch, nicBytes, l.st.RxBytes, l.nic, "rx")
		counter(ch, nicBytes, l.st.TxBytes, l.nic, "tx")
	}
	counter(ch, tunBatches, st.TUNWriteBatches)
	counter(ch, tunBatchPackets, st.TUNWriteBatchPackets)
	for _, reason := range router.DropReasons() {
		counter(ch, dropped, st.Drops[reason], reason.String())
	}
	// The stack's own refusals, next to the link endpoints'.
	counter(ch, dropped, st.NoRoute, "no_route")
	counter(ch, dropped, st.TTLExceeded, "ttl_exceeded")
	counter(ch, dropped, st.TooBig, "too_big")
	counter(ch, icmpErrors, st.ICMPErrorsSent)
	gauge(ch, routes, float64(len(r.Routes())))
	gauge(ch, peers, float64(len(r.Config().Peers)))
	gauge(ch, peersWithoutKey, float64(st.PeersWithoutKey))
}

func (c *Collector) collectTable(ch chan<- prometheus.Metric) {
	names := make(map[lb.ServiceName]struct{})
	var usable, ejected int
	for _, es := range c.src.Table.Stats() {
		names[es.Name.ServiceName] = struct{}{}
		usable += len(es.Backends)
		sl := serviceLabelValues(es)
		gauge(ch, serviceEndpoints, float64(len(es.Backends)), sl...)
		counter(ch, serviceConns, es.Conns, sl...)
		gauge(ch, serviceActive, float64(es.Active), sl...)
		counter(ch, serviceRefused, es.Refused, sl...)
		for _, b := range es.Backends {
			bl := append(sl[:len(sl):len(sl)], b.AddrPort.String())
			counter(ch, backendConns, b.Conns, bl...)
			gauge(ch, backendActive, float64(b.Active), bl...)
			counter(ch, backendEjections, b.Ejections, bl...)
		}
		ejected += es.Ejected
	}
	gauge(ch, backendsEjected, float64(ejected))
	gauge(ch, services, float64(len(names)))
	gauge(ch, endpoints, float64(usable))
}

func serviceLabelValues(es lb.EntryStats) []string {
	return []string{
		es.Name.Namespace, es.Name.Name, es.Name.Port,
		es.Key.VIP.String(), strconv.Itoa(int(es.Key.Port)), es.Key.Proto.String(), scope(es.Key),
	}
}

func scope(k lb.ServiceKey) string {
	if k.External {
		return "external"
	}
	return "cluster"
}

func (c *Collector) collectNAT(ch chan<- prometheus.Metric) {
	st := c.src.NAT.Stats()
	gauge(ch, natFlows, float64(st.Flows))
	counter(ch, natFlowsTotal, st.FlowsTotal)
	counter(ch, natRefused, st.RefusedNoEndpoints, "no_endpoints")
	counter(ch, natRefused, st.RefusedCap, "cap")
	counter(ch, natRefused, st.RefusedPorts, "ports")
	counter(ch, natEvicted, st.EvictedCap, "cap")
	counter(ch, natEvicted, st.EvictedPerClient, "client_cap")
	counter(ch, natMigrated, st.Migrated)
	counter(ch, natFragments, st.Fragments)
	counter(ch, natExpired, st.Expired)
	counter(ch, natHalfOpenExpired, st.ExpiredHalfOpen)
	counter(ch, natHairpin, st.HairpinSNAT)
	counter(ch, natFileRecords, st.FileRestored, "restored")
	counter(ch, natFileRecords, st.FileDropped, "dropped")
	counter(ch, natFileRecords, st.FileCorrupt, "corrupt")
	counter(ch, natFileRecords, st.FileForeign, "foreign")
	counter(ch, natFileRefused, st.FileRefused)
	counter(ch, natFileUnrecorded, st.Unrecorded)
}

func (c *Collector) collectProxy(ch chan<- prometheus.Metric) {
	st := c.src.Proxy.Stats()
	counter(ch, proxyConns, st.Conns)
	gauge(ch, proxyActive, float64(st.Active))
	gauge(ch, proxyDraining, float64(st.Draining))
	counter(ch, proxyRefused, st.RefusedNoEndpoints, "no_endpoints")
	counter(ch, proxyRefused, st.RefusedCap, "cap")
	counter(ch, proxyRefused, st.RefusedUnreachable, "unreachable")
	counter(ch, proxyRefused, st.RefusedNotProxy, "not_proxy")
	counter(ch, proxyRefused, st.InFlightDrops, "in_flight")
	counter(ch, proxyRefused, st.InFlightClientDrops, "in_flight_client")
	counter(ch, proxyHandshakeFirst, st.HandshakeFirst)
	counter(ch, proxyUnproven, st.Unproven)
	gauge(ch, proxyInFlight, float64(st.InFlight))
	counter(ch, proxyDialFailures, st.DialFailures)
	counter(ch, proxyRetries, st.Retries)
	counter(ch, proxyHandshakeFailures, st.HandshakeFailures)
	counter(ch, proxyClosed, st.IdleClosed, "idle")
	counter(ch, proxyClosed, st.Drained, "drained")
}

// Syncs are the metrics of config applies: how long each took, when the
// last good one finished, and how many were applied or refused. Observe
// is safe for concurrent use.
type Syncs struct {
	duration    prometheus.Histogram
	last        prometheus.Gauge
	results     *prometheus.CounterVec
	programming prometheus.Histogram
}

// NewSyncs returns the sync metrics, to register with NewRegistry.
func NewSyncs() *Syncs {
	s := &Syncs{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vrouter_sync_proxy_rules_duration_seconds",
			Help: "How long applying a config to the data path (routes, peers, Services) took; its count is the number of applies.",
			// kube-proxy's buckets: 1 ms to 16 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vrouter_sync_proxy_rules_last_timestamp_seconds",
			Help: "When a config was last applied to the data path successfully.",
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vrouter_config_reloads_total",
			Help: "Config reloads, by result: applied, or refused (unreadable, invalid, or refused by the data path; the running config stays).",
		}, []string{"result"}),
	}
	s.programming = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "vrouter_network_programming_duration_seconds",
		Help: "Time from a change of a Service, EndpointSlice or Node in the API server to the data path programmed with it (kube-proxy's network programming latency).",
		// kube-proxy's buckets: 0.25 s to 5 min, plus finer ones below.
		Buckets: append(prometheus.ExponentialBuckets(0.001, 2, 8), 0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 45, 60, 120, 180, 240, 300),
	})
	s.results.WithLabelValues("applied")
	s.results.WithLabelValues("refused")
	return s
}

// ObserveProgramming records the network programming latency of one
// change from the API server.
func (s *Syncs) ObserveProgramming(d time.Duration) {
	s.programming.Observe(d.Seconds())
}

// Observe records one apply that took d and ended at end; ok reports
// whether it was applied.
func (s *Syncs) Observe(d time.Duration, end time.Time, ok bool) {
	s.duration.Observe(d.Seconds())
	if !ok {
		s.results.WithLabelValues("refused").Inc()
		return
	}
	s.results.WithLabelValues("applied").Inc()
	s.last.Set(float64(end.UnixNano()) / 1e9)
}

// Refused records a config refused before it reached the data path (a
// file that cannot be read or does not validate): a refused reload that
// is no apply, so it is not timed.
func (s *Syncs) Refused() {
	s.results.WithLabelValues("refused").Inc()
}

var _ prometheus.Collector = (*Syncs)(nil)

// Describe implements prometheus.Collector.
func (s *Syncs) Describe(ch chan<- *prometheus.Desc) {
	s.duration.Describe(ch)
	s.last.Describe(ch)
	s.results.Describe(ch)
	s.programming.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Syncs) Collect(ch chan<- prometheus.Metric) {
	s.duration.Collect(ch)
	s.last.Collect(ch)
	s.results.Collect(ch)
	s.programming.Collect(ch)
}

// BuildInfo is a collector of the constant vrouter_build_info metric;
// revision is the VCS commit, "" when unknown.
func BuildInfo(version, revision, goVersion string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vrouter_build_info",
		Help:        "Always 1; its labels say which vrouter build is running.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// NewRegistry returns a registry with the given collectors plus the Go
// runtime's and the process's. It panics if two collectors export the
// same metric, a programming error.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// Handler serves reg in the Prometheus exposition formats.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
