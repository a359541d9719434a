//go:build linux

package main

import "runtime"

// spawner runs functions on one OS thread that lives until stop.
//
// Long-lived children (the routers, iperf3 servers) are started with
// Pdeathsig, which the kernel sends when the *thread* that forked the
// child exits, not the process. topology.Build ends threads on purpose
// (each namespace is made on a locked thread that is thrown away), and
// the Go runtime may have forked from a thread that a later Build locks
// and discards: building the second cluster would then kill the first
// cluster's routers. Forking from this thread, which nothing else runs
// on and which outlives every child, avoids that.
type spawner struct {
	reqs chan func()
	done chan struct{}
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread() // never unlocked: nothing else runs here
		defer close(s.done)
		for fn := range s.reqs {
			fn()
		}
	}()
	return s
}

// do runs fn on the spawner's thread and waits for it.
func (s *spawner) do(fn func() error) error {
	errc := make(chan error, 1)
	s.reqs <- func() { errc <- fn() }
	return <-errc
}

// stop ends the thread; call it after every child it started has exited.
func (s *spawner) stop() {
	close(s.reqs)
	<-s.done
}
