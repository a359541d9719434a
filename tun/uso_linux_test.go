package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", unix.ByteSliceToString(u.Release[:]), err)
	}
	return ma > major || ma == major && mi >= minor
}

// mustOpenUSO opens vr0 with offloads, configured as the seed's node, and
// requires UDP segmentation offload where the kernel has it (6.2).
func mustOpenUSO(t *testing.T) *offloadFile {
	t.Helper()
	d := mustOpenOffload(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if !d.UDPOffload() {
		if kernelAtLeast(t, 6, 2) {
			t.Fatalf("UDPOffload() = false on a kernel that takes TUN_F_USO4|TUN_F_USO6 (6.2 and later)")
		}
		t.Skip("this kernel has no UDP segmentation offload on TUN (before 6.2)")
	}
	return d
}

// udpSuper builds a UDP super-packet from src to dst: the IP header, a UDP
// header whose length covers the whole and whose checksum field holds the
// pseudo-header sum (NEEDS_CSUM), and payload.
func udpSuper(src, dst netip.AddrPort, payload []byte) []byte {
	ipLen := ipHdrLen(src.Addr())
	b := make([]byte, ipLen+8+len(payload))
	udpLen := 8 + len(payload)
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
	}
	if src.Addr().Is4() {
		b[0], b[8], b[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		binary.BigEndian.PutUint16(b[4:], 0x1234)
		b[6] = 0x40 // DF
		copy(b[12:], src.Addr().AsSlice())
		copy(b[16:], dst.Addr().AsSlice())
		var h uint32
		for i := 0; i < 20; i += 2 {
			h += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		for h > 0xffff {
			h = h&0xffff + h>>16
		}
		binary.BigEndian.PutUint16(b[10:], ^uint16(h))
		add(b[12:20])
	} else {
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(udpLen))
		b[6], b[7] = 17, 64
		copy(b[8:], src.Addr().AsSlice())
		copy(b[24:], dst.Addr().AsSlice())
		add(b[8:40])
	}
	sum += 17 + uint32(udpLen)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	u := b[ipLen:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	binary.BigEndian.PutUint16(u[6:], uint16(sum))
	copy(u[8:], payload)
	return b
}

// TestWriteUSO: a hand-built UDP super-packet with a partial checksum,
// written once, reaches a kernel UDP socket as the datagrams it carries,
// whole and in order, and counts as one received packet on the device.
func TestWriteUSO(t *testing.T) {
	for _, fam := range offloadFamilies {
		t.Run(fam.name, func(t *testing.T) {
			inNewNetns(t)
			d := mustOpenUSO(t)
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(fam.node))
			if err != nil {
				t.Fatalf("ListenUDP(%s): %v", fam.node, err)
			}
			defer c.Close()
			const segSize, n, last = 1000, 10, 300
			data := pattern((n-1)*segSize + last)
			pkt := udpSuper(fam.pod, fam.node, data)
			ipLen := ipHdrLen(fam.pod.Addr())
			o := Offload{NeedsCsum: true, GSOType: GSOUDPL4, HdrLen: uint16(ipLen + 8), GSOSize: segSize, CsumStart: uint16(ipLen), CsumOffset: 6}
			before := rxPackets(t, "vr0")
			if w, err := writePacket(d, pkt, o); err != nil || w != len(pkt) {
				t.Fatalf("Write(%d bytes, %+v) = %d, %v; want %d, nil", len(pkt), o, w, err, len(pkt))
			}
			if got := rxPackets(t, "vr0") - before; got != 1 {
				t.Errorf("vr0 rx_packets grew by %d for one Write, want 1", got)
			}
			buf := make([]byte, 2048)
			for i := range n {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v (kernel counters: %s)", i, n, err, snmpCounters())
				}
				want := data[i*segSize : min((i+1)*segSize, len(data))]
				if !bytes.Equal(buf[:m], want) {
					t.Fatalf("datagram %d: %d bytes, want the %d bytes at %d", i, m, len(want), i*segSize)
				}
				if from.Addr().Unmap() != fam.pod.Addr() || from.Port() != fam.pod.Port() {
					t.Errorf("datagram %d from %s, want %s", i, from, fam.pod)
				}
			}
		})
	}
}

