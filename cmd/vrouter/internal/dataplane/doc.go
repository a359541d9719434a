// Package dataplane owns the step from desired state to the data path: it
// builds a node's router and load balancer over a TUN device and an overlay
// socket, and keeps them equal to the Desired state that the sources hand
// it, whichever source that is.
//
//	config file ── configs.Watcher ── FromConfig ──┐
//	                                                ├──▶ Apply(Desired)
//	API server ──── configs/kube.Source ── Sink ───┘     SetPeers, SetServices,
//	                                                      UpsertService, DeleteService
//	                                                          │ one update at a time
//	   ┌──────────────────────────── DataPlane ───────────────▼───────────────────────┐
//	   │ 1 router.Set      peers, routes, router addresses, node addresses (sources  │
//	   │                   taken from the TUN); Service addresses:                   │
//	   │                   the proxy VIPs wanted after the update ∪ those before;    │
//	   │                   kernel routes to host endpoints, after ∪ before           │
//	   │ 2 NAT.SetLocal    pod CIDRs, node addresses, router addresses (hairpin)     │
//	   │ 3 lb.Table        Set / Upsert / Delete  (refused: 1 and 2 are rolled back) │
//	   │ 4 Proxy.Sync      connections whose endpoint left start draining            │
//	   │   HostPorts       host sockets of node ports, external addresses, health   │
//	   │                   checks follow the Services and the node's addresses      │
//	   │ 5 router.Set      Service addresses: the proxy VIPs wanted ∪ those still    │
//	   │                   carrying proxied connections; kernel routes wanted        │
//	   │ 6 Link.SetRoutes  the node kernel's routes into the TUN (cluster, Service   │
//	   │                   CIDRs and router addresses), added before removed         │
//	   │ 7 SetEgress       egress masquerade: the policy rules that send pods'       │
//	   │                   outside traffic into the TUN (none when it is off)        │
//	   └──────────────────────────────────────────────────────────────────────────────┘
//
// The rules, in one place for both sources:
//
//   - Proxy VIPs. The stack terminates (holds as its own address) every
//     ClusterIP of a Service in proxy mode — its own mode, else the
//     configured default — that has a TCP port, and no other. Proxy mode
//     applies to TCP only: a proxy-mode Service's UDP ports are translated
//     by the NAT as in nat mode, so a UDP-only Service is served exactly as
//     in nat mode, and its VIP answers nothing but its ports (an address of
//     the stack would answer pings and reset TCP to any port). A VIP also
//     stays while proxied connections to it are open, so that they drain
//     instead of being reset.
//   - Order. An update adds before it removes, so that no connection is
//     refused halfway through it: the stack holds a VIP before the Table
//     may call its Service proxy mode (a SYN to a proxy-mode VIP that is not
//     a stack address would be forwarded, not answered), and lets go of it
//     only after the Table stopped (a nat-mode VIP that is still a stack
//     address does no harm: the NAT translates its packets before the stack
//     sees them). The node kernel's routes change last, once the stack is
//     ready for what they send it. An update the Table refuses changes
//     nothing.
//   - Host endpoints. A Service endpoint outside the pod network and the
//     Service CIDRs (the API server behind the kubernetes Service, a
//     host-network pod) is reached through the node kernel: the router
//     routes it to the TUN (router.Config.KernelRoutes, one host route per
//     address some Service has), and the kernel by its own routes. One on
//     this node's own address is local: its replies would bypass the
//     router, so the NAT translates a local client's flow to it to the
//     router address (hairpin), as for a local pod. A flow still open to
//     such an endpoint after its last Service dropped it loses its route.
//   - External addresses. A Service's external and load-balancer IPs are
//     VIPs like its ClusterIPs for pods and the node (translated by the NAT,
//     terminated in proxy mode): the node kernel routes each into the TUN
//     (one host route, unless a Service CIDR covers it or it is the node's
//     own). Traffic from outside the cluster — node ports, and external
//     addresses that are local to this node — arrives on host sockets
//     (lb.HostPorts), which relay it with the Service's
//     externalTrafficPolicy. Node ports are served on the node's primary
//     addresses, or those lb.nodePortAddresses select among its interfaces,
//     and on 127.0.0.1 (lb.localhostNodePorts); with a publish helper
//     (Options.Binder, PublishAddresses) on the parent namespace's
//     addresses instead. The addresses are looked up again on every update
//     and every 10 s.
//   - Sources. The router takes from the TUN only packets from this node's
//     pod CIDRs and the node kernel's own addresses: its underlay address
//     and its TUN addresses (router.Config.NodeAddresses), the sources it
//     picks for its own connections into the TUN. A pod that spoofs
//     another source is dropped there, before the NAT counts it against a
//     client's cap.
//   - Egress (configs.Egress.Masquerade): lb.Egress is the router's hook,
//     in front of the NAT; step 2 hands it the pod CIDRs, the
//     non-masquerade CIDRs (Desired.NonMasqueradeCIDRs, else the cluster
//     and Service CIDRs) and the router's addresses. A Link that is an
//     EgressLink gets the kernel rules last, once the hook takes what
//     they send; with masquerading off the first update removes an
//     earlier run's, and Run removes them when it returns.
//   - Sidecar (Options.ProxyOnly): every Service in proxy mode, its TCP
//     ports only; a Service without one is not served.
//
// It does not own: opening or configuring the TUN device (its addresses and
// MTU) or the overlay socket, reading files or the API server, deciding
// when to apply (the sources coalesce bursts), nor the metrics, health and
// admin endpoints, which read the router and lb through the accessors.
//
// Concurrency: updates may come from any goroutine; they serialize. New
// starts nothing; Run owns the goroutines of the router, the NAT's reaper
// and the proxy, and returns after they exited.
package dataplane
