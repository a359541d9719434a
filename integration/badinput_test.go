package integration

// TestBadOverlayInput sends hostgw-master's router datagrams no router
// should forward, and checks that it forwards none of them, stays up, and
// does not log per packet:
//
//	underlay br0 192.168.31.0/24
//	 │  + 192.168.31.250/24 on br0: a stranger on the underlay, no peer
//	 │        └─ sends a well-formed packet 10.244.1.99 -> 10.244.0.4:9000
//	 ├─ hostgw-master eth0 .201  vrouter :8285 (--log-level debug)  ◀── every datagram
//	 │     nginx-th5pz 10.244.0.4  UDP sink :9000: records every datagram it gets
//	 └─ hostgw-node   eth0 .202  vrouter :8285
//	       a raw socket sends datagrams from 192.168.31.202:8285 (the peer's
//	       endpoint, as its router would; see peerSender):
//	         an empty datagram, garbage, a truncated IPv4 header, headers
//	         claiming more bytes than sent or fewer than the header, a bad
//	         header checksum, an inner source in hostgw-master's own pod CIDR
//	         (10.244.0.99, spoofed) or on the underlay, an IPv6 packet, a
//	         packet over the tunnel MTU, a packet with TTL 1, and 1,000
//	         datagrams of seeded random junk
//	       a UDP socket on 192.168.31.202, another port: a well-formed
//	         packet (the peer's address, not its router's socket)
//
// Then the raw socket sends a well-formed packet 10.244.1.99:5555 ->
// 10.244.0.4:9000 ("control"): it must arrive, with its source intact, and
// be the only thing that does. The overlay socket is read in order, so
// once the control packet is through, everything sent before it has been
// dealt with.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestBadOverlayInput(t *testing.T) {
	e := newEnv(t, "badin", topology.Seed(), harness.ConfigOptions{})
	e.logLevel = "debug"
	e.startAll()
	e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)

	sink := e.udpSink(nginxTh5pz, 9000)
	target := netip.AddrPortFrom(underlay(masterNode), harness.OverlayPort)
	legitSrc := netip.MustParseAddrPort("10.244.1.99:5555") // in hostgw-node's pod CIDR
	spoofSrc := netip.MustParseAddrPort("10.244.0.99:5555") // in hostgw-master's own
	dst := sink.addr
	fromPeer := e.peerSender(workerNode, target)
	otherPort := e.udpSocket(workerNode, netip.AddrPortFrom(underlay(workerNode), 0))
	stranger := netip.MustParseAddr("192.168.31.250")
	e.addAddr(topology.UnderlayNS, topology.UnderlayBridge, netip.PrefixFrom(stranger, 24))
	fromStranger := e.udpSocket(topology.UnderlayNS, netip.AddrPortFrom(stranger, 0))
	logBefore := e.logLines(masterNode)

	good := ipv4UDP(legitSrc, dst, 64, []byte("would be fine from a peer"))
	badChecksum := ipv4UDP(legitSrc, dst, 64, []byte("bad header checksum"))
	badChecksum[10] ^= 0xff
	claimsMore := ipv4UDP(legitSrc, dst, 64, []byte("total length says more"))
	binary.BigEndian.PutUint16(claimsMore[2:], uint16(len(claimsMore)+100))
	claimsLess := ipv4UDP(legitSrc, dst, 64, []byte("total length below the header"))
	binary.BigEndian.PutUint16(claimsLess[2:], 12)
	badIHL := ipv4UDP(legitSrc, dst, 64, []byte("IHL 3"))
	badIHL[0] = 0x43
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"garbage", []byte("\xff not an IP packet at all, just bytes")},
		{"truncated IPv4 header", good[:12]},
		{"total length beyond the datagram", claimsMore},
		{"total length below the header", claimsLess},
		{"header length below 20", badIHL},
		{"bad header checksum", badChecksum},
		{"spoofed source in the receiver's pod CIDR", ipv4UDP(spoofSrc, dst, 64, []byte("spoofed: 10.244.0.99"))},
		// The peer's own node address is a source it may use (its kernel
		// answering for a host-network Service endpoint); another address
		// on the underlay is not.
		{"another source on the underlay", ipv4UDP(netip.AddrPortFrom(stranger, 5555), dst, 64, []byte("spoofed: underlay"))},
		{"IPv6 to an IPv4-only router", ipv6UDP(netip.MustParseAddrPort("[fd00:10:244:1::99]:5555"), netip.MustParseAddrPort("[fd00:10:244::4]:9000"), []byte("ipv6"))},
		{"over the tunnel MTU", ipv4UDP(legitSrc, dst, 64, make([]byte, 1472-28+1))},
		{"TTL 1", ipv4UDP(legitSrc, dst, 1, []byte("ttl 1: time exceeded, not forwarded"))},
	}
	for _, c := range cases {
		if err := fromPeer.send(c.b); err != nil {
			t.Fatalf("send %s: %v", c.name, err)
		}
	}
	if _, err := fromStranger.WriteToUDPAddrPort(good, target); err != nil {
		t.Fatalf("send from %v: %v", stranger, err)
	}
	if _, err := otherPort.WriteToUDPAddrPort(good, target); err != nil {
		t.Fatalf("send from %v: %v", otherPort.LocalAddr(), err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		if err := fromPeer.send(junk(rng, i, legitSrc, dst)); err != nil {
			t.Fatalf("send junk datagram %d: %v", i, err)
		}
	}

	// The control packet, sent again until it arrives: the overlay
	// socket's buffer may have overflowed with junk.
	control := ipv4UDP(legitSrc, dst, 64, []byte("control"))
	eventually(t, 5*time.Second, "control packet from the peer reaches nginx-th5pz", func() error {
		if err := fromPeer.send(control); err != nil {
			return err
		}
		if !slices.ContainsFunc(sink.received(), func(s string) bool { return strings.HasPrefix(s, "control ") }) {
			return fmt.Errorf("sink got %q", sink.received())
		}
		return nil
	})
	// One more round trip across the nodes for good measure, then check.
	e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)
	for _, got := range sink.received() {
		if got != "control from "+legitSrc.String() {
			t.Errorf("nginx-th5pz's UDP sink received %q; want only %q", got, "control from "+legitSrc.String())
		}
	}

	for _, n := range []string{masterNode, workerNode} {
		if e.router(n).Exited() {
			t.Errorf("router on %s exited", n)
		}
	}
	e.mustPing(nginxTh5pz.name, nginxJ6zwk.addr, ttlAcrossNodes)
	added := e.logLines(masterNode) - logBefore
	t.Logf("router log of %s grew by %d lines", masterNode, added)
	if added >= 20 {
		t.Errorf("router log of %s grew by %d lines for %d bad datagrams, want no per-packet lines (< 20)", masterNode, added, len(cases)+1002)
	}
}

