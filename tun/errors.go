package tun

import "errors"

// Errors that Open, OpenQueues, Adopt, Configure, SyncRoutes and Device's
// Read and Write wrap, for errors.Is. The message around them says
// what failed and what to do about it; the system call's errno is wrapped
// too (errors.Is(err, os.ErrPermission) also holds).
var (
	// ErrNoDevice: the kernel has no TUN support here: /dev/net/tun is
	// missing or its driver is not loaded.
	ErrNoDevice = errors.New("TUN support unavailable")
	// ErrPermission: this process may not open /dev/net/tun, create (or
	// attach to) the interface or change its addresses and routes: it
	// lacks CAP_NET_ADMIN in the network namespace, or a persistent TUN of
	// that name belongs to another user.
	ErrPermission = errors.New("permission denied")
	// ErrBusy: the name is taken: by a TUN another process holds open, by
	// an interface of another kind, or by a TUN whose multiqueue setting
	// differs.
	ErrBusy = errors.New("interface name in use")
	// ErrNotTUN: a descriptor given to Adopt is not a TUN vrouter can use:
	// not a TUN at all, a TAP, not attached to an interface, or a TUN that
	// frames packets with a packet-information header.
	ErrNotTUN = errors.New("not a usable TUN descriptor")
	// ErrOffloadRefused: the kernel refused TUNSETOFFLOAD
	// (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6), or the header setup around it,
	// on a device opened or adopted with a virtio-net header. Open
	// without Options.Offload instead.
	ErrOffloadRefused = errors.New("TUN offloads refused")
	// ErrBadOffload: a packet's offload metadata is unusable: a
	// virtio_net_hdr read that is malformed or does not fit its packet
	// (the packet is consumed; count it as a drop), or an Offload given to
	// Write that cannot describe its packet or that the device does not
	// take.
	ErrBadOffload = errors.New("bad virtio_net_hdr")
)
