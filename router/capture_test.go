package router

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// nextCaptured waits for the next packet of c.
func nextCaptured(t *testing.T, c *Capture) CapturedPacket {
	t.Helper()
	select {
	case p := <-c.Packets():
		return p
	case <-time.After(5 * time.Second):
		t.Fatalf("capture on %s: no packet within 5s", c.NIC())
		return CapturedPacket{}
	}
}

// expectNoCapture asserts that c sees nothing for a while.
func expectNoCapture(t *testing.T, c *Capture) {
	t.Helper()
	select {
	case p := <-c.Packets():
		t.Fatalf("capture on %s: unexpected packet %s %x", c.NIC(), p.Dir, p.Data)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestCaptureSeesBothNICsBothWays(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	tunCap, err := a.r.StartCapture(TUNNIC, CaptureOptions{})
	if err != nil {
		t.Fatalf("StartCapture(TUN): %v", err)
	}
	defer tunCap.Close()
	ovCap, err := a.r.StartCapture(OverlayNIC, CaptureOptions{})
	if err != nil {
		t.Fatalf("StartCapture(overlay): %v", err)
	}
	defer ovCap.Close()
	if tunCap.NIC() != "vr0" || ovCap.NIC() != OverlayNICName {
		t.Errorf("capture NICs = %q, %q; want vr0, %s", tunCap.NIC(), ovCap.NIC(), OverlayNICName)
	}

	out := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("hello"))
	a.tun.send(out)
	b.tun.recv(t)
	b.tun.send(udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("world")))
	a.tun.recv(t)

	for _, tc := range []struct {
		c        *Capture
		dir      Direction
		src, dst string
		ttl      uint8
		payload  string
	}{
		// hostgw-master's TUN: the pod's packet as the kernel sent it,
		// then the reply after both routers decremented its TTL.
		{tunCap, DirIn, "10.244.0.4", "10.244.1.2", 64, "hello"},
		{tunCap, DirOut, "10.244.1.2", "10.244.0.4", 62, "world"},
		// Its overlay NIC: the inner packets.
		{ovCap, DirOut, "10.244.0.4", "10.244.1.2", 63, "hello"},
		{ovCap, DirIn, "10.244.1.2", "10.244.0.4", 63, "world"},
	} {
		p := nextCaptured(t, tc.c)
		ip := header.IPv4(p.Data)
		if p.Dir != tc.dir || !ip.IsValid(len(p.Data)) || p.Len != len(p.Data) ||
			ip.SourceAddress() != packet.TCPIPAddr(addr(tc.src)) || ip.DestinationAddress() != packet.TCPIPAddr(addr(tc.dst)) ||
			ip.TTL() != tc.ttl || !bytes.Equal(header.UDP(ip.Payload()).Payload(), []byte(tc.payload)) {
			t.Errorf("capture on %s: got %s %x (len %d), want %s %s -> %s ttl %d payload %q",
				tc.c.NIC(), p.Dir, p.Data, p.Len, tc.dir, tc.src, tc.dst, tc.ttl, tc.payload)
		}
		if p.Time.IsZero() || time.Since(p.Time) > time.Minute {
			t.Errorf("capture on %s: packet time %v, want about now", tc.c.NIC(), p.Time)
		}
	}
	expectNoCapture(t, tunCap)
	if tunCap.Dropped() != 0 || ovCap.Dropped() != 0 {
		t.Errorf("Dropped() = %d, %d; want 0", tunCap.Dropped(), ovCap.Dropped())
	}
}

func TestCaptureOnePerNIC(t *testing.T) {
	_, a, _ := seedPair(t, Options{})
	c, err := a.r.StartCapture(TUNNIC, CaptureOptions{})
	if err != nil {
		t.Fatalf("StartCapture(TUN): %v", err)
	}
	if _, err := a.r.StartCapture(TUNNIC, CaptureOptions{}); !errors.Is(err, ErrCaptureBusy) {
		t.Errorf("second StartCapture(TUN) = %v, want ErrCaptureBusy", err)
	}
	if _, err := a.r.StartCapture(tcpip.NICID(9), CaptureOptions{}); err == nil {
		t.Error("StartCapture(NIC 9) = nil error, want one naming the NICs")
	}
	c.Close()
	c.Close() // idempotent

	// Closed: the tap is gone and the NIC can be captured again.
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("unseen")))
	expectNoCapture(t, c)
	c2, err := a.r.StartCapture(TUNNIC, CaptureOptions{})
	if err != nil {
		t.Fatalf("StartCapture(TUN) after Close: %v", err)
	}
	c.Close() // closing the old capture again must not remove the new one
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("seen")))
	if p := nextCaptured(t, c2); !bytes.HasSuffix(p.Data, []byte("seen")) {
		t.Errorf("capture after restart got %x, want the packet ending in %q", p.Data, "seen")
	}
	c2.Close()
}

