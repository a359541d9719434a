package lb

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/vrouter/vrouter/router/packet"
)

var (
	egPod     = netip.MustParseAddr("10.244.0.4")
	egOutside = netip.MustParseAddr("198.51.100.10")
	egRouter  = netip.MustParseAddr("169.254.244.1")
)

// newTestEgress returns an Egress for the seed's master node (pods
// 10.244.0.0/24; non-masquerade: the cluster and Service CIDRs) whose
// replies go to send, running until the test ends.
func newTestEgress(t testing.TB, opts EgressOptions, services ...Service) *Egress {
	t.Helper()
	table := newTable(t, Options{})
	if err := table.Set(services); err != nil {
		t.Fatal(err)
	}
	if opts.Send == nil {
		opts.Send = func([]byte) bool { return true }
	}
	e, err := NewEgress(table, opts.logger(), opts)
	if err != nil {
		t.Fatalf("NewEgress: %v", err)
	}
	e.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
		[]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
		[]netip.Addr{egRouter})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	// Run has started taking flows once begin succeeds.
	for {
		if _, ok := e.begin(); ok {
			e.wg.Done()
			break
		}
		time.Sleep(time.Millisecond)
	}
	return e
}

// testLogger lets a test observe an Egress's log.
var testLogger *zap.Logger

func (EgressOptions) logger() *zap.Logger { return testLogger }

func egressIngress(t testing.TB, e *Egress, b []byte) bool {
	t.Helper()
	var p packet.Parsed
	if f := p.Decode(b); f != packet.FaultNone {
		t.Fatalf("Decode(%x) = fault %d", b, f)
	}
	pass, reply := e.Ingress(true, &p, b)
	if reply != nil {
		t.Fatalf("Ingress replied %x; Egress answers through Send only", reply)
	}
	return pass
}

func TestEgressClaims(t *testing.T) {
	ext := makeService("default", "ext", func(s *Service) {
		s.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.5")}
	})
	e := newTestEgress(t, EgressOptions{}, ext)
	pod := netip.AddrPortFrom(egPod, 40000)
	for _, tc := range []struct {
		name string
		b    []byte
		pass bool
	}{
		{"pod to an outside address", tcp4(pod, netip.MustParseAddrPort("198.51.100.10:80"), header.TCPFlagSyn, ""), false},
		{"pod to another node", udp4(pod, netip.MustParseAddrPort("192.168.31.202:53"), "q"), false},
		{"pod to a pod", tcp4(pod, netip.MustParseAddrPort("10.244.1.2:80"), header.TCPFlagSyn, ""), true},
		{"pod to a ClusterIP", tcp4(pod, netip.MustParseAddrPort("10.103.92.81:80"), header.TCPFlagSyn, ""), true},
		{"pod to a Service's external IP", tcp4(pod, netip.MustParseAddrPort("203.0.113.5:80"), header.TCPFlagSyn, ""), true},
		{"pod to the router", tcp4(pod, netip.AddrPortFrom(egRouter, 80), header.TCPFlagSyn, ""), true},
		{"pod to a metadata service (IPv4 link-local)", tcp4(pod, netip.MustParseAddrPort("169.254.169.254:80"), header.TCPFlagSyn, ""), false},
		{"pod to a multicast group", udp4(pod, netip.MustParseAddrPort("239.1.1.1:5000"), "x"), true},
		{"pod to the broadcast address", udp4(pod, netip.MustParseAddrPort("255.255.255.255:67"), "x"), true},
		{"the node to an outside address", tcp4(netip.MustParseAddrPort("192.168.31.201:40000"), netip.MustParseAddrPort("198.51.100.10:80"), header.TCPFlagSyn, ""), true},
		{"another node's pod to an outside address", tcp4(netip.MustParseAddrPort("10.244.1.2:40000"), netip.MustParseAddrPort("198.51.100.10:80"), header.TCPFlagSyn, ""), true},
	} {
		if got := egressIngress(t, e, tc.b); got != tc.pass {
			t.Errorf("%s: Ingress pass = %v, want %v", tc.name, got, tc.pass)
		}
	}
	var p packet.Parsed
	b := tcp4(pod, netip.MustParseAddrPort("198.51.100.10:80"), header.TCPFlagSyn, "")
	p.Decode(b)
	if pass, _ := e.Ingress(false, &p, b); !pass {
		t.Errorf("Ingress(from the overlay) of a pod's packet to an outside address = false, want it passed: each node masquerades its own pods")
	}
}

// pipeLink joins a pod's gVisor stack to an Egress: what the pod's stack
// sends is shown to Ingress, and what the Egress sends is delivered to
// the pod's stack, each from a goroutine of its own (as the TUN does),
// so that neither stack re-enters the other. Its channels are never
// closed: done ends the two goroutines, and a send after it (a stack
// still answering a segment as the test ends) is dropped, as a closed
// TUN drops it.
type pipeLink struct {
	toEgress, toPod chan []byte
	done            chan struct{}
	wg              sync.WaitGroup
}

