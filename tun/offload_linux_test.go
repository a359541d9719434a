package tun

// Real-device tests of the offload device (offloadFile), in a network namespace of their own
// as in tun_linux_test.go and with its address plan. The test plays the
// remote pod 10.244.1.2 (fd00:10:244:1::2): it speaks TCP by hand through
// the TUN with a socket of the node kernel on 10.244.0.0 (fd00:10:244::1),
// which the kernel reaches through vr0 (MTU 1400):
//
//	kernel socket 10.244.0.0:5201 ──vr0──▶ test: Read with offload, hand-built ACKs
//	kernel socket 10.244.0.0:5201 ◀──vr0── test: Write of a super-packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const testMTU = 1400

func mustOpenOffload(t *testing.T, opts Options) *offloadFile {
	t.Helper()
	opts.Offload = true
	dev, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { dev.Close() })
	d, ok := dev.(*offloadFile)
	if !ok {
		t.Fatalf("Open(%+v) = %T, want an *offloadFile", opts, dev)
	}
	return d
}

// tcpFlow is the test's end of one TCP connection with a node-kernel
// socket: the remote pod's address and port, the kernel's, and the
// sequence space.
type tcpFlow struct {
	pod, node      netip.AddrPort
	sndNxt, rcvNxt uint32
	mss            int // the kernel's MSS option
	window         int // the kernel's last window
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// ipHdrLen is the IP header length the test's packets have.
func ipHdrLen(a netip.Addr) int {
	if a.Is4() {
		return 20
	}
	return 40
}

// tcpPacket builds an IP/TCP packet from src to dst. With partial set the
// TCP checksum field holds the pseudo-header sum (as virtio NEEDS_CSUM
// wants), otherwise the full checksum.
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags uint8, opts, payload []byte, partial bool) []byte {
	ipLen := ipHdrLen(src.Addr())
	tcpLen := 20 + len(opts) + len(payload)
	p := make([]byte, ipLen+tcpLen)
	s, d := src.Addr().AsSlice(), dst.Addr().AsSlice()
	if src.Addr().Is4() {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[6:], 0x4000) // DF
		p[8], p[9] = 64, 6
		copy(p[12:], s)
		copy(p[16:], d)
		binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20], 0))
	} else {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(tcpLen))
		p[6], p[7] = 6, 64
		copy(p[8:], s)
		copy(p[24:], d)
	}
	tcp := p[ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = uint8((20+len(opts))/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], opts)
	copy(tcp[20+len(opts):], payload)
	pseudo := pseudoSum(s, d, 6, tcpLen)
	if partial {
		binary.BigEndian.PutUint16(tcp[16:], ^inetChecksum(nil, pseudo))
	} else {
		binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, pseudo))
	}
	return p
}

// tcpSegment is a parsed IP/TCP packet.
type tcpSegment struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	window   int
	ipLen    int
	tcp      []byte // TCP header and payload
	payload  []byte
}

func parseTCP(p []byte) (tcpSegment, bool) {
	var s tcpSegment
	var src, dst netip.Addr
	switch {
	case len(p) >= 40 && p[0] == 0x45 && p[9] == 6:
		s.ipLen = 20
		src, dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
	case len(p) >= 60 && p[0]>>4 == 6 && p[6] == 6:
		s.ipLen = 40
		src, dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
	default:
		return s, false
	}
	tcp := p[s.ipLen:]
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || doff > len(tcp) {
		return s, false
	}
	s.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:]))
	s.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:]))
	s.seq, s.ack = binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint32(tcp[8:])
	s.flags = tcp[13]
	s.window = int(binary.BigEndian.Uint16(tcp[14:]))
	s.tcp, s.payload = tcp, tcp[doff:]
	return s, true
}

// tcpChecksumOK reports whether the TCP checksum of s verifies in full.
func tcpChecksumOK(s tcpSegment) bool {
	return inetChecksum(s.tcp, pseudoSum(s.src.Addr().AsSlice(), s.dst.Addr().AsSlice(), 6, len(s.tcp))) == 0
}

