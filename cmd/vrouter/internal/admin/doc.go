// Package admin is vrouter's local admin API and its client: JSON over HTTP
// on a unix socket that only root (the socket's owner) can open, read by
// the status commands (`vrouter status`, `routes`, `services`, `conns`,
// `peers`, `ping`, `log-level`, `capture`).
//
//	vrouter routes ──▶ Client ──unix socket /run/vrouter/vr0.netns-<inode>.sock──▶ Server
//	                                                                             ├─ GET /v1/status     Options.Process, Router, lb.Table, host sockets, drops, overlay
//	                                                                             ├─ GET /v1/routes     Router.Routes, Stats, Config
//	                                                                             ├─ GET /v1/peers      Router.Config, Stats, wireguard.Conn.Peers (sessions)
//	                                                                             ├─ GET /v1/services   lb.Table
//	                                                                             ├─ GET|DELETE /v1/conns  lb.NAT.EachFlow|DeleteFlows, lb.Proxy.Conns|ResetConns
//	                                                                             ├─ GET /v1/ping       Router.Ping, probe by probe
//	                                                                             ├─ GET|PUT /v1/log-level
//	                                                                             └─ GET /v1/capture    Router.StartCapture → pcap stream
//
// Everything is read on request from the data path's own state; the
// server keeps none. Its package also formats the answers for the
// terminal (format.go), so that the text the commands print is tested
// here, next to the JSON it comes from.
package admin
