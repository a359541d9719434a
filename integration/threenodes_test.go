package integration

// TestThreeNodes runs topology.ThreeNodes, the seed plus a third node, with
// a vrouter on each, and checks a full mesh: every pod reaches every pod on
// the other nodes, and each pair of nodes carries TCP.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  cni0 10.244.0.1/24
//	 │     nginx-th5pz 10.244.0.4   coredns-xx6mc 10.244.0.2   coredns-8qxfv 10.244.0.3
//	 ├─ hostgw-node   eth0 .202  cni0 10.244.1.1/24
//	 │     nginx-4k7xw 10.244.1.2   nginx-j6zwk 10.244.1.3
//	 └─ hostgw-node2  eth0 .203  cni0 10.244.2.1/24
//	       busybox 10.244.2.2
//
//	each router: 10.244.<other>.0/24 via 192.168.31.<other> for both other nodes

import (
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestThreeNodes(t *testing.T) {
	e := newEnv(t, "three", topology.ThreeNodes(), harness.ConfigOptions{})
	e.startAll()
	pods := []pod{nginxTh5pz, corednsXx6mc, coredns8qxfv, nginx4k7xw, nginxJ6zwk, busybox}

	t.Run("ping full mesh", func(t *testing.T) {
		pairs := 0
		for _, from := range pods {
			for _, to := range pods {
				if from.node == to.node {
					continue
				}
				pairs++
				if err := e.pingOK(from.name, to.addr, ttlAcrossNodes); err != nil {
					t.Error(err)
				}
			}
		}
		if pairs != 22 {
			t.Errorf("pinged %d pod pairs across nodes, want 22", pairs)
		}
	})

	t.Run("tcp between every pair of nodes", func(t *testing.T) {
		ends := []pod{nginxTh5pz, nginxJ6zwk, busybox} // one per node
		for _, p := range ends {
			if _, err := e.c.ServeTCPEcho(p.name, ":7"); err != nil {
				t.Fatalf("ServeTCPEcho(%s): %v", p.name, err)
			}
		}
		for _, from := range ends {
			for _, to := range ends {
				if from == to {
					continue
				}
				if err := e.tcpEcho(from, to, 7); err != nil {
					t.Error(err)
				}
			}
		}
	})

	t.Run("nodes to remote pods", func(t *testing.T) {
		for _, n := range []string{masterNode, workerNode, thirdNode} {
			for _, to := range []pod{nginxTh5pz, nginx4k7xw, busybox} {
				if to.node != n {
					e.mustPing(n, to.addr, ttlNodeToPod)
				}
			}
		}
	})
}
