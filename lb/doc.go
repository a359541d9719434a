// Package lb is vrouter's Service load balancer: the Service table,
// endpoint selection, pickers, session affinity, limits and counters that
// both load-balancing modes share, and the two modes' data paths — NAT
// (nat mode: a router ingress hook that rewrites raw packets, with its own
// flow table) and Proxy (proxy mode: terminates TCP in the router's stack
// and splices it to a backend dialed from the node kernel). It replaces
// what kube-proxy programs as KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-*
// chains.
//
// It owns:
//
//   - the Service model (Service, ServicePort, Endpoint) and its expansion
//     into one Entry per (ClusterIP, port, protocol): ServiceKey;
//   - the Table, which publishes all Entries as an immutable snapshot
//     behind an atomic pointer; the reconciler feeds it desired state
//     (Set, Upsert, Delete);
//   - endpoint selection with kube-proxy's rules: ready endpoints, else
//     serving and terminating ones; internalTrafficPolicy Local; topology
//     hints; and the Status that tells the data path to reject (no
//     endpoints) or drop (no local endpoints);
//   - the pickers: random (kube-proxy's), round-robin,
//     least-connections, Maglev; and ClientIP session affinity;
//   - per-Entry and per-backend counters, and the Limiter that caps
//     tracked connections in all and per client.
//
// The table and pickers do not touch packets. NAT and Proxy call them once
// per new connection:
//
//	packet to VIP:port/proto (first of a connection)
//	        │
//	        ▼
//	Table.Lookup(ServiceKey) ── nil ──▶ not a Service: route as usual
//	        │ *Entry (current snapshot: atomic load, no lock)
//	        ▼
//	Entry.Pick(Flow) ── no backends ──▶ Status: StatusNoEndpoints → TCP RST /
//	        │                           ICMP port unreachable; StatusNoLocalEndpoints → drop
//	        ├─ ClientIP affinity: the client's backend, if within timeout and still usable
//	        └─ else Picker: random | round-robin | least-connections | Maglev
//	        │ Backend{Addr, Port}
//	        ▼
//	Limiter.Acquire(client) ── false ──▶ refuse (counted)
//	        │
//	        ├─ nat:   NAT rewrites VIP → Backend (and, hairpin, the source to the
//	        │         router address); its flow table reverses replies
//	        └─ proxy: dial Backend, splice (optional PROXY v2 header)
//	        │
//	Backend.Acquire() … connection lives … Backend.Release(), Limiter.Release(client)
//
// Concurrency: Lookup, Entry.Pick, Backend.Acquire/Release and the
// Limiter are for any number of packet-path goroutines at once; none
// blocks on an update. Set, Upsert and Delete serialize among themselves.
// The table starts no goroutine; NAT.Run (the flow reaper) and Proxy.Run
// (the forwarder's connections and their splices) own theirs and return
// after they exit.
package lb
