// Package configs owns vrouter's desired state as the user writes it: the
// on-disk schema (File, schema.go), its defaults and validation (Parse,
// Load), the typed model the rest of the router consumes (Config) and the
// file source that keeps it current (Watcher).
//
//	vrouter.yaml ──Decode──▶ File ──Config──▶ *Config ──┬──▶ router: TUN, overlay, peers, routes
//	     ▲          strict YAML, (strings)  defaults,   │     (Node, TUN, Overlay, Peers, CIDRs,
//	     │          field paths,            checks,     │      RouterAddresses)
//	 fsnotify       did-you-mean            every error └──▶ lb: LB (lb.Mode, lb.PickerKind,
//	 + SIGHUP                               with field        lb.ProxyOptions, lb.NATOptions)
//	     │                                  path, value       and Services ([]lb.Service)
//	     │               a Node from the API server ──ForNode──▶ *Config (the file tunes the rest)
//	  Watcher ── valid and not Equal to the last one ──▶ apply(*Config)
//	          └─ invalid: one log line, the running config stays
//
// A File is only the parse input: strings, so that validation can name the
// field, the value and what was expected. Parse (Decode, then File.Config)
// turns it straight into the load balancer's own types: there is one
// Service model, lb's, and each load-balancing default is lb's (lb.Default*,
// the zero values of lb's Options), which Parse resolves missing fields to.
// Every problem of a file is reported in one go, each a FieldError with
// its field path and its line and column (position.go: the file is also
// parsed into a YAML node tree for them); ParseFile and Load join them
// into a FileError that prints one compiler-style line per problem.
//
// A source that knows the node (the API server) passes it to File.ForNode
// instead of writing it into the file, whose file is then a tuning file
// without node, peers or services (ParseTuning, LoadTuning); code may
// build a Config as a struct literal where no file describes the router
// (a sidecar).
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