// readOffload reads d until match accepts a packet or timeout passes.
// With plain set it completes partial checksums (and reports a zero
// Offload).
func readOffload(t *testing.T, d *offloadFile, plain bool, timeout time.Duration, match func([]byte, Offload) bool) ([]byte, Offload) {
	t.Helper()
	buf := make([]byte, 65535)
	if err := d.f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	defer d.f.SetReadDeadline(time.Time{})
	var skipped []string
	for {
		var (
			n   int
			o   Offload
			err error
		)
		if plain {
			n, err = readComplete(d, buf)
		} else {
			n, o, err = readOne(d, buf)
		}
		if err != nil {
			t.Fatalf("read %s: %v (skipped %d packets: %v; kernel counters: %s)", d.name, err, len(skipped), skipped, snmpCounters())
		}
		if match(buf[:n], o) {
			return buf[:n], o
		}
		skipped = append(skipped, fmt.Sprintf("%x", buf[:min(n, 48)]))
	}
}

// connect opens a TCP connection from the test's pod to the kernel
// listener ln (node) through d: SYN with the MSS option vr0's MTU gives, the
// kernel's SYN-ACK, ACK. It returns the flow and the kernel's end.
func connect(t *testing.T, d *offloadFile, ln net.Listener, pod, node netip.AddrPort) (*tcpFlow, net.Conn) {
	t.Helper()
	f := &tcpFlow{pod: pod, node: node, sndNxt: 1000}
	// The MSS a kernel with vr0's MTU would advertise.
	mss := testMTU - ipHdrLen(pod.Addr()) - 20
	mssOpt := []byte{2, 4, byte(mss >> 8), byte(mss)}
	if _, err := writePlain(d, tcpPacket(pod, node, f.sndNxt, 0, tcpSYN, mssOpt, nil, false)); err != nil {
		t.Fatalf("Write(SYN %s > %s): %v", pod, node, err)
	}
	f.sndNxt++
	pkt, _ := readOffload(t, d, false, 5*time.Second, func(p []byte, _ Offload) bool {
		s, ok := parseTCP(p)
		return ok && s.src == node && s.dst == pod && s.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK
	})
	synack, _ := parseTCP(pkt)
	if synack.ack != f.sndNxt {
		t.Fatalf("SYN-ACK acks %d, want %d", synack.ack, f.sndNxt)
	}
	f.rcvNxt = synack.seq + 1
	f.window = synack.window
	for opts := synack.tcp[20 : int(synack.tcp[12]>>4)*4]; len(opts) > 0; {
		if opts[0] == 0 {
			break
		}
		if opts[0] == 1 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
			break
		}
		if opts[0] == 2 && opts[1] == 4 {
			f.mss = int(binary.BigEndian.Uint16(opts[2:]))
		}
		opts = opts[opts[1]:]
	}
	f.ack(t, d)

	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept on %s: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return f, c
}

// ack sends a pure ACK of everything received so far.
func (f *tcpFlow) ack(t *testing.T, d *offloadFile) {
	t.Helper()
	if _, err := writePlain(d, tcpPacket(f.pod, f.node, f.sndNxt, f.rcvNxt, tcpACK, nil, nil, false)); err != nil {
		t.Fatalf("Write(ACK %d): %v", f.rcvNxt, err)
	}
}

