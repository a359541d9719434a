package integration

// TestRouterRestart stops hostgw-node's router and starts it again with the
// same config file; hostgw-master's router runs throughout.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter (never restarted)
//	 │     nginx-th5pz 10.244.0.4 ─┐ TCP connection opened before the stop,
//	 │                             │ idle while the router is down
//	 └─ hostgw-node   eth0 .202  vrouter: running → stopped → started again
//	       nginx-4k7xw 10.244.1.2 ◀┘   nginx-j6zwk 10.244.1.3
//
// While it is down, vr0 and its routes are gone from hostgw-node, so
// nothing crosses the nodes. Once it is back, traffic flows again, and so
// does the idle connection: forwarding keeps no per-connection state.

import (
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestRouterRestart(t *testing.T) {
	e := newEnv(t, "restart", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	e.serve(nginx4k7xw, nginxTh5pz)
	masterPID := e.router(masterNode).PID()

	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
	conn := e.openSession(nginxTh5pz, nginx4k7xw, 7)
	if err := conn.echo("before the restart", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := e.router(workerNode).Stop(); err != nil {
		t.Fatalf("stop router on %s: %v", workerNode, err)
	}
	if err := e.lost(nginxTh5pz.name, nginx4k7xw.addr); err != nil {
		t.Errorf("router on %s stopped: %v", workerNode, err)
	}
	if err := e.lost(nginxJ6zwk.name, nginxTh5pz.addr); err != nil {
		t.Errorf("router on %s stopped: %v", workerNode, err)
	}

	e.start(workerNode) // same config file, same log
	took := eventually(t, 5*time.Second, "nginx-4k7xw reachable from nginx-th5pz after the restart", func() error {
		return e.reachable(nginxTh5pz.name, nginx4k7xw.addr)
	})
	t.Logf("traffic resumed %v after the router was started again", took.Round(time.Millisecond))
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
	e.mustPing(nginxJ6zwk.name, nginxTh5pz.addr, ttlAcrossNodes)
	if err := e.tcpEcho(nginxTh5pz, nginx4k7xw, 7); err != nil {
		t.Error(err)
	}
	if err := e.udpEcho(nginx4k7xw, nginxTh5pz, 7); err != nil {
		t.Error(err)
	}
	if err := conn.echo("after the restart", 5*time.Second); err != nil {
		t.Errorf("connection opened before the restart: %v", err)
	}

	if r := e.router(masterNode); r.PID() != masterPID || r.Exited() {
		t.Errorf("router on %s: pid %d (exited %v), want pid %d running throughout", masterNode, r.PID(), r.Exited(), masterPID)
	}
}
