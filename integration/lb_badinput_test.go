package integration

// Bad input to the nat mode data path: malformed packets to Service VIPs,
// from a pod through the node kernel, straight into the router's TUN, and
// over the overlay from a peer's address; then a SYN flood past the
// per-client flow cap.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32, router 169.254.244.1
//	 │    │  AF_PACKET socket on vr0: arbitrary bytes into the router ─┐
//	 │    nginx-th5pz 10.244.0.4    TCP echo :80                      │
//	 │    coredns-xx6mc 10.244.0.2  UDP echo :53; client              ▼ TUN reader
//	 │    coredns-8qxfv 10.244.0.3  raw socket: malformed packets, the SYN flood
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32
//	      │  raw socket: UDP 192.168.31.202:8285 → .201:8285 around a bad
//	      │  inner packet (the overlay format, from the peer's address) ─▶ overlay reader
//	      nginx-4k7xw 10.244.1.2    TCP echo :80; client of crafted UDP
//	      nginx-j6zwk 10.244.1.3    TCP echo :80
//
//	default/my-service    10.103.92.81:80/TCP  -> 10.244.0.4, 10.244.1.2, 10.244.1.3
//	kube-system/kube-dns  10.96.0.10:53/UDP    -> 10.244.0.2, 10.244.0.3
//
// The config file has no knob for the NAT's flow caps (lb.NATOptions
// MaxTCP, MaxUDP, MaxPerClient; `vrouter run` uses the defaults 131072,
// 131072 and 16384), so the flood sends more SYNs than one client's cap.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
)

// defaultMaxPerClient is lb.NATOptions' default MaxPerClient, which `vrouter
// run` uses: the flows one client address may have per protocol.
const defaultMaxPerClient = 16384

// Packet building. Only what the tests need: IPv4 with TCP, UDP or
// anything as payload, checksums right unless a test breaks them.

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

// ipv4Packet returns an IPv4 header (20 bytes, TTL 64, DF clear, checksum
// set) followed by payload.
func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	copy(b[20:], payload)
	fixIPChecksum(b)
	return b
}

// fixIPChecksum recomputes the IPv4 header checksum of b.
func fixIPChecksum(b []byte) {
	ihl := int(b[0]&0xf) * 4
	if ihl < 20 || ihl > len(b) {
		ihl = 20
	}
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], ^onesSum(b[:ihl], 0))
}

// onesSum is the 16-bit ones' complement sum of b, added to initial.
func onesSum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// l4Checksum is the TCP or UDP checksum of seg between src and dst.
func l4Checksum(src, dst netip.Addr, proto byte, seg []byte) uint16 {
	s4, d4 := src.As4(), dst.As4()
	pseudo := uint32(binary.BigEndian.Uint16(s4[:2])) + uint32(binary.BigEndian.Uint16(s4[2:])) +
		uint32(binary.BigEndian.Uint16(d4[:2])) + uint32(binary.BigEndian.Uint16(d4[2:])) +
		uint32(proto) + uint32(len(seg))
	return ^onesSum(seg, pseudo)
}

// tcpSYN returns an IPv4 TCP SYN from src to dst.
func tcpSYN(src, dst netip.AddrPort, seq uint32) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint32(seg[4:], seq)
	seg[12] = 5 << 4
	seg[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(seg[14:], 64240)
	binary.BigEndian.PutUint16(seg[16:], l4Checksum(src.Addr(), dst.Addr(), protoTCP, seg))
	return ipv4Packet(src.Addr(), dst.Addr(), protoTCP, seg)
}

// udpDatagram returns an IPv4 UDP datagram from src to dst with payload
// and the right checksum (0xffff when it computes to 0, as RFC 768 says).
func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	sum := l4Checksum(src.Addr(), dst.Addr(), protoUDP, seg)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(seg[6:], sum)
	return ipv4Packet(src.Addr(), dst.Addr(), protoUDP, seg)
}

