// Package topology builds the seed's Kubernetes cluster out of Linux
// network namespaces on one machine, and tears it down again: the
// reference topology that `vrouter demo`, the integration tests and the
// kernel-vs-vrouter benchmarks run on.
//
// It owns namespaces, links, addresses and the optional kernel host-gw
// routes, plus helpers that act inside the namespaces (Do, Command, Ping,
// echo and HTTP servers and clients). It knows nothing about vrouter: a
// test starts a router in each node namespace with Do or Command.
//
// # Layout
//
// Build(Seed()) makes these namespaces, each named Prefix+short name
// (Prefix defaults to "vrt-<6 hex>-"):
//
//	netns "underlay"                          192.168.31.0/24, no addresses
//	  br0 ─┬─ veth0 ─────────────┐
//	       └─ veth1 ───────────┐ │
//	                           │ │
//	netns "hostgw-master"      │ └─ eth0 192.168.31.201/24
//	  net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1
//	  cni0 10.244.0.1/24 ─┬─ veth0 ── netns "nginx-th5pz"   eth0 10.244.0.4/24
//	                      ├─ veth1 ── netns "coredns-xx6mc" eth0 10.244.0.2/24
//	                      └─ veth2 ── netns "coredns-8qxfv" eth0 10.244.0.3/24
//	                           │
//	netns "hostgw-node"        └─── eth0 192.168.31.202/24
//	  cni0 10.244.1.1/24 ─┬─ veth0 ── netns "nginx-4k7xw"   eth0 10.244.1.2/24
//	                      └─ veth1 ── netns "nginx-j6zwk"   eth0 10.244.1.3/24
//
// Address plan (Seed; ThreeNodes adds hostgw-node2 192.168.31.203,
// 10.244.2.0/24, pod busybox 10.244.2.2; SeedDualStack adds IPv6):
//
//	underlay        192.168.31.0/24    fd00:192:168:31::/64
//	hostgw-master   192.168.31.201     fd00:192:168:31::201   pods 10.244.0.0/24  fd00:10:244:0::/64
//	hostgw-node     192.168.31.202     fd00:192:168:31::202   pods 10.244.1.0/24  fd00:10:244:1::/64
//	cni0 (gateway)  first host address of each pod CIDR: 10.244.0.1, fd00:10:244:0::1
//	pods            nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3,
//	                nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
// Only connected routes exist, plus each pod's default route via its
// cni0 address (as the CNI bridge plugin sets up): pods reach pods on the
// same node, nodes reach nodes, and nothing crosses nodes until
// InstallKernelHostGW adds flannel's host-gw routes or a vrouter does the
// job. IPv6 duplicate address detection is off in every namespace, and
// Build returns only once every link is operationally up, so the first
// packet after Build is not lost. No interface is created in, and no
// packet leaves to, the caller's own namespace. Port names (vethN) are short and carry an alias naming
// the node or pod behind them (`ip -d link` shows it).
//
// # Namespaces, threads and names
//
// Every namespace operation runs on a fresh goroutine locked to its OS
// thread: namespaces are created by unshare(2) on a thread that is then
// thrown away, and Do enters a namespace with setns(2), runs the
// function, and unlocks the thread only after switching it back, so no
// other goroutine ever runs in the wrong namespace. Links are configured
// through an rtnetlink socket opened inside each namespace.
//
// Namespaces are bind-mounted in Spec.NetnsDir (default /run/netns, where
// `ip netns` looks), so a human can `ip netns exec vrt-3fa2c1-hostgw-node
// ip route` while a test runs. Close deletes them; Cleanup(prefix) deletes
// what a crashed run left behind.
//
// # Rootless
//
// Build also works for a process that is root only inside its own user
// namespace (`unshare -Urnm`, rootlesskit, or a re-exec with
// CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET and uid/gid maps): veths,
// bridges, addresses, routes, raw ICMP sockets and /proc/sys/net writes
// all work in network namespaces that user namespace owns. What changes is
// naming, chosen when Build starts:
//
//   - NetnsDir writable (real root, or a directory the user owns): named
//     namespaces as above.
//   - Not writable, but the process's user namespace owns its mount
//     namespace (unshare -Urnm): Build mounts a tmpfs on NetnsDir, visible
//     only in that mount namespace, and names namespaces there. NetnsDir
//     must already exist. `ip netns exec` works from inside that mount
//     namespace; the tmpfs, and with it any leftovers, vanish with it.
//   - Otherwise (no private mount namespace, read-only file system):
//     namespaces stay unnamed, held open by this process's file
//     descriptors; NetnsDir reports "", Path returns /proc/PID/fd/FD, and
//     the namespaces disappear when the process exits, so there is
//     nothing to clean up after a crash.
//
// Command (nsenter) and everything else work in all three modes. What
// does not work rootless is anything needing the real root namespace,
// which this package never touches anyway.
//
// # As a library
//
// This is not test-only code: `vrouter demo` and integration/bench import
// it, and a namespace test of your own (of vrouter, of a CNI setup, of
// anything that routes between pods and nodes) can start from it. Package
// integration/lab is the supported way to do that with a vrouter on every
// node (lab.New); this package is the layer below, for a cluster without
// routers or with routers of your own:
//
//	func TestAcrossNodes(t *testing.T) {
//		c := topology.BuildT(t, topology.Seed()) // skips t if it cannot; closed when t ends
//		srv, err := c.ServeTCPEcho("nginx-4k7xw", "10.244.1.2:0")
//		if err != nil {
//			t.Fatal(err)
//		}
//		// ... start a router in each node with Do or Command (see package harness), then:
//		rep, err := c.TCPExchange(t.Context(), "nginx-th5pz", srv.Addr(), []byte("hello"))
//		// rep.Server == "nginx-4k7xw"; rep.Client is the address the server saw.
//	}
//
// It offers the Spec (Seed, ThreeNodes, SeedDualStack, or your own,
// checked by Validate), Build and BuildT with Close and Cleanup, Do and
// Command to act inside a namespace, Ping, TCP/UDP echo and HTTP servers
// that answer with their identity and the client address they saw
// (ServeTCPEcho, ServeUDPEcho, ServeHTTP, and the clients TCPExchange,
// UDPExchange, HTTPGet), and InstallKernelHostGW for the kernel's own
// host-gw routes as a baseline.
//
// It needs Linux, nsenter (util-linux) for Command, and the right to
// create network namespaces and configure links in them: root
// (CAP_SYS_ADMIN for unshare and the bind mounts, CAP_NET_ADMIN for
// links, addresses and routes), or root inside a user namespace of its
// own (Rootless above). CanBuild says what is missing; BuildT skips the
// test with that reason. Off Linux the package builds but holds only the
// Spec and its presets.
//
// It is versioned with vrouter and carries no compatibility promise of its
// own: exported names change when the tests, the demo or the benchmark
// need them to, so pin the vrouter version you import. The Seed address
// plan above is the part that holds still: the README, the demo and the
// tests all quote it.
package topology
