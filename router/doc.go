// Package router is vrouter's data path: a gVisor userspace TCP/IP stack
// with two NICs that forwards IP packets between this node's pod subnets and
// every peer node's pod subnets, host-gw style, in userspace.
//
//	node kernel                         router (gVisor stack, forwarding on)
//	pods ─ cni0 ─ routes ──▶ TUN vr0 ──▶ NIC 1 "vr0"      local pod CIDRs
//	 10.244.0.0/16, 10.96.0.0/12 dev vr0 │                 router addresses
//	                                     ▼ route table
//	                                    NIC 2 "overlay0"  10.244.1.0/24 via 192.168.31.202
//	                                     │
//	                                     ▼ overlay link endpoint
//	                    one raw IP packet per UDP datagram, :8285 ◀──▶ peer router
//
// The router owns the stack, both NICs, the route table and the overlay link
// endpoint. It does not create the TUN device (package tun does) nor parse
// config files (package configs does): Set takes the desired state and
// applies only what changed.
//
// The overlay endpoint maps a route's next hop (the peer's underlay address)
// to the peer's UDP address. Inbound datagrams are accepted only from known
// peers' UDP addresses (address and overlay port), and only when the inner
// packet's source lies in that peer's pod CIDRs or is the peer node's own
// address (its kernel answering for a Service endpoint on the node; see
// Config.KernelRoutes). Likewise packets from the TUN are accepted only
// from this node's pod CIDRs and the node kernel's own addresses
// (Config.NodeAddresses), and ICMP errors from anywhere: a pod cannot send
// as another client. Everything refused is counted by reason (Stats),
// never logged per packet.
//
// The overlay endpoint also answers ICMP echo requests from peers for this
// router's overlay identity (the network address of its pod CIDR, the
// source of its ICMP errors), and takes the echo replies Ping awaits
// (ping.go): vrouter ping probes a peer through the overlay that way.
//
// The stack's route table decides where every packet goes; the fast path
// (fastpath.go) keeps those decisions per destination and forwards the
// common packet — unicast, TTL to spare, no IPv4 options, fits the link —
// without handing it to gVisor. Everything else (ICMP errors, packets for
// the router or a proxied Service, IPv4 options) goes through the stack.
// With an offload-capable TUN and overlay socket (offload.go), a pod's TCP
// stream crosses as 64 KiB super-packets: one TUN read, one sendmmsg of
// UDP_SEGMENT datagrams, one UDP_GRO read and one TUN write per 64 KiB.
//
// Both links move batches, whatever the device underneath: tun.Device's
// Read and Write, and Conn's ReadBatch and WriteBatch (a plain packet is a
// batch of one). Each link has one reader goroutine running one loop, and
// every packet takes one path — receive, the hook, fastPath.forward or
// ipLink.inject — whether it is plain or a super-packet. Each reader
// decodes a packet's headers once, into a packet.Parsed that the checks,
// the Hook, the fast path and the coalescer read.
package router
