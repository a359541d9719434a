// Package harness runs vrouter processes on a topology.Cluster: it writes
// each node's config file from the cluster's spec, starts one
// `vrouter run` per node inside the node's network namespace, waits until it
// is up, and stops or restarts it. The demo command and the namespace tests
// in integration/ share it, so the demo shows exactly what the tests check.
//
//	topology.Spec ──WriteConfig──▶ DIR/NODE.yaml   (NodeFile, checked with configs.Load;
//	                                 │              every other node a peer, overlay :8285)
//	topology.Cluster ──StartRouter──▶ nsenter --net=<node's netns> -- BIN run --config DIR/NODE.yaml
//	                                  output appended to a log file; ready (Ready) when
//	                                  TUN vr0 is up and the overlay port is bound
//	Router.Stop                      SIGTERM, then SIGKILL after 10 s
//	(our process dies)               the kernel sends the router SIGTERM (ParentDeathSignal)
//
// It is a library, not test-only code: `vrouter demo` and
// integration/bench import it, and a namespace test of your own can put
// vrouter on a topology with it. It offers NodeFile and WriteConfig (a
// valid config per node, shaped by ConfigOptions), SeedServices (the
// seed's two Services with their endpoints), Router: StartRouter,
// Launch and WaitReady, Ready, Signal, Stop, and the binary: BuildVrouter
// (go build of the module's command) and CheckVrouter (a path that names
// no executable is an error saying how to get one). Package
// integration/lab puts these together for a test, and is the supported
// entry point.
//
// It needs a vrouter binary (make build writes bin/vrouter) and what
// topology needs: Linux, nsenter, and root or root inside a user
// namespace of its own; the router then creates its TUN device with
// CAP_NET_ADMIN in the node's namespace. Off Linux only the config side
// (NodeFile, WriteConfig, SeedServices) builds.
//
// Like topology it is versioned with vrouter and carries no compatibility
// promise of its own: pin the vrouter version you import.
package harness
