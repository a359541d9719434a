package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/tun"
)

// busyPollOS is nil: Linux has poll(2) and sched_yield(2).
var busyPollOS error

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