// malformed returns packets from src towards dst (a VIP; dport its port)
// that are broken in the ways a parser must survive, by name.
func malformed(src, dst netip.Addr, dport uint16) map[string][]byte {
	sp := netip.AddrPortFrom(src, 40123)
	dp := netip.AddrPortFrom(dst, dport)
	syn := tcpSYN(sp, dp, 1)
	udp := udpDatagram(sp, dp, []byte("query"))
	with := func(b []byte, f func(b []byte) []byte) []byte { return f(slices.Clone(b)) }
	setLen := func(n int) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[2:], uint16(n)); fixIPChecksum(b); return b }
	}
	ipOpts := ipv4Packet(src, dst, protoTCP, nil)[:20]
	ipOpts[0] = 0x46 // one word of options: NOP NOP NOP EOL
	ipOpts = append(ipOpts, 1, 1, 1, 0)
	ipOpts = append(ipOpts, syn[20:]...)
	binary.BigEndian.PutUint16(ipOpts[2:], uint16(len(ipOpts)))
	fixIPChecksum(ipOpts)
	ip6 := make([]byte, 40+8)
	ip6[0] = 0x60
	binary.BigEndian.PutUint16(ip6[4:], 500) // payload length beyond the packet
	ip6[6] = protoUDP
	return map[string][]byte{
		"one byte":                       {0x45},
		"19 bytes of IPv4 header":        syn[:19],
		"IPv4 header, no TCP header":     with(syn[:20], setLen(20)),
		"TCP header cut to 10 bytes":     with(syn[:30], setLen(30)),
		"UDP header cut to 4 bytes":      with(udp[:24], setLen(24)),
		"IHL 4":                          with(syn, func(b []byte) []byte { b[0] = 0x44; fixIPChecksum(b); return b }),
		"IHL 15 in 40 bytes":             with(syn, func(b []byte) []byte { b[0] = 0x4f; return b }),
		"total length beyond the packet": with(syn, setLen(1000)),
		"total length below the header":  with(syn, setLen(10)),
		"total length cuts TCP":          with(append(slices.Clone(syn), make([]byte, 20)...), setLen(30)),
		"version 7":                      with(syn, func(b []byte) []byte { b[0] = 0x75; return b }),
		"IPv6 payload beyond the packet": ip6,
		"IPv6 header cut":                ip6[:30],
		"first fragment (MF)":            with(syn, func(b []byte) []byte { b[6] = 0x20; fixIPChecksum(b); return b }),
		"later fragment":                 with(udp, func(b []byte) []byte { b[6], b[7] = 0x00, 0x10; fixIPChecksum(b); return b }),
		"TCP data offset 15":             with(syn, func(b []byte) []byte { b[32] = 0xf0; return b }),
		"TCP data offset 0":              with(syn, func(b []byte) []byte { b[32] = 0x00; return b }),
		"UDP length 0":                   with(udp, func(b []byte) []byte { b[24], b[25] = 0, 0; return b }),
		"UDP length 65535":               with(udp, func(b []byte) []byte { b[24], b[25] = 0xff, 0xff; return b }),
		"UDP length 3":                   with(udp, func(b []byte) []byte { b[24], b[25] = 0, 3; return b }),
		"IPv4 options":                   ipOpts,
		"bad IPv4 header checksum":       with(syn, func(b []byte) []byte { b[10] ^= 0xff; return b }),
		"TTL 0":                          with(syn, func(b []byte) []byte { b[8] = 0; fixIPChecksum(b); return b }),
		"TTL 1":                          with(syn, func(b []byte) []byte { b[8] = 1; fixIPChecksum(b); return b }),
		"source is the VIP":              tcpSYN(netip.AddrPortFrom(dst, dport), dp, 1),
		"source 0.0.0.0":                 tcpSYN(netip.AddrPortFrom(netip.IPv4Unspecified(), 1), dp, 1),
		"source broadcast":               tcpSYN(netip.AddrPortFrom(netip.MustParseAddr("255.255.255.255"), 1), dp, 1),
		"to the router address":          tcpSYN(sp, netip.AddrPortFrom(lbRouterAddr, 40123), 1),
		"ICMP echo to the VIP":           ipv4Packet(src, dst, protoICMP, []byte{8, 0, 0xf7, 0xff, 0, 0, 0, 0}),
		"ICMP error quoting a VIP flow":  ipv4Packet(src, dst, protoICMP, append([]byte{3, 3, 0, 0, 0, 0, 0, 0}, syn[:28]...)),
		"protocol 253 to the VIP":        ipv4Packet(src, dst, 253, []byte("experimental")),
		"TCP port 0":                     tcpSYN(netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0), 1),
	}
}

