// Package health is vrouter's liveness and readiness: a State the router's
// wiring moves through its phases, and the HTTP handlers that report it,
// as kube-proxy's healthz server does for its node.
//
//	starting ──SetReady──▶ ready ──SetStopping──▶ stopping
//	  /readyz 503            200                    503
//	  /healthz 200 {"status":"ok","ready":…,"lastSync":…,"currentTime":…}
//
// /healthz answers 200 while the process can answer at all (liveness) and
// says when the data path was last programmed from the config; /readyz
// answers 200 only between the first successful programming and the start
// of shutdown (SIGTERM), so that whatever routes traffic here can stop
// before the router goes.
package health
