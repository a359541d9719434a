//go:build linux

package main

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// inNetns runs fn on the calling goroutine, locked to its OS thread, with
// that thread moved into the network namespace at path; sockets fn
// creates belong to that namespace (Go creates a socket on the goroutine
// that dials, and a locked goroutine resumes on its own thread after
// waiting). The thread moves back afterwards and is unlocked only if that
// worked; otherwise it dies with the goroutine. Use it only on goroutines
// that end after it returns.
//
// Unlike topology.Cluster.Do, which enters a namespace for one call, this
// lets a load-generating worker dial thousands of connections without
// two setns(2) calls and a fresh goroutine each.
func inNetns(path string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer unix.Close(orig)
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	err = unix.Setns(target, unix.CLONE_NEWNET)
	unix.Close(target)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	defer func() {
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// workers runs fn(i) for i in [0, n), each on its own goroutine inside
// the namespace at path, and returns when all have returned, with the
// first error.
func workers(path string, n int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for i := range n {
		wg.Go(func() {
			err := inNetns(path, func() error { return fn(i) })
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}