// fuzzed returns n random mutations of a TCP SYN from src to tcpDst and
// a UDP datagram from src to udpDst: bytes flipped, fields set to random
// values, packets cut short. rnd makes them reproducible.
func fuzzed(rnd *rand.Rand, n int, src netip.Addr, tcpDst, udpDst netip.AddrPort) [][]byte {
	templates := [][]byte{
		tcpSYN(netip.AddrPortFrom(src, 40000), tcpDst, 1),
		udpDatagram(netip.AddrPortFrom(src, 40000), udpDst, []byte("fuzz")),
	}
	out := make([][]byte, 0, n)
	for range n {
		b := slices.Clone(templates[rnd.IntN(len(templates))])
		for range 1 + rnd.IntN(4) {
			switch rnd.IntN(4) {
			case 0: // any byte
				b[rnd.IntN(len(b))] = byte(rnd.Uint32())
			case 1: // a header field that parsers trust
				i := []int{0, 2, 3, 6, 9, 32, 24, 25}[rnd.IntN(8)]
				if i < len(b) {
					b[i] = byte(rnd.Uint32())
				}
			case 2: // cut short
				b = b[:rnd.IntN(len(b))+1]
			case 3: // keep the header checksum right, so the mutation gets in
				if len(b) >= 20 {
					fixIPChecksum(b)
				}
			}
		}
		out = append(out, b)
	}
	return out
}

// tunInjector writes packets into the router's TUN device from the node
// side, as the node kernel would but without its checks: an AF_PACKET
// socket on vr0 in the node's namespace. It follows vr0 across router
// restarts (a new device, a new index).
type tunInjector struct {
	e    *lbEnv
	node string
	fd   int
	// ifindex is vr0's index, looked up again when vr0 is gone.
	ifindex atomic.Int32
}