// TestBadTransportHeaders sends packets whose IP header is fine but whose
// TCP, UDP or ICMP header is broken, one at a time, into each router's two
// receive paths, and checks after each that the router is still up and
// still forwards:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter
//	 │     nginx-th5pz 10.244.0.4  raw socket ─▶ cni0 ─▶ vr0 (TUN path), to 10.244.1.2
//	 └─ hostgw-node   eth0 .202  vrouter
//	       a raw socket: 192.168.31.202:8285 ═▶ hostgw-master :8285 (overlay
//	       path, as the peer's router sends), inner 10.244.1.99 -> 10.244.0.4
//
// Any pod can send such packets (a raw socket needs only CAP_NET_RAW, which
// pods have by default), so a router that trusts these headers can be
// crashed from any pod. A router that dies is reported with its panic and
// restarted for the next case.
func TestBadTransportHeaders(t *testing.T) {
	e := newEnv(t, "badhdr", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)

	target := netip.AddrPortFrom(underlay(masterNode), harness.OverlayPort)
	fromPeer := e.peerSender(workerNode, target)
	raw := e.rawSocket(nginxTh5pz.name)

	type path struct {
		name     string
		src, dst netip.Addr
		send     func(b []byte) error
	}
	paths := []path{
		{"overlay", netip.MustParseAddr("10.244.1.99"), nginxTh5pz.addr, fromPeer.send},
		{"tun", nginxTh5pz.addr, nginx4k7xw.addr, func(b []byte) error {
			return unix.Sendto(raw, b, 0, &unix.SockaddrInet4{Addr: nginx4k7xw.addr.As4()})
		}},
	}
	cases := []struct {
		name  string
		proto byte
		l4    []byte
	}{
		{"TCP data offset 15 in a 20-byte segment", 6, tcpHeader(5555, 80, 15, nil)},
		{"TCP data offset 6 in a 20-byte segment", 6, tcpHeader(5555, 80, 6, nil)},
		{"TCP data offset 2", 6, tcpHeader(5555, 80, 2, nil)},
		{"TCP header cut at 10 bytes", 6, tcpHeader(5555, 80, 5, nil)[:10]},
		{"UDP length 200 in a 16-byte datagram", 17, udpHeader(5555, 9000, 200, []byte("udp-len!"))},
		{"UDP length 4", 17, udpHeader(5555, 9000, 4, []byte("udp-len!"))},
		{"UDP header cut at 3 bytes", 17, []byte{0x15, 0xb3, 0x23}},
		{"ICMP cut at 3 bytes", 1, []byte{8, 0, 0}},
		{"ICMP error quoting a cut IP header", 1, []byte{3, 3, 0, 0, 0, 0, 0, 0, 0x4f, 0, 0}},
		{"ICMP error quoting TCP data offset 15", 1, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, ipv4Proto(nginx4k7xw.addr, nginxTh5pz.addr, 6, tcpHeader(80, 5555, 15, nil))...)},
	}
	for _, p := range paths {
		for _, c := range cases {
			pkt := ipv4Proto(p.src, p.dst, c.proto, c.l4)
			if err := p.send(pkt); err != nil {
				t.Fatalf("%s: send %s: %v", p.name, c.name, err)
			}
			// A round trip across both routers, or the router's exit, is
			// the verdict.
			r := e.router(masterNode)
			eventually(t, 5*time.Second, fmt.Sprintf("after %s on the %s path, the router on %s answers or exits", c.name, p.name, masterNode), func() error {
				if r.Exited() {
					return nil
				}
				return e.reachable(nginx4k7xw.name, nginxTh5pz.addr)
			})
			if !r.Exited() {
				continue
			}
			t.Errorf("%s path: %s (%x): the router on %s died: %s", p.name, c.name, pkt, masterNode, e.logPanic(masterNode))
			e.start(masterNode)
		}
	}
	e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)
}

