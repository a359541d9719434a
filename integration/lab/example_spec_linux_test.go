package lab_test

import (
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/lab"
	"github.com/vrouter/vrouter/integration/topology"
)

// ownLayout runs a cluster laid out by the test rather than the seed's: two
// nodes "a" and "b" on 10.0.0.0/24, a pod on each, and a UDP exchange and
// a ping between the pods. TestExample runs it.
func ownLayout(t *testing.T) {
	spec := topology.Spec{
		Underlay: netip.MustParsePrefix("10.0.0.0/24"),
		Nodes: []topology.NodeSpec{
			{
				Name: "a", Underlay: netip.MustParseAddr("10.0.0.1"),
				PodCIDR: netip.MustParsePrefix("10.1.0.0/24"),
				Pods:    []topology.PodSpec{{Name: "client", Addr: netip.MustParseAddr("10.1.0.2")}},
			},
			{
				Name: "b", Underlay: netip.MustParseAddr("10.0.0.2"),
				PodCIDR: netip.MustParsePrefix("10.1.1.0/24"),
				Pods:    []topology.PodSpec{{Name: "server", Addr: netip.MustParseAddr("10.1.1.2")}},
			},
		},
	}
	l := lab.New(t, spec, lab.Options{
		// The pods' addresses must lie in the cluster CIDR.
		Config: harness.ConfigOptions{ClusterCIDR: netip.MustParsePrefix("10.1.0.0/16")},
	})
	server, client := l.Pod("server"), l.Pod("client")
	if _, err := server.ServeUDPEcho(":5353"); err != nil {
		t.Fatal(err)
	}
	r, err := client.UDPExchange(netip.AddrPortFrom(server.Addr(), 5353), []byte("query"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != "server" || r.Client.Addr() != client.Addr() {
		t.Errorf("UDPExchange answered by %q seeing %v, want server seeing %v", r.Server, r.Client, client.Addr())
	}
	if p, err := client.Ping(server.Addr(), 3); err != nil || p.Received == 0 {
		t.Errorf("Ping(%v) = %v, %v; want replies", server.Addr(), p, err)
	}
}

// This example is a namespace test of a layout of its own; like Example,
// it needs a *testing.T and root, so TestExample runs ownLayout, above.
func ExampleNew() {}