func (e *lbEnv) tunInjector(node string) *tunInjector {
	e.t.Helper()
	in := &tunInjector{e: e, node: node, fd: -1}
	err := e.c.Do(node, func() error {
		var err error
		// Protocol 0: send only, receive nothing.
		in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err == nil {
		err = in.lookup()
	}
	if err != nil {
		e.t.Fatalf("AF_PACKET socket on vr0 in %s: %v", node, err)
	}
	e.t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

func (in *tunInjector) lookup() error {
	return in.e.c.Do(in.node, func() error {
		l, err := netlink.LinkByName("vr0")
		if err != nil {
			return err
		}
		in.ifindex.Store(int32(l.Attrs().Index))
		return nil
	})
}

func (in *tunInjector) send(b []byte) error {
	proto := uint16(unix.ETH_P_IP)
	if len(b) > 0 && b[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	err := unix.Sendto(in.fd, b, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: int(in.ifindex.Load())})
	if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
		if lerr := in.lookup(); lerr != nil {
			return errors.Join(err, lerr)
		}
		err = unix.Sendto(in.fd, b, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: int(in.ifindex.Load())})
	}
	return err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// rawSender sends hand-made IPv4 packets from inside a namespace through
// its kernel (IPPROTO_RAW: the header is ours, the kernel routes it and
// fills in only the total length, the header checksum and an ID).
type rawSender struct{ fd int }

func (e *lbEnv) rawSender(ns string) *rawSender {
	e.t.Helper()
	s := &rawSender{fd: -1}
	err := e.c.Do(ns, func() error {
		var err error
		s.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		e.t.Fatalf("raw socket in %s: %v", ns, err)
	}
	e.t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *rawSender) send(b []byte) error {
	if len(b) < 20 {
		return fmt.Errorf("raw send: %d bytes, want an IPv4 header", len(b))
	}
	return unix.Sendto(s.fd, b, 0, &unix.SockaddrInet4{Addr: [4]byte(b[16:20])})
}

// overlay wraps inner in the overlay's format as the peer at from would
// send it to the router at to: one UDP datagram, port 8285 both ends, no
// UDP checksum (allowed in IPv4).
func overlay(from, to netip.Addr, inner []byte) []byte {
	seg := make([]byte, 8+len(inner))
	binary.BigEndian.PutUint16(seg[0:], 8285)
	binary.BigEndian.PutUint16(seg[2:], 8285)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], inner)
	return ipv4Packet(from, to, protoUDP, seg)
}

// udpInCsumErrors sums UdpInCsumErrors over the namespaces' /proc/net/snmp.
func (e *lbEnv) udpInCsumErrors(nss ...string) int {
	e.t.Helper()
	total := 0
	for _, ns := range nss {
		err := e.c.Do(ns, func() error {
			// thread-self: /proc/self/net is the main thread's namespace.
			b, err := os.ReadFile("/proc/thread-self/net/snmp")
			if err != nil {
				return err
			}
			n, ok := harness.ParseNetstat(b, "Udp")["Udp.InCsumErrors"]
			if !ok {
				return errors.New("no Udp InCsumErrors in /proc/net/snmp")
			}
			total += int(n)
			return nil
		})
		if err != nil {
			e.t.Fatalf("read UDP counters of %s: %v", ns, err)
		}
	}
	return total
}

// serviceWorks fails t unless my-service and kube-dns answer clients on
// both nodes and pods reach each other across the nodes.
func (e *lbEnv) serviceWorks(t *testing.T, when string) {
	t.Helper()
	e.requireRouters()
	for _, from := range []string{lbCorednsXx6mc.name, lbNginxJ6zwk.name} {
		if _, err := e.exchange(from, netip.AddrPortFrom(myServiceVIP, 80), "still serving?"); err != nil {
			t.Errorf("%s: my-service: %v", when, err)
		}
		if _, err := e.udpExchange(from, netip.AddrPortFrom(kubeDNSVIP, 53), "still serving?", 2*time.Second); err != nil {
			t.Errorf("%s: kube-dns: %v", when, err)
		}
	}
	if res, err := e.c.Ping(lbNginxJ6zwk.name, lbCorednsXx6mc.addr, 1, 2*time.Second); err != nil || res.Received != 1 {
		t.Errorf("%s: ping %s -> %v: %v, %v", when, lbNginxJ6zwk.name, lbCorednsXx6mc.addr, res, err)
	}
}

// badPath is one way for bad packets into a router, with a canary: a
// query that goes the same way, so that its answer shows the router has
// processed everything sent before it.
type badPath struct {
	name   string
	router string                 // the node whose router the packets enter
	src    netip.Addr             // inner source address of the bad packets
	send   func(b []byte) error   // send one IP packet the path's way
	canary func() (string, error) // send the canary, wait for its answer
}

// canaryVia returns a canary for a path: a UDP query from client:port to
// dst, sent with send, whose answer a socket on client:port receives.
func (e *lbEnv) canaryVia(send func([]byte) error, client lbPod, port uint16, dst netip.AddrPort) func() (string, error) {
	e.t.Helper()
	conn := e.udpListen(client.name, netip.AddrPortFrom(client.addr, port))
	q := udpDatagram(netip.AddrPortFrom(client.addr, port), dst, []byte("canary"))
	return func() (string, error) {
		var lastErr error
		for range 10 {
			if err := send(q); err != nil {
				lastErr = err
				time.Sleep(200 * time.Millisecond)
				continue
			}
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			buf := make([]byte, 512)
			n, err := conn.Read(buf)
			if err != nil {
				lastErr = err
				continue
			}
			if !strings.HasSuffix(string(buf[:n]), "\ncanary") {
				return "", fmt.Errorf("canary answer %q, want an echo server's answer to \"canary\"", buf[:n])
			}
			return strings.Fields(string(buf[:n]))[0], nil
		}
		return "", fmt.Errorf("canary %v -> %v not answered: %v", q[12:16], dst, lastErr)
	}
}

// afterBad checks that the routers survived what was sent on path: the
// canary is answered. A router that died is restarted, and its panic
// returned.
func (e *lbEnv) afterBad(path badPath) (crash string, err error) {
	_, cerr := path.canary()
	var dead []string
	for _, n := range e.spec.Nodes {
		if e.routers[n.Name].Exited() {
			dead = append(dead, n.Name)
		}
	}
	if len(dead) == 0 {
		if cerr != nil {
			return "", fmt.Errorf("the routers run but the canary failed: %w", cerr)
		}
		return "", nil
	}
	for _, node := range dead {
		b, _ := os.ReadFile(e.logPath(node))
		log := string(b)
		if i := strings.LastIndex(log, "panic:"); i >= 0 {
			log = log[i:]
		}
		crash += fmt.Sprintf("router on %s: %s", node, firstLines(log, 12))
		r, err := harness.StartRouter(e.c, vrouterBin, node, e.configPath(node), e.logPath(node),
			"--state-dir", harness.StateDir(e.logPath(node), node))
		if err != nil {
			return crash, fmt.Errorf("restart router on %s: %w", node, err)
		}
		e.routers[node] = r
	}
	if _, err := path.canary(); err != nil {
		return crash, fmt.Errorf("after restarting the routers on %v: %w", dead, err)
	}
	return crash, nil
}

// firstLines returns the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "")
}