// listen listens on the node address, on this (the test's) thread, so in
// its network namespace.
func listen(t *testing.T, node netip.AddrPort) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", node.String())
	if err != nil {
		t.Fatalf("Listen(%s): %v", node, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// offloadFamilies are the address pairs the TCP tests run over.
var offloadFamilies = []struct {
	name      string
	pod, node netip.AddrPort
	gso       GSOType
}{
	{"IPv4", netip.AddrPortFrom(podAddr4, 40000), netip.AddrPortFrom(nodeAddr4.Addr(), 5201), GSOTCPv4},
	{"IPv6", netip.AddrPortFrom(podAddr6, 40000), netip.AddrPortFrom(nodeAddr6.Addr(), 5201), GSOTCPv6},
}

// streamStats is what the test saw of a kernel TCP stream.
type streamStats struct {
	packets, superPackets, largest int
	firstGSO                       *[virtioNetHdrLen]byte // the raw header of the first super-packet
}

// log reports what a stream of n bytes looked like on the device, and the
// first super-packet's header as the kernel wrote it.
func (st streamStats) log(t *testing.T, prefix string, n int) {
	t.Helper()
	t.Logf("%s%d bytes in %d packets, %d super-packets, largest %d bytes", prefix, n, st.packets, st.superPackets, st.largest)
	if st.firstGSO != nil {
		h := getOffload(st.firstGSO[:])
		t.Logf("%sfirst super-packet's virtio_net_hdr: % x = flags %d gso_type %v hdr_len %d gso_size %d csum_start %d csum_offset %d",
			prefix, st.firstGSO[:], st.firstGSO[0], h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset)
	}
}

// receiveStream receives a TCP stream of want bytes (pattern) the kernel
// sends over f, acking as it goes, until the kernel's FIN. With plain set
// it completes partial checksums as they are read, and every TCP checksum
// must verify; otherwise every super-packet's header must describe it.
func receiveStream(t *testing.T, d *offloadFile, f *tcpFlow, want []byte, gso GSOType, plain bool) streamStats {
	t.Helper()
	var st streamStats
	isn := f.rcvNxt
	mss := testMTU - ipHdrLen(f.pod.Addr()) - 20
	for done := false; !done; {
		pkt, o := readOffload(t, d, plain, 10*time.Second, func(p []byte, _ Offload) bool {
			s, ok := parseTCP(p)
			return ok && s.src == f.node && s.dst == f.pod
		})
		s, _ := parseTCP(pkt)
		st.packets++
		st.largest = max(st.largest, len(pkt))
		if s.src.Addr().Is4() && binary.BigEndian.Uint16(pkt[2:]) != uint16(len(pkt)) {
			t.Errorf("packet %d: IPv4 total length %d, read %d bytes", st.packets, binary.BigEndian.Uint16(pkt[2:]), len(pkt))
		}
		if s.src.Addr().Is6() && int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			t.Errorf("packet %d: IPv6 payload length %d, read %d bytes", st.packets, binary.BigEndian.Uint16(pkt[4:]), len(pkt))
		}
		switch {
		case plain:
			if !tcpChecksumOK(s) {
				t.Errorf("Read packet %d (%d bytes, seq %d): TCP checksum %#04x does not verify; Read must complete it", st.packets, len(pkt), s.seq, binary.BigEndian.Uint16(s.tcp[16:]))
			}
		case o.NeedsCsum:
			// Partial: the field holds the folded pseudo-header sum over
			// the whole (super-)segment's length, and completing it
			// gives a valid checksum.
			partial := ^inetChecksum(nil, pseudoSum(s.src.Addr().AsSlice(), s.dst.Addr().AsSlice(), 6, len(s.tcp)))
			if got := binary.BigEndian.Uint16(s.tcp[16:]); got != partial {
				t.Errorf("Read packet %d (%d bytes): checksum field %#04x, want the pseudo-header sum %#04x", st.packets, len(pkt), got, partial)
			}
			if int(o.CsumStart) != s.ipLen || o.CsumOffset != 16 {
				t.Errorf("Read packet %d: csum_start %d csum_offset %d, want %d 16", st.packets, o.CsumStart, o.CsumOffset, s.ipLen)
			}
			c := bytes.Clone(pkt)
			completeChecksum(c, o)
			if cs, _ := parseTCP(c); !tcpChecksumOK(cs) {
				t.Errorf("Read packet %d: completed checksum does not verify", st.packets)
			}
		case len(s.payload) > 0:
			if !tcpChecksumOK(s) {
				t.Errorf("Read packet %d: no NEEDS_CSUM, but the checksum does not verify", st.packets)
			}
		}
		if !plain && o.GSOType != GSONone {
			st.superPackets++
			if st.firstGSO == nil {
				st.firstGSO = new([virtioNetHdrLen]byte)
				*st.firstGSO = d.r.hdr
			}
			doff := int(s.tcp[12]>>4) * 4
			switch {
			case o.GSOType != gso:
				t.Errorf("super-packet %d: gso_type %v, want %v", st.packets, o.GSOType, gso)
			case int(o.HdrLen) != s.ipLen+doff:
				t.Errorf("super-packet %d: HdrLen %d, want %d", st.packets, o.HdrLen, s.ipLen+doff)
			case int(o.GSOSize) != mss:
				t.Errorf("super-packet %d: gso_size %d, want the MSS %d (MTU %d)", st.packets, o.GSOSize, mss, testMTU)
			case len(s.payload) <= int(o.GSOSize):
				t.Errorf("super-packet %d: %d payload bytes, not more than gso_size %d", st.packets, len(s.payload), o.GSOSize)
			}
		}
		if !plain && o.GSOType == GSONone && len(pkt) > testMTU {
			t.Errorf("packet %d: %d bytes, over the MTU %d, without GSO", st.packets, len(pkt), testMTU)
		}
		if s.seq == f.rcvNxt {
			off := int(s.seq - isn)
			if off+len(s.payload) > len(want) || !bytes.Equal(s.payload, want[off:off+len(s.payload)]) {
				t.Fatalf("packet %d: payload at stream offset %d (%d bytes) differs from what the kernel sent", st.packets, off, len(s.payload))
			}
			f.rcvNxt += uint32(len(s.payload))
			if s.flags&tcpFIN != 0 {
				f.rcvNxt++
				done = true
			}
		}
		f.ack(t, d)
	}
	if got := int(f.rcvNxt - isn - 1); got != len(want) {
		t.Errorf("received %d bytes, want %d", got, len(want))
	}
	return st
}

// pattern is n bytes that differ at every offset modulo 251.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// sendAll writes data on c from a goroutine and closes c; the returned
// channel reports the outcome. The deadline keeps the goroutine from
// outliving a failed test.
func sendAll(c net.Conn, data []byte) <-chan error {
	errc := make(chan error, 1)
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, err := c.Write(data)
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	return errc
}

// TestReadTSO: a kernel TCP stream out of the device arrives as
// GSO super-packets longer than the MTU, their headers describe them and
// their checksums stay partial; with plain Read, the same stream arrives
// with every checksum complete.
func TestReadTSO(t *testing.T) {
	for _, fam := range offloadFamilies {
		for _, plain := range []bool{false, true} {
			name := fam.name + "/Read"
			if plain {
				name = fam.name + "/Read"
			}
			t.Run(name, func(t *testing.T) {
				inNewNetns(t)
				d := mustOpenOffload(t, Options{})
				if err := Configure("vr0", seedConfig()); err != nil {
					t.Fatalf("Configure: %v", err)
				}
				ln := listen(t, fam.node)
				f, c := connect(t, d, ln, fam.pod, fam.node)
				data := pattern(4 << 20)
				errc := sendAll(c, data)
				st := receiveStream(t, d, f, data, fam.gso, plain)
				if err := <-errc; err != nil {
					t.Errorf("kernel socket Write: %v", err)
				}
				st.log(t, "", len(data))
				if st.largest <= testMTU {
					t.Errorf("largest packet %d bytes, want a super-packet over the MTU %d", st.largest, testMTU)
				}
				if !plain && st.superPackets == 0 {
					t.Errorf("no GSO super-packet in %d packets", st.packets)
				}
			})
		}
	}
}

// TestWriteGSO: a hand-built super-packet with a partial checksum,
// written once, reaches a kernel socket whole and in order, and counts as
// one received packet on the device.
func TestWriteGSO(t *testing.T) {
	for _, fam := range offloadFamilies {
		t.Run(fam.name, func(t *testing.T) {
			inNewNetns(t)
			d := mustOpenOffload(t, Options{})
			if err := Configure("vr0", seedConfig()); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			ln := listen(t, fam.node)
			f, c := connect(t, d, ln, fam.pod, fam.node)
			const segSize = 1000
			data := pattern(20*segSize + 500)
			if f.mss < segSize {
				t.Fatalf("kernel MSS %d < %d", f.mss, segSize)
			}
			if f.window < len(data) {
				t.Fatalf("kernel window %d < %d bytes to send", f.window, len(data))
			}
			pkt := tcpPacket(f.pod, f.node, f.sndNxt, f.rcvNxt, tcpACK|tcpPSH, nil, data, true)
			ipLen := ipHdrLen(f.pod.Addr())
			o := Offload{NeedsCsum: true, GSOType: fam.gso, HdrLen: uint16(ipLen + 20), GSOSize: segSize, CsumStart: uint16(ipLen), CsumOffset: 16}

			before := rxPackets(t, "vr0")
			n, err := writePacket(d, pkt, o)
			if err != nil || n != len(pkt) {
				t.Fatalf("Write(%d bytes, %+v) = %d, %v; want %d, nil", len(pkt), o, n, err, len(pkt))
			}
			if got := rxPackets(t, "vr0") - before; got != 1 {
				t.Errorf("vr0 rx_packets grew by %d for one Write, want 1", got)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("kernel socket read of %d bytes: %v (kernel counters: %s)", len(data), err, snmpCounters())
			}
			if !bytes.Equal(got, data) {
				t.Errorf("kernel socket received different bytes than the super-packet carried")
			}
			// The kernel acks all of it.
			want := f.sndNxt + uint32(len(data))
			readOffload(t, d, false, 5*time.Second, func(p []byte, _ Offload) bool {
				s, ok := parseTCP(p)
				return ok && s.src == f.node && s.flags&tcpACK != 0 && s.ack == want
			})
		})
	}
}

func rxPackets(t *testing.T, name string) uint64 {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	return link.Attrs().Statistics.RxPackets
}

// TestOffloadPlainPackets: on an offload device, Write (zero header) and
// Read carry ordinary packets, and the interface has IFF_VNET_HDR.
func TestOffloadPlainPackets(t *testing.T) {
	inNewNetns(t)
	d := mustOpenOffload(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	link, err := netlink.LinkByName("vr0")
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.Flags&netlink.TUNTAP_VNET_HDR == 0 || tt.Flags&netlink.TUNTAP_NO_PI == 0 {
		t.Errorf("vr0 = %#v, want a TUN with IFF_VNET_HDR and IFF_NO_PI", link)
	}
	for _, fam := range []struct{ src, dst netip.Addr }{{podAddr4, nodeAddr4.Addr()}, {podAddr6, nodeAddr6.Addr()}} {
		payload := []byte("vrouter offload echo")
		var req []byte
		if fam.src.Is4() {
			req = echo4(fam.src, fam.dst, 0x7672, 3, payload)
		} else {
			req = echo6(fam.src, fam.dst, 0x7672, 3, payload)
		}
		if n, err := writePlain(d, req); err != nil || n != len(req) {
			t.Fatalf("Write(echo request %s > %s) = %d, %v; want %d, nil", fam.src, fam.dst, n, err, len(req))
		}
		reply, o := readOffload(t, d, false, 5*time.Second, func(p []byte, _ Offload) bool {
			if fam.src.Is4() {
				return len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && p[20] == 0
			}
			return len(p) >= 48 && p[0]>>4 == 6 && p[6] == 58 && p[40] == 129
		})
		if o != (Offload{}) {
			t.Errorf("echo reply from %s: Offload %+v, want zero", fam.dst, o)
		}
		if !bytes.HasSuffix(reply, payload) {
			t.Errorf("echo reply from %s = %x, want it to end with %q", fam.dst, reply, payload)
		}
	}
}

// TestWriteRefusesOffload: an Offload that cannot describe its packet is
// refused before the kernel sees it; one the kernel refuses comes back
// with the kernel's errno.
func TestWriteRefusesOffload(t *testing.T) {
	inNewNetns(t)
	d := mustOpenOffload(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	pod, node := netip.AddrPortFrom(podAddr4, 1), netip.AddrPortFrom(nodeAddr4.Addr(), 2)
	pkt := tcpPacket(pod, node, 1, 1, tcpACK, nil, make([]byte, 3000), true)
	for _, tc := range []struct {
		o    Offload
		is   error
		want string
	}{
		{Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 5000}, ErrBadOffload, "write TUN vr0: bad virtio_net_hdr: checksum at 20+5000 is past the end"},
		{Offload{NeedsCsum: true, GSOType: 3, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, ErrBadOffload, "unknown gso_type 0x3"},
		{Offload{NeedsCsum: true, GSOType: GSOTCPv6, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, ErrBadOffload, "not IPv6"},
		// hdr_len longer than the packet: the kernel says EINVAL.
		{Offload{HdrLen: 5000}, unix.EINVAL, "write /dev/net/tun: invalid argument"},
	} {
		n, err := writePacket(d, pkt, tc.o)
		if err == nil || !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write(%+v) = %d, %v; want an error wrapping %v containing %q", tc.o, n, err, tc.is, tc.want)
		}
	}
}

// TestOffloadClose: Close unblocks a pending Read, and every method fails
// with os.ErrClosed after it; the interface goes away.
func TestOffloadClose(t *testing.T) {
	inNewNetns(t)
	for _, method := range []string{"Read"} {
		d, err := Open(Options{Offload: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		errc := make(chan error, 1)
		go func() {
			_, _, err := readOne(d, make([]byte, 65535))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond) // let it block; the test is valid either way
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("pending %s after Close = %v, want an error wrapping os.ErrClosed", method, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked 5s after Close: the descriptor is not in Go's poller", method)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		if _, _, err := readOne(d, make([]byte, 100)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v, want os.ErrClosed", err)
		}
		if _, err := writePlain(d, echo4(podAddr4, nodeAddr4.Addr(), 1, 1, nil)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Write after Close = %v, want os.ErrClosed", err)
		}
		partial := Offload{NeedsCsum: true, CsumStart: 20, CsumOffset: 2} // the ICMP checksum
		if _, err := writePacket(d, echo4(podAddr4, nodeAddr4.Addr(), 1, 1, nil), partial); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Write(partial checksum) after Close = %v, want os.ErrClosed", err)
		}
		if _, err := netlink.LinkByName("vr0"); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("LinkByName(vr0) after Close = %v, want not found", err)
		}
	}
}

// TestOffloadDescriptors: Open(Offload), OpenQueues(Offload) and Adopt of
// an IFF_VNET_HDR descriptor give offload devices whose descriptors are
// close-on-exec and non-blocking; Adopt resets a header size the helper
// changed.
func TestOffloadDescriptors(t *testing.T) {
	inNewNetns(t)
	devs := []Device{mustOpenOffload(t, Options{Name: "off%d"})}
	if got := devs[0].Name(); got != "off0" {
		t.Errorf("Open(off%%d).Name() = %q, want off0", got)
	}
	queues, err := OpenQueues(Options{Name: "mq0", Offload: true}, 2)
	if err != nil {
		t.Fatalf("OpenQueues(mq0, Offload, 2): %v", err)
	}
	for _, q := range queues {
		t.Cleanup(func() { q.Close() })
	}
	devs = append(devs, queues...)

	fd, release := rawTUN(t, "helper0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR, true)
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, 12); err != nil {
		t.Fatalf("TUNSETVNETHDRSZ 12: %v", err)
	}
	adopted, err := Adopt(fd, "helper0")
	if err != nil {
		t.Fatalf("Adopt(IFF_VNET_HDR fd): %v", err)
	}
	release()
	t.Cleanup(func() { adopted.Close() })
	devs = append(devs, adopted)

	for _, dev := range devs {
		if !dev.Offload() {
			t.Errorf("%s: %T has no Offload", dev.Name(), dev)
			continue
		}
		rc, err := dev.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatalf("%s: SyscallConn: %v", dev.Name(), err)
		}
		var fdFlags, flFlags, hdrSize int
		var ctlErr error
		rc.Control(func(fd uintptr) {
			if fdFlags, ctlErr = unix.FcntlInt(fd, unix.F_GETFD, 0); ctlErr != nil {
				return
			}
			if flFlags, ctlErr = unix.FcntlInt(fd, unix.F_GETFL, 0); ctlErr != nil {
				return
			}
			hdrSize, ctlErr = unix.IoctlGetInt(int(fd), unix.TUNGETVNETHDRSZ)
		})
		if ctlErr != nil {
			t.Fatalf("%s: fcntl/ioctl: %v", dev.Name(), ctlErr)
		}
		if fdFlags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: descriptor flags %#x lack FD_CLOEXEC", dev.Name(), fdFlags)
		}
		if flFlags&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: file status flags %#x lack O_NONBLOCK", dev.Name(), flFlags)
		}
		if hdrSize != virtioNetHdrLen {
			t.Errorf("%s: virtio-net header size %d, want %d", dev.Name(), hdrSize, virtioNetHdrLen)
		}
	}
	// The adopted device works.
	if err := Configure("helper0", seedConfig()); err != nil {
		t.Fatalf("Configure(helper0): %v", err)
	}
	if _, err := writePlain(adopted, echo4(podAddr4, nodeAddr4.Addr(), 0x7672, 9, nil)); err != nil {
		t.Fatalf("Write(echo request) on the adopted device: %v", err)
	}
	readOffload(t, adopted.(*offloadFile), true, 5*time.Second, func(p []byte, _ Offload) bool {
		return len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && p[20] == 0
	})
}

