package integration

// TestPing runs `vrouter ping` in hostgw-master's namespace on the seed's
// cluster, with the default tunnel MTU:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201   overlay identity 10.244.0.0   vrouter ping ...
//	 │     cni0 10.244.0.1/24
//	 └─ hostgw-node   eth0 .202   overlay identity 10.244.1.0 (answered by its router)
//	       cni0 10.244.1.1/24   nginx-4k7xw 10.244.1.2 (answered by the pod's kernel)
//
// The probes to the peer are answered by hostgw-node's router; those to
// the pod cross it to the pod, whose replies to 10.244.0.0 come back
// through both routers to the probe, not to hostgw-master's kernel. Both
// find that the tunnel MTU passes.

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestPing(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(socketDir); errors.Is(err, os.ErrNotExist) {
		// Runs after the routers stopped (cleanups run last first).
		t.Cleanup(func() { os.Remove(socketDir) })
	}
	e := newEnv(t, "ping", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	for _, target := range []string{workerNode, nginx4k7xw.addr.String()} {
		// No --socket: the router of the namespace it runs in.
		out, err := e.command(masterNode, vrouterBin, "ping", "-c", "2", target)
		if err != nil {
			t.Errorf("vrouter ping %s in %s: %v\n%s", target, masterNode, err, out)
			continue
		}
		for _, want := range []string{
			"through the overlay to " + workerNode + " at 192.168.31.202:8285\n",
			"--- " + target + ": 2 probes, 2 answered, 0% loss",
			"path MTU: 1472-byte packets pass, the tunnel MTU\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("vrouter ping %s printed\n%s\nwant %q", target, out, want)
			}
		}
	}
}
