package lab_test

// The Lab's own namespace tests, on the seed's cluster:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter ── cni0 10.244.0.1/24 ─ nginx-th5pz 10.244.0.4, coredns-xx6mc .2, coredns-8qxfv .3
//	 └─ hostgw-node   eth0 .202  vrouter ── cni0 10.244.1.1/24 ─ nginx-4k7xw 10.244.1.2, nginx-j6zwk .3
//
// They need root, or root in a user namespace of its own, and skip
// otherwise; the vrouter binary is built once for the run (TestMain-less:
// the Labs alive at once share BuildVrouter's).

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/lab"
	"github.com/vrouter/vrouter/integration/topology"
)

// TestExample runs the package examples' tests as written.
func TestExample(t *testing.T) {
	t.Run("Example", podToPodAndService)
	t.Run("ExampleNew", ownLayout)
}

// TestLab drives the API: a node started later, Exec, Ping, a config
// rewritten live, the admin commands, Stop; and then checks that the
// test's end removed everything.
func TestLab(t *testing.T) {
	var (
		l       *lab.Lab
		netns   []string // the namespaces' bind mounts, if named
		routers []*harness.Router
	)
	t.Run("API", func(t *testing.T) {
		l = lab.New(t, topology.Seed(), lab.Options{Stopped: []string{"hostgw-node"}, Args: []string{"--log-level", "info"}})
		if d := l.Cluster().NetnsDir(); d != "" {
			for _, ns := range l.Cluster().Namespaces() {
				name, _ := l.Cluster().NetnsName(ns)
				netns = append(netns, filepath.Join(d, name))
			}
		}
		master, node := l.Node("hostgw-master"), l.Node("hostgw-node")
		if node.Router() != nil {
			t.Fatalf("Node(hostgw-node).Router() = %v with the node in Options.Stopped, want nil", node.Router())
		}
		from, to := l.Pod("nginx-th5pz"), l.Pod("nginx-4k7xw")
		if from.Node() != master || to.Node() != node || to.Addr() != netip.MustParseAddr("10.244.1.2") {
			t.Fatalf("Pod(nginx-th5pz).Node() = %s, Pod(nginx-4k7xw) = %v on %s; want hostgw-master, 10.244.1.2 on hostgw-node",
				from.Node().Name(), to.Addr(), to.Node().Name())
		}

		// One router only: hostgw-node's pods are out of reach.
		if r, err := from.Ping(to.Addr(), 1); err != nil || r.Received != 0 {
			t.Errorf("Ping(%v) with hostgw-node's router stopped = %v, %v; want no reply", to.Addr(), r, err)
		}
		if err := node.Start(); err != nil {
			t.Fatalf("Node(hostgw-node).Start(): %v", err)
		}
		if err := node.Start(); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("second Start() = %v, want already running", err)
		}
		if r, err := from.Ping(to.Addr(), 3); err != nil || r.Received == 0 || r.TTL != 60 {
			t.Errorf("Ping(%v) across the routers = %v, %v; want replies with TTL 60", to.Addr(), r, err)
		}

		out, err := to.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, "10.244.1.2/24") {
			t.Errorf("Exec(ip addr show dev eth0) in nginx-4k7xw = %q, %v; want 10.244.1.2/24", out, err)
		}
		if _, err := to.Exec("false"); err == nil || !strings.Contains(err.Error(), "false in nginx-4k7xw: exit status 1") {
			t.Errorf("Exec(false) = %v, want an error naming the command, the namespace and the status", err)
		}

		// A Service written into every config file, applied live.
		opts := harness.ConfigOptions{Services: []configs.ServiceSpec{{
			Namespace: "default", Name: "dns", ClusterIPs: []string{"10.96.0.10"},
			Ports:     []configs.ServicePortSpec{{Port: 53, Protocol: "UDP"}},
			Endpoints: []configs.EndpointSpec{{Addresses: []string{"10.244.0.2"}, NodeName: "hostgw-master"}},
		}}}
		for _, n := range l.Nodes() {
			if err := n.WriteConfig(opts); err != nil {
				t.Fatalf("Node(%s).WriteConfig: %v", n.Name(), err)
			}
		}
		if _, err := l.Pod("coredns-xx6mc").ServeUDPEcho(":53"); err != nil {
			t.Fatal(err)
		}
		var got topology.Reply
		for range 50 { // the reload takes about 100 ms; a lost datagram is not retried
			if got, err = to.UDPExchange(netip.MustParseAddrPort("10.96.0.10:53"), []byte("q")); err == nil {
				break
			}
		}
		if err != nil || got.Server != "coredns-xx6mc" || got.Client.Addr() != to.Addr() {
			t.Errorf("UDPExchange(10.96.0.10:53) from nginx-4k7xw = %+v, %v; want coredns-xx6mc seeing 10.244.1.2", got, err)
		}
		out, err = node.Vrouter("services")
		if err != nil || !strings.Contains(out, "default/dns") || !strings.Contains(out, "10.96.0.10") {
			t.Errorf("Vrouter(services) on hostgw-node = %q, %v; want default/dns 10.96.0.10", out, err)
		}

		if err := master.Stop(); err != nil {
			t.Errorf("Node(hostgw-master).Stop() = %v, want a clean exit", err)
		}
		for _, n := range l.Nodes() {
			routers = append(routers, n.Router())
		}
	})
	if l == nil {
		return // skipped
	}
	for i, r := range routers {
		if !r.Exited() {
			t.Errorf("router %d (%s) still runs after the test", i, r.Node)
		}
	}
	if _, err := os.Stat(l.Dir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lab.Dir() %s after the test: %v, want it removed", l.Dir(), err)
	}
	for _, p := range netns {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("namespace %s after the test: %v, want it removed", p, err)
		}
	}
}