// TestAdoptOffloadUnprivileged: turning on the offloads of an adopted
// descriptor needs no CAP_NET_ADMIN.
func TestAdoptOffloadUnprivileged(t *testing.T) {
	needRoot(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread loses a capability
		ns, err := netns.New()
		if err != nil {
			errc <- fmt.Errorf("netns.New: %w", err)
			return
		}
		defer ns.Close()
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		ifr, _ := unix.NewIfreq("vr0")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			errc <- fmt.Errorf("TUNSETIFF: %w", err)
			return
		}
		if err := dropCap(unix.CAP_NET_ADMIN); err != nil {
			unix.Close(fd)
			errc <- err
			return
		}
		dev, err := Adopt(fd, "vr0")
		if err != nil {
			unix.Close(fd)
			errc <- err
			return
		}
		if !dev.Offload() {
			err = fmt.Errorf("Adopt = %T without Offload, want an offload device", dev)
		}
		dev.Close()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("Adopt of an IFF_VNET_HDR TUN without CAP_NET_ADMIN: %v", err)
	}
}

// TestOffloadRefused: when the kernel refuses TUNSETOFFLOAD (here: an
// unknown flag), Open says so, wrapping ErrOffloadRefused and the errno, and
// leaves no interface behind; Adopt leaves the descriptor open.
func TestOffloadRefused(t *testing.T) {
	inNewNetns(t)
	saved := offloadFlags
	offloadFlags |= 0x8000
	t.Cleanup(func() { offloadFlags = saved })

	_, err := Open(Options{Offload: true})
	wantErr(t, "Open(Offload) refused", err, ErrOffloadRefused, "create TUN vr0: TUN offloads refused: the kernel refused TUNSETOFFLOAD 0x8007 (TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): invalid argument; open it without Options.Offload")
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Open(Offload) refused = %v, want errors.Is(_, EINVAL)", err)
	}
	if _, err := netlink.LinkByName("vr0"); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("LinkByName(vr0) after a refused Open = %v, want not found", err)
	}
	// Without Offload, Open still works.
	mustOpen(t, Options{}).Close()

	fd, _ := rawTUN(t, "helper0", unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR, true)
	_, err = Adopt(fd, "")
	wantErr(t, "Adopt(IFF_VNET_HDR) refused", err, ErrOffloadRefused, "TUN helper0 was opened with IFF_VNET_HDR: TUN offloads refused")
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Errorf("descriptor after a refused Adopt: %v, want it still open", err)
	}
}