// TestForwardingKeepsChecksums sends UDP datagrams with a wrong UDP
// checksum across the nodes, on both receive paths of the routers, and
// checks that they reach the destination pod unchanged, so that its kernel
// drops them: a router forwards transport headers as they are and must not
// mend a corrupt datagram into a valid one.
//
//	hostgw-node   nginx-4k7xw 10.244.1.2  raw socket ─▶ vr0 ─▶ router (TUN path) ═╗
//	              raw socket: 192.168.31.202:8285 ══ inner 10.244.1.99 (overlay path) ═╣
//	hostgw-master router ─▶ vr0 ─▶ cni0 ─▶ nginx-th5pz 10.244.0.4 UDP sink :9001   ◀═╝
func TestForwardingKeepsChecksums(t *testing.T) {
	e := newEnv(t, "csum", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	sink := e.udpSink(nginxTh5pz, 9001)
	target := netip.AddrPortFrom(underlay(masterNode), harness.OverlayPort)
	fromPeer := e.peerSender(workerNode, target)
	raw := e.rawSocket(nginx4k7xw.name)

	paths := []struct {
		name string
		src  netip.AddrPort
		send func(b []byte) error
	}{
		{"overlay", netip.MustParseAddrPort("10.244.1.99:5555"), fromPeer.send},
		{"tun", netip.AddrPortFrom(nginx4k7xw.addr, 5556), func(b []byte) error {
			return unix.Sendto(raw, b, 0, &unix.SockaddrInet4{Addr: sink.addr.Addr().As4()})
		}},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			corrupt := ipv4UDP(p.src, sink.addr, 64, []byte(p.name+": wrong UDP checksum"))
			corrupt[20+6] ^= 0x5a
			if err := p.send(corrupt); err != nil {
				t.Fatal(err)
			}
			good := fmt.Sprintf("%s: control from %s", p.name, p.src)
			eventually(t, 5*time.Second, "the control datagram arrives", func() error {
				if err := p.send(ipv4UDP(p.src, sink.addr, 64, []byte(p.name+": control"))); err != nil {
					return err
				}
				if !slices.Contains(sink.received(), good) {
					return fmt.Errorf("sink got %q", sink.received())
				}
				return nil
			})
			e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)
			bad := fmt.Sprintf("%s: wrong UDP checksum from %s", p.name, p.src)
			if slices.Contains(sink.received(), bad) {
				t.Errorf("a UDP datagram with a wrong checksum, forwarded across the nodes on the %s path, reached the pod's socket: a router must not repair checksums; sink got %q", p.name, sink.received())
			}
		})
	}
}

