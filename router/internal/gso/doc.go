// Package gso splits TCP super-packets into wire-sized segments (software
// TSO) and merges runs of wire-sized segments back into super-packets
// (software GRO), so that a pod's TCP stream crosses the router as ~64 KiB
// packets with one system call per packet at each end:
//
//	pod kernel ──TUN read, virtio GSO──▶ Segment ──UDP_SEGMENT sendmsg──▶ underlay
//	underlay ──UDP_GRO recvmsg──▶ Coalescer ──TUN write, virtio GSO──▶ pod kernel
//
// It also converts between the two checksum forms virtio_net_hdr uses:
// SetPartial leaves the pseudo-header sum in a TCP checksum field, as
// VIRTIO_NET_HDR_F_NEEDS_CSUM expects, and Complete finishes such a partial
// checksum.
//
// Everything here is a pure function of its input bytes: no I/O, no
// goroutines, no allocations per call. Input is untrusted: malformed packets
// get an error (Segment, SetPartial, Complete) or pass through untouched
// (Coalescer), never a panic. The package never repairs a checksum: a
// segment whose checksum is wrong is never merged, so its receiver still
// drops it.
package gso