// TestReadUSO: a node socket that sends with UDP_SEGMENT towards a pod
// CIDR routed into vr0 hands the device one UDP super-packet, which Read
// returns whole with its GSO header.
func TestReadUSO(t *testing.T) {
	for _, fam := range offloadFamilies {
		t.Run(fam.name, func(t *testing.T) {
			inNewNetns(t)
			d := mustOpenUSO(t)
			network := "udp4"
			if fam.pod.Addr().Is6() {
				network = "udp6"
			}
			c, err := net.DialUDP(network, net.UDPAddrFromAddrPort(fam.node), net.UDPAddrFromAddrPort(fam.pod))
			if err != nil {
				t.Fatalf("DialUDP(%s → %s): %v", fam.node, fam.pod, err)
			}
			defer c.Close()
			const segSize = 500
			rc, _ := c.SyscallConn()
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, segSize) })
			if serr != nil {
				t.Fatalf("setsockopt UDP_SEGMENT: %v", serr)
			}
			data := pattern(7*segSize + 123)
			if _, err := c.Write(data); err != nil {
				t.Fatalf("write %d bytes with UDP_SEGMENT %d: %v", len(data), segSize, err)
			}
			ipLen := ipHdrLen(fam.pod.Addr())
			pkt, o := readOffload(t, d, false, 5*time.Second, func(p []byte, _ Offload) bool {
				return len(p) > ipLen+8 && binary.BigEndian.Uint16(p[ipLen+2:]) == fam.pod.Port()
			})
			want := Offload{NeedsCsum: true, GSOType: GSOUDPL4, HdrLen: uint16(ipLen + 8), GSOSize: segSize, CsumStart: uint16(ipLen), CsumOffset: 6}
			if o != want {
				t.Errorf("Offload %+v, want %+v", o, want)
			}
			if !bytes.Equal(pkt[ipLen+8:], data) {
				t.Errorf("super-packet carries %d payload bytes, want the %d written", len(pkt)-ipLen-8, len(data))
			}
		})
	}
}

// TestWriteRefusesUSO: where the kernel refused UDP segmentation offload,
// the device still opens, with TCP offloads, and refuses a UDP
// super-packet before the kernel sees it; a malformed UDP header is
// refused on any device.
func TestWriteRefusesUSO(t *testing.T) {
	inNewNetns(t)
	saved := udpOffloadFlags
	udpOffloadFlags |= 0x8000 // unknown to the kernel: it refuses the set
	t.Cleanup(func() { udpOffloadFlags = saved })
	d := mustOpenOffload(t, Options{})
	if d.UDPOffload() || !d.Offload() {
		t.Fatalf("UDPOffload() = %t, Offload() = %t after the kernel refused USO; want false, true", d.UDPOffload(), d.Offload())
	}
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	pod, node := netip.AddrPortFrom(podAddr4, 1), netip.AddrPortFrom(nodeAddr4.Addr(), 2)
	pkt := udpSuper(pod, node, make([]byte, 3000))
	for _, tc := range []struct {
		o    Offload
		want string
	}{
		{Offload{NeedsCsum: true, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, "the kernel did not take UDP segmentation offload"},
		{Offload{NeedsCsum: true, GSOType: GSOUDPL4, HdrLen: 28, GSOSize: 1000, CsumStart: 20, CsumOffset: 16}, "without a UDP partial checksum"},
		{Offload{NeedsCsum: true, GSOType: GSOUDPL4, GSOSize: 0, CsumStart: 20, CsumOffset: 6}, "gso_size 0"},
		{Offload{NeedsCsum: true, GSOType: GSOUDPL4 | gsoECN, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, "ECN flag on a UDP super-packet"},
		{Offload{NeedsCsum: true, GSOType: GSOUDPL4, GSOSize: 1000, CsumStart: 8, CsumOffset: 6}, "inside the IPv4 header"},
	} {
		n, err := writePacket(d, pkt, tc.o)
		if err == nil || !errors.Is(err, ErrBadOffload) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Write(%+v) = %d, %v; want an error wrapping ErrBadOffload containing %q", tc.o, n, err, tc.want)
		}
	}
}