// send queues b on ch unless the link is done.
func (pl *pipeLink) send(ch chan []byte, b []byte) bool {
	select {
	case ch <- append([]byte(nil), b...):
		return true
	case <-pl.done:
		return false
	}
}

// pump hands each packet queued on ch to deliver until the link is done.
func (pl *pipeLink) pump(ch chan []byte, deliver func(*packet.Parsed, []byte)) {
	defer pl.wg.Done()
	for {
		select {
		case b := <-ch:
			var p packet.Parsed
			if p.Decode(b) == packet.FaultNone {
				deliver(&p, b)
			}
		case <-pl.done:
			return
		}
	}
}

func newPod(t *testing.T, opts EgressOptions, services ...Service) (*stack.Stack, *Egress) {
	t.Helper()
	pl := &pipeLink{toEgress: make(chan []byte, 1024), toPod: make(chan []byte, 1024), done: make(chan struct{})}
	podLink := &egressLink{mtu: 1500, send: func(b []byte) bool { return pl.send(pl.toEgress, b) }}
	opts.Send = func(b []byte) bool { return pl.send(pl.toPod, b) }
	e := newTestEgress(t, opts, services...)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := s.CreateNIC(1, podLink); err != nil {
		t.Fatal(err)
	}
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: packet.TCPIPAddr(egPod).WithPrefix()}, stack.AddressProperties{})
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	pl.wg.Add(2)
	go pl.pump(pl.toEgress, func(p *packet.Parsed, b []byte) { e.Ingress(true, p, b) })
	go pl.pump(pl.toPod, podLink.deliver)
	// Runs before the Egress's own cleanup (registered first): the pumps
	// stop, then the pod's stack; what either stack sends after that is
	// dropped.
	t.Cleanup(func() {
		close(pl.done)
		pl.wg.Wait()
		s.Close()
		s.Wait()
	})
	return s, e
}

// TestEgressTCP: a pod's connection to an outside address is terminated
// and spliced to the connection the node dials; a refused dial resets
// the pod's, one without a route answers it with ICMP unreachable.
func TestEgressTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo until the client half-closes
	}()
	var mu sync.Mutex
	var dialed []netip.AddrPort
	dial := func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, dst)
		mu.Unlock()
		switch dst.Port() {
		case 9:
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		case 10:
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	s, e := newPod(t, EgressOptions{Dial: dial})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dst := tcpip.FullAddress{NIC: 1, Addr: packet.TCPIPAddr(egOutside), Port: 80}
	c, err := gonet.DialContextTCP(ctx, s, dst, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("DialContextTCP(%v:80) from the pod: %v", egOutside, err)
	}
	msg := []byte("hello from the pod")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
		t.Errorf("echo through the egress = %q, %v; want %q", got, err, msg)
	}
	// Echoed: the connection is spliced, so registered.
	if fl := e.Flows(); len(fl) != 1 || fl[0].Proto != EgressTCP || fl[0].Dst != netip.AddrPortFrom(egOutside, 80) || fl[0].Pod.Addr() != egPod {
		t.Errorf("Flows() = %+v, want one TCP flow from %v to %v:80", fl, egPod, egOutside)
	}
	c.CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("after the pod's half-close: read %q, %v; want EOF", rest, err)
	}
	c.Close()
	<-srvDone

	for _, tc := range []struct {
		port uint16
		want tcpip.Error
	}{{9, &tcpip.ErrConnectionRefused{}}, {10, &tcpip.ErrHostUnreachable{}}} {
		dst.Port = tc.port
		_, err := gonet.DialContextTCP(ctx, s, dst, ipv4.ProtocolNumber)
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Err.Error() != tc.want.String() {
			t.Errorf("DialContextTCP(%v:%d) from the pod = %v, want %s", egOutside, tc.port, err, tc.want)
		}
	}
	st := e.Stats().Protos[EgressTCP]
	if st.Flows != 1 || st.RefusedConnRefused != 1 || st.RefusedUnreachable != 1 || st.ICMPErrors != 1 {
		t.Errorf("Stats().Protos[tcp] = %+v, want 1 flow, 1 refused, 1 unreachable with its ICMP error", st)
	}
}

