package lb

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// udpBackend is a loopback UDP server that answers each datagram with
// "<name> <payload>".
type udpBackend struct {
	name string
	conn *net.UDPConn
	wg   sync.WaitGroup
}

func newUDPBackend(t testing.TB, name, addr string) *udpBackend {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
	if err != nil {
		t.Fatalf("listen udp on %s: %v", addr, err)
	}
	b := &udpBackend{name: name, conn: c}
	b.wg.Go(func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(name+" "+string(buf[:n])), from)
		}
	})
	t.Cleanup(func() {
		c.Close()
		b.wg.Wait()
	})
	return b
}

func (b *udpBackend) addrPort() netip.AddrPort { return b.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// endpoint is b as a Service endpoint with named port "p".
func (b *udpBackend) endpoint() Endpoint {
	return Endpoint{Addr: b.addrPort().Addr(), Ports: []EndpointPort{{Name: "p", Port: b.addrPort().Port()}}, Ready: true, Serving: true}
}

// udpService is default/dns with node port 30053/UDP to each endpoint's
// port "p".
func udpService(eps []Endpoint, mutate ...func(*Service)) Service {
	s := Service{
		Namespace:  "default",
		Name:       "dns",
		Type:       TypeNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.53")},
		Ports:      []ServicePort{{Name: "dns", Port: 53, Proto: UDP, TargetPortName: "p", NodePort: 30053}},
		Endpoints:  eps,
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

// udpClient is a test client socket.
type udpClient struct {
	t    testing.TB
	conn *net.UDPConn
}

func newUDPClient(t testing.TB) *udpClient {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{t: t, conn: c}
}

// ask sends msg to to and returns the reply and where it came from.
func (c *udpClient) ask(to netip.AddrPort, msg string) (string, netip.AddrPort, error) {
	if _, err := c.conn.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		return "", netip.AddrPort{}, err
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, maxDatagram)
	n, from, err := c.conn.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), from, err
}

// mustAsk asks and expects an answer from one of the backends named, from
// the address asked.
func (c *udpClient) mustAsk(to netip.AddrPort, msg string) (backend string) {
	c.t.Helper()
	got, from, err := c.ask(to, msg)
	if err != nil {
		c.t.Fatalf("ask %v %q: %v", to, msg, err)
	}
	name, payload, _ := strings.Cut(got, " ")
	if payload != msg {
		c.t.Fatalf("ask %v %q: reply %q, want \"<backend> %s\"", to, msg, got, msg)
	}
	if from != to {
		c.t.Errorf("ask %v %q: reply from %v, want from %v (the address asked)", to, msg, from, to)
	}
	return name
}

// startRelay runs a udpRelay for key on 127.0.0.1:0; cleanup closes it
// and waits for it.
func startRelay(t *testing.T, table *Table, key ServiceKey, limit LimiterOptions, timeout time.Duration) (*udpRelay, netip.AddrPort) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLimiter(limit)
	if err != nil {
		t.Fatal(err)
	}
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	r := &udpRelay{
		key: key, conn: conn, local: local, table: table, limit: l, log: zap.NewNop(), timeout: timeout,
		cnt: new(hostCounters), idleClosed: new(atomic.Uint64), idleTotal: new(atomic.Uint64),
		flows: make(map[netip.AddrPort]*udpFlow),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run()
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		if n := r.activeFlows(); n != 0 {
			t.Errorf("%d flows left after the relay closed, want 0", n)
		}
		if got := l.Stats().Active; got != 0 {
			t.Errorf("limiter active = %d after the relay closed, want 0", got)
		}
	})
	return r, local
}

