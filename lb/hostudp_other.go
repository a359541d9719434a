//go:build !unix

package lb

import "net"

// datagramReader reads a connected UDP socket's datagrams. Off unix it
// has no readiness wait without a buffer: it holds one from the first
// read on.
type datagramReader struct {
	c *net.UDPConn
	b []byte
}

func newDatagramReader(c *net.UDPConn) *datagramReader { return &datagramReader{c: c} }

func (r *datagramReader) read() ([]byte, error) {
	if r.b == nil {
		r.b = make([]byte, maxDatagram)
	}
	n, err := r.c.Read(r.b)
	return r.b[:n], err
}

func (r *datagramReader) close() {}
