//go:build !linux

package router

import "net"

// newUDPConn makes c the overlay socket on a platform without
// conn_linux.go's recvmmsg, UDP_GRO and UDP_SEGMENT: a stdConn, one
// datagram per system call. The router drives it as any Conn: it forwards
// the same packets, more slowly.
func newUDPConn(c *net.UDPConn, network string) (Conn, error) {
	return newStdConn(c), nil
}
