package main

import "golang.org/x/sys/unix"

// setSubreaper makes this process the reaper of its descendants' orphans
// (PR_SET_CHILD_SUBREAPER).
func setSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}
