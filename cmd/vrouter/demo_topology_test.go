package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/configs"
)

// demoTopologyExample is the example topology docs/demo-topology.md shows
// and the demo tests run.
const demoTopologyExample = "../../docs/examples/demo/three-nodes.yaml"

func TestDemoTopologyExample(t *testing.T) {
	top, err := loadDemoTopology(demoTopologyExample)
	if err != nil {
		t.Fatalf("loadDemoTopology(%s): %v", demoTopologyExample, err)
	}
	var nodes []string
	for _, n := range top.Spec.Nodes {
		nodes = append(nodes, fmt.Sprintf("%s %s %s %d pods", n.Name, n.Underlay, n.PodCIDR, len(n.Pods)))
	}
	want := []string{
		"hostgw-master 192.168.31.201 10.244.0.0/24 2 pods",
		"hostgw-node 192.168.31.202 10.244.1.0/24 2 pods",
		"hostgw-node2 192.168.31.203 10.244.2.0/24 2 pods",
	}
	if !slices.Equal(nodes, want) {
		t.Errorf("loadDemoTopology(%s) nodes = %q, want %q", demoTopologyExample, nodes, want)
	}
	if err := top.Spec.Validate(); err != nil {
		t.Errorf("the example's Spec: %v", err)
	}
	if len(top.Services) != 2 || top.Services[0].Name != "web" || top.Services[1].Name != "kube-dns" {
		t.Fatalf("loadDemoTopology(%s) Services = %+v, want web and kube-dns", demoTopologyExample, top.Services)
	}
	// Each endpoint's nodeName, left out in the file, is its pod's node.
	var endpoints []string
	for _, e := range top.Services[0].Endpoints {
		endpoints = append(endpoints, e.Addresses[0]+" on "+e.NodeName)
	}
	if want := []string{"10.244.0.4 on hostgw-master", "10.244.1.2 on hostgw-node", "10.244.2.2 on hostgw-node2"}; !slices.Equal(endpoints, want) {
		t.Errorf("web's endpoints = %q, want %q", endpoints, want)
	}
	// web's port 8080 goes to the pods' HTTP server on 80.
	web := top.Services[0]
	got := top.targets(web, web.Ports[1])
	for _, pod := range []string{"web-0", "web-1", "web-2"} {
		if got[pod] != (demoPort{80, false}) {
			t.Errorf("targets(web, 8080)[%s] = %+v, want TCP 80", pod, got[pod])
		}
	}
	if ports := top.servicePorts("web-0"); len(ports) != 0 {
		t.Errorf("servicePorts(web-0) = %+v, want none beyond the ports every pod serves", ports)
	}
	if url, name, ok := top.httpService(); !ok || url != "http://10.103.92.81:80/" && url != "http://10.103.92.81/" || name != "web" {
		t.Errorf("httpService() = %q, %q, %v; want web's http://10.103.92.81/", url, name, ok)
	}
}

