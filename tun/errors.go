package tun

import "errors"

// Errors that Open, OpenQueues, Adopt, Configure and SyncRoutes wrap, for
// errors.Is. The message
// around them says what failed and what to do about it; the system call's
// errno is wrapped too (errors.Is(err, os.ErrPermission) also holds).
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
	// frames packets with a packet-information or virtio-net header.
	ErrNotTUN = errors.New("not a usable TUN descriptor")
)
