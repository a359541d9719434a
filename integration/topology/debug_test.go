package topology

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func dump(t *testing.T, c *Cluster, nss ...string) {
	for _, ns := range nss {
		out, _ := c.Command(ns, "sh", "-c", "ip neigh; ip -6 neigh; ip -br link; tc qdisc; nstat -az | grep -i -E 'InNoRoutes|Forw|InAddrErr|OutNoRoutes|Drop|Arp|Neigh|Icmp6(In|Out)(Echo|Neigh)' | grep -v ' 0 '").CombinedOutput()
		t.Logf("%s:\n%s", ns, out)
	}
}

func TestDebugParallel(t *testing.T) {
	for iter := 0; iter < 15; iter++ {
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 3 {
				c, err := Build(Seed())
				if err == nil {
					c.Close()
				}
			}
		})
		for _, s := range []Spec{ThreeNodes(), SeedDualStack(), Seed()} {
			wg.Go(func() {
				c, err := Build(s)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				c.InstallKernelHostGW()
				start := time.Now()
				r, _ := c.Ping("nginx-th5pz", netip.MustParseAddr("10.244.1.2"), 1, 500*time.Millisecond)
				if r.Received == 0 {
					t.Logf("iter %d fail after %v: %v", iter, time.Since(start), r)
					dump(t, c, "nginx-th5pz", "hostgw-master", "underlay", "hostgw-node", "nginx-4k7xw")
				}
			})
		}
		wg.Wait()
	}
}