func TestCaptureQueueFullDropsFromCaptureOnly(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	c, err := a.r.StartCapture(TUNNIC, CaptureOptions{QueueLen: 2, SnapLen: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 5 {
		a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte{byte(i)}))
		b.tun.recv(t) // the data path is not slowed down: every packet arrives
	}
	waitFor(t, "3 capture drops", func() bool { return c.Dropped() == 3 })
	p := nextCaptured(t, c)
	if len(p.Data) != 20 || p.Len != header.IPv4MinimumSize+header.UDPMinimumSize+1 {
		t.Errorf("snapped packet: %d bytes of %d, want 20 of %d", len(p.Data), p.Len, header.IPv4MinimumSize+header.UDPMinimumSize+1)
	}
}

// TestCaptureOffCostsNothing: with no capture running, the tap check on
// the packet path allocates nothing.
func TestCaptureOffCostsNothing(t *testing.T) {
	var s tapSlot
	b := udp4(netip.MustParseAddr("10.244.0.4"), netip.MustParseAddr("10.244.1.2"), 64, true, nil)
	if n := testing.AllocsPerRun(1000, func() { s.see(DirIn, b) }); n != 0 {
		t.Errorf("tapSlot.see with no capture: %v allocations per packet, want 0", n)
	}
}

func TestCaptureFilter(t *testing.T) {
	v4 := udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("x")) // 40000 -> 7
	v6 := udp6(addr("fd00:10:244::4"), addr("fd00:10:244:1::2"), 64, []byte("x"))
	icmp6 := slices.Clone(v6)
	icmp6[6] = packet.ICMPv6
	for _, tc := range []struct {
		f    CaptureFilter
		pkt  []byte
		want bool
	}{
		{CaptureFilter{}, []byte{0xff}, true},
		{CaptureFilter{Host: addr("10.244.1.2")}, v4, true},
		{CaptureFilter{Host: addr("10.244.0.4")}, v4, true},
		{CaptureFilter{Host: addr("10.244.0.5")}, v4, false},
		{CaptureFilter{Port: 7}, v4, true},
		{CaptureFilter{Port: 40000}, v4, true},
		{CaptureFilter{Port: 80}, v4, false},
		{CaptureFilter{Proto: packet.UDP}, v4, true},
		{CaptureFilter{Proto: packet.TCP}, v4, false},
		{CaptureFilter{Host: addr("fd00:10:244:1::2"), Port: 7, Proto: packet.UDP}, v6, true},
		{CaptureFilter{Host: addr("fd00:10:244:1::2"), Port: 8}, v6, false},
		{CaptureFilter{Proto: packet.ICMPv4}, icmp6, true},
		{CaptureFilter{Host: addr("10.244.0.4")}, []byte{0x45, 0}, false},
	} {
		if got := tc.f.match(tc.pkt); got != tc.want {
			t.Errorf("%+v.match(% x...) = %v, want %v", tc.f, tc.pkt[:min(len(tc.pkt), 8)], got, tc.want)
		}
	}
}

// TestCaptureFilterApplied: a filtered capture queues only what its
// filter selects.
func TestCaptureFilterApplied(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	c, err := a.r.StartCapture(TUNNIC, CaptureOptions{Filter: CaptureFilter{Host: addr("10.244.1.3")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.2"), 64, true, []byte("not this")))
	b.tun.recv(t)
	a.tun.send(udp4(addr("10.244.0.4"), addr("10.244.1.3"), 64, true, []byte("this")))
	b.tun.recv(t)
	p := nextCaptured(t, c)
	if ip := header.IPv4(p.Data); ip.DestinationAddress() != packet.TCPIPAddr(addr("10.244.1.3")) {
		t.Errorf("filtered capture got a packet to %s, want only those to or from 10.244.1.3", ip.DestinationAddress())
	}
	expectNoCapture(t, c)
	if d := c.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d, want 0: a packet the filter leaves out is not a drop", d)
	}
}