// logPanic returns the panic message and the first frames of its stack
// from node's router log, or a note that there is none.
func (e *env) logPanic(nodeName string) string {
	b, err := os.ReadFile(e.logPath(nodeName))
	if err != nil {
		return err.Error()
	}
	i := bytes.LastIndex(b, []byte("panic: "))
	if i < 0 {
		return "no panic in its log"
	}
	lines := strings.SplitN(string(b[i:]), "\n", 8)
	return strings.Join(lines[:min(len(lines), 7)], "\n")
}

// rawSocket opens a raw IPv4 socket (IP_HDRINCL: the caller writes the IP
// header; the kernel fills in its checksum) in namespace ns, closed when
// the test ends.
func (e *env) rawSocket(ns string) int {
	e.t.Helper()
	fd := -1
	err := e.c.Do(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		e.t.Fatalf("%s: raw socket: %v", ns, err)
	}
	e.t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// peerSender sends overlay datagrams to the router at to as the router of
// node ns sends them: from the node's underlay address and the overlay
// port. That router holds the port, so a socket of the test cannot bind
// it, and a datagram from another port is refused as not from the peer;
// the datagrams are built here (UDP in IPv4, with its checksum) and sent
// through a raw socket in the node's namespace, in fragments of the
// underlay MTU as the node's kernel would send a larger one.
type peerSender struct {
	fd       int
	from, to netip.AddrPort
	id       uint16
}

// underlayMTU is the MTU of the nodes' eth0.
const underlayMTU = 1500

func (e *env) peerSender(ns string, to netip.AddrPort) *peerSender {
	e.t.Helper()
	return &peerSender{fd: e.rawSocket(ns), from: netip.AddrPortFrom(underlay(ns), harness.OverlayPort), to: to}
}

// send sends inner as the payload of one overlay datagram.
func (s *peerSender) send(inner []byte) error {
	pkt := ipv4UDP(s.from, s.to, 64, inner)
	s.id++
	if s.id == 0 {
		s.id = 1 // zero asks the kernel for one, and fragments must share theirs
	}
	binary.BigEndian.PutUint16(pkt[4:], s.id)
	binary.BigEndian.PutUint16(pkt[10:], 0)
	binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
	to := &unix.SockaddrInet4{Addr: s.to.Addr().As4()}
	if len(pkt) <= underlayMTU {
		return unix.Sendto(s.fd, pkt, 0, to)
	}
	hdr, payload := pkt[:20], pkt[20:]
	const chunk = (underlayMTU - 20) &^ 7 // fragment offsets count 8 bytes
	for off := 0; off < len(payload); off += chunk {
		n := min(chunk, len(payload)-off)
		frag := append(append([]byte(nil), hdr...), payload[off:off+n]...)
		binary.BigEndian.PutUint16(frag[2:], uint16(len(frag)))
		fo := uint16(off / 8)
		if off+n < len(payload) {
			fo |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(frag[6:], fo)
		binary.BigEndian.PutUint16(frag[10:], 0)
		binary.BigEndian.PutUint16(frag[10:], ipChecksum(frag[:20]))
		if err := unix.Sendto(s.fd, frag, 0, to); err != nil {
			return fmt.Errorf("send fragment at %d of %d bytes: %w", off, len(payload), err)
		}
	}
	return nil
}

// junk is datagram i of the random junk: fully random bytes, or random
// bytes that start like an IPv4 or IPv6 header, or a packet from a valid
// source whose header checksum is broken after random bytes are written
// over it.
func junk(rng *rand.Rand, i int, src, dst netip.AddrPort) []byte {
	b := make([]byte, rng.IntN(1600))
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	switch i % 4 {
	case 1:
		if len(b) > 0 {
			b[0] = 0x45
		}
	case 2:
		if len(b) > 0 {
			b[0] = 0x60
		}
	case 3:
		b = ipv4UDP(src, dst, 64, b[:min(len(b), 1400)])
		// Scramble some bytes, then make sure the header checksum is
		// wrong so that the stack must drop it, however lucky the dice.
		for range 4 {
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		}
		if ipChecksum(b[:20]) == 0 {
			b[10] ^= 0x01
		}
	}
	return b
}

// ipv4UDP builds an IPv4 packet carrying one UDP datagram, with valid
// checksums.
func ipv4UDP(src, dst netip.AddrPort, ttl uint8, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = ttl
	b[9] = 17 // UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 17, byte(len(u)>>8), byte(len(u)))
	sum := ipChecksum(append(pseudo, u...))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], sum)
	return b
}