// TestEgressServerClosesFirst: an outside server that answers and closes
// first (HTTP's "Connection: close") has the egress stack close the pod's
// connection first too. The stack must neither hold it in TIME_WAIT (a
// new SYN from the same pod port would go unanswered) nor reset it (a
// stray RST through the TUN for every connection): the pod reconnects
// from the same port at once, and the stack sends no RST.
func TestEgressServerClosesFirst(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			if _, err := c.Read(buf); err == nil {
				c.Write([]byte("answer"))
			}
			c.Close()
		}
	}()
	dial := func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	s, e := newPod(t, EgressOptions{Dial: dial})
	const port = 40000
	local := tcpip.FullAddress{Addr: packet.TCPIPAddr(egPod), Port: port}
	remote := tcpip.FullAddress{Addr: packet.TCPIPAddr(egOutside), Port: 80}
	const conns = 3
	for i := range conns {
		c, err := dialFrom(s, local, remote)
		if err != nil {
			t.Fatalf("connection %d from %v:%d: DialTCPWithBind = %v, want it answered at once", i, egPod, port, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET /")); err != nil {
			t.Fatalf("connection %d: write request: %v", i, err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "answer" {
			t.Fatalf("connection %d: read answer = %q, %v; want %q, then EOF", i, got, err, "answer")
		}
		c.Close()
		eventually(t, "the connection ended in the egress", func() bool { return e.Stats().Protos[EgressTCP].Active == 0 })
	}
	eventually(t, "no connection left in the egress stack", func() bool {
		return e.stack.Stats().TCP.CurrentConnected.Value() == 0
	})
	if st := e.Stats().Protos[EgressTCP]; st.Flows != conns {
		t.Errorf("Stats().Protos[tcp].Flows = %d, want %d", st.Flows, conns)
	}
	if n := e.stack.Stats().TCP.ResetsSent.Value(); n != 0 {
		t.Errorf("the egress stack sent %d RSTs for %d connections closed cleanly, want none", n, conns)
	}
}

// fakePing is a ping socket that echoes every request as a reply with
// the identifier the kernel would have put in (its own).
type fakePing struct {
	replies chan []byte
	closed  chan struct{}
	once    sync.Once
}

func (f *fakePing) WriteTo(b []byte, to net.Addr) (int, error) {
	r := append([]byte(nil), b...)
	ic := header.ICMPv4(r)
	ic.SetType(header.ICMPv4EchoReply)
	ic.SetIdent(4242) // the socket's
	select {
	case f.replies <- r:
	case <-f.closed:
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (f *fakePing) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case r := <-f.replies:
		return copy(b, r), &net.UDPAddr{IP: egOutside.AsSlice()}, nil
	case <-f.closed:
		return 0, nil, net.ErrClosed
	}
}

func (f *fakePing) Close() error { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakePing) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 168, 31, 201), Port: 4242}
}
func (f *fakePing) SetDeadline(time.Time) error      { return nil }
func (f *fakePing) SetReadDeadline(time.Time) error  { return nil }
func (f *fakePing) SetWriteDeadline(time.Time) error { return nil }

