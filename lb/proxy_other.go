//go:build !unix

package lb

import "net"

// kernelReader reads the backend connection. Off unix it has no
// readiness wait without a buffer: it holds its buffer from the first
// read on, as a plain copy loop does.
type kernelReader struct {
	buf spliceBuf
	c   *net.TCPConn
}

func newKernelReader(buf spliceBuf, c *net.TCPConn) *kernelReader {
	return &kernelReader{buf: buf, c: c}
}

func (r *kernelReader) read() ([]byte, error) {
	b := r.buf.get()
	n, err := r.c.Read(b)
	r.buf.used(n)
	return b[:n], err
}

func (r *kernelReader) close() { r.buf.put() }
