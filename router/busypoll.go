package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	if _, ok := r.tun.dev.(tunTryReader); !ok {
		return fmt.Errorf("TUN %s cannot be read without waiting (a device opened without offload)", r.tunName)
	}
	if _, ok := r.overlay.conn.(connTryReader); !ok {
		return errors.New("the overlay socket cannot be read without waiting (an encrypted overlay, or not Linux)")
	}
	return nil
}

// pollTimeout bounds one poll(2) of an idle busy-polling router, so that it
// sees its devices closed.
const pollTimeout = 100 * time.Millisecond

// pollLoop reads the TUN and the overlay socket from one goroutine (see
// Options.BusyPoll) until either is closed. It is run by Router.Run, which
// owns it, in place of the two read loops.
func (r *Router) pollLoop(window time.Duration) error {
	td := r.tun.dev.(tunTryReader)
	oc := r.overlay.conn.(connTryReader)
	var fds [2]unix.PollFd
	rc, err := td.SyscallConn()
	if err != nil {
		return err
	}
	if err := rc.Control(func(fd uintptr) { fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN} }); err != nil {
		return err
	}
	if err := oc.Fd(func(fd uintptr) { fds[1] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN} }); err != nil {
		return err
	}

	k := min(max(1, r.tun.dev.BatchSize()), maxTUNBatch)
	tbufs := make([][]byte, k)
	for i := range tbufs {
		tbufs[i] = make([]byte, maxDatagram)
	}
	tsizes, toffs := make([]int, k), make([]tun.Offload, k)
	obufs := make([][]byte, MaxReadBatch)
	for i := range obufs {
		obufs[i] = make([]byte, MaxSegmentsRead)
	}
	osizes, osegs := make([]int, MaxReadBatch), make([]int, MaxReadBatch)
	from := make([]netip.AddrPort, MaxReadBatch)

	last := time.Now()
	for {
		n, err := td.TryRead(tbufs, tsizes, toffs)
		switch {
		case errors.Is(err, os.ErrClosed):
			return nil
		case errors.Is(err, tun.ErrBadOffload):
			r.tun.drops.add(DropMalformed)
		case err != nil:
			return fmt.Errorf("read TUN %s: %w", r.tunName, err)
		}
		for i := range n {
			r.tun.receive(tbufs[i][:tsizes[i]], toffs[i])
		}
		r.tun.fast.flush()
		m, err := oc.TryReadBatch(obufs, osizes, osegs, from)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read overlay: %w", err)
		}
		if m > 0 {
			r.overlay.receive(obufs[:m], osizes, osegs, from)
		}
		if n+m > 0 {
			last = time.Now()
			continue
		}
		if time.Since(last) < window {
			// Let the rest of the router run on this P, and any
			// other runnable thread on this CPU (the pods the
			// packets are for, among them).
			runtime.Gosched()
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			continue
		}
		// Idle: wait in the kernel for either descriptor, as the
		// read loops wait in Go's poller.
		fds[0].Revents, fds[1].Revents = 0, 0
		ready, err := unix.Poll(fds[:], int(pollTimeout/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll the TUN and the overlay socket: %w", err)
		}
		if ready > 0 {
			last = time.Now() // poll again for a window after this packet
		}
	}
}
