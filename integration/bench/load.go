//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// The Service loads: wrk (endpoints.go) in one namespace loads
// my-service two ways — its ClusterIP from httpClientPod, and its node
// port on masterNode's underlay address from outsideClient — and the
// egress server from a pod:
//
//   - new connections: every request on a new connection with
//     "Connection: close"; the server closes after answering, so its
//     side holds TIME_WAIT and the client's ports are reusable. Rate =
//     requests answered per second; every one is a new connection
//     through the Service (a new conntrack entry / NAT flow / proxied or
//     relayed connection).
//   - keep-alive: each connection sends its requests one after the
//     other on it.

var (
	keepAliveRequest = []byte("GET / HTTP/1.1\r\nHost: my-service\r\n\r\n")
	okStatus         = []byte("HTTP/1.1 200 ")
)

// loadTarget is one way to load a server.
type loadTarget struct {
	name string         // metric prefix: <name>_close_per_s, <name>_keepalive_per_s, …
	from string         // the namespace the generator runs in
	addr netip.AddrPort // what it dials
	// servers are the namespaces of the nginx processes that answer,
	// whose CPU is reported.
	servers []string
}

var (
	clusterIPLoad = loadTarget{"http", httpClientPod, myService, httpBackends}
	nodePortLoad  = loadTarget{"nodeport", outsideClient, masterNodePort, httpBackends}
)

// keepAliveExchange sends one request and reads one response with a
// Content-Length body.
func keepAliveExchange(conn net.Conn, br *bufio.Reader) error {
	if _, err := conn.Write(keepAliveRequest); err != nil {
		return err
	}
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, okStatus) {
		return fmt.Errorf("status line %q: want %q", status, okStatus)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return fmt.Errorf("Content-Length %q: %w", v, err)
			}
		}
	}
	if length < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = br.Discard(length)
	return err
}