// TestReadTSOForwarded: what vrouter meets in production. A pod's
// TCP stream is forwarded by the node kernel into vr0; its TSO
// super-packets cross the veth and the forwarding path whole and come out
// of Read as super-packets.
//
//	pod netns                    test's netns (node)
//	eth0 10.244.0.4/24 ──veth── veth0 10.244.0.1/24, ip_forward=1
//	default via 10.244.0.1       vr0 (seedConfig) ── test plays 10.244.1.2
func TestReadTSOForwarded(t *testing.T) {
	inNewNetns(t)
	d := mustOpenOffload(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		t.Fatalf("enable forwarding: %v", err)
	}
	inPod := podNetns(t)

	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0"}, PeerName: "eth0"}); err != nil {
		t.Fatalf("add veth0: %v", err)
	}
	veth0, err := netlink.LinkByName("veth0")
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(veth0, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.244.0.1/24"))}); err != nil {
		t.Fatalf("address veth0: %v", err)
	}
	if err := netlink.LinkSetUp(veth0); err != nil {
		t.Fatal(err)
	}
	podAddr := netip.AddrPortFrom(netip.MustParseAddr("10.244.0.4"), 5201)
	var ln net.Listener
	inPod(func(ns netns.NsHandle) error {
		if err := netlink.LinkSetNsFd(eth0, int(ns)); err != nil {
			return fmt.Errorf("move eth0 into the pod: %w", err)
		}
		return nil
	}, true)
	inPod(func(netns.NsHandle) error {
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if name == "eth0" {
				if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(podAddr.Addr(), 24))}); err != nil {
					return fmt.Errorf("address eth0: %w", err)
				}
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", name, err)
			}
		}
		if err := netlink.RouteAdd(&netlink.Route{Gw: net.IPv4(10, 244, 0, 1)}); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
		var err error
		ln, err = net.Listen("tcp", podAddr.String())
		return err
	}, false)
	t.Cleanup(func() { ln.Close() })

	f, c := connect(t, d, ln, netip.AddrPortFrom(podAddr4, 40000), podAddr)
	data := pattern(4 << 20)
	errc := sendAll(c, data)
	st := receiveStream(t, d, f, data, GSOTCPv4, false)
	if err := <-errc; err != nil {
		t.Errorf("pod socket Write: %v", err)
	}
	st.log(t, "forwarded: ", len(data))
	if st.superPackets == 0 || st.largest <= testMTU {
		t.Errorf("no forwarded super-packet over the MTU (%d packets, largest %d bytes)", st.packets, st.largest)
	}
}

