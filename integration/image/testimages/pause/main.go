package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 {
		// The kubelet never passes arguments; Kubernetes' pause prints its
		// version with -v, which a test has no use for.
		fmt.Fprintf(os.Stderr, "pause: unexpected arguments %q\n", os.Args[1:])
		os.Exit(2)
	}
	// Take the signals first: unhandled, SIGTERM would end the process as
	// killed (status 143 instead of 0), and SIGCHLD is when to reap. A
	// closed stdout must not end it either.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	signal.Ignore(syscall.SIGPIPE)
	// Not fatal: reaping orphans of descendants is for when pause is not
	// PID 1 (as PID 1 it gets every orphan anyway).
	_ = setSubreaper()
	reap() // children that exited before Notify
	// The one line pause writes says from when on SIGTERM stops it
	// cleanly; tests wait for it.
	fmt.Println("pause: waiting for SIGTERM or SIGINT")
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap waits for every child that has exited. Signals coalesce, so one
// SIGCHLD may stand for several children.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
