//go:build unix

package lb

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// datagramBufs are the buffers replies are read into, taken only while a
// datagram is ready, so an idle flow holds none.
var datagramBufs = sync.Pool{New: func() any { return new([maxDatagram]byte) }}

// datagramReader reads a connected UDP socket's datagrams through its
// syscall.RawConn, as kernelReader reads a TCP socket: the runtime's
// poller waits for readability with no buffer, and a buffer is taken
// only to read into. It is used by one goroutine.
type datagramReader struct {
	rc  syscall.RawConn
	err error // from SyscallConn: every read returns it
	b   *[maxDatagram]byte

	fill func(fd uintptr) bool
	n    int
	rerr error
}

func newDatagramReader(c *net.UDPConn) *datagramReader {
	r := &datagramReader{}
	r.rc, r.err = c.SyscallConn()
	r.fill = r.readFD
	return r
}

// read waits for a datagram and returns it, valid until the next call
// (which gives its buffer back first).
func (r *datagramReader) read() ([]byte, error) {
	r.put()
	if r.err != nil {
		return nil, r.err
	}
	r.n, r.rerr = 0, nil
	if err := r.rc.Read(r.fill); err != nil {
		return nil, err
	}
	if r.rerr != nil {
		r.put()
		return nil, os.NewSyscallError("read", r.rerr)
	}
	return r.b[:r.n], nil
}

func (r *datagramReader) readFD(fd uintptr) bool {
	if r.b == nil {
		r.b = datagramBufs.Get().(*[maxDatagram]byte)
	}
	for {
		n, err := syscall.Read(int(fd), r.b[:])
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.put()
			return false
		}
		r.n, r.rerr = max(n, 0), err
		return true
	}
}

func (r *datagramReader) put() {
	if r.b != nil {
		datagramBufs.Put(r.b)
		r.b = nil
	}
}

// close gives back the buffer (not the socket).
func (r *datagramReader) close() { r.put() }
