// Package tun owns the TUN device that joins the node kernel to the router:
// creating it (Open), adopting one a privileged helper opened (Adopt), and
// the little kernel state vrouter needs around it: the device's MTU,
// addresses, up state and the routes that send the cluster and service
// CIDRs into it (Configure, SyncRoutes). It never runs ip(8); all of that
// goes through netlink.
//
// Its piece of the data path:
//
//	pod ──cni0── node kernel                         vrouter process
//	             │ route 10.244.0.0/16 dev vr0       │
//	             │ route 10.96.0.0/12  dev vr0       │
//	             │ (proto 118, see RouteProtocol)    │
//	             ▼                                   │
//	       ┌──────────┐  one raw IP packet per       │
//	       │ TUN vr0  │  read/write, IFF_NO_PI  ┌────┴──────────────┐
//	       │ 10.244.  │ ◀─────── Write ──────── │ tun.Device        │
//	       │  0.0/32  │ ──────── Read ────────▶ │  → router's gVisor│
//	       └──────────┘                         │    stack (NIC tun)│
//	     kernel side: /dev/net/tun              └───────────────────┘
//
// Read returns what the kernel routed into vr0 (pod → remote pod, pod →
// ClusterIP); Write hands the kernel what the router delivers to this node
// (replies, packets for local pods). Everything beyond the device (the
// stack, the overlay, load balancing) belongs to package router and lb.
//
// Read and Write move batches of packets, each with its offload metadata.
// With Options.Offload (or an adopted descriptor opened with
// IFF_VNET_HDR) the Device's Offload is true: every packet crosses with a
// virtio_net_hdr, and the kernel hands over a TCP stream as super-packets
// of up to 64 KiB with partial checksums (TSO) and takes such packets back:
// one system call per 64 KiB instead of per MTU-sized packet.
//
// Devices from Open and Adopt are non-blocking descriptors registered with
// Go's poller, so Close unblocks a pending Read. They also implement
// syscall.Conn, for callers that want the raw descriptor (gVisor's
// link/fdbased); such callers must keep the Device open while they use it.
//
// Package tuntest has an in-memory Device for tests that need no privileges.
package tun
