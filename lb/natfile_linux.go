package lb

import (
	"os"

	"golang.org/x/sys/unix"
)

// allocate allocates the blocks (tmpfs: the pages) of n bytes of f from
// off, so that writes there through a mapping cannot fault for want of
// space: fallocate.
func allocate(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), 0, off, n)
}