// ipv4Proto builds an IPv4 packet with a valid header carrying payload as
// protocol proto.
func ipv4Proto(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ipChecksum(b[:20]))
	copy(b[20:], payload)
	return b
}

// tcpHeader builds a 20-byte TCP SYN header claiming dataOffset 32-bit
// words of header, followed by payload.
func tcpHeader(srcPort, dstPort uint16, dataOffset byte, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	binary.BigEndian.PutUint32(b[4:], 1)
	b[12] = dataOffset << 4
	b[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(b[14:], 65535)
	return append(b, payload...)
}

// udpHeader builds a UDP header whose length field says length, followed
// by payload; the checksum is left zero (none).
func udpHeader(srcPort, dstPort, length uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	binary.BigEndian.PutUint16(b[4:], length)
	return append(b, payload...)
}

// ipv6UDP builds an IPv6 packet carrying one UDP datagram (checksum left
// zero: the router must refuse it before anything looks at it).
func ipv6UDP(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 48+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b[6] = 17 // UDP
	b[7] = 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	binary.BigEndian.PutUint16(b[40:], src.Port())
	binary.BigEndian.PutUint16(b[42:], dst.Port())
	binary.BigEndian.PutUint16(b[44:], uint16(8+len(payload)))
	copy(b[48:], payload)
	return b
}

// ipChecksum is the Internet checksum of b (RFC 1071); over a header with
// its checksum field filled in, it is 0 when that checksum is right.
func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udpSink records every datagram a pod receives on one port as
// "<payload> from <source>".
type udpSink struct {
	addr netip.AddrPort
	conn *net.UDPConn
	wg   sync.WaitGroup
	mu   sync.Mutex // guards got
	got  []string
}

// udpSink starts a udpSink on pod p's address and port, stopped when the
// test ends.
func (e *env) udpSink(p pod, port uint16) *udpSink {
	e.t.Helper()
	s := &udpSink{addr: netip.AddrPortFrom(p.addr, port)}
	s.conn = e.udpSocket(p.name, s.addr)
	s.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := s.conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, fmt.Sprintf("%s from %s", buf[:n], from))
			s.mu.Unlock()
		}
	})
	e.t.Cleanup(func() {
		s.conn.Close()
		s.wg.Wait()
	})
	return s
}

// received returns what the sink has recorded so far.
func (s *udpSink) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// udpSocket opens a UDP socket bound to local in namespace ns, closed when
// the test ends.
func (e *env) udpSocket(ns string, local netip.AddrPort) *net.UDPConn {
	e.t.Helper()
	return listenUDPIn(e.t, e.c, ns, local)
}

// listenUDPIn opens an unconnected UDP socket bound to local in namespace
// ns of c, closed when t ends.
func listenUDPIn(t *testing.T, c *topology.Cluster, ns string, local netip.AddrPort) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := c.Do(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(local))
		return err
	})
	if err != nil {
		t.Fatalf("%s: listen udp %v: %v", ns, local, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// addAddr adds prefix to link in namespace ns.
func (e *env) addAddr(ns, link string, prefix netip.Prefix) {
	e.t.Helper()
	err := e.c.Do(ns, func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)}})
	})
	if err != nil {
		e.t.Fatalf("%s: add %v to %s: %v", ns, prefix, link, err)
	}
}
