package integration

// TestTUNOffload checks segmentation offload end to end on the seed's
// cluster: 8 MiB each way between coredns-8qxfv (hostgw-master) and
// nginx-4k7xw (hostgw-node), checked by SHA-256.
//
// With tun.offload (the default) the node kernels hand the routers TCP
// super-packets and take super-packets back, so vr0 counts far fewer
// packets than the stream has segments, on both nodes and in both
// directions. With tun.offload false every segment crosses vr0 on its own
// — the same test, counting at least one packet per segment, shows the
// count can tell the two apart.

import (
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestTUNOffload(t *testing.T) {
	for _, offload := range []bool{true, false} {
		t.Run(fmt.Sprintf("offload=%t", offload), func(t *testing.T) {
			e := newEnv(t, fmt.Sprintf("offload%t", offload), topology.Seed(), harness.ConfigOptions{})
			for _, n := range []string{masterNode, workerNode} {
				f, err := harness.NodeFile(e.c.Spec(), n, harness.ConfigOptions{})
				if err != nil {
					t.Fatal(err)
				}
				f.TUN.Offload = &offload
				b, err := yaml.Marshal(f)
				if err != nil {
					t.Fatal(err)
				}
				if err := writeAtomic(e.configPath(n), b); err != nil {
					t.Fatal(err)
				}
			}
			e.startAll()
			srv := e.serveStoreAndEcho(nginx4k7xw)
			before := map[string]netlink.LinkStatistics{}
			for _, n := range []string{masterNode, workerNode} {
				before[n] = e.linkStats(n, "vr0")
			}
			const size = 8 << 20
			if err := e.bigTransfer(coredns8qxfv, srv, size); err != nil {
				t.Fatal(err)
			}
			// Segments of the stream one way: the tunnel MTU less IPv4 and
			// TCP headers (with timestamps) per segment.
			segments := uint64(size / (1472 - 20 - 32))
			for _, n := range []string{masterNode, workerNode} {
				after := e.linkStats(n, "vr0")
				// tx: kernel → router; rx: router → kernel. Each carries one
				// direction's data and the other's ACKs.
				tx, rx := after.TxPackets-before[n].TxPackets, after.RxPackets-before[n].RxPackets
				t.Logf("%s vr0: %d packets kernel → router, %d router → kernel, for %d segments each way", n, tx, rx, segments)
				if offload {
					// Data as super-packets (about 45 segments each) and
					// ACKs about one per super-packet: a few hundred
					// packets; a quarter of the segments is far above that
					// and far below one per segment.
					if tx > segments/4 || rx > segments/4 {
						t.Errorf("%s vr0 moved %d and %d packets for %d segments each way: super-packets are not being used", n, tx, rx, segments)
					}
				} else if tx < segments || rx < segments {
					t.Errorf("%s vr0 moved %d and %d packets without offload, want at least %d each (one per segment)", n, tx, rx, segments)
				}
			}
		})
	}
}

// linkStats are link name's counters in namespace ns.
func (e *env) linkStats(ns, name string) netlink.LinkStatistics {
	e.t.Helper()
	var st netlink.LinkStatistics
	err := e.c.Do(ns, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if s := l.Attrs().Statistics; s != nil {
			st = netlink.LinkStatistics(*s)
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("%s: link %s: %v", ns, name, err)
	}
	return st
}
