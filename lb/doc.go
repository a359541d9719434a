// Package lb is vrouter's Service load balancer: the Service table,
// endpoint selection, pickers, session affinity, limits and counters that
// both load-balancing modes share, and the two modes' data paths — NAT
// (nat mode: a router ingress hook that rewrites raw packets, with its own
// flow table) and Proxy (proxy mode: terminates TCP in the router's stack
// and splices it to a backend dialed from the node kernel); and the host
// sockets through which traffic from outside the cluster enters: node
// ports, external and load-balancer IPs, health-check node ports
// (HostPorts). It replaces what kube-proxy programs as KUBE-SERVICES →
// KUBE-SVC-* → KUBE-SEP-* chains, KUBE-NODEPORTS and KUBE-EXT-*, and its
// health-check server.
//
// It owns:
//
//   - the Service model (Service, ServicePort, Endpoint) and its expansion
//     into one Entry per (VIP, port, protocol): ServiceKey, External for
//     node ports and external addresses reached from outside;
//   - the Table, which publishes all Entries as an immutable snapshot
//     behind an atomic pointer; the reconciler feeds it desired state
//     (Set, Upsert, Delete);
//   - endpoint selection with kube-proxy's rules: ready endpoints, else
//     serving and terminating ones; internal and external traffic policy
//     Local; topology
//     hints; and the Status that tells the data path to reject (no
//     endpoints) or drop (no local endpoints);
//   - the pickers: random (kube-proxy's), round-robin,
//     least-connections, Maglev; and ClientIP session affinity;
//   - per-Entry and per-backend counters, and the Limiter that caps
//     tracked connections in all and per client;
//   - passive outlier detection (OutlierOptions): the data path reports
//     each new connection that reached its backend or failed to (a dial,
//     a SYN-ACK; a refused or timed-out dial, a RST or ICMP unreachable
//     to a SYN, a SYN left unanswered), and a backend that fails
//     repeatedly is left out of picking for a while, in both modes;
//   - HostPorts: the host sockets of External keys and health-check node
//     ports, opened through a Binder, which the reconciler feeds the
//     same desired state as the Table;
//   - the NAT's flow file (NAT.Persist): its flows' translations kept in
//     a memory-mapped file that the next router adopts, so that nat
//     connections outlive a restart or a crash of the process;
//   - Egress: the egress masquerade (flannel's --ip-masq without
//     iptables), a router hook that runs before the NAT and takes pods'
//     traffic to destinations outside the cluster into a gVisor stack of
//     its own, which re-originates it from the node's sockets (TCP
//     spliced with the proxy mode's readers, UDP per flow, ICMP echo from
//     ping sockets). It uses the Table only to leave Service keys to the
//     NAT; the kernel rules that steer the traffic to it are package
//     tun's (tun.SyncEgress).
//
// The table and pickers do not touch packets. NAT, Proxy and the host
// relays call them once per new connection:
//
//	packet to VIP:port/proto           connection or datagram from outside to a
//	(first of a connection, from a     host socket (HostPorts): node address:nodePort,
//	pod or the node, through the       local external or LB IP:port
//	router)                              │ key: External (node port: VIP 0.0.0.0 or ::)
//	        │                            │ TCP: accepted, Proxy.ServeHost; UDP: udpRelay
//	        ▼                            ▼
//	Table.Lookup(ServiceKey) ── nil ──▶ not a Service: route as usual (host sockets: RST / drop)
//	        │ *Entry (current snapshot: atomic load, no lock)
//	        ▼
//	Entry.Pick(Flow) ── no backends ──▶ Status: StatusNoEndpoints → TCP RST /
//	        │                           ICMP port unreachable; StatusNoLocalEndpoints → drop
//	        ├─ ClientIP affinity: the client's backend, if within timeout and still usable
//	        └─ else Picker: random | round-robin | least-connections | Maglev
//	           (each skips backends outlier detection ejected)
//	        │ Backend{Addr, Port}
//	        ▼
//	Limiter.Acquire(client) ── false ──▶ refuse (counted)
//	        │
//	        ├─ nat:   NAT rewrites VIP → Backend (and, hairpin, the source to the
//	        │         router address); its flow table reverses replies
//	        ├─ proxy: dial Backend, splice (optional PROXY v2 header)
//	        └─ host:  TCP as proxy, from the accepted socket; UDP: a flow per
//	                  client over a socket connected to Backend, replies sent
//	                  from the host socket
//	        │
//	Backend.Acquire() … connection lives … Backend.Release(), Limiter.Release(client)
//
// A host socket cannot refuse as the kernel's rules do: a node port
// without endpoints resets an accepted connection (as kube-proxy's REJECT
// does), and so does one with no local endpoint under
// externalTrafficPolicy Local, where kube-proxy DROPs the SYN, because the
// kernel already completed the handshake; UDP datagrams are dropped and
// counted in both cases, as a UDP socket cannot send ICMP port
// unreachable. Backends of a host relay see the node's address, not the
// client's (kube-proxy's DNAT keeps it, with externalTrafficPolicy
// Local), unless the Service asks for the PROXY v2 header.
//
// Concurrency: Lookup, Entry.Pick, Backend.Acquire/Release and the
// Limiter are for any number of packet-path goroutines at once; none
// blocks on an update. Set, Upsert and Delete serialize among themselves.
// The table starts no goroutine; NAT.Run (the flow reaper), Proxy.Run
// (the forwarder's connections, host relays and their splices) and
// HostPorts.Run (accept loops, UDP relays, health-check servers) own
// theirs and return after they exit.
package lb