func TestUDPRelay(t *testing.T) {
	b1 := newUDPBackend(t, "b1", "127.0.0.1")
	b2 := newUDPBackend(t, "b2", "127.0.0.2")
	table := newTable(t, Options{Picker: PickRoundRobin})
	mustSet(t, table, udpService([]Endpoint{b1.endpoint(), b2.endpoint()}))
	key := NodePortKey(30053, UDP, true)
	r, to := startRelay(t, table, key, LimiterOptions{}, time.Hour)

	c1, c2 := newUDPClient(t), newUDPClient(t)
	if got := c1.mustAsk(to, "one"); got != "b1" {
		t.Errorf("first client answered by %s, want b1 (round-robin)", got)
	}
	if got := c2.mustAsk(to, "two"); got != "b2" {
		t.Errorf("second client answered by %s, want b2 (round-robin)", got)
	}
	// A flow sticks to its backend.
	for i := range 3 {
		if got := c1.mustAsk(to, "again"); got != "b1" {
			t.Errorf("first client's datagram %d answered by %s, want b1 (its flow's)", i, got)
		}
	}
	if got, n := r.cnt.conns.Load(), r.activeFlows(); got != 2 || n != 2 {
		t.Errorf("flows total %d, active %d; want 2 and 2", got, n)
	}
	entry := mustLookup(t, table, key)
	if got := entry.Backends()[0].Active(); got != 1 {
		t.Errorf("b1's active count = %d with one flow, want 1", got)
	}

	// b1 leaves: its flow ends at the sync, and the client's next
	// datagram goes to b2.
	mustSet(t, table, udpService([]Endpoint{b2.endpoint()}))
	r.sync()
	if n := r.activeFlows(); n != 1 {
		t.Errorf("%d flows after b1 left and sync, want 1 (b2's)", n)
	}
	if got := entry.Backends()[0].Active(); got != 0 {
		t.Errorf("b1's active count = %d after its flow ended, want 0", got)
	}
	if got := c1.mustAsk(to, "moved"); got != "b2" {
		t.Errorf("first client after b1 left answered by %s, want b2", got)
	}

	// Idle flows end at the timeout, not before.
	now := time.Now().UnixNano()
	r.sweep(now + int64(time.Minute))
	if n := r.activeFlows(); n != 2 {
		t.Errorf("%d flows after a sweep within the timeout, want 2", n)
	}
	r.sweep(now + int64(time.Hour))
	if n, idle := r.activeFlows(), r.idleClosed.Load(); n != 0 || idle != 2 {
		t.Errorf("after a sweep past the timeout: %d flows, %d idle closed; want 0 and 2", n, idle)
	}
	if got := c1.mustAsk(to, "fresh flow"); got != "b2" {
		t.Errorf("after the timeout answered by %s, want b2", got)
	}
}

// TestUDPRelayDrops: datagrams that no flow can take are dropped and
// counted by reason.
func TestUDPRelayDrops(t *testing.T) {
	b1 := newUDPBackend(t, "b1", "127.0.0.1")
	local := func(e Endpoint) Endpoint { e.NodeName = "here"; return e }
	table := newTable(t, Options{NodeName: "here"})
	mustSet(t, table, udpService(nil))
	key := NodePortKey(30053, UDP, true)
	r, to := startRelay(t, table, key, LimiterOptions{Max: 1}, time.Hour)
	c := newUDPClient(t)
	send := func(msg string) {
		if _, err := c.conn.WriteToUDPAddrPort([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
	}

	send("no endpoints")
	eventually(t, "a drop for no endpoints counted", func() bool { return r.cnt.refusedNoEP.Load() == 1 })

	elsewhere := b1.endpoint()
	elsewhere.NodeName = "there"
	mustSet(t, table, udpService([]Endpoint{elsewhere}, func(s *Service) { s.ExternalTrafficPolicy = PolicyLocal }))
	send("no local endpoints")
	eventually(t, "a drop for no local endpoints counted", func() bool { return r.cnt.refusedNoLocalEP.Load() == 1 })

	// Local endpoints only: the local one serves, up to the cap.
	mustSet(t, table, udpService([]Endpoint{local(b1.endpoint()), elsewhere}, func(s *Service) { s.ExternalTrafficPolicy = PolicyLocal }))
	r.sync()
	if got := c.mustAsk(to, "local"); got != "b1" {
		t.Errorf("answered by %s, want b1 (the local endpoint)", got)
	}
	other := newUDPClient(t)
	if _, err := other.conn.WriteToUDPAddrPort([]byte("over the cap"), to); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a drop by the cap counted", func() bool { return r.cnt.refusedCap.Load() == 1 })
	if got := r.cnt.conns.Load(); got != 1 {
		t.Errorf("flows = %d, want 1", got)
	}
}

// TestUDPRelayBackendGone: a flow whose backend's port closed ends at its
// socket's ICMP error, and the next datagram picks again.
func TestUDPRelayBackendGone(t *testing.T) {
	b1 := newUDPBackend(t, "b1", "127.0.0.1")
	table := newTable(t, Options{})
	mustSet(t, table, udpService([]Endpoint{b1.endpoint()}))
	r, to := startRelay(t, table, NodePortKey(30053, UDP, true), LimiterOptions{}, time.Hour)
	c := newUDPClient(t)
	c.mustAsk(to, "hello")
	b1.conn.Close()
	b1.wg.Wait()
	c.conn.WriteToUDPAddrPort([]byte("into the void"), to)
	eventually(t, "the flow to a closed port ends", func() bool { return r.activeFlows() == 0 })
}
