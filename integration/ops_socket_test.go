package integration

// TestOpsDefaultAdminSocket runs the seed's two routers with every
// operability endpoint on its default, in two network namespaces that
// share the host's /run, and checks that each binds its own admin socket
// and that `vrouter routes`, run in a node's namespace with no --socket,
// reaches that node's router:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter run (defaults) ─ /run/vrouter/vr0.netns-<master's inode>.sock
//	 │    cni0 ─ 10.244.0.0/24
//	 └─ hostgw-node   eth0 .202  vrouter run (defaults) ─ /run/vrouter/vr0.netns-<node's inode>.sock
//	      cni0 ─ 10.244.1.0/24
//
// The sockets are the host's /run/vrouter, as with any router started
// without --admin-socket; the routers remove them when they stop, and the
// test removes /run/vrouter if it made it.

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// socketDir is where `vrouter run` puts its admin socket by default.
const socketDir = "/run/vrouter"

func TestOpsDefaultAdminSocket(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(socketDir); errors.Is(err, os.ErrNotExist) {
		// Runs after the routers stopped (cleanups run last first).
		t.Cleanup(func() { os.Remove(socketDir) })
	}
	e := newEnv(t, "socket", topology.Seed(), harness.ConfigOptions{})
	e.startAll()

	for _, tc := range []struct{ node, want string }{
		{masterNode, "10.244.1.0/24 via 192.168.31.202 dev overlay0\n"},
		{workerNode, "10.244.0.0/24 via 192.168.31.201 dev overlay0\n"},
	} {
		out, err := e.command(tc.node, vrouterBin, "routes")
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("vrouter routes in %s's namespace, no --socket = %v\n%s\nwant its own router's table, with %q", tc.node, err, out, tc.want)
		}
		ino, err := e.command(tc.node, "readlink", "/proc/self/ns/net")
		if err != nil {
			t.Fatalf("readlink /proc/self/ns/net in %s: %v: %s", tc.node, err, ino)
		}
		ino = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(ino), "net:["), "]")
		if socket := socketDir + "/vr0.netns-" + ino + ".sock"; e.logCount(tc.node, socket) == 0 {
			t.Errorf("router log of %s does not name its admin socket %s", tc.node, socket)
		}
		if n := e.logCount(tc.node, "admin API off"); n != 0 {
			t.Errorf("router log of %s has %d 'admin API off' lines, want none: each router has its own socket", tc.node, n)
		}
	}
}