// A target port that no pod serves already gets a server of its own.
func TestDemoTopologyServicePorts(t *testing.T) {
	top, err := parseDemoTopology("t.yaml", []byte(twoNodes+`services:
  - name: api
    clusterIPs: [10.96.7.7]
    ports:
      - {name: https, port: 443, targetPort: https}
      - {name: mdns, port: 5353, protocol: UDP}
    endpoints:
      - addresses: [10.244.1.2]
        ports: [{name: https, port: 8443}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := top.servicePorts("b-0"), []demoPort{{8443, false}, {5353, true}}; !slices.Equal(got, want) {
		t.Errorf("servicePorts(b-0) = %+v, want %+v", got, want)
	}
	if got := top.servicePorts("a-0"); len(got) != 0 {
		t.Errorf("servicePorts(a-0) = %+v, want none: it backs no Service", got)
	}
}

// twoNodes is the smallest valid topology, which the error cases add to
// or break.
const twoNodes = `underlay: 192.168.31.0/24
nodes:
  - name: a
    underlayAddress: 192.168.31.1
    podCIDR: 10.244.0.0/24
    pods:
      - {name: a-0, address: 10.244.0.2}
  - name: b
    underlayAddress: 192.168.31.2
    podCIDR: 10.244.1.0/24
    pods:
      - {name: b-0, address: 10.244.1.2}
`

// Every problem of a file at once, each on a line of its own naming the
// file, the line and column, the field, the value and what is wanted, as
// vrouter validate reports a config file's.
func TestDemoTopologyErrors(t *testing.T) {
	var many strings.Builder
	many.WriteString("underlay: 192.168.31.0/24\nnodes:\n")
	for i := range 9 {
		fmt.Fprintf(&many, "  - {name: n%d, underlayAddress: 192.168.31.%d, podCIDR: 10.244.%d.0/24}\n", i, i+1, i)
	}
	var pods strings.Builder
	pods.WriteString("underlay: 192.168.31.0/24\nnodes:\n  - {name: b, underlayAddress: 192.168.31.2, podCIDR: 10.244.1.0/24}\n  - name: a\n    underlayAddress: 192.168.31.1\n    podCIDR: 10.244.0.0/24\n    pods:\n")
	for i := range 33 {
		fmt.Fprintf(&pods, "      - {name: p%d, address: 10.244.0.%d}\n", i, i+2)
	}
	for _, tc := range []struct {
		name, file string
		want       []string // the error's lines, in this order
	}{
		{"syntax", "underlay: [\n", []string{
			"t.yaml:1: YAML syntax error: did not find expected node content",
		}},
		{"not a mapping", "- a\n", []string{
			"t.yaml:1:1: (file): not a mapping (want a topology with the fields underlay, clusterCIDR, serviceCIDR, nodes, services; docs/demo-topology.md)",
		}},
		{"empty", "{}\n", []string{
			"t.yaml:1:1: underlay: missing (want the nodes' IPv4 network, e.g. 192.168.31.0/24)",
			"t.yaml:1:1: nodes: missing (want a list of at least 2 nodes, each with name, underlayAddress, podCIDR and pods)",
		}},
		{"nodes", `underlay: 192.168.31.0/24
clustrCIDR: 10.0.0.0/8
nodes:
  - name: a
    underlayAddress: 192.168.32.1
    podCIDR: 10.244.0.0/24
    pods:
      - {name: p1, address: 10.244.1.5}
      - {name: a, adress: 10.244.0.5}
  - name: B
    underlayAdress: 192.168.31.2
    podCIDR: 10.244.0.0/25
  - nmae: c
    underlayAddress: 192.168.31.3/24
    podCIDR: 10.245.0.0/24
    podCIDR: 10.244.3.0/24
`, []string{
			`t.yaml:2:1: clustrCIDR: unknown field (did you mean "clusterCIDR"?)`,
			"t.yaml:5:22: nodes[0].underlayAddress: 192.168.32.1 is not inside underlay 192.168.31.0/24",
			"t.yaml:8:29: nodes[0].pods[0].address: 10.244.1.5 is not inside nodes[0].podCIDR 10.244.0.0/24",
			`t.yaml:9:16: nodes[0].pods[1].name: "a" is already the name of nodes[0].name (want names unique across nodes and pods)`,
			`t.yaml:9:19: nodes[0].pods[1].adress: unknown field (did you mean "address"?)`,
			`t.yaml:10:11: nodes[1].name: "B" has 'B' (want lower-case letters, digits and '-', as a Kubernetes name)`,
			`t.yaml:11:5: nodes[1].underlayAdress: unknown field (did you mean "underlayAddress"?)`,
			"t.yaml:12:14: nodes[1].podCIDR: 10.244.0.0/25 overlaps nodes[0].podCIDR 10.244.0.0/24",
			`t.yaml:13:5: nodes[2].nmae: unknown field (did you mean "name"?)`,
			`t.yaml:14:22: nodes[2].underlayAddress: "192.168.31.3/24" is a CIDR prefix (want a single address, e.g. 192.168.31.202)`,
			"t.yaml:15:14: nodes[2].podCIDR: 10.245.0.0/24 is not inside clusterCIDR 10.244.0.0/16",
			"t.yaml:16:5: nodes[2].podCIDR: given twice (first on line 15; want each field once)",
		}},
		{"too many nodes", many.String(), []string{
			"t.yaml:2:1: nodes: 9 nodes (want at most 8: each is a namespace and a router)",
		}},
		{"too many pods", pods.String(), []string{
			"t.yaml:40:9: nodes[1].pods[32]: pod 33 (want at most 32 pods in all: each is a namespace with its servers)",
		}},
		{"one node", "underlay: 192.168.31.0/24\nnodes:\n  - {name: a, underlayAddress: 192.168.31.1, podCIDR: 10.244.0.0/24}\n", []string{
			"t.yaml:2:1: nodes: 1 node(s) (want at least 2: the demo checks traffic between nodes)",
		}},
		{"services", twoNodes + `services:
  - name: web
    clusterIPs: [10.103.92.81]
    type: NodePort
    mode: proxy
    sessionAffinity: ClientIP
    ports:
      - {port: 80, protocl: TCP}
    endpoints:
      - addresses: [10.244.9.9]
        ready: false
  - name: dns
    clusterIPs: [10.1.2.3]
    ports: [{port: 99999}]
    endpoints: [{addresses: [10.244.0.2], nodeName: b}]
  - name: none
    clusterIPs: [10.96.0.20]
    ports: [{port: 80}]
`, []string{
			`t.yaml:16:11: services[0].type: "NodePort": a demo's Services are ClusterIP Services (want ClusterIP or none)`,
			"t.yaml:17:5: services[0].mode: set for every Service by vrouter demo --mode (leave it out)",
			"t.yaml:18:5: services[0].sessionAffinity: not used by vrouter demo, whose Services are ClusterIP Services (want only namespace, name, clusterIPs, ports, picker, endpoints)",
			"t.yaml:23:9: services[0].endpoints[0].ready: not used by vrouter demo, whose endpoints are its pods, ready (want only addresses, nodeName, ports)",
		}},
		{"services as configs checks them", twoNodes + `services:
  - name: web
    clusterIPs: [10.103.92.81]
    ports:
      - {port: 80, protocl: TCP}
    endpoints:
      - addresses: [10.244.9.9]
  - name: dns
    clusterIPs: [10.1.2.3]
    ports: [{port: 99999}]
    endpoints: [{addresses: [10.244.0.2], nodeName: b}]
  - name: none
    clusterIPs: [10.96.0.20]
    ports: [{port: 80}]
`, []string{
			`t.yaml:17:20: services[0].ports[0].protocl: unknown field (did you mean "protocol"?)`,
			`t.yaml:19:21: services[0].endpoints[0].addresses[0]: "10.244.9.9" is no pod's address (want the address of a pod under nodes[].pods)`,
			"t.yaml:21:18: services[1].clusterIPs[0]: 10.1.2.3 is outside every service CIDR (want an address in 10.96.0.0/12)",
			"t.yaml:22:20: services[1].ports[0].port: 99999 is not a port number (want 1..65535)",
			`t.yaml:23:53: services[1].endpoints[0].nodeName: "b" does not match address 10.244.0.2, which is in nodes[0].podCIDR 10.244.0.0/24 of node "a" (want nodeName: a)`,
			"t.yaml:24:5: services[2].endpoints: missing (want the pods that serve the Service, by address: addresses: [10.244.1.2])",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDemoTopology("t.yaml", []byte(tc.file))
			var fe *configs.FileError
			if !errors.As(err, &fe) {
				t.Fatalf("parseDemoTopology = %v, want a *configs.FileError", err)
			}
			if got := fe.Lines(); !slices.Equal(got, tc.want) {
				t.Errorf("parseDemoTopology errors:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// A bad file stops the demo before it checks /dev/net/tun or builds
// anything, with every problem located; that needs no privileges.
func TestDemoTopologyBadFileCommand(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the demo runs on Linux only")
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("underlay: 192.168.31.0/24\nnodes:\n  - {name: a, underlayAddress: 192.168.31.1, podCIDR: 10.244.0.0/24, pod: []}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run("demo", "--topology", path)
	for _, want := range []string{
		path + ":2:1: nodes: 1 node(s) (want at least 2",
		path + `:3:70: nodes[0].pod: unknown field (did you mean "pods"?)`,
	} {
		if code != 1 || !strings.Contains(stderr, want) || stdout != "" {
			t.Errorf("vrouter demo --topology %s = exit %d, stdout %q, stderr %q; want exit 1 with %q and nothing built", path, code, stdout, stderr, want)
		}
	}
	code, _, stderr = run("demo", "--topology", path, "--down")
	if code != 2 || !strings.Contains(stderr, "--down stops a demo; it takes no other flag") {
		t.Errorf("vrouter demo --topology --down = exit %d, stderr %q; want 2 refusing the pair", code, stderr)
	}
}

func TestNodePairs(t *testing.T) {
	for _, tc := range []struct {
		n, all int
		want   [][2]int
	}{
		{2, 1, [][2]int{{0, 1}}},
		{3, 3, [][2]int{{0, 1}, {0, 2}, {1, 2}}},
		{5, 10, nil}, // every pair: 10
		{6, 15, [][2]int{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 0}}},
	} {
		got, all := nodePairs(tc.n)
		if all != tc.all || tc.want != nil && !slices.Equal(got, tc.want) || tc.want == nil && len(got) != tc.all {
			t.Errorf("nodePairs(%d) = %v, %d; want %v, %d", tc.n, got, all, tc.want, tc.all)
		}
	}
}

func TestUnroutedAddr(t *testing.T) {
	top, err := parseDemoTopology("t.yaml", []byte(twoNodes))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := unroutedAddr(top.ClusterCIDR, top.Spec); !ok || a != netip.MustParseAddr("10.244.255.254") {
		t.Errorf("unroutedAddr(%s) = %v, %v; want 10.244.255.254", top.ClusterCIDR, a, ok)
	}
	top.Spec.Nodes[1].PodCIDR = netip.MustParsePrefix("10.244.255.0/24")
	if a, ok := unroutedAddr(top.ClusterCIDR, top.Spec); !ok || a != netip.MustParseAddr("10.244.254.254") {
		t.Errorf("unroutedAddr with 10.244.255.0/24 owned = %v, %v; want 10.244.254.254", a, ok)
	}
}
