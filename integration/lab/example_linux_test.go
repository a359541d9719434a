package lab_test

import (
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/lab"
	"github.com/vrouter/vrouter/integration/topology"
)

// podToPodAndService is a namespace test as another module would write it:
// the seed's two nodes with a router each, a Service in front of two pods,
// a pod-to-pod check across nodes and one through the Service. Called
// from a Test function (TestExample runs this one), it skips itself
// where namespaces cannot be made.
func podToPodAndService(t *testing.T) {
	web := configs.ServiceSpec{
		Namespace:  "default",
		Name:       "web",
		ClusterIPs: []string{"10.96.0.80"},
		Ports:      []configs.ServicePortSpec{{Port: 80, Protocol: "TCP"}},
		Endpoints: []configs.EndpointSpec{
			{Addresses: []string{"10.244.1.2"}, NodeName: "hostgw-node"},
			{Addresses: []string{"10.244.1.3"}, NodeName: "hostgw-node"},
		},
	}
	l := lab.New(t, topology.Seed(), lab.Options{
		Config: harness.ConfigOptions{Services: []configs.ServiceSpec{web}},
	})

	// Pod to pod across nodes: nginx-th5pz on hostgw-master to nginx-4k7xw
	// on hostgw-node, over the two routers.
	server := l.Pod("nginx-4k7xw")
	if _, err := server.ServeTCPEcho(":7"); err != nil {
		t.Fatal(err)
	}
	client := l.Pod("nginx-th5pz")
	r, err := client.TCPExchange(netip.AddrPortFrom(server.Addr(), 7), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != "nginx-4k7xw" || r.Client.Addr() != client.Addr() || string(r.Payload) != "hello" {
		t.Errorf("TCPExchange = %s saw %v, echoed %q; want nginx-4k7xw to see %v and echo hello", r.Server, r.Client, r.Payload, client.Addr())
	}

	// Through the Service: its ClusterIP answers with one of its pods.
	for _, p := range []string{"nginx-4k7xw", "nginx-j6zwk"} {
		if _, err := l.Pod(p).ServeHTTP(":80"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := client.HTTPGet("http://10.96.0.80/")
	if err != nil {
		t.Fatal(err)
	}
	if got.Server != "nginx-4k7xw" && got.Server != "nginx-j6zwk" {
		t.Errorf("GET http://10.96.0.80/ answered by %q, want a pod of Service web", got.Server)
	}

	// What the router says about it.
	out, err := l.Node("hostgw-master").Vrouter("services")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vrouter services on hostgw-master:\n%s", out)
}

// This example is a namespace test: it needs a *testing.T, and root (or
// root in a user namespace of its own), so it has no output to check
// here. TestExample runs podToPodAndService, above, as written.
func Example() {}