// podNetns makes a network namespace for a pod, held by a goroutine
// locked to its thread, and returns a function that runs fn on that
// thread (in the pod's namespace) or, with here set, on the caller's,
// given the pod namespace's handle. The goroutine, its thread and the
// namespace end with the test.
func podNetns(t *testing.T) func(fn func(netns.NsHandle) error, here bool) {
	t.Helper()
	type call struct {
		fn   func(netns.NsHandle) error
		errc chan error
	}
	calls := make(chan call)
	ready := make(chan error, 1)
	done := make(chan struct{})
	var ns netns.NsHandle
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread leaves with the namespace
		var err error
		ns, err = netns.New()
		ready <- err
		if err != nil {
			return
		}
		for c := range calls {
			c.errc <- c.fn(ns)
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("make the pod's network namespace: %v", err)
	}
	t.Cleanup(func() {
		close(calls)
		<-done
		ns.Close()
	})
	return func(fn func(netns.NsHandle) error, here bool) {
		t.Helper()
		var err error
		if here {
			err = fn(ns)
		} else {
			errc := make(chan error)
			calls <- call{fn, errc}
			err = <-errc
		}
		if err != nil {
			t.Fatalf("pod: %v", err)
		}
	}
}

// BenchmarkEcho writes an ICMP echo request into the device and reads
// the kernel's reply, on the water device and on the offload device, to
// compare the per-packet cost and show that a batch of one allocates
// nothing.
func BenchmarkEcho(b *testing.B) {
	for _, kind := range []string{"file", "offload"} {
		b.Run(kind, func(b *testing.B) {
			inNewNetns(b)
			dev, err := Open(Options{Offload: kind != "file"})
			if err != nil {
				b.Fatalf("Open: %v", err)
			}
			defer dev.Close()
			// IPv4 only: no router solicitations or MLD to read past.
			if err := Configure(dev.Name(), LinkConfig{Addresses: []netip.Prefix{nodeAddr4}, MTU: testMTU, Routes: []netip.Prefix{clusterCIDR4}}); err != nil {
				b.Fatalf("Configure: %v", err)
			}
			req := echo4(podAddr4, nodeAddr4.Addr(), 0x7672, 1, make([]byte, 1000))
			wbufs := [][]byte{req}
			rbufs, sizes, offs := [][]byte{make([]byte, 65535)}, []int{0}, []Offload{{}}
			b.ReportAllocs()
			b.SetBytes(int64(len(req)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := dev.Write(wbufs, nil); err != nil {
					b.Fatalf("Write: %v", err)
				}
				for {
					if _, err := dev.Read(rbufs, sizes, offs); err != nil {
						b.Fatalf("Read: %v", err)
					}
					if sizes[0] == len(req) {
						break
					}
				}
			}
		})
	}
}

// TestOffloadReadBurst: what the kernel queued while the reader was away
// comes back from one Read, up to its buffers, in order; the next Read
// waits for more.
func TestOffloadReadBurst(t *testing.T) {
	inNewNetns(t)
	d := mustOpenOffload(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if got := d.BatchSize(); got != maxReadBurst {
		t.Fatalf("BatchSize() = %d, want %d", got, maxReadBurst)
	}
	// Ten echo requests to the node: the kernel answers each inside the
	// write, so ten replies are queued when the writes return.
	const n = 10
	for seq := range n {
		req := echo4(podAddr4, nodeAddr4.Addr(), 0x7672, uint16(seq), []byte("burst"))
		if _, err := writePlain(d, req); err != nil {
			t.Fatalf("Write(echo request %d): %v", seq, err)
		}
	}
	bufs, sizes, offs := make([][]byte, n), make([]int, n), make([]Offload, n)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	var seqs []int
	for len(seqs) < n {
		if err := d.f.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got, err := d.Read(bufs, sizes, offs)
		if err != nil {
			t.Fatalf("Read after %d replies: %v", len(seqs), err)
		}
		if len(seqs) == 0 && got != maxReadBurst {
			t.Errorf("first Read = %d packets, want %d: the ten replies were queued", got, maxReadBurst)
		}
		for i := range got {
			if seq, ok := echoReplySeq(bufs[i][:sizes[i]]); ok {
				seqs = append(seqs, seq)
			}
		}
	}
	for i, s := range seqs {
		if s != i {
			t.Fatalf("echo replies by sequence = %v, want 0..%d in order", seqs, n-1)
		}
	}
	// TryRead does not wait: nothing is queued now.
	start := time.Now()
	if got, err := d.TryRead(bufs, sizes, offs); got != 0 || err != nil || time.Since(start) > time.Second {
		t.Errorf("TryRead of an empty queue = %d, %v after %v; want 0, nil at once", got, err, time.Since(start))
	}
	req := echo4(podAddr4, nodeAddr4.Addr(), 0x7672, n, []byte("burst"))
	if _, err := writePlain(d, req); err != nil {
		t.Fatal(err)
	}
	got, err := d.TryRead(bufs, sizes, offs)
	if err != nil || got < 1 {
		t.Errorf("TryRead after an echo request = %d, %v; want its reply (queued inside the write)", got, err)
	}
}
