package integration

// Traffic from outside the cluster: node ports, external IPs and
// load-balancer IPs, externalTrafficPolicy and the health-check node
// port, on the seed's cluster with a client on the underlay that is not a
// node:
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vrouter: host sockets .201:3xxxx, 127.0.0.1:3xxxx
//	 │    nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 ├─ hostgw-node   eth0 .202  vrouter: host sockets .202:3xxxx, 127.0.0.1:3xxxx
//	 │    nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//	 └─ outside       eth0 .100  (no router, no pod CIDR: a client outside the cluster)
//
//	outside ─▶ node:nodePort (host socket) ─▶ relay: pick as for the ClusterIP,
//	           dial the endpoint from the node kernel ─▶ vr0 / cni0 ─▶ endpoint
//
// Endpoints see the node (its vr0 or cni0 address), not the client.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

var (
	npOutside = topology.NodeSpec{Name: "outside", Underlay: netip.MustParseAddr("192.168.31.100")}
	npMaster  = netip.MustParseAddr("192.168.31.201")
	npWorker  = netip.MustParseAddr("192.168.31.202")
	npExtIP   = netip.MustParseAddr("192.0.2.10")
	npLBIP    = netip.MustParseAddr("198.51.100.7")
)

// npServices are the node-port tests' Services:
//
//	my-service    NodePort      80:30080/TCP                                 3 nginx, Cluster
//	kube-dns      NodePort      53:30053/UDP, 53:30053/TCP, 9153:30153/TCP   2 coredns (master)
//	my-lb         LoadBalancer  80:30081/TCP, externalIP 192.0.2.10,         local, Local,
//	                            LB IP 198.51.100.7                           health 30900
//	echo          NodePort      7:30007/TCP                                  3 nginx (echo servers)
func npServices(local ...lbPod) []configs.ServiceSpec {
	return []configs.ServiceSpec{
		myService(func(s *configs.ServiceSpec) {
			s.Type = configs.ServiceTypeNodePort
			s.Ports[0].NodePort = 30080
		}),
		kubeDNS(func(s *configs.ServiceSpec) {
			s.Type = configs.ServiceTypeNodePort
			for i, np := range []int{30053, 30053, 30153} {
				s.Ports[i].NodePort = np
			}
		}),
		{
			Namespace: "default", Name: "my-lb", Type: configs.ServiceTypeLoadBalancer,
			ClusterIPs:            []string{"10.103.92.90"},
			Ports:                 []configs.ServicePortSpec{{Port: 80, Protocol: "TCP", NodePort: 30081}},
			ExternalIPs:           []string{npExtIP.String()},
			LoadBalancerIPs:       []string{npLBIP.String()},
			ExternalTrafficPolicy: "Local",
			HealthCheckNodePort:   30900,
			Endpoints:             lbEndpoints(local...),
		},
		{
			Namespace: "default", Name: "echo", Type: configs.ServiceTypeNodePort,
			ClusterIPs: []string{"10.103.92.91"},
			Ports:      []configs.ServicePortSpec{{Port: 7, Protocol: "TCP", NodePort: 30007}},
			Endpoints:  lbEndpoints(lbNginx...),
		},
	}
}

