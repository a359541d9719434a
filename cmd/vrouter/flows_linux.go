package main

import "golang.org/x/sys/unix"

// onTmpfs reports whether path is on tmpfs, and whether statfs could
// tell.
func onTmpfs(path string) (tmpfs, known bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, false
	}
	return st.Type == unix.TMPFS_MAGIC, true
}
