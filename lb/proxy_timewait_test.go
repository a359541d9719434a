package lb

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/vrouter/vrouter/router/packet"
)

// answerAndClose is an HTTP server answering "Connection: close": it
// reads the request, answers and closes first, so the proxy passes the
// close on and its client connection ends in TIME_WAIT.
func answerAndClose(b *testBackend, c *net.TCPConn) {
	buf := make([]byte, 64)
	if _, err := c.Read(buf); err != nil {
		return
	}
	c.Write([]byte(b.name))
}

// TestProxyReusedClientPort reconnects from the client port of a
// connection the backend closed first, at once, as a client's kernel does
// when it picks that port again (the client closed second and holds no
// TIME_WAIT). The new SYN must be answered: gVisor drops a SYN that hits
// a TIME_WAIT connection unless a listener takes it, and the proxy has
// none (see noTimeWait).
func TestProxyReusedClientPort(t *testing.T) {
	b := newBackend(t, "b", "127.0.0.1", answerAndClose)
	e := startProxy(t, ProxyOptions{}, proxyService([]Endpoint{b.endpoint()}))
	const port = 40000
	local := tcpip.FullAddress{Addr: packet.TCPIPAddr(proxyClientAddr), Port: port}
	remote := tcpip.FullAddress{Addr: packet.TCPIPAddr(proxyVIP.Addr()), Port: proxyVIP.Port()}
	for i := range 3 {
		c, err := dialFrom(e.client, local, remote)
		if err != nil {
			t.Fatalf("connection %d from %v:%d: DialTCPWithBind = %v, want it answered at once", i, proxyClientAddr, port, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET /")); err != nil {
			t.Fatalf("connection %d: write request: %v", i, err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "b" {
			t.Fatalf("connection %d: read answer = %q, %v; want %q, then EOF", i, got, err, "b")
		}
		c.Close()
		eventually(t, "the connection ended in the proxy", func() bool { return e.p.Stats().Active == 0 })
	}
	if st := e.p.Stats(); st.Conns != 3 || st.HandshakeFailures != 0 {
		t.Errorf("Stats() = %+v, want 3 conns, no handshake failures", st)
	}
	// Released, not reset: no connection left in TIME_WAIT, and no RST
	// sent to the client for a connection both sides closed.
	eventually(t, "no connection left in the proxy's stack", func() bool {
		return e.server.Stats().TCP.CurrentConnected.Value() == 0
	})
	if n := e.server.Stats().TCP.ResetsSent.Value(); n != 0 {
		t.Errorf("the proxy's stack sent %d RSTs for 3 connections closed cleanly, want none", n)
	}
}

// dialFrom connects from local to remote, waiting (up to 2 s) while the
// client stack still holds local for the connection just closed, as a
// client's kernel would pick another port meanwhile. Each attempt gives
// the SYN well under the client's first retransmission (1 s): a dropped
// SYN fails it.
func dialFrom(s *stack.Stack, local, remote tcpip.FullAddress) (*gonet.TCPConn, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 900*time.Millisecond)
		c, err := gonet.DialTCPWithBind(ctx, s, local, remote, ipv4.ProtocolNumber)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "port is in use") || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
