package lb

import (
	"net"
	"net/netip"
)

// Binder opens the host sockets that node ports, external IPs and
// health-check node ports are served on. KernelBinder opens them in the
// process's own network namespace; a rootless router inside a user and
// network namespace of its own can take them from a helper in the parent
// namespace instead, so that they answer on the host's addresses.
//
// A Binder is called from the reconciler, never on the packet path. The
// caller owns the socket it returns and closes it.
type Binder interface {
	// ListenTCP returns a listening TCP socket bound to addr.
	ListenTCP(addr netip.AddrPort) (*net.TCPListener, error)
	// ListenUDP returns a UDP socket bound to addr.
	ListenUDP(addr netip.AddrPort) (*net.UDPConn, error)
}

// KernelBinder is the Binder of the process's own network namespace.
type KernelBinder struct{}

// ListenTCP implements Binder.
func (KernelBinder) ListenTCP(addr netip.AddrPort) (*net.TCPListener, error) {
	return net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
}

// ListenUDP implements Binder.
func (KernelBinder) ListenUDP(addr netip.AddrPort) (*net.UDPConn, error) {
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
}
