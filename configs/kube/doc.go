// Package kube is vrouter's Kubernetes source: it watches Nodes, Services
// and EndpointSlices (discovery.k8s.io/v1) through client-go shared
// informers and hands the desired state they describe to a Sink, the same
// consumers the static config file feeds (the router's peers and pod CIDRs,
// the lb Service table).
//
//	kube-apiserver ──list/watch──▶ informers (Nodes; Services and EndpointSlices
//	     │                           │        filtered as kube-proxy filters them)
//	     │ errors: one log line      │ handlers only mark names dirty
//	     ▼ per cause, Ready()        ▼
//	  health                      dirty set ──Run's goroutine, at most one sync
//	                                          per MinSyncInterval──▶ build desired state
//	                                                                   │ compare with what
//	                                                                   │ the Sink last took
//	                    Sink.SetServices (once, whole table) ◀─────────┤
//	                    Sink.UpsertService / DeleteService   ◀─────────┤ one call per
//	                    Sink.SetNodes (this node + peers)    ◀─────────┘ changed object
//
// Nothing reaches the Sink before every informer has synced. The first
// sync hands over the whole Service table (SetServices), so that a consumer
// can drop state that is no longer desired; every later sync passes only
// the Services whose desired state changed, so its cost follows the change,
// not the cluster. A watch that breaks and re-lists replays the same
// objects: they build the same desired state, and nothing is passed on.
//
// Services are read with kube-proxy's rules: headless and ExternalName
// Services and SCTP ports are skipped, the service.kubernetes.io/service-proxy-name
// label hands a Service to another proxy, the endpoints of a Service are
// the union of its EndpointSlices (deduplicated by address) and each
// Service port's backends are the slice ports of the same name, whatever
// the Service's targetPort says (see buildService). Node ports, external
// IPs, load-balancer ingress IPs (status included), the external traffic
// policy and the health check node port are read as kube-proxy reads them
// (see externalAccess).
//
// It writes one thing: KeyPublisher keeps this router's WireGuard public
// key in its own Node's vrouter.io/wireguard-public-key annotation, which
// the Source reads back as each peer's Node.PublicKey. The API server, not
// this package, holds the router to that one annotation of its own Node
// (configs/deploy/rbac.yaml's ValidatingAdmissionPolicy).
//
// Ownership: New starts nothing. Run starts the informers and the sync
// goroutine, and returns after all of them have exited. Handlers, the
// watch error handlers and Ready/Synced/Stats may run on any goroutine;
// the Sink is only ever called from Run's goroutine.
package kube