// TestLBBadInput sends malformed and fuzzed packets at the VIPs on every
// way into a router, checks that UDP checksums arrive as the client wrote
// them, and floods SYNs past the per-client flow cap. The routers must
// survive all of it and keep serving.
func TestLBBadInput(t *testing.T) {
	e := startLB(t, "bad", []configs.ServiceSpec{myService(), kubeDNS(), silentService()})
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginx...)
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)
	e.serviceWorks(t, "before")

	seed := uint64(time.Now().UnixNano())
	t.Logf("fuzz seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed>>1))

	tun := e.tunInjector(lbMaster)
	fromPod := e.rawSender(lbCoredns8qxfv.name)
	fromPeer := e.rawSender(lbWorker)
	peer, self := netip.MustParseAddr("192.168.31.202"), netip.MustParseAddr("192.168.31.201")
	overlaySend := func(inner []byte) error { return fromPeer.send(overlay(peer, self, inner)) }
	paths := []badPath{
		{
			name: "into the TUN", router: lbMaster, src: lbCoredns8qxfv.addr, send: tun.send,
			canary: e.canaryVia(tun.send, lbCoredns8qxfv, 4444, netip.AddrPortFrom(kubeDNSVIP, 53)),
		},
		{
			// The pod's kernel refuses what is not IPv4 with a sane header
			// and routes the rest to the router as it is.
			name: "from a pod", router: lbMaster, src: lbCoredns8qxfv.addr,
			send:   func(b []byte) error { _ = fromPod.send(b); return nil },
			canary: e.canaryVia(fromPod.send, lbCoredns8qxfv, 4445, netip.AddrPortFrom(kubeDNSVIP, 53)),
		},
		{
			// Inner sources in hostgw-node's pod CIDR, or the router drops
			// them before anything else sees them. Packets from a peer are
			// forwarded, not load-balanced: the canary goes to a pod.
			name: "over the overlay", router: lbMaster, src: lbNginx4k7xw.addr, send: overlaySend,
			canary: e.canaryVia(overlaySend, lbNginx4k7xw, 4446, netip.AddrPortFrom(lbCorednsXx6mc.addr, 53)),
		},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			targets := []netip.AddrPort{
				netip.AddrPortFrom(myServiceVIP, 80),
				netip.AddrPortFrom(kubeDNSVIP, 53),
				netip.AddrPortFrom(lbNginxTh5pz.addr, 80), // a pod: forwarded, not translated
			}
			for _, dst := range targets {
				corpus := malformed(path.src, dst.Addr(), dst.Port())
				for _, name := range slices.Sorted(maps.Keys(corpus)) {
					t.Run(fmt.Sprintf("%s to %v", name, dst), func(t *testing.T) {
						_ = path.send(corpus[name])
						crash, err := e.afterBad(path)
						switch {
						case err != nil:
							t.Fatal(err)
						case crash != "":
							t.Errorf("a router crashed on %x (restarted):\n%s", corpus[name], crash)
						}
					})
				}
			}

			t.Run("fuzz", func(t *testing.T) {
				const n = 2000
				var batch [][]byte
				for _, b := range fuzzed(rnd, n*2, path.src, netip.AddrPortFrom(myServiceVIP, 80), netip.AddrPortFrom(kubeDNSVIP, 53)) {
					if len(batch) < n {
						batch = append(batch, b)
					}
				}
				linesBefore := e.logLines(path.router)
				for i, b := range batch {
					_ = path.send(b)
					if i%200 == 199 {
						time.Sleep(2 * time.Millisecond) // stay below the TUN's queue
					}
				}
				crash, err := e.afterBad(path)
				if err != nil {
					t.Fatal(err)
				}
				if crash == "" {
					// Bad packets are counted, never logged one by one.
					if d := e.logLines(path.router) - linesBefore; d > 5 {
						t.Errorf("the router on %s logged %d lines for %d fuzzed packets; want counters, not a line per packet", path.router, d, len(batch))
					}
					return
				}
				// Find the packet: replay them one at a time.
				for _, b := range batch {
					_ = path.send(b)
					if c, err := e.afterBad(path); c != "" || err != nil {
						t.Fatalf("a router crashed on %x (seed %d):\n%s%v", b, seed, c, err)
					}
				}
				t.Fatalf("a router crashed on one of %d fuzzed packets (seed %d), not again on replay:\n%s", len(batch), seed, crash)
			})
			e.serviceWorks(t, "after bad packets "+path.name)
		})
	}

	t.Run("UDP checksums kept", func(t *testing.T) {
		// The NAT updates checksums incrementally: a datagram without one
		// (0, allowed in IPv4) may stay so, and is answered; one with a
		// wrong checksum must stay wrong, so that the backend's kernel
		// drops it rather than take corrupt data. The same datagram
		// between two pods of one node, bridged without any router, shows
		// that the kernels here do check.
		e.serveOn(e.c.ServeUDPEcho, 5300, lbNginxJ6zwk)
		client := lbNginx4k7xw
		raw := e.rawSender(client.name)
		for i, tc := range []struct {
			name     string
			dst      netip.AddrPort
			sum      func(uint16) uint16
			answered bool
			receiver []lbPod
			bug      string
		}{
			{"right checksum", netip.AddrPortFrom(kubeDNSVIP, 53), func(s uint16) uint16 { return s }, true, lbCoreDNS, ""},
			{"no checksum", netip.AddrPortFrom(kubeDNSVIP, 53), func(uint16) uint16 { return 0 }, true, lbCoreDNS, ""},
			{"wrong checksum, no router", netip.AddrPortFrom(lbNginxJ6zwk.addr, 5300), func(s uint16) uint16 { return s ^ 0x5a5a }, false, []lbPod{lbNginxJ6zwk}, ""},
			{"wrong checksum", netip.AddrPortFrom(kubeDNSVIP, 53), func(s uint16) uint16 { return s ^ 0x5a5a }, false, lbCoreDNS, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				port := uint16(4500 + i)
				conn := e.udpListen(client.name, netip.AddrPortFrom(client.addr, port))
				defer conn.Close()
				b := udpDatagram(netip.AddrPortFrom(client.addr, port), tc.dst, []byte(tc.name))
				binary.BigEndian.PutUint16(b[26:], tc.sum(binary.BigEndian.Uint16(b[26:])))
				before := e.udpInCsumErrors(podNames(tc.receiver)...)
				if err := raw.send(b); err != nil {
					t.Fatalf("send: %v", err)
				}
				conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				buf := make([]byte, 512)
				n, err := conn.Read(buf)
				answered := err == nil && strings.HasSuffix(string(buf[:n]), "\n"+tc.name)
				var problems []string
				if answered != tc.answered {
					problems = append(problems, fmt.Sprintf("datagram %v -> %v (checksum %#04x): answer %q, %v; want answered: %t",
						conn.LocalAddr(), tc.dst, binary.BigEndian.Uint16(b[26:]), buf[:n], err, tc.answered))
				}
				if !tc.answered {
					if d := e.udpInCsumErrors(podNames(tc.receiver)...) - before; d != 1 {
						problems = append(problems, fmt.Sprintf("%v counted %d UDP checksum errors, want 1", podNames(tc.receiver), d))
					}
				}
				switch {
				case len(problems) == 0:
				default:
					t.Error(strings.Join(problems, "; "))
				}
			})
		}
	})

	t.Run("SYN flood past the per-client cap", func(t *testing.T) {
		e.synFlood(t, rnd)
	})

	e.requireRouters()
}

