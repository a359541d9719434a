package integration

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// TestBatchedTUNWrites: on a kernel with io_uring (Linux 6.3 and later,
// not refused), the router says its TUN has batched I/O, and a burst of
// datagrams from a peer to different pods — different flows, which no UDP
// super-packet can merge — leaves for the node kernel in one write
// (vrouter_tun_write_batches_total), every datagram delivered whole and in
// order.
func TestBatchedTUNWrites(t *testing.T) {
	e := newEnv(t, "batchio", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	status, err := e.c.Command(masterNode, vrouterBin, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("vrouter status: %v\n%s", err, status)
	}
	if !bytes.Contains(status, []byte("batched I/O")) {
		if b, _ := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); kernelAtLeast(t, 6, 3) && strings.TrimSpace(string(b)) == "0" {
			t.Fatalf("vrouter status on a kernel with io_uring:\n%s\nwant its TUN line to say \"batched I/O\"", status)
		}
		t.Skipf("no batched TUN I/O here:\n%s", status)
	}

	sinks := []*udpSink{e.udpSink(nginxTh5pz, 9100), e.udpSink(corednsXx6mc, 9100), e.udpSink(coredns8qxfv, 9100)}
	fromPeer := e.peerSender(workerNode, netip.AddrPortFrom(underlay(masterNode), harness.OverlayPort))
	src := netip.AddrPortFrom(nginx4k7xw.addr, 5000) // in the peer's pod CIDR
	const perRound = 12
	var want [3][]string
	batches, rounds := 0.0, 0
	for rounds < 200 && batches == 0 {
		for i := range perRound {
			s := sinks[i%len(sinks)]
			msg := fmt.Sprintf("round %d datagram %d", rounds, i)
			if err := fromPeer.send(ipv4UDP(src, s.addr, 64, []byte(msg))); err != nil {
				t.Fatal(err)
			}
			want[i%len(sinks)] = append(want[i%len(sinks)], msg+" from "+src.String())
		}
		rounds++
		batches = e.metric(masterNode, "vrouter_tun_write_batches_total")
	}
	packets := e.metric(masterNode, "vrouter_tun_write_batch_packets_total")
	t.Logf("%d rounds of %d datagrams: %v batched writes of %v packets", rounds, perRound, batches, packets)
	if batches == 0 || packets < 2*batches {
		t.Errorf("after %d rounds of %d datagrams to three pods, %v batched TUN writes of %v packets; want at least one of two or more", rounds, perRound, batches, packets)
	}
	for i, s := range sinks {
		eventually(t, 10*time.Second, fmt.Sprintf("%d datagrams at %s", len(want[i]), s.addr), func() error {
			if n := len(s.received()); n < len(want[i]) {
				return fmt.Errorf("%d so far", n)
			}
			return nil
		})
		got := s.received()
		if j := firstDiff(got, want[i]); j >= 0 {
			t.Errorf("%s received %d datagrams, %d sent: from #%d on %q, want %q: each whole and in order", s.addr, len(got), len(want[i]), j, got[j:min(j+3, len(got))], want[i][j:min(j+3, len(want[i]))])
		}
	}
}

// metric reads one sample (a series name with its labels, as /metrics
// writes it) from node's router's metrics on the default address.
func (e *env) metric(node, series string) float64 {
	e.t.Helper()
	return sample(e.t, scrapeMetrics(e.t, e.c, node, "127.0.0.1:10249"), node, series)
}

// firstDiff is the first index where a and b differ (one ending counts),
// or -1 when they are equal.
func firstDiff(a, b []string) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}
