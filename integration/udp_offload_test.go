package integration

// TestUDPOffload checks UDP segmentation offload end to end on the seed's
// cluster, where the kernel has it (Linux 6.2 and later): a pod that sends
// with UDP_SEGMENT (as QUIC stacks do) hands its node's router one UDP
// super-packet, the router sends its datagrams to the peer as one run, and
// the peer's router writes them to its node kernel as one UDP
// super-packet again, which the receiving pod's socket gets as the
// datagrams that were sent, whole and in order.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestUDPOffload(t *testing.T) {
	e := newEnv(t, "udpoffload", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	status, err := e.c.Command(masterNode, vrouterBin, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("vrouter status: %v\n%s", err, status)
	}
	if !bytes.Contains(status, []byte("offload on (TCP, UDP)")) {
		if kernelAtLeast(t, 6, 2) {
			t.Fatalf("vrouter status on a kernel with UDP segmentation offload on TUN:\n%s\nwant its TUN line to say \"offload on (TCP, UDP)\"", status)
		}
		t.Skip("this kernel has no UDP segmentation offload on TUN (before 6.2)")
	}

	var rx *net.UDPConn
	if err := e.c.Do(nginx4k7xw.name, func() (err error) {
		rx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nginx4k7xw.addr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var tx *net.UDPConn
	if err := e.c.Do(coredns8qxfv.name, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(rx.LocalAddr().(*net.UDPAddr).AddrPort()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const segSize, n = 1000, 20
	rc, err := tx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, segSize) }); err != nil || serr != nil {
		t.Fatalf("setsockopt UDP_SEGMENT %d: %v %v", segSize, err, serr)
	}
	data := make([]byte, n*segSize-300) // the last datagram 700 bytes
	for i := range data {
		data[i] = byte(i / segSize)
	}
	// Counters around the send: a TUN's tx is kernel → router, rx is
	// router → kernel.
	masterTx, nodeRx := e.linkStats(masterNode, "vr0").TxPackets, e.linkStats(workerNode, "vr0").RxPackets
	if _, err := tx.Write(data); err != nil {
		t.Fatalf("send %d bytes with UDP_SEGMENT %d: %v", len(data), segSize, err)
	}
	buf := make([]byte, 2048)
	for i := range n {
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d: %v", i, n, err)
		}
		want := data[i*segSize : min((i+1)*segSize, len(data))]
		if !bytes.Equal(buf[:m], want) {
			t.Fatalf("datagram %d: %d bytes starting %x, want %d bytes starting %x", i, m, buf[:min(m, 4)], len(want), want[:4])
		}
	}
	mtx, nrx := e.linkStats(masterNode, "vr0").TxPackets-masterTx, e.linkStats(workerNode, "vr0").RxPackets-nodeRx
	t.Logf("%d datagrams: %d packets kernel → router on %s, %d router → kernel on %s", n, mtx, masterNode, nrx, workerNode)
	// One super-packet each way, give or take a stray packet of the
	// routers' own; one per datagram would be 20.
	if mtx > 3 || nrx > 3 {
		t.Errorf("vr0 moved %d (kernel → router, %s) and %d (router → kernel, %s) packets for %d datagrams: UDP super-packets are not being used", mtx, masterNode, nrx, workerNode, n)
	}
}

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