func TestLBNodePort(t *testing.T) {
	e := startLB(t, "np", npServices(lbNginx...), npOutside)
	e.serveOn(e.c.ServeHTTP, 80, lbNginx...)
	e.serveOn(e.c.ServeTCPEcho, 7, lbNginx...)
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)
	outsideAddr := npOutside.Underlay

	// Every node answers its node port from outside, with all three
	// endpoints (externalTrafficPolicy Cluster), which see the node.
	t.Run("TCPFromOutside", func(t *testing.T) {
		for _, node := range []netip.Addr{npMaster, npWorker} {
			url := fmt.Sprintf("http://%s:30080/", node)
			var counts lbCounter
			for i := range 30 {
				rep, err := e.waitHTTP("outside", url)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				counts.add(rep.Server)
				if rep.Client.Addr() == outsideAddr {
					t.Errorf("GET %s: %s saw the outside client's address %v; a relay's endpoint sees the node", url, rep.Server, rep.Client)
				}
			}
			if got := counts.counts(); len(got) != len(lbNginx) {
				t.Errorf("GET %s x30 from outside: answered by %v, want all of %v", url, got, podNames(lbNginx))
			}
		}
	})

	t.Run("UDPFromOutside", func(t *testing.T) {
		for _, node := range []netip.Addr{npMaster, npWorker} {
			to := netip.AddrPortFrom(node, 30053)
			rep, err := e.waitUDP("outside", to, "query")
			if err != nil {
				t.Fatalf("UDP to %v from outside: %v", to, err)
			}
			if !slices.Contains(podNames(lbCoreDNS), rep.Server) {
				t.Errorf("UDP to %v answered by %s, want a coredns pod", to, rep.Server)
			}
		}
	})

	t.Run("Localhost", func(t *testing.T) {
		for _, node := range []string{lbMaster, lbWorker} {
			if _, err := e.waitHTTP(node, "http://127.0.0.1:30080/"); err != nil {
				t.Errorf("localhost node port on %s: %v", node, err)
			}
		}
	})

	// Pods and nodes reach the external and load-balancer IPs through
	// the router, with every endpoint: as kube-proxy, such traffic is
	// not subject to externalTrafficPolicy Local.
	t.Run("ExternalAddressesFromInside", func(t *testing.T) {
		for _, vip := range []netip.Addr{npExtIP, npLBIP} {
			for _, from := range []string{lbCorednsXx6mc.name, lbNginx4k7xw.name, lbMaster} {
				url := fmt.Sprintf("http://%s/", vip)
				var counts lbCounter
				for i := range 20 {
					rep, err := e.waitHTTP(from, url)
					if err != nil {
						t.Fatalf("GET %s from %s, request %d: %v", url, from, i, err)
					}
					counts.add(rep.Server)
				}
				if got := counts.counts(); len(got) < 2 {
					t.Errorf("GET %s x20 from %s: answered by %v only, want endpoints on both nodes", url, from, got)
				}
			}
		}
	})

	// externalTrafficPolicy Local: a node sends outside traffic only to
	// its own endpoints.
	t.Run("ExternalTrafficPolicyLocal", func(t *testing.T) {
		for _, tc := range []struct {
			node netip.Addr
			want []lbPod
		}{{npMaster, []lbPod{lbNginxTh5pz}}, {npWorker, []lbPod{lbNginx4k7xw, lbNginxJ6zwk}}} {
			url := fmt.Sprintf("http://%s:30081/", tc.node)
			var counts lbCounter
			for i := range 20 {
				rep, err := e.waitHTTP("outside", url)
				if err != nil {
					t.Fatalf("GET %s, request %d: %v", url, i, err)
				}
				counts.add(rep.Server)
			}
			got := counts.counts()
			for name := range got {
				if !slices.Contains(podNames(tc.want), name) {
					t.Errorf("GET %s x20: answered by %s, which is not on that node (counts %v)", url, name, got)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("GET %s x20: answered by %v, want each of %v", url, got, podNames(tc.want))
			}
		}
	})

	// An external IP that a node holds is answered there from outside,
	// by that node's host socket, with externalTrafficPolicy Local: only
	// its own endpoints.
	t.Run("LocalExternalIPFromOutside", func(t *testing.T) {
		if err := e.c.Command(lbWorker, "ip", "addr", "add", npExtIP.String()+"/32", "dev", "eth0").Run(); err != nil {
			t.Fatalf("add %v to %s: %v", npExtIP, lbWorker, err)
		}
		defer e.c.Command(lbWorker, "ip", "addr", "del", npExtIP.String()+"/32", "dev", "eth0").Run()
		if out, err := e.c.Command("outside", "ip", "route", "add", npExtIP.String()+"/32", "via", npWorker.String()).CombinedOutput(); err != nil {
			t.Fatalf("route %v via %v on outside: %v: %s", npExtIP, npWorker, err, out)
		}
		defer e.c.Command("outside", "ip", "route", "del", npExtIP.String()+"/32").Run()
		// The router looks at the node's addresses every 10 s.
		url := fmt.Sprintf("http://%s/", npExtIP)
		deadline := time.Now().Add(15 * time.Second)
		var counts lbCounter
		for n := 0; n < 20; {
			rep, err := e.httpGet("outside", url)
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("GET %s from outside (held by %s): %v", url, lbWorker, err)
				}
				time.Sleep(200 * time.Millisecond)
				continue
			}
			counts.add(rep.Server)
			n++
		}
		got, want := counts.counts(), []lbPod{lbNginx4k7xw, lbNginxJ6zwk}
		if len(got) != len(want) || got[lbNginxTh5pz.name] != 0 {
			t.Errorf("GET %s x20 from outside: answered by %v, want only %s's endpoints %v", url, got, lbWorker, podNames(want))
		}
	})

	// The health-check node port answers 200 with the node's local
	// endpoints while it has some and 503 otherwise, and follows the
	// endpoints as they come and go.
	t.Run("HealthCheckNodePort", func(t *testing.T) {
		e.waitHealth(t, npMaster, 200, 1)
		e.waitHealth(t, npWorker, 200, 2)
		e.setServices(npServices(lbNginx4k7xw)...)
		e.waitHealth(t, npMaster, 503, 0)
		e.waitHealth(t, npWorker, 200, 1)
		// No local endpoint: the master refuses outside traffic to
		// the Local Service's node port (reset), the worker serves it.
		if _, err := e.httpGet("outside", fmt.Sprintf("http://%s:30081/", npMaster)); err == nil {
			t.Errorf("GET %s:30081 with no local endpoint on that node answered, want it refused", npMaster)
		}
		if rep, err := e.waitHTTP("outside", fmt.Sprintf("http://%s:30081/", npWorker)); err != nil || rep.Server != lbNginx4k7xw.name {
			t.Errorf("GET %s:30081 = %v, %v; want %s", npWorker, rep.Server, err, lbNginx4k7xw.name)
		}
		e.setServices(npServices(lbNginxTh5pz)...)
		e.waitHealth(t, npMaster, 200, 1)
		e.waitHealth(t, npWorker, 503, 0)
		e.setServices(npServices(lbNginx...)...)
		e.waitHealth(t, npWorker, 200, 2)
	})

	// A node port another program holds on one node is reported by
	// that node's router, the rest keep working, and the port is served
	// once it is free.
	t.Run("PortTaken", func(t *testing.T) {
		var taken net.Listener
		if err := e.c.Do(lbMaster, func() error {
			var err error
			taken, err = net.Listen("tcp4", netip.AddrPortFrom(npMaster, 30082).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		svcs := append(npServices(lbNginx...), myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.Type = "taken", []string{"10.103.92.92"}, configs.ServiceTypeNodePort
			s.Ports[0].NodePort = 30082
		}))
		e.setServices(svcs...)
		if _, err := e.waitHTTP("outside", fmt.Sprintf("http://%s:30082/", npWorker)); err != nil {
			t.Errorf("node port 30082 on the worker: %v", err)
		}
		state := e.waitHostPort(t, lbMaster, "default", "taken", netip.AddrPortFrom(npMaster, 30082), "failed")
		if !strings.Contains(state.Error, "address already in use") {
			t.Errorf("host socket %v:30082 error %q, want it to say the address is in use", npMaster, state.Error)
		}
		if _, err := e.httpGet("outside", fmt.Sprintf("http://%s:30080/", npMaster)); err != nil {
			t.Errorf("node port 30080 on the master while 30082 is taken there: %v", err)
		}
		taken.Close()
		// Retried every 10 s.
		e.waitHostPort(t, lbMaster, "default", "taken", netip.AddrPortFrom(npMaster, 30082), "listening")
		if _, err := e.waitHTTP("outside", fmt.Sprintf("http://%s:30082/", npMaster)); err != nil {
			t.Errorf("node port 30082 on the master once free: %v", err)
		}
		e.setServices(npServices(lbNginx...)...)
	})

	// An established relayed connection survives endpoint churn that
	// does not remove its own endpoint, as kube-proxy's conntrack entry
	// would.
	t.Run("ChurnKeepsEstablished", func(t *testing.T) {
		to := netip.AddrPortFrom(npMaster, 30007)
		var conn net.Conn
		var rep topology.Reply
		deadline := time.Now().Add(5 * time.Second)
		for {
			var err error
			conn, rep, err = e.dialFrom("outside", netip.AddrPortFrom(outsideAddr, 0), to, 2*time.Second)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("connect to %v from outside: %v", to, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		defer conn.Close()
		var others []lbPod
		for _, p := range lbNginx {
			if p.name != rep.Server {
				others = append(others, p)
			}
		}
		self := slices.IndexFunc(lbNginx, func(p lbPod) bool { return p.name == rep.Server })
		for round, eps := range [][]lbPod{{lbNginx[self]}, {lbNginx[self], others[0]}, lbNginx} {
			e.setServices(append(npServices(lbNginx...)[:3], configs.ServiceSpec{
				Namespace: "default", Name: "echo", Type: configs.ServiceTypeNodePort,
				ClusterIPs: []string{"10.103.92.91"},
				Ports:      []configs.ServicePortSpec{{Port: 7, Protocol: "TCP", NodePort: 30007}},
				Endpoints:  lbEndpoints(eps...),
			})...)
			time.Sleep(300 * time.Millisecond) // the router applies a new file within ~100 ms
			if err := lbEcho(conn, fmt.Sprintf("round %d", round)); err != nil {
				t.Fatalf("round %d (endpoints %v): connection to %s: %v", round, podNames(eps), rep.Server, err)
			}
		}
	})
}

// waitHTTP retries a GET for up to 5 s: a router applies a new file, and
// opens its host sockets, within a moment of it being written.
func (e *lbEnv) waitHTTP(from, url string) (topology.Reply, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep, err := e.httpGet(from, url)
		if err == nil || time.Now().After(deadline) {
			return rep, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitUDP retries a UDP exchange for up to 5 s.
func (e *lbEnv) waitUDP(from string, to netip.AddrPort, payload string) (topology.Reply, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rep, err := e.udpExchange(from, to, payload, time.Second)
		if err == nil || time.Now().After(deadline) {
			return rep, err
		}
	}
}

// npHealth is the health-check node port's answer.
type npHealth struct {
	Service struct {
		Namespace, Name string
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// waitHealth waits up to 5 s for node's health-check node port 30900 to
// answer status with localEndpoints local endpoints, from outside.
func (e *lbEnv) waitHealth(t *testing.T, node netip.Addr, status, localEndpoints int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		code, h, err := e.health(netip.AddrPortFrom(node, 30900))
		if err == nil && code == status && h.LocalEndpoints == localEndpoints &&
			h.Service.Namespace == "default" && h.Service.Name == "my-lb" && h.ServiceProxyHealthy {
			return
		}
		last = fmt.Sprintf("status %d, %+v, error %v", code, h, err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("health check %v:30900 from outside: %s; want status %d with localEndpoints %d for default/my-lb", node, last, status, localEndpoints)
}

func (e *lbEnv) health(addr netip.AddrPort) (int, npHealth, error) {
	var h npHealth
	conn, _, err := e.dialTCP("outside", addr, 2*time.Second)
	if err != nil {
		return 0, h, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return 0, h, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, h, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return resp.StatusCode, h, fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	err = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h, err
}

// npHostPort is one host socket as `vrouter services -o json` lists it.
type npHostPort struct {
	Address netip.AddrPort `json:"address"`
	State   string         `json:"state"`
	Error   string         `json:"error"`
}

// waitHostPort waits up to 15 s (the retry interval is 10 s) for node's
// router to show Service namespace/name's host socket addr in state, and
// returns it.
func (e *lbEnv) waitHostPort(t *testing.T, node, namespace, name string, addr netip.AddrPort, state string) npHostPort {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := e.c.Command(node, vrouterBin, "services", "-o", "json").Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				err = fmt.Errorf("%w: %s", err, ee.Stderr)
			}
			t.Fatalf("vrouter services on %s: %v", node, err)
		}
		var svcs []struct {
			Namespace, Name string
			HostPorts       []npHostPort `json:"hostPorts"`
		}
		if err := json.Unmarshal(out, &svcs); err != nil {
			t.Fatalf("vrouter services -o json on %s: %v\n%s", node, err, out)
		}
		for _, s := range svcs {
			if s.Namespace != namespace || s.Name != name {
				continue
			}
			for _, h := range s.HostPorts {
				if h.Address == addr {
					if h.State == state {
						return h
					}
					last = fmt.Sprintf("%+v", h)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s's router: host socket %v of %s/%s is %s, want %s", node, addr, namespace, name, cmpOr(last, "not listed"), state)
	return npHostPort{}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
