//go:build !linux

package lb

import "os"

// allocate allocates the blocks of n bytes of f from off by writing
// zeros there, so that writes through a mapping cannot fault for want of
// space. The range holds no record yet.
func allocate(f *os.File, off, n int64) error {
	zeros := make([]byte, min(n, 1<<16))
	for n > 0 {
		w, err := f.WriteAt(zeros[:min(n, int64(len(zeros)))], off)
		if err != nil {
			return err
		}
		off += int64(w)
		n -= int64(w)
	}
	return nil
}