func echoRequest(src, dst netip.Addr, id, seq uint16) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+4)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: packet.TCPIPAddr(src), DstAddr: packet.TCPIPAddr(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(b[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(id)
	ic.SetSequence(seq)
	copy(ic[header.ICMPv4MinimumSize:], "ping")
	ic.SetChecksum(header.ICMPv4Checksum(ic, 0))
	return b
}

func TestEgressPing(t *testing.T) {
	sent := make(chan []byte, 4)
	e := newTestEgress(t, EgressOptions{
		Send: func(b []byte) bool { sent <- append([]byte(nil), b...); return true },
		ListenPing: func(bool) (net.PacketConn, error) {
			return &fakePing{replies: make(chan []byte, 4), closed: make(chan struct{})}, nil
		},
	})
	if egressIngress(t, e, echoRequest(egPod, egOutside, 7, 1)) {
		t.Fatal("Ingress passed a pod's echo request to an outside address")
	}
	var b []byte
	select {
	case b = <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply sent to the pod")
	}
	ip := header.IPv4(b)
	ic := header.ICMPv4(ip.Payload())
	src, dst := packet.NetipAddr(ip.SourceAddress()), packet.NetipAddr(ip.DestinationAddress())
	if !ip.IsChecksumValid() || src != egOutside || dst != egPod || ic.Type() != header.ICMPv4EchoReply ||
		ic.Ident() != 7 || ic.Sequence() != 1 || ic.Checksum() != header.ICMPv4Checksum(ic, 0) {
		t.Errorf("reply %v -> %v type %d id %d seq %d (checksums ok: ip %v), want an echo reply %v -> %v id 7 seq 1 with valid checksums",
			src, dst, ic.Type(), ic.Ident(), ic.Sequence(), ip.IsChecksumValid(), egOutside, egPod)
	}
	if st := e.Stats().Protos[EgressICMP]; st.Flows != 1 || st.Active != 1 {
		t.Errorf("Stats().Protos[icmp] = %+v, want 1 flow open", st)
	}
}

func TestEgressPingUnavailable(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	testLogger = zap.New(core)
	defer func() { testLogger = nil }()
	e := newTestEgress(t, EgressOptions{
		ListenPing: func(bool) (net.PacketConn, error) { return nil, syscall.EACCES },
	})
	for seq := range uint16(3) {
		egressIngress(t, e, echoRequest(egPod, egOutside, 7, seq))
	}
	if st := e.Stats(); st.PingUnavailable != 3 || st.Protos[EgressICMP].Active != 0 {
		t.Errorf("Stats() = %+v, want 3 pings unavailable and no flow", st)
	}
	if n := logs.Len(); n != 1 {
		t.Errorf("%d warnings logged, want 1: %v", n, logs.All())
	}
}

func TestEgressCapsPerPod(t *testing.T) {
	e := newTestEgress(t, EgressOptions{MaxFlows: 10, MaxFlowsPerPod: 1,
		ListenPing: func(bool) (net.PacketConn, error) {
			return &fakePing{replies: make(chan []byte, 4), closed: make(chan struct{})}, nil
		}})
	egressIngress(t, e, echoRequest(egPod, egOutside, 1, 1))
	egressIngress(t, e, echoRequest(egPod, egOutside, 2, 1)) // a second flow of the same pod
	egressIngress(t, e, echoRequest(netip.MustParseAddr("10.244.0.5"), egOutside, 1, 1))
	if st := e.Stats().Protos[EgressICMP]; st.Flows != 2 || st.RefusedCap != 1 {
		t.Errorf("Stats().Protos[icmp] = %+v, want 2 flows and 1 refused by the per-pod cap", st)
	}
}

func TestICMPUnreachableQuotesTheSYN(t *testing.T) {
	pod, dst := netip.MustParseAddrPort("10.244.0.4:40000"), netip.MustParseAddrPort("198.51.100.10:80")
	var l4 [8]byte
	l4[0], l4[1], l4[2], l4[3] = 0x9c, 0x40, 0, 80
	l4[4], l4[5], l4[6], l4[7] = 0xde, 0xad, 0xbe, 0xef
	b := icmpUnreachable(pod.Addr(), dst.Addr(), packet.TCP, l4[:], header.ICMPv4HostUnreachable)
	var p packet.Parsed
	if f := p.Decode(b); f != packet.FaultNone || p.Src != dst.Addr() || p.Dst != pod.Addr() {
		t.Fatalf("Decode = %d, %v -> %v, want an ICMP error %v -> %v", f, p.Src, p.Dst, dst.Addr(), pod.Addr())
	}
	ic := header.ICMPv4(b[p.L4:])
	if ic.Type() != header.ICMPv4DstUnreachable || ic.Code() != header.ICMPv4HostUnreachable || ic.Checksum() != header.ICMPv4Checksum(ic, 0) {
		t.Errorf("ICMP type %d code %d, want destination unreachable, host, with a valid checksum", ic.Type(), ic.Code())
	}
	var q packet.Parsed
	if !q.DecodeQuoted(ic.Payload()) || q.SrcAddrPort() != pod || q.DstAddrPort() != dst || q.Proto != packet.TCP {
		t.Errorf("quoted packet %v -> %v proto %d, want %v -> %v TCP", q.SrcAddrPort(), q.DstAddrPort(), q.Proto, pod, dst)
	}
	if seq := header.TCP(ic.Payload()[header.IPv4MinimumSize:]).SequenceNumber(); seq != 0xdeadbeef {
		t.Errorf("quoted sequence number %#x, want %#x", seq, 0xdeadbeef)
	}
}

// TestEgressCompletesSingleSegmentChecksum: a host-GSO packet that holds
// one segment leaves as a plain packet, its partial checksum (the
// pseudo-header sum gVisor leaves) completed.
func TestEgressCompletesSingleSegmentChecksum(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.51.100.10:80"), netip.MustParseAddrPort("10.244.0.4:40000")
	b := tcp4(src, dst, header.TCPFlagAck, "one segment of payload")
	tc := header.TCP(b[header.IPv4MinimumSize:])
	want := tc.Checksum()
	tc.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, packet.TCPIPAddr(src.Addr()), packet.TCPIPAddr(dst.Addr()), uint16(len(tc))))
	if got := tcpPayloadOffset(b); got != header.IPv4MinimumSize+header.TCPMinimumSize {
		t.Errorf("tcpPayloadOffset = %d, want %d", got, header.IPv4MinimumSize+header.TCPMinimumSize)
	}
	completeTCPChecksum(b)
	if got := tc.Checksum(); got != want {
		t.Errorf("completeTCPChecksum: checksum %#04x, want %#04x", got, want)
	}
}