// logLines counts the lines of node's router log.
func (e *lbEnv) logLines(node string) int {
	b, _ := os.ReadFile(e.logPath(node))
	return strings.Count(string(b), "\n")
}

// silentVIP is a Service whose one endpoint, 10.244.1.99, is no pod: SYNs
// to it are never answered, so their flows stay until the unanswered-SYN
// timeout, as a real SYN flood's (whose spoofed sources never reset).
var silentVIP = netip.MustParseAddr("10.96.100.20")

func silentService() configs.ServiceSpec {
	return configs.ServiceSpec{
		Namespace: "default", Name: "silent", ClusterIPs: []string{silentVIP.String()},
		Ports:     []configs.ServicePortSpec{{Port: 80, Protocol: "TCP"}},
		Endpoints: []configs.EndpointSpec{{Addresses: []string{"10.244.1.99"}, NodeName: "hostgw-node"}},
	}
}

// synFlood sends more SYNs to a VIP than one client may have flows,
// from random ports of one pod, and checks that other clients are served
// throughout; that the flooder's flows stay within its cap, each new one
// ending the oldest of its half-open flows (early drop, counted), so that
// its own connections are still served; and that its UDP and its traffic
// to pods are untouched.
func (e *lbEnv) synFlood(t *testing.T, rnd *rand.Rand) {
	flooder := lbCoredns8qxfv
	raw := e.rawSender(flooder.name)
	vip := netip.AddrPortFrom(myServiceVIP, 80)
	txDropped := func() uint64 {
		var n uint64
		e.c.Do(lbMaster, func() error {
			l, err := netlink.LinkByName("vr0")
			if err == nil && l.Attrs().Statistics != nil {
				n = l.Attrs().Statistics.TxDropped
			}
			return err
		})
		return n
	}
	const metricsAddr = "127.0.0.1:10249" // the default
	evicted := func() float64 {
		return e.metricsOf(lbMaster, metricsAddr)[`vrouter_nat_evicted_total{reason="client_cap"}`]
	}
	evicted0 := evicted()

	stop := make(chan struct{})
	var served, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for _, from := range []string{lbCorednsXx6mc.name, lbNginx4k7xw.name} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.exchange(from, vip, "during the flood"); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				} else {
					served.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}

	// A quarter more SYNs than the flooder may have flows, never
	// answered. Source ports below the kernel's ephemeral range
	// (32768-60999), so that no connection the flooder's kernel makes
	// shares a 5-tuple with a flow of the flood.
	const syns = defaultMaxPerClient + defaultMaxPerClient/4
	drops0 := txDropped()
	start := time.Now()
	for i, p := range rnd.Perm(32768 - 1024)[:syns] {
		if err := raw.send(tcpSYN(netip.AddrPortFrom(flooder.addr, uint16(1024+p)), netip.AddrPortFrom(silentVIP, 80), rnd.Uint32())); err != nil {
			t.Fatalf("SYN %d: %v", i, err)
		}
		if (i+1)%250 == 0 {
			time.Sleep(25 * time.Millisecond) // 10,000 a second
		}
	}
	floodTook := time.Since(start)
	dropped := txDropped() - drops0

	// At its cap, the flooder's own connection takes the place of one of
	// its half-open flows.
	eventually(t, 10*time.Second, "the flooder's own connection served at its cap", func() error {
		_, err := e.exchange(flooder.name, vip, "the flooder at its cap")
		return err
	})
	close(stop)
	wg.Wait()
	n := evicted() - evicted0
	t.Logf("%d SYNs from %v in %v (%d dropped at vr0); %.0f of its half-open flows ended for newer ones; meanwhile %d connections from other pods served, %d failed",
		syns, flooder.addr, floodTook.Round(time.Millisecond), dropped, n, served.Load(), failed.Load())
	if failed.Load() > 0 || served.Load() == 0 {
		t.Errorf("other clients during the flood: %d served, %d failed (first: %v); want all served", served.Load(), failed.Load(), firstErr.Load())
	}
	if n == 0 {
		t.Errorf("no flow counted in vrouter_nat_evicted_total{reason=\"client_cap\"} after %d SYNs from one client (cap %d)", syns, defaultMaxPerClient)
	}
	// The other pods' connections (closed ones linger a moment) and the
	// flooder's own, besides the flood's.
	if f, others := e.metricsOf(lbMaster, metricsAddr)["vrouter_nat_flows"], served.Load()+8; f > float64(defaultMaxPerClient+others) {
		t.Errorf("%.0f nat flows after the flood, want at most the flooder's cap of %d and %d of others", f, defaultMaxPerClient, others)
	}
	// Its UDP and what is not load-balanced are untouched.
	if _, err := e.udpExchange(flooder.name, netip.AddrPortFrom(kubeDNSVIP, 53), "udp is capped apart", 2*time.Second); err != nil {
		t.Errorf("flooder's UDP to kube-dns: %v; want served (the cap is per protocol)", err)
	}
	if _, err := e.exchange(flooder.name, netip.AddrPortFrom(lbNginx4k7xw.addr, 80), "pod to pod"); err != nil {
		t.Errorf("flooder's TCP to a pod: %v; want it forwarded (no NAT, no cap)", err)
	}
	e.serviceWorks(t, "after the SYN flood")
}
