// Package lab is vrouter's namespace lab as a library: a Kubernetes-like
// cluster in Linux network namespaces on one machine, with one
// `vrouter run` per node, made for a test and removed when it ends. It is
// for namespace tests of vrouter and of what runs on a pod network (a CNI
// setup, a proxy, an application's failover), in vrouter's own tests and in
// other modules.
//
//	lab.New(t, topology.Seed(), lab.Options{Config: harness.ConfigOptions{Services: ...}})
//
//	  netns underlay  br0 192.168.31.0/24
//	   ├─ Node("hostgw-master")  eth0 .201 ── vrouter run ── vr0
//	   │    cni0 10.244.0.1/24 ─ Pod("nginx-th5pz") 10.244.0.4, Pod("coredns-xx6mc") .2, Pod("coredns-8qxfv") .3
//	   └─ Node("hostgw-node")    eth0 .202 ── vrouter run ── vr0
//	        cni0 10.244.1.1/24 ─ Pod("nginx-4k7xw") 10.244.1.2, Pod("nginx-j6zwk") .3
//
//	  t.TempDir()/NODE/NODE.yaml   each router's config (harness.WriteConfig), live-reloaded
//	             NODE.log          its output; printed when the test fails
//	             NODE.sock         its admin socket (Node.Vrouter runs `vrouter status` etc. on it)
//
// New builds the namespaces (package topology), writes each node's config
// from the spec (package harness: every other node a peer, the Services of
// Options.Config), starts the routers and waits until they are up. The test
// then acts inside any namespace through Node and Pod: Exec a command,
// Ping, TCP, UDP and HTTP clients, and echo and HTTP servers that answer
// with their own name and the client address they saw (topology.Reply).
// When the test ends, t.Cleanup stops the routers, then removes every
// namespace and file.
//
// # What it needs
//
// Linux; root, or root in a user namespace of its own (`unshare -Urnm`,
// with /dev/net/tun mode 0666, see docs/operations.md); and nsenter from
// util-linux. Without the privileges New skips the test, saying why. It
// also needs a vrouter binary: Options.Vrouter, else $VROUTER_BIN, else
// one New builds from the module with `go build` (BuildVrouter), shared by
// the Labs of the test binary that are alive at once. A path that does not
// name an executable fails the test with what to do.
//
// # Promise
//
// This package is the supported entry point, and its own namespace tests
// hold it to this documentation: its exported API is meant to stay, and
// grows by additions. Pin the vrouter version you import, as for any v0
// module. It exposes the Specs of package topology and the ConfigOptions
// of package harness; those two packages stay importable for what a Lab
// does not cover (Lab.Cluster is the way down) but carry no promise of
// their own. docs/lab.md is the guide.
package lab
