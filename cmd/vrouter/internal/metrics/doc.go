// Package metrics exports vrouter's counters to Prometheus.
//
//	packet path: atomic counters ──(nothing else)
//	                   │ read at scrape time
//	                   ▼
//	Collector.Collect ── router.Stats, Router.Routes, Router.Config
//	                  ── lb.Table.Stats, lb.Table.Entries
//	                  ── lb.NAT.Stats, lb.Proxy.Stats
//	                  ── wireguard.Conn.Stats, Peers (an encrypted overlay)
//	Syncs ── observed by the config reloader, once per apply
//	                   │
//	                   ▼
//	NewRegistry(collectors…) ── promhttp ── GET /metrics
//
// The Collector keeps no state of its own: every scrape reads the atomic
// counters the data path already keeps, so counting costs the packet path
// no lock and no allocation beyond those atomics. Sync metrics are ordinary
// Prometheus metrics, updated off the packet path.
//
// Names follow Prometheus conventions under the vrouter_ prefix; the sync
// metrics reuse kube-proxy's names (kubeproxy_sync_proxy_rules_*) where
// the meaning matches. A data path this package does not know adds its own
// prometheus.Collector to NewRegistry next to these.
package metrics
