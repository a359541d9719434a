package router

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vrouter/vrouter/tun"
)

// Busy polling (Options.BusyPoll) trades CPU for round trips. A router
// that waits for packets parks its thread, and each packet of a round trip
// then wakes a thread — on a virtual machine often an idle vCPU, which the
// hypervisor must schedule again — at each of the four hops of a
// pod-to-pod exchange (the sender's TUN, the peer's overlay socket, the
// peer's TUN, the overlay socket back). A busy-polling router reads both
// its TUN and its overlay socket from one goroutine without waiting for as
// long as the window after the last packet it saw, so a packet that comes
// meanwhile is found by a running thread; past the window it waits in
// poll(2) on both descriptors, and costs nothing while idle.

// tunTryReader is a TUN device that can be read without waiting.
type tunTryReader interface {
	TryRead(bufs [][]byte, sizes []int, offs []tun.Offload) (int, error)
	SyscallConn() (syscall.RawConn, error)
}

// connTryReader is an overlay Conn that can be read without waiting.
type connTryReader interface {
	TryReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error)
	Fd(fn func(fd uintptr)) error
}

// busyPollable reports why the router cannot busy-poll its devices, or
// nil when it can.
func (r *Router) busyPollable() error {
	if busyPollOS != nil {
		return busyPollOS
	}
	if _, ok := r.tun.dev.(tunTryReader); !ok {
		return fmt.Errorf("TUN %s cannot be read without waiting (a device opened without offload)", r.tunName)
	}
	if _, ok := r.overlay.conn.(connTryReader); !ok {
		return errors.New("the overlay socket cannot be read without waiting (an encrypted overlay, or not Linux)")
	}
	return nil
}
