//go:build unix

package lb

import (
	"io"
	"net"
	"os"
	"syscall"
)

// kernelReader reads the backend connection, a kernel socket, through
// its syscall.RawConn: the runtime's poller waits for readability with
// no buffer, and a buffer is taken only to read into. A read that finds
// nothing (EAGAIN) gives it back before the poller waits again: the
// same system calls as net.TCPConn.Read, without holding a buffer while
// idle.
type kernelReader struct {
	buf spliceBuf
	rc  syscall.RawConn
	err error // from SyscallConn: every read returns it

	// readFD's results; fill is readFD, bound once so that read does
	// not allocate a closure per call.
	fill func(fd uintptr) bool
	b    []byte
	n    int
	rerr error
}

func newKernelReader(buf spliceBuf, c *net.TCPConn) *kernelReader {
	r := &kernelReader{buf: buf}
	r.rc, r.err = c.SyscallConn()
	r.fill = r.readFD
	return r
}

func (r *kernelReader) read() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.n, r.rerr = 0, nil
	if err := r.rc.Read(r.fill); err != nil {
		return nil, err // closed (shut), most likely
	}
	switch {
	case r.rerr != nil:
		return nil, os.NewSyscallError("read", r.rerr)
	case r.n == 0:
		return nil, io.EOF
	}
	return r.b[:r.n], nil
}

// readFD reads fd into the buffer and reports whether it got anything
// other than EAGAIN; on EAGAIN it gives the buffer back, and the poller
// waits for readability and calls it again.
func (r *kernelReader) readFD(fd uintptr) bool {
	b := r.buf.get()
	for {
		n, err := syscall.Read(int(fd), b)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.buf.put()
			return false
		}
		r.b, r.n, r.rerr = b, max(n, 0), err
		r.buf.used(r.n)
		return true
	}
}

func (r *kernelReader) close() { r.buf.put() }
