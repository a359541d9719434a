// Package configs owns vrouter's desired state as the user writes it: the
// on-disk schema (File, schema.go), its defaults and validation (Parse,
// Load), the typed model the rest of the router consumes (Config) and the
// file source that keeps it current (Watcher).
//
//	vrouter.yaml ──Parse/Load──▶ *Config ──┬──▶ router.Set: TUN, overlay, peers, routes
//	     ▲          strict YAML,            │     (Node, TUN, Overlay, Peers, CIDRs,
//	     │          defaults,               │      RouterAddresses)
//	 fsnotify       every error with        └──▶ lb table: Services, ports, endpoints
//	 + SIGHUP       field path and value          (LB, Services)
//	     │
//	  Watcher ── valid and not Equal to the last one ──▶ apply(*Config)
//	          └─ invalid: one log line, the running config stays
//
// A Config is a whole desired state, never a delta: consumers compare it
// with what they run (Equal skips no-op reloads here) and compute their
// own diffs. Every Config handed out has passed validation, so consumers
// need not re-check addresses, prefixes, ports or cross-references (pod
// CIDRs inside cluster CIDRs, no overlap between nodes, unique Service
// ports, resolvable named target ports, ...).
//
// The package owns no goroutine except inside Watcher.Run, which returns
// only after the ones it started have exited. It reads files and nothing
// else: it opens no device and sends no packet. configs/REFERENCE.md
// documents every field; configs/examples holds the reference cluster's
// files.
package configs
