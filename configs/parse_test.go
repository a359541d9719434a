package configs

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/lb"
)

// Builders. makeFile returns the smallest valid file for hostgw-master of
// the reference cluster (no peers, no Services); the mods adjust it.

func makeFile(mods ...func(*File)) *File {
	f := &File{
		APIVersion: APIVersion,
		Kind:       Kind,
		Node: NodeSpec{
			Name:            "hostgw-master",
			PodCIDRs:        []string{"10.244.0.0/24"},
			UnderlayAddress: "192.168.31.201",
		},
		ClusterCIDRs: []string{"10.244.0.0/16"},
		ServiceCIDRs: []string{"10.96.0.0/12"},
	}
	for _, m := range mods {
		m(f)
	}
	return f
}

func makePeer(name, underlay, podCIDR string, mods ...func(*PeerSpec)) PeerSpec {
	p := PeerSpec{Name: name, UnderlayAddress: underlay, PodCIDRs: []string{podCIDR}}
	for _, m := range mods {
		m(&p)
	}
	return p
}

// hostgwNode is the reference cluster's second node as a peer.
func hostgwNode(mods ...func(*PeerSpec)) PeerSpec {
	return makePeer("hostgw-node", "192.168.31.202", "10.244.1.0/24", mods...)
}

func withPeers(ps ...PeerSpec) func(*File) {
	return func(f *File) { f.Peers = append(f.Peers, ps...) }
}

// makeService returns namespace/name on ClusterIP 10.103.92.81 port 80/TCP
// with one endpoint, 10.244.0.4 on hostgw-master.
func makeService(namespace, name string, mods ...func(*ServiceSpec)) ServiceSpec {
	s := ServiceSpec{
		Namespace:  namespace,
		Name:       name,
		ClusterIPs: []string{"10.103.92.81"},
		Ports:      []ServicePortSpec{{Port: 80}},
		Endpoints:  []EndpointSpec{makeEndpoint("10.244.0.4", "hostgw-master")},
	}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func makeEndpoint(addr, node string, mods ...func(*EndpointSpec)) EndpointSpec {
	e := EndpointSpec{Addresses: []string{addr}, NodeName: node}
	for _, m := range mods {
		m(&e)
	}
	return e
}

func withServices(ss ...ServiceSpec) func(*File) {
	return func(f *File) { f.Services = append(f.Services, ss...) }
}

func ptr[T any](v T) *T { return &v }

// parseFile marshals f to YAML and parses it, as a file on disk would be.
func parseFile(t *testing.T, f *File) (*Config, error) {
	t.Helper()
	data, err := yaml.Marshal(f)
	if err != nil {
		t.Fatalf("yaml.Marshal(%+v): %v", f, err)
	}
	return Parse(data)
}

func mustParse(t *testing.T, f *File) *Config {
	t.Helper()
	c, err := parseFile(t, f)
	if err != nil {
		t.Fatalf("Parse() = %v, want no error", err)
	}
	return c
}

// fieldErrors returns the FieldErrors joined in err.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

func pfx(s string) netip.Prefix  { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr   { return netip.MustParseAddr(s) }
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, pfx(s))
	}
	return out
}

func TestParseMinimalDefaults(t *testing.T) {
	got := mustParse(t, makeFile())
	want := &Config{
		Node: Node{
			Name:     "hostgw-master",
			PodCIDRs: pfxs("10.244.0.0/24"),
			Underlay: addr("192.168.31.201"),
		},
		TUN: TUN{
			Name:      "vr0",
			MTU:       1472,
			Configure: true,
			Addresses: pfxs("10.244.0.0/32"),
			Offload:   true,
		},
		Overlay: Overlay{
			Port:           8285,
			Listen:         ap("192.168.31.201:8285"),
			UnderlayMTU:    1500,
			MTU:            1472,
			Encryption:     EncryptionNone,
			PrivateKeyFile: DefaultWireGuardKeyFile,
		},
		RouterAddresses: []netip.Addr{addr("169.254.244.1")},
		ClusterCIDRs:    pfxs("10.244.0.0/16"),
		ServiceCIDRs:    pfxs("10.96.0.0/12"),
		LB: LB{
			Mode: lb.ModeNAT, Picker: lb.PickRandom,
			Proxy:   lb.ProxyOptions{DialTimeout: time.Second, IdleTimeout: time.Hour, DrainTimeout: 30 * time.Second},
			NAT:     lb.NATOptions{MaxTCP: 131072, MaxUDP: 131072, MaxPerClient: 16384, UDPTimeout: 30 * time.Second, TCPEstablishedTimeout: 24 * time.Hour},
			Outlier: lb.OutlierOptions{Failures: 3, BaseEjection: 5 * time.Second, MaxEjection: 5 * time.Minute, MaxEjectionPercent: 50},
			// The API server's --service-node-port-range; primary
			// addresses (nil); localhost node ports on.
			NodePortRange:      NodePortRange{Min: 30000, Max: 32767},
			LocalhostNodePorts: true,
		},
		// Masquerading off; nonMasqueradeCIDRs nil (the cluster and
		// Service CIDRs); the proxy's caps.
		Egress: Egress{MaxFlows: lb.DefaultProxyMaxConns, MaxFlowsPerPod: min(lb.DefaultProxyMaxPerClient, lb.DefaultProxyMaxConns)},
	}
	if !got.Equal(want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", *got, *want)
	}
}

// rfcPublicKey is the public key of RFC 7748's test vector (Alice's).
const rfcPublicKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="

func TestParseWireGuard(t *testing.T) {
	c := mustParse(t, makeFile(func(f *File) {
		f.Overlay.Encryption = "wireguard"
		f.Overlay.PrivateKeyFile = "/etc/vrouter/wg.key"
	}, withPeers(hostgwNode(func(p *PeerSpec) { p.PublicKey = " " + rfcPublicKey + "\n" }))))
	if c.Overlay.Encryption != EncryptionWireGuard || c.Overlay.PrivateKeyFile != "/etc/vrouter/wg.key" {
		t.Errorf("Overlay = %+v", c.Overlay)
	}
	if got := c.Peers[0].PublicKey.String(); got != rfcPublicKey {
		t.Errorf("Peers[0].PublicKey = %s, want %s", got, rfcPublicKey)
	}
	// 1500 - 20 (IPv4) - 8 (UDP) - 32 (WireGuard).
	if c.Overlay.MTU != 1440 || c.TUN.MTU != 1440 {
		t.Errorf("MTU overlay %d, TUN %d; want 1440", c.Overlay.MTU, c.TUN.MTU)
	}
	// A plain overlay keeps its MTU and ignores a peer's key.
	c = mustParse(t, makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.PublicKey = rfcPublicKey }))))
	if c.Overlay.Encryption != EncryptionNone || c.Overlay.MTU != 1472 {
		t.Errorf("plain Overlay = %+v", c.Overlay)
	}
}

func TestParseDefaultsAndOverrides(t *testing.T) {
	tests := []struct {
		name  string
		file  *File
		check func(t *testing.T, c *Config)
	}{{
		name: "peer port defaults to overlay port",
		file: makeFile(func(f *File) { f.Overlay.Port = 9000 }, withPeers(hostgwNode())),
		check: func(t *testing.T, c *Config) {
			if got, want := c.Peers[0].Underlay, ap("192.168.31.202:9000"); got != want {
				t.Errorf("Peers[0].Underlay = %v, want %v", got, want)
			}
			if got, want := c.Overlay.Listen, ap("192.168.31.201:9000"); got != want {
				t.Errorf("Overlay.Listen = %v, want %v", got, want)
			}
		},
	}, {
		name: "peer port override",
		file: makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.Port = 18285 }))),
		check: func(t *testing.T, c *Config) {
			if got, want := c.Peers[0].Underlay, ap("192.168.31.202:18285"); got != want {
				t.Errorf("Peers[0].Underlay = %v, want %v", got, want)
			}
		},
	}, {
		name: "IPv6 underlay takes 48 bytes",
		file: makeFile(func(f *File) {
			f.Node.UnderlayAddress = "fd00:31::201"
			f.Overlay.UnderlayMTU = 9000
		}),
		check: func(t *testing.T, c *Config) {
			if c.Overlay.MTU != 9000-48 || c.TUN.MTU != 9000-48 {
				t.Errorf("Overlay.MTU, TUN.MTU = %d, %d, want %d", c.Overlay.MTU, c.TUN.MTU, 9000-48)
			}
			if got, want := c.Overlay.Listen, ap("[fd00:31::201]:8285"); got != want {
				t.Errorf("Overlay.Listen = %v, want %v", got, want)
			}
		},
	}, {
		name: "explicit TUN, overlay and router settings",
		file: makeFile(func(f *File) {
			f.TUN = TUNSpec{Name: "tun7", FD: 3, MTU: 1400, Configure: ptr(false), Addresses: []string{"10.244.0.1/24", "10.244.0.9"}, MultiQueue: true, Offload: ptr(false)}
			f.Overlay = OverlaySpec{Port: 8472, ListenAddress: "0.0.0.0", UnderlayMTU: 9000, MTU: 8000}
			f.Router.Addresses = []string{"169.254.1.1"}
		}),
		check: func(t *testing.T, c *Config) {
			wantTUN := TUN{Name: "tun7", FD: 3, MTU: 1400, Configure: false, Addresses: pfxs("10.244.0.1/24", "10.244.0.9/32"), MultiQueue: true}
			if !c.TUN.Equal(&wantTUN) {
				t.Errorf("TUN = %+v, want %+v", c.TUN, wantTUN)
			}
			wantOverlay := Overlay{Port: 8472, Listen: ap("0.0.0.0:8472"), UnderlayMTU: 9000, MTU: 8000, Encryption: EncryptionNone, PrivateKeyFile: DefaultWireGuardKeyFile}
			if c.Overlay != wantOverlay {
				t.Errorf("Overlay = %+v, want %+v", c.Overlay, wantOverlay)
			}
			if len(c.RouterAddresses) != 1 || c.RouterAddresses[0] != addr("169.254.1.1") {
				t.Errorf("RouterAddresses = %v, want [169.254.1.1]", c.RouterAddresses)
			}
		},
	}, {
		name: "lb tuning",
		file: makeFile(func(f *File) {
			f.LB.Proxy = ProxySpec{DialTimeout: "250ms", IdleTimeout: "1h30m", DrainTimeout: "5s"}
			f.LB.NAT = NATSpec{MaxFlows: 1000, MaxFlowsPerClient: 10, UDPTimeout: "2m", TCPEstablishedTimeout: "12h"}
		}),
		check: func(t *testing.T, c *Config) {
			wantProxy := lb.ProxyOptions{DialTimeout: 250 * time.Millisecond, IdleTimeout: 90 * time.Minute, DrainTimeout: 5 * time.Second}
			// lb.nat.maxFlows caps each protocol's flows.
			wantNAT := lb.NATOptions{MaxTCP: 1000, MaxUDP: 1000, MaxPerClient: 10, UDPTimeout: 2 * time.Minute, TCPEstablishedTimeout: 12 * time.Hour}
			if c.LB.Proxy != wantProxy || c.LB.NAT != wantNAT {
				t.Errorf("LB.Proxy, LB.NAT = %+v, %+v, want %+v, %+v", c.LB.Proxy, c.LB.NAT, wantProxy, wantNAT)
			}
		},
	}, {
		name: "lb.outlier",
		file: makeFile(func(f *File) {
			off := false
			f.LB.Outlier = OutlierSpec{Enabled: &off, ConsecutiveFailures: 5, BaseEjectionTime: "2s", MaxEjectionTime: "1m", MaxEjectionPercent: 34}
		}),
		check: func(t *testing.T, c *Config) {
			want := lb.OutlierOptions{Disabled: true, Failures: 5, BaseEjection: 2 * time.Second, MaxEjection: time.Minute, MaxEjectionPercent: 34}
			if c.LB.Outlier != want {
				t.Errorf("LB.Outlier = %+v, want %+v", c.LB.Outlier, want)
			}
		},
	}, {
		name: "lb.nat.maxFlowsPerClient defaults to at most maxFlows",
		file: makeFile(func(f *File) { f.LB.NAT.MaxFlows = 100 }),
		check: func(t *testing.T, c *Config) {
			if n := c.LB.NAT; n.MaxTCP != 100 || n.MaxUDP != 100 || n.MaxPerClient != 100 {
				t.Errorf("LB.NAT = %+v, want MaxTCP and MaxUDP 100, MaxPerClient 100", c.LB.NAT)
			}
		},
	}, {
		name: "egress",
		file: makeFile(func(f *File) {
			f.Egress = EgressSpec{Masquerade: true, NonMasqueradeCIDRs: []string{"10.244.0.0/16", "172.16.0.0/12"}, MaxFlows: 50}
		}),
		check: func(t *testing.T, c *Config) {
			want := Egress{Masquerade: true, NonMasqueradeCIDRs: pfxs("10.244.0.0/16", "172.16.0.0/12"), MaxFlows: 50, MaxFlowsPerPod: 50}
			if !c.Egress.Equal(&want) {
				t.Errorf("Egress = %+v, want %+v", c.Egress, want)
			}
		},
	}, {
		name: "zero durations take the defaults",
		file: makeFile(func(f *File) { f.LB.Proxy.DrainTimeout, f.LB.NAT.UDPTimeout = "0s", "0" }),
		check: func(t *testing.T, c *Config) {
			if c.LB.Proxy.DrainTimeout != 30*time.Second || c.LB.NAT.UDPTimeout != 30*time.Second {
				t.Errorf("LB = %+v, want drainTimeout and udpTimeout at their defaults 30s", c.LB)
			}
		},
	}, {
		name: "Service defaults",
		file: makeFile(withServices(makeService("", "my-service"))),
		check: func(t *testing.T, c *Config) {
			s := c.Services[0]
			want := lb.Service{
				Namespace: "default", Name: "my-service",
				ClusterIPs:            []netip.Addr{addr("10.103.92.81")},
				Ports:                 []lb.ServicePort{{Port: 80, Proto: lb.TCP, TargetPort: 80}},
				Mode:                  lb.ModeNAT,
				Picker:                lb.PickRandom,
				SessionAffinity:       lb.AffinityNone,
				InternalTrafficPolicy: lb.PolicyCluster,
				Endpoints: []lb.Endpoint{{
					Addr: addr("10.244.0.4"), NodeName: "hostgw-master",
					Ready: true, Serving: true,
				}},
			}
			if !s.Equal(&want) {
				t.Errorf("Services[0] =\n%+v\nwant\n%+v", s, want)
			}
		},
	}, {
		name: "Service overrides",
		file: makeFile(func(f *File) { f.LB = LBSpec{Mode: "proxy", Picker: "maglev"} }, withServices(
			makeService("kube-system", "a", func(s *ServiceSpec) {
				s.SessionAffinity = "ClientIP"
				s.InternalTrafficPolicy = "Local"
				s.ProxyProtocol = true
				s.Ports[0].Protocol = "UDP"
				s.Ports[0].TargetPort = "5353"
			}),
			makeService("kube-system", "b", func(s *ServiceSpec) {
				s.ClusterIPs = []string{"10.96.0.11"}
				s.Mode, s.Picker = "nat", "least-connections"
				s.SessionAffinity = "ClientIP"
				s.SessionAffinityTimeoutSeconds = 60
			}),
		)),
		check: func(t *testing.T, c *Config) {
			a, b := c.Services[0], c.Services[1]
			if a.Mode != lb.ModeProxy || a.Picker != lb.PickMaglev || b.Mode != lb.ModeNAT || b.Picker != lb.PickLeastConn {
				t.Errorf("Mode/Picker = %s/%s and %s/%s, want proxy/maglev (from lb) and nat/least-connections (own)", a.Mode, a.Picker, b.Mode, b.Picker)
			}
			if a.SessionAffinityTimeout != 3*time.Hour || b.SessionAffinityTimeout != time.Minute {
				t.Errorf("SessionAffinityTimeout = %v and %v, want 3h (default) and 1m", a.SessionAffinityTimeout, b.SessionAffinityTimeout)
			}
			if a.InternalTrafficPolicy != lb.PolicyLocal || !a.ProxyProtocol {
				t.Errorf("Services[0] = %+v, want InternalTrafficPolicy Local and ProxyProtocol", a)
			}
			if want := (lb.ServicePort{Port: 80, Proto: lb.UDP, TargetPort: 5353}); a.Ports[0] != want {
				t.Errorf("Services[0].Ports[0] = %+v, want %+v", a.Ports[0], want)
			}
		},
	}, {
		name: "node ports, external and load-balancer IPs",
		file: makeFile(withServices(
			makeService("default", "np", func(s *ServiceSpec) {
				s.Type = "NodePort"
				s.Ports = []ServicePortSpec{{Name: "http", Port: 80, NodePort: 30080}, {Name: "dns", Port: 53, Protocol: "UDP", NodePort: 30080}}
				s.ExternalIPs = []string{"203.0.113.10"}
				s.ExternalTrafficPolicy = "Local"
			}),
			makeService("default", "lb", func(s *ServiceSpec) {
				s.ClusterIPs = []string{"10.96.0.20"}
				s.Type = "LoadBalancer"
				s.Ports[0].Port, s.Ports[0].NodePort = 8080, 30081
				// np's external IP too, on another port.
				s.LoadBalancerIPs = []string{"203.0.113.20", "203.0.113.10"}
				s.ExternalTrafficPolicy, s.HealthCheckNodePort = "Local", 32000
			}),
			makeService("default", "lb-without-node-ports", func(s *ServiceSpec) {
				s.ClusterIPs = []string{"10.96.0.21"}
				s.Type = "LoadBalancer"
			}),
			makeService("default", "external", func(s *ServiceSpec) {
				s.ClusterIPs = []string{"10.96.0.22"}
				s.ExternalIPs = []string{"192.168.31.201"} // the node's own address may be one
				s.ExternalTrafficPolicy = "Local"
			}),
		)),
		check: func(t *testing.T, c *Config) {
			np, lbs, bare, ext := c.Services[0], c.Services[1], c.Services[2], c.Services[3]
			if np.Type != lb.TypeNodePort || np.Ports[0].NodePort != 30080 || np.Ports[1].NodePort != 30080 ||
				!equalSlices(np.ExternalIPs, []netip.Addr{addr("203.0.113.10")}) || np.ExternalTrafficPolicy != lb.PolicyLocal || np.HealthCheckNodePort != 0 {
				t.Errorf("Services[0] = %+v, want NodePort with 30080/TCP and 30080/UDP, external IP 203.0.113.10, policy Local", np)
			}
			if lbs.Type != lb.TypeLoadBalancer || lbs.Ports[0].NodePort != 30081 || lbs.HealthCheckNodePort != 32000 ||
				!equalSlices(lbs.LoadBalancerIPs, []netip.Addr{addr("203.0.113.20"), addr("203.0.113.10")}) || lbs.ExternalIPs != nil {
				t.Errorf("Services[1] = %+v, want LoadBalancer with nodePort 30081, health check 32000, LB IPs in file order", lbs)
			}
			if bare.Type != lb.TypeLoadBalancer || bare.Ports[0].NodePort != 0 || bare.ExternalTrafficPolicy != lb.PolicyCluster {
				t.Errorf("Services[2] = %+v, want LoadBalancer without node ports, policy Cluster", bare)
			}
			if ext.Type != lb.TypeClusterIP || !equalSlices(ext.ExternalIPs, []netip.Addr{addr("192.168.31.201")}) || ext.ExternalTrafficPolicy != lb.PolicyLocal {
				t.Errorf("Services[3] = %+v, want ClusterIP with external IP 192.168.31.201, policy Local", ext)
			}
			for i := range c.Services {
				if err := c.Services[i].Validate(); err != nil {
					t.Errorf("Services[%d].Validate() = %v, want nil: the file's checks cover lb's", i, err)
				}
			}
		},
	}, {
		name: "lb node port settings",
		file: makeFile(func(f *File) {
			f.LB.NodePortRange = "20000-20999"
			f.LB.NodePortAddresses = []string{"192.168.31.0/24", "0.0.0.0/0"}
			f.LB.LocalhostNodePorts = ptr(false)
		}, withServices(makeService("", "np", func(s *ServiceSpec) { s.Type, s.Ports[0].NodePort = "NodePort", 20999 }))),
		check: func(t *testing.T, c *Config) {
			if c.LB.NodePortRange != (NodePortRange{Min: 20000, Max: 20999}) || !equalSlices(c.LB.NodePortAddresses, pfxs("192.168.31.0/24", "0.0.0.0/0")) || c.LB.LocalhostNodePorts {
				t.Errorf("LB node port fields = %v, %v, %v; want 20000-20999, [192.168.31.0/24 0.0.0.0/0], false", c.LB.NodePortRange, c.LB.NodePortAddresses, c.LB.LocalhostNodePorts)
			}
		},
	}, {
		name: "nodePortAddresses primary is the default",
		file: makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"primary"} }),
		check: func(t *testing.T, c *Config) {
			if c.LB.NodePortAddresses != nil || !c.LB.LocalhostNodePorts {
				t.Errorf("LB.NodePortAddresses, LocalhostNodePorts = %v, %v; want nil (primary), true", c.LB.NodePortAddresses, c.LB.LocalhostNodePorts)
			}
			if !c.Equal(mustParse(t, makeFile())) {
				t.Errorf("nodePortAddresses: [primary] parses unlike leaving it out")
			}
		},
	}, {
		name: "endpoint conditions",
		file: makeFile(withPeers(hostgwNode()), withServices(makeService("default", "my-service", func(s *ServiceSpec) {
			s.Endpoints = []EndpointSpec{
				makeEndpoint("10.244.0.4", "hostgw-master"),
				makeEndpoint("10.244.1.2", "hostgw-node", func(e *EndpointSpec) { e.Terminating = true }),
				makeEndpoint("10.244.1.3", "hostgw-node", func(e *EndpointSpec) { e.Ready = ptr(false); e.Serving = ptr(false) }),
			}
		}))),
		check: func(t *testing.T, c *Config) {
			want := [][3]bool{{true, true, false}, {false, true, true}, {false, false, false}}
			for i, e := range c.Services[0].Endpoints {
				if got := [3]bool{e.Ready, e.Serving, e.Terminating}; got != want[i] {
					t.Errorf("Endpoints[%d] ready, serving, terminating = %v, want %v", i, got, want[i])
				}
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, tt.file))
		})
	}
}

func TestParseTargetPortYAML(t *testing.T) {
	// A YAML number, a quoted number and a name.
	data := []byte(`apiVersion: vrouter.dev/v1alpha1
kind: RouterConfig
node: {name: hostgw-master, podCIDRs: [10.244.0.0/24], underlayAddress: 192.168.31.201}
clusterCIDRs: [10.244.0.0/16]
serviceCIDRs: [10.96.0.0/12]
services:
- name: web
  clusterIPs: [10.96.0.20]
  ports:
  - {name: a, port: 80, targetPort: 8080}
  - {name: b, port: 81, targetPort: "8081"}
  - {name: c, port: 82, targetPort: http-alt}
  endpoints:
  - addresses: [10.244.0.4]
    ports: [{name: http-alt, port: 8082}]
`)
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	e := &c.Services[0].Endpoints[0]
	for i, want := range []uint16{8080, 8081, 8082} {
		p := c.Services[0].Ports[i]
		if got, ok := p.Target(e); !ok || got != want {
			t.Errorf("Ports[%d] (%+v).Target(%v) = %d, %v, want %d, true", i, p, e.Addr, got, ok, want)
		}
	}
	if got := c.Services[0].Ports[2].TargetPortName; got != "http-alt" {
		t.Errorf("Ports[2].TargetPortName = %q, want http-alt", got)
	}
}

func TestParseEmptyTUNAddresses(t *testing.T) {
	// An explicit empty list turns the default off; yaml.Marshal would
	// drop it, so write the file by hand.
	c, err := Parse([]byte(`apiVersion: vrouter.dev/v1alpha1
kind: RouterConfig
node: {name: hostgw-master, podCIDRs: [10.244.0.0/24], underlayAddress: 192.168.31.201}
clusterCIDRs: [10.244.0.0/16]
tun: {addresses: []}
`))
	if err != nil || len(c.TUN.Addresses) != 0 {
		t.Errorf("Parse(tun.addresses: []) = %+v, %v, want no TUN addresses", c, err)
	}
}

func TestParseDualStack(t *testing.T) {
	c := mustParse(t, makeFile(func(f *File) {
		f.Node.PodCIDRs = []string{"10.244.0.0/24", "fd00:10:244::/64"}
		f.ClusterCIDRs = []string{"10.244.0.0/16", "fd00:10:244::/56"}
		f.ServiceCIDRs = []string{"10.96.0.0/12", "fd00:10:96::/112"}
	}, withPeers(hostgwNode(func(p *PeerSpec) { p.PodCIDRs = append(p.PodCIDRs, "fd00:10:244:1::/64") })),
		withServices(makeService("default", "my-service", func(s *ServiceSpec) {
			s.ClusterIPs = []string{"fd00:10:96::5c51", "10.103.92.81"}
			s.Endpoints[0].Addresses = []string{"10.244.0.4", "fd00:10:244::4"}
			s.Endpoints = append(s.Endpoints, makeEndpoint("fd00:10:244:1::2", "hostgw-node"))
		}))))
	if got, want := c.TUN.Addresses, pfxs("10.244.0.0/32", "fd00:10:244:0:ffff:ffff:ffff:ffff/128"); !equalSlices(got, want) {
		t.Errorf("TUN.Addresses = %v, want %v", got, want)
	}
	if got, want := c.RouterAddresses, []netip.Addr{addr("169.254.244.1"), addr("fd69:7672::1")}; !equalSlices(got, want) {
		t.Errorf("RouterAddresses = %v, want %v", got, want)
	}
	if got, want := c.Peers[0].PodCIDRs, pfxs("10.244.1.0/24", "fd00:10:244:1::/64"); !equalSlices(got, want) {
		t.Errorf("Peers[0].PodCIDRs = %v, want %v", got, want)
	}
	// The file's first endpoint has an address per family: one
	// lb.Endpoint each, both on hostgw-master.
	var got []string
	for _, e := range c.Services[0].Endpoints {
		got = append(got, e.Addr.String()+"@"+e.NodeName)
	}
	if want := []string{"10.244.0.4@hostgw-master", "fd00:10:244::4@hostgw-master", "fd00:10:244:1::2@hostgw-node"}; !equalSlices(got, want) {
		t.Errorf("Services[0].Endpoints = %v, want %v", got, want)
	}

	// An IPv6-only peer is enough to demand the IPv6 minimum MTU.
	_, err := parseFile(t, makeFile(func(f *File) {
		f.ClusterCIDRs = []string{"10.244.0.0/16", "fd00:10:244::/56"}
		f.Overlay.MTU = 1200
	}, withPeers(makePeer("v6-only", "192.168.31.203", "fd00:10:244:3::/64"))))
	if !hasFieldError(err, "overlay.mtu", "1200", "1280") {
		t.Errorf("Parse(IPv6 peer, mtu 1200) = %v, want an overlay.mtu error naming 1200 and 1280", err)
	}
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// hasFieldError reports whether err holds a FieldError for field whose
// message contains every one of parts.
func hasFieldError(err error, field string, parts ...string) bool {
	for _, fe := range fieldErrors(err) {
		if fe.Field != field {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(fe.Msg, p)
		}
		if ok && strings.Contains(err.Error(), fe.Field+": ") {
			return true
		}
	}
	return false
}

func TestParseInvalid(t *testing.T) {
	svc := func(mods ...func(*ServiceSpec)) func(*File) {
		return withServices(makeService("default", "my-service", mods...))
	}
	tests := []struct {
		name  string
		file  *File
		field string
		// value and want must both appear in the message: the value
		// found and a hint of what was expected.
		value, want string
	}{
		// Header and required fields.
		{"missing apiVersion", makeFile(func(f *File) { f.APIVersion = "" }), "apiVersion", "missing", `"vrouter.dev/v1alpha1"`},
		{"unknown apiVersion", makeFile(func(f *File) { f.APIVersion = "vrouter.dev/v1" }), "apiVersion", `"vrouter.dev/v1"`, `supported: "vrouter.dev/v1alpha1"`},
		{"wrong kind", makeFile(func(f *File) { f.Kind = "Router" }), "kind", `"Router"`, `"RouterConfig"`},
		{"missing node name", makeFile(func(f *File) { f.Node.Name = "" }), "node.name", "missing", "hostgw-master"},
		{"missing underlay", makeFile(func(f *File) { f.Node.UnderlayAddress = "" }), "node.underlayAddress", "missing", "IP address"},
		{"underlay with port", makeFile(func(f *File) { f.Node.UnderlayAddress = "192.168.31.201:8285" }), "node.underlayAddress", `"192.168.31.201:8285"`, "address alone"},
		{"underlay not an IP", makeFile(func(f *File) { f.Node.UnderlayAddress = "hostgw-master" }), "node.underlayAddress", `"hostgw-master"`, "192.168.31.202"},
		{"missing pod CIDRs", makeFile(func(f *File) { f.Node.PodCIDRs = nil }), "node.podCIDRs", "missing", "10.244.1.0/24"},
		{"missing cluster CIDRs", makeFile(func(f *File) { f.ClusterCIDRs = nil }), "clusterCIDRs", "missing", "10.244.0.0/16"},
		{"services without service CIDRs", makeFile(func(f *File) { f.ServiceCIDRs = nil }, svc()), "serviceCIDRs", "missing", "10.96.0.0/12"},

		// CIDRs.
		{"pod CIDR with host bits", makeFile(func(f *File) { f.Node.PodCIDRs = []string{"10.244.0.1/24"} }), "node.podCIDRs[0]", `"10.244.0.1/24"`, "want 10.244.0.0/24"},
		{"pod CIDR is an address", makeFile(func(f *File) { f.Node.PodCIDRs = []string{"10.244.0.0"} }), "node.podCIDRs[0]", `"10.244.0.0"`, "not a CIDR prefix"},
		{"peer pod CIDR bad length", makeFile(withPeers(hostgwNode(), makePeer("n3", "192.168.31.203", "10.244.1.0/33"))), "peers[1].podCIDRs[0]", `"10.244.1.0/33"`, "is not a CIDR prefix (want e.g. 10.244.1.0/24)"},
		{"cluster CIDR with host bits", makeFile(func(f *File) { f.ClusterCIDRs = []string{"10.244.1.0/16"} }), "clusterCIDRs[0]", `"10.244.1.0/16"`, "want 10.244.0.0/16"},
		{"IPv4-mapped prefix", makeFile(func(f *File) { f.ServiceCIDRs = []string{"::ffff:10.96.0.0/108"} }), "serviceCIDRs[0]", `"::ffff:10.96.0.0/108"`, "IPv4 prefix"},
		{"pod CIDR outside cluster", makeFile(withPeers(makePeer("n3", "192.168.31.203", "10.245.1.0/24"))), "peers[0].podCIDRs[0]", "10.245.1.0/24", "subnet of 10.244.0.0/16"},
		{"two IPv4 pod CIDRs", makeFile(func(f *File) { f.Node.PodCIDRs = append(f.Node.PodCIDRs, "10.244.9.0/24") }), "node.podCIDRs[1]", "10.244.9.0/24", "at most one per family"},
		{"overlapping pod CIDRs", makeFile(withPeers(makePeer("n3", "192.168.31.203", "10.244.0.0/23"))), "peers[0].podCIDRs[0]", "10.244.0.0/23", "node.podCIDRs[0] 10.244.0.0/24"},
		{"same pod CIDR on two peers", makeFile(withPeers(hostgwNode(), makePeer("n3", "192.168.31.203", "10.244.1.0/24"))), "peers[1].podCIDRs[0]", "10.244.1.0/24", "peers[0].podCIDRs[0]"},
		{"service CIDR overlaps cluster", makeFile(func(f *File) { f.ServiceCIDRs = []string{"10.244.128.0/17"} }), "serviceCIDRs[0]", "10.244.128.0/17", "disjoint"},

		// Encryption.
		{"unknown encryption", makeFile(func(f *File) { f.Overlay.Encryption = "ipsec" }), "overlay.encryption", `"ipsec"`, `"wireguard"`},
		{"encrypted peer without a key", makeFile(func(f *File) { f.Overlay.Encryption = "wireguard" }, withPeers(hostgwNode())), "peers[0].publicKey", "missing", "vrouter pubkey"},
		{"peer key not base64", makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.PublicKey = "hSDwCYkwp1R0i33ctD73Wg2" }))), "peers[0].publicKey", `"hSDwCYkwp1R0i33ctD73Wg2"`, "44 characters of base64"},
		{"two peers with one key", makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.PublicKey = rfcPublicKey }), makePeer("n3", "192.168.31.203", "10.244.2.0/24", func(p *PeerSpec) { p.PublicKey = rfcPublicKey }))), "peers[1].publicKey", "peers[0]", "each router's own key"},
		{"MTU too large for WireGuard", makeFile(func(f *File) { f.Overlay.Encryption = "wireguard"; f.Overlay.MTU = 1450 }), "overlay.mtu", "1450", "WireGuard headers"},

		// Peers.
		{"missing peer name", makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.Name = "" }))), "peers[0].name", "missing", "hostgw-node"},
		{"duplicate peer name", makeFile(withPeers(hostgwNode(), makePeer("hostgw-node", "192.168.31.203", "10.244.2.0/24"))), "peers[1].name", `"hostgw-node"`, "unique"},
		{"peer named like the node", makeFile(withPeers(makePeer("hostgw-master", "192.168.31.203", "10.244.2.0/24"))), "peers[0].name", `"hostgw-master"`, "node.name"},
		{"duplicate peer underlay", makeFile(withPeers(hostgwNode(), makePeer("n3", "192.168.31.202", "10.244.2.0/24"))), "peers[1].underlayAddress", "192.168.31.202", "peers[0]"},
		{"peer underlay is self", makeFile(withPeers(makePeer("n3", "192.168.31.201", "10.244.2.0/24"))), "peers[0].underlayAddress", "192.168.31.201", "peer's own address"},
		{"peer underlay family", makeFile(withPeers(makePeer("n3", "fd00:31::3", "10.244.2.0/24"))), "peers[0].underlayAddress", "fd00:31::3", "same family"},
		{"peer port", makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.Port = 65536 }))), "peers[0].port", "65536", "1..65535"},
		{"negative peer port", makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.Port = -1 }))), "peers[0].port", "-1", "1..65535"},

		// Overlay, MTU, TUN, router.
		{"overlay port", makeFile(func(f *File) { f.Overlay.Port = 70000 }), "overlay.port", "70000", "1..65535"},
		{"listen address family", makeFile(func(f *File) { f.Overlay.ListenAddress = "fd00::1" }), "overlay.listenAddress", "fd00::1", "same family"},
		{"tunnel MTU above underlay", makeFile(func(f *File) { f.Overlay.MTU = 1473 }), "overlay.mtu", "1473", "1500 - 28"},
		{"tunnel MTU above IPv6 underlay", makeFile(func(f *File) { f.Node.UnderlayAddress = "fd00:31::201"; f.Overlay.MTU = 1472 }), "overlay.mtu", "1472", "576..1452"},
		{"tunnel MTU below IPv4 minimum", makeFile(func(f *File) { f.Overlay.MTU = 500 }), "overlay.mtu", "500", "576..1472"},
		{"tunnel MTU below IPv6 minimum", makeFile(func(f *File) {
			f.Node.PodCIDRs = append(f.Node.PodCIDRs, "fd00:10:244::/64")
			f.ClusterCIDRs = append(f.ClusterCIDRs, "fd00:10:244::/56")
			f.Overlay.MTU = 1279
		}), "overlay.mtu", "1279", "1280..1472"},
		{"underlay MTU too small", makeFile(func(f *File) { f.Overlay.UnderlayMTU = 600 }), "overlay.underlayMTU", "600", "604..65535"},
		{"TUN MTU above tunnel", makeFile(func(f *File) { f.TUN.MTU = 1500 }), "tun.mtu", "1500", "576..1472"},
		{"TUN name too long", makeFile(func(f *File) { f.TUN.Name = "vrouter-tunnel-0" }), "tun.name", `"vrouter-tunnel-0"`, "15 characters"},
		{"TUN fd negative", makeFile(func(f *File) { f.TUN.FD = -1 }), "tun.fd", "-1", "> 0"},
		{"TUN address", makeFile(func(f *File) { f.TUN.Addresses = []string{"vr0"} }), "tun.addresses[0]", `"vr0"`, "10.244.0.0/32"},
		{"router address in pod CIDR", makeFile(func(f *File) { f.Router.Addresses = []string{"10.244.0.1"} }), "router.addresses[0]", "10.244.0.1", "node.podCIDRs[0] 10.244.0.0/24"},
		{"busy poll not a duration", makeFile(func(f *File) { f.Router.BusyPoll = "fast" }), "router.busyPoll", `"fast"`, "not a duration"},
		{"busy poll too long", makeFile(func(f *File) { f.Router.BusyPoll = "2s" }), "router.busyPoll", `"2s"`, "out of range"},
		{"router address in service CIDR", makeFile(func(f *File) { f.Router.Addresses = []string{"10.96.0.1"} }), "router.addresses[0]", "10.96.0.1", "serviceCIDRs[0]"},
		{"router address in peer's cluster", makeFile(func(f *File) { f.Router.Addresses = []string{"10.244.200.1"} }), "router.addresses[0]", "10.244.200.1", "clusterCIDRs[0]"},
		{"two IPv4 router addresses", makeFile(func(f *File) { f.Router.Addresses = []string{"169.254.244.1", "169.254.244.2"} }), "router.addresses[1]", "169.254.244.2", "at most one per family"},
		{"router address family missing", makeFile(func(f *File) {
			f.Node.PodCIDRs = append(f.Node.PodCIDRs, "fd00:10:244::/64")
			f.ClusterCIDRs = append(f.ClusterCIDRs, "fd00:10:244::/56")
			f.Router.Addresses = []string{"169.254.244.1"}
		}), "router.addresses", "no IPv6 address", "fd69:7672::1"},
		{"default router address inside cluster", makeFile(func(f *File) {
			f.Node.PodCIDRs = []string{"169.254.244.0/24"}
			f.ClusterCIDRs = []string{"169.254.0.0/16"}
		}), "router.addresses (default)[0]", "169.254.244.1", "outside every pod"},

		// LB.
		{"lb mode", makeFile(func(f *File) { f.LB.Mode = "ipvs" }), "lb.mode", `"ipvs"`, `"nat", "proxy"`},
		{"lb mode case", makeFile(func(f *File) { f.LB.Mode = "NAT" }), "lb.mode", `"NAT"`, `want "nat"`},
		{"lb picker", makeFile(func(f *File) { f.LB.Picker = "wrr" }), "lb.picker", `"wrr"`, `"maglev"`},
		{"proxy dial timeout without unit", makeFile(func(f *File) { f.LB.Proxy.DialTimeout = "5" }), "lb.proxy.dialTimeout", `"5" is not a duration`, `e.g. "1s"`},
		{"proxy dial timeout too long", makeFile(func(f *File) { f.LB.Proxy.DialTimeout = "2m" }), "lb.proxy.dialTimeout", `"2m" is out of range`, "1ms..1m"},
		{"proxy idle timeout negative", makeFile(func(f *File) { f.LB.Proxy.IdleTimeout = "-1h" }), "lb.proxy.idleTimeout", `"-1h"`, "1s..720h"},
		{"proxy drain timeout word", makeFile(func(f *File) { f.LB.Proxy.DrainTimeout = "forever" }), "lb.proxy.drainTimeout", `"forever" is not a duration`, `"30s"`},
		{"outlier ejection percent above 100", makeFile(func(f *File) { f.LB.Outlier.MaxEjectionPercent = 150 }), "lb.outlier.maxEjectionPercent", "150 is out of range", "1..100"},
		{"outlier max ejection below base", makeFile(func(f *File) { f.LB.Outlier.BaseEjectionTime, f.LB.Outlier.MaxEjectionTime = "10s", "5s" }), "lb.outlier.maxEjectionTime", `"5s" is out of range`, "10s..24h"},
		{"nat max flows negative", makeFile(func(f *File) { f.LB.NAT.MaxFlows = -1 }), "lb.nat.maxFlows", "-1 is out of range", "1..16777216"},
		{"nat max flows per client above max flows", makeFile(func(f *File) { f.LB.NAT.MaxFlows, f.LB.NAT.MaxFlowsPerClient = 100, 200 }), "lb.nat.maxFlowsPerClient", "200 is out of range", "at most lb.nat.maxFlows"},
		{"egress non-masquerade CIDR", makeFile(func(f *File) { f.Egress.NonMasqueradeCIDRs = []string{"10.244.0.1/16"} }), "egress.nonMasqueradeCIDRs[0]", `"10.244.0.1/16"`, "10.244.0.0/16"},
		{"egress max flows per pod above max flows", makeFile(func(f *File) { f.Egress.MaxFlows, f.Egress.MaxFlowsPerPod = 10, 20 }), "egress.maxFlowsPerPod", "20 is out of range", "at most egress.maxFlows"},
		{"nat udp timeout too short", makeFile(func(f *File) { f.LB.NAT.UDPTimeout = "10ms" }), "lb.nat.udpTimeout", `"10ms" is out of range`, "1s..24h"},
		{"nat tcp timeout", makeFile(func(f *File) { f.LB.NAT.TCPEstablishedTimeout = "1d" }), "lb.nat.tcpEstablishedTimeout", `"1d" is not a duration`, `"24h"`},

		// Services.
		{"service name", makeFile(svc(func(s *ServiceSpec) { s.Name = "" })), "services[0].name", "missing", "my-service"},
		{"duplicate service", makeFile(withServices(makeService("", "a"), makeService("default", "a", func(s *ServiceSpec) { s.ClusterIPs = []string{"10.96.0.20"} }))), "services[1].name", "default/a", "services[0]"},
		{"missing ClusterIPs", makeFile(svc(func(s *ServiceSpec) { s.ClusterIPs = nil })), "services[0].clusterIPs", "missing", "10.96.0.10"},
		{"ClusterIP outside service CIDR", makeFile(svc(func(s *ServiceSpec) { s.ClusterIPs = []string{"10.244.5.5"} })), "services[0].clusterIPs[0]", "10.244.5.5", "10.96.0.0/12"},
		{"ClusterIP is a prefix", makeFile(svc(func(s *ServiceSpec) { s.ClusterIPs = []string{"10.96.0.0/16"} })), "services[0].clusterIPs[0]", `"10.96.0.0/16"`, "single address"},
		{"two IPv4 ClusterIPs", makeFile(svc(func(s *ServiceSpec) { s.ClusterIPs = append(s.ClusterIPs, "10.96.0.20") })), "services[0].clusterIPs[1]", "10.96.0.20", "at most one per family"},
		{"missing ports", makeFile(svc(func(s *ServiceSpec) { s.Ports = nil })), "services[0].ports", "missing", "port: 80"},
		{"port zero", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].Port = 0 })), "services[0].ports[0].port", "0", "1..65535"},
		{"protocol", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].Protocol = "SCTP" })), "services[0].ports[0].protocol", `"SCTP"`, `"TCP", "UDP"`},
		{"protocol case", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].Protocol = "udp" })), "services[0].ports[0].protocol", `"udp"`, `want "UDP"`},
		{"unnamed ports", makeFile(svc(func(s *ServiceSpec) { s.Ports = append(s.Ports, ServicePortSpec{Name: "b", Port: 81}) })), "services[0].ports[0].name", "missing", "several ports"},
		{"duplicate port names", makeFile(svc(func(s *ServiceSpec) {
			s.Ports = []ServicePortSpec{{Name: "http", Port: 80}, {Name: "http", Port: 81}}
		})), "services[0].ports[1].name", `"http"`, "unique"},
		{"duplicate VIP port", makeFile(withServices(makeService("", "a"), makeService("", "b"))), "services[1].ports[0]", "10.103.92.81:80/TCP", "services[0].ports[0] (default/a)"},
		{"duplicate VIP port in one Service", makeFile(svc(func(s *ServiceSpec) {
			s.Ports = []ServicePortSpec{{Name: "a", Port: 53, Protocol: "UDP"}, {Name: "b", Port: 53, Protocol: "UDP"}}
		})), "services[0].ports[1]", "10.103.92.81:53/UDP", "once"},
		{"target port out of range", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].TargetPort = "70000" })), "services[0].ports[0].targetPort", "70000", "1..65535"},
		{"target port bad name", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].TargetPort = "HTTP" })), "services[0].ports[0].targetPort", `"HTTP"`, "lowercase"},
		{"session affinity", makeFile(svc(func(s *ServiceSpec) { s.SessionAffinity = "Sticky" })), "services[0].sessionAffinity", `"Sticky"`, `"ClientIP"`},
		{"affinity timeout too long", makeFile(svc(func(s *ServiceSpec) { s.SessionAffinity = "ClientIP"; s.SessionAffinityTimeoutSeconds = 86401 })), "services[0].sessionAffinityTimeoutSeconds", "86401", "1..86400"},
		{"affinity timeout negative", makeFile(svc(func(s *ServiceSpec) { s.SessionAffinity = "ClientIP"; s.SessionAffinityTimeoutSeconds = -5 })), "services[0].sessionAffinityTimeoutSeconds", "-5", "1..86400"},
		{"affinity timeout without ClientIP", makeFile(svc(func(s *ServiceSpec) { s.SessionAffinityTimeoutSeconds = 60 })), "services[0].sessionAffinityTimeoutSeconds", "60", "ClientIP"},
		{"traffic policy", makeFile(svc(func(s *ServiceSpec) { s.InternalTrafficPolicy = "Node" })), "services[0].internalTrafficPolicy", `"Node"`, `"Local"`},
		{"service mode", makeFile(svc(func(s *ServiceSpec) { s.Mode = "dsr" })), "services[0].mode", `"dsr"`, `"proxy"`},
		{"proxy protocol in nat mode", makeFile(svc(func(s *ServiceSpec) { s.ProxyProtocol = true })), "services[0].proxyProtocol", `"nat"`, "mode: proxy"},

		// Service types, node ports, external and load-balancer IPs.
		{"service type", makeFile(svc(func(s *ServiceSpec) { s.Type = "ExternalName" })), "services[0].type", `"ExternalName"`, `"ClusterIP", "NodePort", "LoadBalancer"`},
		{"service type case", makeFile(svc(func(s *ServiceSpec) { s.Type = "nodeport" })), "services[0].type", `"nodeport"`, `want "NodePort"`},
		{"nodePort on a ClusterIP Service", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].NodePort = 30080 })), "services[0].ports[0].nodePort", "30080 may not be used when type is ClusterIP", "type NodePort or LoadBalancer"},
		{"NodePort Service without nodePort", makeFile(svc(func(s *ServiceSpec) {
			s.Type = "NodePort"
			s.Ports = []ServicePortSpec{{Name: "a", Port: 80, NodePort: 30080}, {Name: "b", Port: 81}}
		})), "services[0].ports[1].nodePort", "missing", "want nodePort on every port of a NodePort Service; the file has no allocator"},
		{"nodePort below the range", makeFile(svc(func(s *ServiceSpec) { s.Type, s.Ports[0].NodePort = "NodePort", 8080 })), "services[0].ports[0].nodePort", "8080 is outside lb.nodePortRange 30000-32767", "30000..32767"},
		{"nodePort above a set range", makeFile(func(f *File) { f.LB.NodePortRange = "20000-20999" }, svc(func(s *ServiceSpec) { s.Type, s.Ports[0].NodePort = "LoadBalancer", 30080 })), "services[0].ports[0].nodePort", "30080 is outside lb.nodePortRange 20000-20999", "20000..20999"},
		{"negative nodePort", makeFile(svc(func(s *ServiceSpec) { s.Type, s.Ports[0].NodePort = "NodePort", -1 })), "services[0].ports[0].nodePort", "-1 is outside", "30000..32767"},
		{"nodePort twice across Services", makeFile(withServices(
			makeService("", "a", func(s *ServiceSpec) { s.Type, s.Ports[0].NodePort = "NodePort", 30080 }),
			makeService("", "b", func(s *ServiceSpec) {
				s.ClusterIPs, s.Type, s.Ports[0].NodePort = []string{"10.96.0.20"}, "LoadBalancer", 30080
			}),
		)), "services[1].ports[0].nodePort", "30080/TCP is already the nodePort of services[0].ports[0].nodePort (default/a)", "once"},
		{"nodePort twice in a Service", makeFile(svc(func(s *ServiceSpec) {
			s.Type = "NodePort"
			s.Ports = []ServicePortSpec{{Name: "a", Port: 80, NodePort: 30080}, {Name: "b", Port: 81, NodePort: 30080}}
		})), "services[0].ports[1].nodePort", "30080/TCP is already the nodePort of services[0].ports[0].nodePort", "once"},
		{"healthCheckNodePort on a NodePort Service", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.Ports[0].NodePort, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "NodePort", 30080, "Local", 30081
		})), "services[0].healthCheckNodePort", "30081 is set on a Service of type NodePort", "only with type LoadBalancer and externalTrafficPolicy Local"},
		{"healthCheckNodePort with policy Cluster", makeFile(svc(func(s *ServiceSpec) { s.Type, s.HealthCheckNodePort = "LoadBalancer", 30081 })), "services[0].healthCheckNodePort", "externalTrafficPolicy Cluster", "only with type LoadBalancer and externalTrafficPolicy Local"},
		{"healthCheckNodePort outside the range", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "LoadBalancer", "Local", 10256
		})), "services[0].healthCheckNodePort", "10256 is outside lb.nodePortRange 30000-32767", "30000..32767"},
		{"healthCheckNodePort is a nodePort", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "LoadBalancer", "Local", 30080
			s.Ports[0].Protocol, s.Ports[0].NodePort = "UDP", 30080
		})), "services[0].healthCheckNodePort", "30080 is already the nodePort of services[0].ports[0].nodePort (default/my-service)", "no nodePort uses"},
		{"nodePort is another Service's healthCheckNodePort", makeFile(withServices(
			makeService("", "a", func(s *ServiceSpec) {
				s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "LoadBalancer", "Local", 30080
			}),
			makeService("", "b", func(s *ServiceSpec) {
				s.ClusterIPs, s.Type, s.Ports[0].NodePort = []string{"10.96.0.20"}, "NodePort", 30080
			}),
		)), "services[1].ports[0].nodePort", "30080 is already the healthCheckNodePort of services[0].healthCheckNodePort (default/a)", "no healthCheckNodePort uses"},
		{"healthCheckNodePort twice", makeFile(withServices(
			makeService("", "a", func(s *ServiceSpec) {
				s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = "LoadBalancer", "Local", 30080
			}),
			makeService("", "b", func(s *ServiceSpec) {
				s.ClusterIPs, s.Type, s.ExternalTrafficPolicy, s.HealthCheckNodePort = []string{"10.96.0.20"}, "LoadBalancer", "Local", 30080
			}),
		)), "services[1].healthCheckNodePort", "30080 is already the healthCheckNodePort of services[0].healthCheckNodePort (default/a)", "once"},
		{"externalTrafficPolicy Local on a ClusterIP Service", makeFile(svc(func(s *ServiceSpec) { s.ExternalTrafficPolicy = "Local" })), "services[0].externalTrafficPolicy", `"Local" on a Service of type ClusterIP without externalIPs`, "type NodePort or LoadBalancer, or with externalIPs"},
		{"externalTrafficPolicy value", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.Ports[0].NodePort, s.ExternalTrafficPolicy = "NodePort", 30080, "Global"
		})), "services[0].externalTrafficPolicy", `"Global"`, `"Cluster", "Local"`},
		{"external IP not an address", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"example.com"} })), "services[0].externalIPs[0]", `"example.com" is not an IP address`, "203.0.113.10"},
		{"external IP is a prefix", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"203.0.113.0/24"} })), "services[0].externalIPs[0]", `"203.0.113.0/24" is a CIDR prefix`, "single address"},
		{"external IP multicast", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"224.0.0.1"} })), "services[0].externalIPs[0]", "224.0.0.1 is not a routable unicast address", "203.0.113.10"},
		{"external IP loopback", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"127.0.0.1"} })), "services[0].externalIPs[0]", "127.0.0.1 is not a routable unicast address", "outside the cluster"},
		{"external IP unspecified", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"0.0.0.0"} })), "services[0].externalIPs[0]", "0.0.0.0 is not a routable unicast address", "outside the cluster"},
		{"external IP in the service CIDR", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"10.96.0.99"} })), "services[0].externalIPs[0]", "10.96.0.99 is inside serviceCIDRs[0] 10.96.0.0/12", "outside the cluster's pod and service ranges"},
		{"external IP in the cluster CIDR", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"10.244.200.1"} })), "services[0].externalIPs[0]", "10.244.200.1 is inside clusterCIDRs[0] 10.244.0.0/16", "outside the cluster's pod and service ranges"},
		{"external IP is a router address", makeFile(func(f *File) { f.Router.Addresses = []string{"192.0.2.1"} }, svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"192.0.2.1"} })), "services[0].externalIPs[0]", "192.0.2.1 is a router address", "outside the cluster"},
		{"external IP family", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"2001:db8::10"} })), "services[0].externalIPs[0]", "2001:db8::10 is IPv6 but the Service has no IPv6 ClusterIP", "10.103.92.81"},
		{"external IP twice", makeFile(svc(func(s *ServiceSpec) { s.ExternalIPs = []string{"203.0.113.10", "203.0.113.10"} })), "services[0].externalIPs[1]", "203.0.113.10 is already listed by services[0].externalIPs[0]", "once per Service"},
		{"load-balancer IP is an external IP", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.ExternalIPs, s.LoadBalancerIPs = "LoadBalancer", []string{"203.0.113.10"}, []string{"203.0.113.10"}
		})), "services[0].loadBalancerIPs[0]", "203.0.113.10 is already listed by services[0].externalIPs[0]", "once per Service"},
		{"load-balancer IPs without type LoadBalancer", makeFile(svc(func(s *ServiceSpec) {
			s.Type, s.Ports[0].NodePort, s.LoadBalancerIPs = "NodePort", 30080, []string{"203.0.113.20"}
		})), "services[0].loadBalancerIPs", "type NodePort", "only with type LoadBalancer"},
		{"load-balancer IP in a pod CIDR", makeFile(svc(func(s *ServiceSpec) { s.Type, s.LoadBalancerIPs = "LoadBalancer", []string{"10.244.0.9"} })), "services[0].loadBalancerIPs[0]", `10.244.0.9 is inside node.podCIDRs[0] 10.244.0.0/24 (node "hostgw-master")`, "outside the cluster's"},
		{"load-balancer IP with zone", makeFile(svc(func(s *ServiceSpec) { s.Type, s.LoadBalancerIPs = "LoadBalancer", []string{"fe80::1%eth0"} })), "services[0].loadBalancerIPs[0]", `"fe80::1%eth0" has an IPv6 zone`, "fe80::1"},
		{"external IP and port served twice", makeFile(withServices(
			makeService("", "a", func(s *ServiceSpec) { s.ExternalIPs = []string{"203.0.113.10"} }),
			makeService("", "b", func(s *ServiceSpec) {
				s.ClusterIPs, s.Type, s.LoadBalancerIPs = []string{"10.96.0.20"}, "LoadBalancer", []string{"203.0.113.10"}
			}),
		)), "services[1].loadBalancerIPs[0]", "203.0.113.10:80/TCP is already served by services[0].externalIPs[0] (default/a)", "each address, port and protocol once"},
		{"endpoint is an external IP", makeFile(withServices(
			makeService("", "a", func(s *ServiceSpec) { s.ExternalIPs = []string{"192.168.31.50"} }),
			makeService("", "b", func(s *ServiceSpec) {
				s.ClusterIPs = []string{"10.96.0.20"}
				s.Endpoints = []EndpointSpec{makeEndpoint("192.168.31.50", "")}
			}),
		)), "services[1].endpoints[0].addresses[0]", "192.168.31.50 is the external IP services[0].externalIPs[0]", "not a Service VIP"},

		// lb node port settings.
		{"node port range not a range", makeFile(func(f *File) { f.LB.NodePortRange = "30000:32767" }), "lb.nodePortRange", `"30000:32767" is not a port range`, `MIN-MAX, e.g. "30000-32767"`},
		{"node port range reversed", makeFile(func(f *File) { f.LB.NodePortRange = "32767-30000" }), "lb.nodePortRange", `"32767-30000" is out of range`, "1 <= MIN <= MAX <= 65535"},
		{"node port range too high", makeFile(func(f *File) { f.LB.NodePortRange = "30000-70000" }), "lb.nodePortRange", `"30000-70000" is out of range`, "MAX <= 65535"},
		{"node port range from zero", makeFile(func(f *File) { f.LB.NodePortRange = "0-100" }), "lb.nodePortRange", `"0-100" is out of range`, "1 <= MIN"},
		{"node port address not a CIDR", makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"192.168.31.201"} }), "lb.nodePortAddresses[0]", `"192.168.31.201" is an address, not a CIDR prefix`, "192.168.31.0/24"},
		{"node port address host bits", makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"192.168.31.1/24"} }), "lb.nodePortAddresses[0]", `"192.168.31.1/24" has host bits set`, "192.168.31.0/24"},
		{"node port addresses primary with CIDRs", makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"192.168.31.0/24", "primary"} }), "lb.nodePortAddresses[1]", `"primary" is listed with CIDR prefixes`, "[primary] alone"},
		{"node port addresses primary case", makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"Primary"} }), "lb.nodePortAddresses[0]", `"Primary" is not supported`, `want "primary"`},
		{"node port address twice", makeFile(func(f *File) { f.LB.NodePortAddresses = []string{"10.0.0.0/8", "10.0.0.0/8"} }), "lb.nodePortAddresses[1]", "10.0.0.0/8 is listed twice", "once"},

		// Endpoints.
		{"endpoint without addresses", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Addresses = nil })), "services[0].endpoints[0].addresses", "missing", "10.244.1.2"},
		{"endpoint address invalid", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Addresses = []string{"10.244.0.256"} })), "services[0].endpoints[0].addresses[0]", `"10.244.0.256"`, "not an IP address"},
		{"endpoint is a VIP", makeFile(withServices(makeService("", "a"), makeService("", "b", func(s *ServiceSpec) {
			s.ClusterIPs = []string{"10.96.0.20"}
			s.Endpoints = []EndpointSpec{makeEndpoint("10.103.92.81", "")}
		}))), "services[1].endpoints[0].addresses[0]", "10.103.92.81", "services[0].clusterIPs[0]"},
		{"endpoint in service CIDR", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Addresses = []string{"10.96.7.7"} })), "services[0].endpoints[0].addresses[0]", "10.96.7.7", "outside the service range"},
		{"endpoint loopback", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Addresses = []string{"127.0.0.1"} })), "services[0].endpoints[0].addresses[0]", "127.0.0.1", "routable unicast"},
		{"endpoint family", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Addresses = []string{"fd00:10:244::4"} })), "services[0].endpoints[0].addresses[0]", "fd00:10:244::4", "no IPv6 ClusterIP"},
		{"duplicate endpoint", makeFile(svc(func(s *ServiceSpec) { s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.0.4", "")) })), "services[0].endpoints[1].addresses[0]", "10.244.0.4", "services[0].endpoints[0].addresses[0]"},
		{"unknown node", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].NodeName = "hostgw-nod" })), "services[0].endpoints[0].nodeName", `"hostgw-nod"`, `"hostgw-master"`},
		{"node does not match pod CIDR", makeFile(withPeers(hostgwNode()), svc(func(s *ServiceSpec) { s.Endpoints[0].NodeName = "hostgw-node" })), "services[0].endpoints[0].nodeName", "10.244.0.4", "want nodeName: hostgw-master"},
		{"ready and terminating", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Ready = ptr(true); s.Endpoints[0].Terminating = true })), "services[0].endpoints[0].ready", "true", "ready: false"},
		{"named target port missing on endpoint", makeFile(svc(func(s *ServiceSpec) {
			s.Ports[0].TargetPort = "http"
			s.Endpoints[0].Ports = []EndpointPortSpec{{Name: "https", Port: 8443}}
		})), "services[0].endpoints[0].ports", `"http"`, "services[0].ports[0].targetPort"},
		{"named target port wrong protocol", makeFile(svc(func(s *ServiceSpec) {
			s.Ports[0].Protocol, s.Ports[0].TargetPort = "UDP", "dns"
			s.Endpoints[0].Ports = []EndpointPortSpec{{Name: "dns", Port: 53}}
		})), "services[0].endpoints[0].ports", `UDP port named "dns"`, "services[0].ports[0].targetPort"},
		{"named target port on endpoint without ports", makeFile(svc(func(s *ServiceSpec) { s.Ports[0].TargetPort = "http" })), "services[0].endpoints[0].ports", "missing", `port named "http"`},
		{"endpoint port name", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Ports = []EndpointPortSpec{{Name: "Web_1", Port: 80}} })), "services[0].endpoints[0].ports[0].name", `"Web_1"`, "lowercase"},
		{"endpoint port number", makeFile(svc(func(s *ServiceSpec) { s.Endpoints[0].Ports = []EndpointPortSpec{{Name: "http", Port: 0}} })), "services[0].endpoints[0].ports[0].port", "0", "1..65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFile(t, tt.file)
			if err == nil {
				t.Fatalf("Parse() = %+v, nil; want an error for %s", c, tt.field)
			}
			if !hasFieldError(err, tt.field, tt.value, tt.want) {
				t.Errorf("Parse() error =\n%v\nwant a line %q naming %q and %q", err, tt.field+": ...", tt.value, tt.want)
			}
		})
	}
}

// TestParseExactMessage pins the wording of one message, the example in
// the package's brief.
func TestParseExactMessage(t *testing.T) {
	_, err := parseFile(t, makeFile(withPeers(hostgwNode(), makePeer("n3", "192.168.31.203", "10.244.1.0/33"))))
	const want = `peers[1].podCIDRs[0]: "10.244.1.0/33" is not a CIDR prefix (want e.g. 10.244.1.0/24)`
	if err == nil || err.Error() != want {
		t.Errorf("Parse() error = %v, want %q", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "peers[1].podCIDRs[0]" {
		t.Errorf("errors.As(%v, *FieldError) = %+v, want Field peers[1].podCIDRs[0]", err, fe)
	}
}

func TestParseCollectsAllErrors(t *testing.T) {
	_, err := parseFile(t, makeFile(func(f *File) {
		f.Node.Name = ""
		f.Overlay.Port = 0x10000
		f.LB.Picker = "wrr"
	}, withPeers(hostgwNode(func(p *PeerSpec) { p.PodCIDRs = []string{"10.244.1.1/24"} }))))
	var got []string
	for _, fe := range fieldErrors(err) {
		got = append(got, fe.Field)
	}
	want := []string{"node.name", "overlay.port", "peers[0].podCIDRs[0]", "lb.picker"}
	if !equalSlices(got, want) {
		t.Errorf("Parse() error fields = %v, want %v; error:\n%v", got, want, err)
	}
}

func TestParseRawYAML(t *testing.T) {
	const head = "apiVersion: vrouter.dev/v1alpha1\nkind: RouterConfig\n"
	const node = "node: {name: hostgw-master, podCIDRs: [10.244.0.0/24], underlayAddress: 192.168.31.201}\nclusterCIDRs: [10.244.0.0/16]\n"
	tests := []struct {
		name, yaml string
		field      string // "" for an error that is not a FieldError
		want       []string
	}{
		{"unknown top-level field", head + node + "bgp: {}\n", "bgp", []string{"unknown field", "want one of apiVersion, kind, node"}},
		{"misspelt field", head + "node: {name: a, podCIDR: [10.244.0.0/24], underlayAddress: 192.168.31.201}\n", "node.podCIDR", []string{`did you mean "podCIDRs"?`}},
		{"field in the wrong case", head + node + "peers:\n- Name: hostgw-node\n", "peers[0].Name", []string{`did you mean "name"?`}},
		{"string for an integer", head + node + "overlay: {port: http}\n", "overlay.port", []string{`"http" is not an integer`}},
		{"fraction for an integer", head + node + "tun: {mtu: 1400.5}\n", "tun.mtu", []string{"1400.5 is not an integer"}},
		{"string for a boolean", head + node + "tun: {configure: maybe}\n", "tun.configure", []string{`"maybe" is not a boolean`}},
		{"number for a duration", head + node + "lb: {proxy: {drainTimeout: 30}}\n", "lb.proxy.drainTimeout", []string{`"30" is not a duration`}},
		{"misspelt lb field", head + node + "lb: {nat: {maxFlow: 10}}\n", "lb.nat.maxFlow", []string{`did you mean "maxFlows"?`}},
		{"primary as a scalar", head + node + "lb: {nodePortAddresses: primary}\n", "lb.nodePortAddresses", []string{`"primary" is not a list`}},
		{"one port for a range", head + node + "lb: {nodePortRange: 30000}\n", "lb.nodePortRange", []string{`"30000" is not a port range`}},
		{"string for localhostNodePorts", head + node + "lb: {localhostNodePorts: \"no\"}\n", "lb.localhostNodePorts", []string{`"no" is not a boolean`}},
		{"string for a nodePort", head + node + "serviceCIDRs: [10.96.0.0/12]\nservices: [{name: a, clusterIPs: [10.96.0.1], type: NodePort, ports: [{port: 80, nodePort: http}]}]\n",
			"services[0].ports[0].nodePort", []string{`"http" is not an integer`}},
		{"misspelt nodePort", head + node + "serviceCIDRs: [10.96.0.0/12]\nservices: [{name: a, clusterIPs: [10.96.0.1], ports: [{port: 80, nodeport: 30080}]}]\n",
			"services[0].ports[0].nodeport", []string{`did you mean "nodePort"?`}},
		{"misspelt externalIPs", head + node + "serviceCIDRs: [10.96.0.0/12]\nservices: [{name: a, clusterIPs: [10.96.0.1], externalIP: [203.0.113.10], ports: [{port: 80}]}]\n",
			"services[0].externalIP", []string{`did you mean "externalIPs"?`}},
		{"scalar for a list", head + node + "serviceCIDRs: 10.96.0.0/12\n", "serviceCIDRs", []string{`"10.96.0.0/12" is not a list`}},
		{"list for a mapping", head + node + "tun: [vr0]\n", "tun", []string{"a list is not a mapping", "fields name, fd"}},
		{"not a mapping", "- a\n- b\n", "(file)", []string{"a list is not a mapping", "RouterConfig"}},
		{"empty file", "", "apiVersion", []string{"missing"}},
		{"other kind of document", "apiVersion: v1\nkind: ConfigMap\ndata: {}\n", "apiVersion", []string{`"v1" is not supported`, `"vrouter.dev/v1alpha1"`}},
		{"duplicate key", head + "node: {name: a, name: b}\n", "node.name", []string{"given twice (first on line 3"}},
		{"YAML syntax", head + "node: {name: [\n", "", []string{"line 3: YAML syntax error: did not find expected node content"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want one naming %q", tt.yaml, tt.field)
			}
			if tt.field != "" && !hasFieldError(err, tt.field, tt.want...) {
				t.Errorf("Parse(%q) error =\n%v\nwant a line %q containing %q", tt.yaml, err, tt.field+": ...", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error = %v, want it to contain %q", tt.yaml, err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	if _, err := Load(missing); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(%q) = %v, want a not-exist error naming the path", missing, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, makeFile(func(f *File) { f.Node.Name = "" }))
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) || !hasFieldError(err, "node.name", "missing") {
		t.Errorf("Load(%q) = %v, want an error naming the path and node.name", bad, err)
	}
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, makeFile())
	if c, err := Load(good); err != nil || c.Node.Name != "hostgw-master" {
		t.Errorf("Load(%q) = %+v, %v, want node hostgw-master", good, c, err)
	}
}

func writeFile(t *testing.T, path string, f *File) {
	t.Helper()
	data, err := yaml.Marshal(f)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestForNode: a source that knows the node (the API server) fills in the
// node section of a file that tunes the rest, with the file's checks.
func TestForNode(t *testing.T) {
	tuning := makeFile(func(f *File) { f.Node = NodeSpec{}; f.Overlay.UnderlayMTU = 9000 })
	node := Node{Name: "hostgw-master", PodCIDRs: pfxs("10.244.0.0/24"), Underlay: addr("192.168.31.201"), Zone: "zone-a"}
	got, err := tuning.ForNode(node)
	if err != nil {
		t.Fatalf("ForNode(%+v) = %v", node, err)
	}
	want := mustParse(t, makeFile(func(f *File) { f.Node.Zone = "zone-a"; f.Overlay.UnderlayMTU = 9000 }))
	if !got.Equal(want) {
		t.Errorf("ForNode(%+v) =\n%+v\nwant the file with that node\n%+v", node, *got, *want)
	}

	for _, tc := range []struct {
		name               string
		node               Node
		field, value, hint string
	}{
		{"no address", Node{Name: "n", PodCIDRs: pfxs("10.244.0.0/24")}, "node.underlayAddress", "missing", "IP address"},
		{"no pod CIDR", Node{Name: "n", Underlay: addr("192.168.31.201")}, "node.podCIDRs", "missing", "10.244.1.0/24"},
		{"pod CIDR outside the cluster", Node{Name: "n", PodCIDRs: pfxs("10.245.0.0/24"), Underlay: addr("192.168.31.201")}, "node.podCIDRs[0]", "10.245.0.0/24", "subnet of 10.244.0.0/16"},
	} {
		if _, err := tuning.ForNode(tc.node); !hasFieldError(err, tc.field, tc.value, tc.hint) {
			t.Errorf("ForNode(%s: %+v) error =\n%v\nwant a line %q naming %q and %q", tc.name, tc.node, err, tc.field+": ...", tc.value, tc.hint)
		}
	}
}

// TestParseFileReportsEveryProblemLocated: an unknown field, a value of
// the wrong type and an invalid value are reported in one run, each with
// its line and column, in the order of the file; the field the unknown one
// misspells and the one of the wrong type are not reported again as
// missing.
func TestParseFileReportsEveryProblemLocated(t *testing.T) {
	const file = `apiVersion: vrouter.dev/v1alpha1
kind: RouterConfig
node:
  name: hostgw-master
  podCIDR: [10.244.0.0/24]
  underlayAddress: 192.168.31.201
clusterCIDRs: [10.244.0.0/16]
overlay:
  port: http
  mtu: 1473
peers:
  - name: hostgw-node
    underlayAddress: 192.168.31.202
    podCIDRs: [10.244.1.0/33]
`
	_, err := ParseFile("node.yaml", []byte(file))
	const want = `node.yaml:5:3: node.podCIDR: unknown field (did you mean "podCIDRs"?)
node.yaml:9:9: overlay.port: "http" is not an integer
node.yaml:10:8: overlay.mtu: 1473 is above underlayMTU 1500 - 28 (IPv4/UDP header) = 1472 (want 576..1472)
node.yaml:14:16: peers[0].podCIDRs[0]: "10.244.1.0/33" is not a CIDR prefix (want e.g. 10.244.1.0/24)`
	if err == nil || err.Error() != want {
		t.Errorf("ParseFile(node.yaml) error =\n%v\nwant\n%s", err, want)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != "node.yaml" || len(fe.Errs) != 4 {
		t.Errorf("errors.As(%v, *FileError) = %+v, want node.yaml with 4 problems", err, fe)
	}
	if got := fieldErrors(err); len(got) != 4 || got[2].Line != 10 || got[2].Column != 8 {
		t.Errorf("FieldErrors = %+v, want 4, the third on line 10 column 8", got)
	}
}

// TestParseLocatesMissingFields: a missing field is located at the section
// that lacks it, or at the top of the file.
func TestParseLocatesMissingFields(t *testing.T) {
	const file = "apiVersion: vrouter.dev/v1alpha1\nkind: RouterConfig\nserviceCIDRs: [10.96.0.0/12]\nnode:\n  name: a\n  podCIDRs: [10.244.0.0/24]\n"
	_, err := ParseFile("n.yaml", []byte(file))
	const want = "n.yaml:1:1: clusterCIDRs: missing (want a list of CIDR prefixes, e.g. [10.244.0.0/16])\n" +
		"n.yaml:4:1: node.underlayAddress: missing (want an IP address such as 192.168.31.202)"
	if err == nil || err.Error() != want {
		t.Errorf("ParseFile(n.yaml) error =\n%v\nwant\n%s", err, want)
	}
}

// TestParseSpeaksNoLibraryInternals: whatever is wrong with a file, the
// messages name fields and values, not the YAML or JSON decoder's
// internals or Go's types.
func TestParseSpeaksNoLibraryInternals(t *testing.T) {
	const head = "apiVersion: vrouter.dev/v1alpha1\nkind: RouterConfig\n"
	for _, body := range []string{
		"node: {name: a, name: b}\n",
		"node: {name: [\n",
		"node: [a]\nclusterCIDRs: {a: b}\n",
		"node: {name: {x: 1}, podCIDRs: 10.0.0.0/24, underlayAddress: [1]}\n",
		"overlay: {port: 1e20, mtu: true}\ntun: {configure: yes please, addresses: [[1]]}\n",
		"services: [{name: a, ports: [{port: x}], endpoints: [{addresses: 10.0.0.1}]}]\n",
		"\tnode: a\n",
		"- a\n",
		"node: &a {name: x}\npeers: [*a, *b]\n",
	} {
		_, err := Parse([]byte(head + body))
		if err == nil {
			t.Errorf("Parse(%q) = nil error, want one", body)
			continue
		}
		for _, internal := range []string{"yaml:", "json:", "unmarshal", "[]string", "[]interface", "map[", "float64", "string into", "Spec", "reflect"} {
			if strings.Contains(err.Error(), internal) {
				t.Errorf("Parse(%q) error =\n%v\nwant no %q in it", body, err, internal)
			}
		}
	}
}

// TestParseTuning: a Kubernetes-mode tuning file (no node, peers or
// services) is valid as such, and checked as a config file otherwise.
func TestParseTuning(t *testing.T) {
	const head = "apiVersion: vrouter.dev/v1alpha1\nkind: RouterConfig\n"
	good := head + "clusterCIDRs: [10.244.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\nlb: {mode: proxy, picker: maglev}\ntun: {offload: false}\noverlay: {underlayMTU: 9000}\n"
	f, err := ParseTuning([]byte(good))
	if err != nil {
		t.Fatalf("ParseTuning(good) = %v", err)
	}
	c, err := f.ForNode(Node{Name: "n", PodCIDRs: pfxs("10.244.3.0/24"), Underlay: addr("192.168.31.203")})
	if err != nil || c.LB.Mode != lb.ModeProxy || c.Overlay.MTU != 9000-28 || c.TUN.Offload {
		t.Errorf("ParseTuning(good).ForNode = %+v, %v; want the file's tuning", c, err)
	}
	if _, err := Parse([]byte(good)); !hasFieldError(err, "node.name", "missing") {
		t.Errorf("Parse(tuning file) = %v, want node.name missing: it is no node's config file", err)
	}

	bad := head + "clusterCIDRs: [10.244.0.0/16]\nlb: {mode: ipvs, nat: {maxFlow: 10}}\npeers: []\nnode: {name: x}\n"
	_, err = ParseTuning([]byte(bad))
	var fe *FileError
	if !errors.As(fileError("t.yaml", err), &fe) {
		t.Fatalf("ParseTuning(bad) = %v, want problems", err)
	}
	const want = `t.yaml:4:12: lb.mode: "ipvs" is not supported (want one of "nat", "proxy")
t.yaml:4:24: lb.nat.maxFlow: unknown field (did you mean "maxFlows"?)
t.yaml:5:1: peers: not allowed in a tuning file: with --kubeconfig or --in-cluster the peers are the other Nodes in the API server (remove it)
t.yaml:6:1: node: not allowed in a tuning file: with --kubeconfig or --in-cluster the node is its Node in the API server (remove it)`
	if got := fe.Error(); got != want {
		t.Errorf("ParseTuning(bad) error =\n%s\nwant\n%s", got, want)
	}
}

// TestParseFileLocatesNodePortProblems: the checks of node ports, external
// addresses and traffic policies name the field, the value and what was
// expected, at the line and column of the value, and a node port used
// twice names both uses.
func TestParseFileLocatesNodePortProblems(t *testing.T) {
	const file = `apiVersion: vrouter.dev/v1alpha1
kind: RouterConfig
node: {name: hostgw-master, podCIDRs: [10.244.0.0/24], underlayAddress: 192.168.31.201}
clusterCIDRs: [10.244.0.0/16]
serviceCIDRs: [10.96.0.0/12]
services:
  - name: web
    type: NodePort
    clusterIPs: [10.96.0.20]
    externalIPs: [10.96.0.30]
    ports:
      - {name: http, port: 80, nodePort: 30080}
      - {name: https, port: 443}
  - name: api
    type: LoadBalancer
    clusterIPs: [10.96.0.21]
    externalTrafficPolicy: Local
    healthCheckNodePort: 30080
    ports:
      - {port: 80, nodePort: 30080}
`
	_, err := ParseFile("np.yaml", []byte(file))
	const want = `np.yaml:10:19: services[0].externalIPs[0]: 10.96.0.30 is inside serviceCIDRs[0] 10.96.0.0/12 (want an address outside the cluster's pod and service ranges, e.g. 203.0.113.10)
np.yaml:13:9: services[0].ports[1].nodePort: missing (want nodePort on every port of a NodePort Service; the file has no allocator: pick one in lb.nodePortRange 30000-32767, e.g. 30000)
np.yaml:18:26: services[1].healthCheckNodePort: 30080 is already the nodePort of services[0].ports[0].nodePort (default/web) (want a port that no nodePort uses)
np.yaml:20:30: services[1].ports[0].nodePort: 30080/TCP is already the nodePort of services[0].ports[0].nodePort (default/web) (want each node port and protocol once)`
	if err == nil || err.Error() != want {
		t.Errorf("ParseFile(np.yaml) error =\n%v\nwant\n%s", err, want)
	}
}

// TestParseTuningNodePorts: a tuning file takes the lb section's node
// port settings, and ForNode keeps them.
func TestParseTuningNodePorts(t *testing.T) {
	const file = "apiVersion: vrouter.dev/v1alpha1\nkind: RouterConfig\nclusterCIDRs: [10.244.0.0/16]\n" +
		"lb: {nodePortRange: 20000-22767, nodePortAddresses: [192.168.31.0/24, 'fd00:31::/64'], localhostNodePorts: false}\n"
	f, err := ParseTuning([]byte(file))
	if err != nil {
		t.Fatalf("ParseTuning = %v, want the node port settings accepted", err)
	}
	c, err := f.ForNode(Node{Name: "n", PodCIDRs: pfxs("10.244.3.0/24"), Underlay: addr("192.168.31.203")})
	if err != nil {
		t.Fatalf("ForNode = %v", err)
	}
	if c.LB.NodePortRange != (NodePortRange{Min: 20000, Max: 22767}) || !equalSlices(c.LB.NodePortAddresses, pfxs("192.168.31.0/24", "fd00:31::/64")) || c.LB.LocalhostNodePorts {
		t.Errorf("ForNode LB = range %v, addresses %v, localhost %v; want 20000-22767, [192.168.31.0/24 fd00:31::/64], false", c.LB.NodePortRange, c.LB.NodePortAddresses, c.LB.LocalhostNodePorts)
	}
	_, err = ParseTuning([]byte(strings.Replace(file, "20000-22767", "22767-20000", 1)))
	if !hasFieldError(err, "lb.nodePortRange", `"22767-20000" is out of range`) {
		t.Errorf("ParseTuning(reversed range) = %v, want an lb.nodePortRange error", err)
	}
}

func TestNodePortRange(t *testing.T) {
	r := NodePortRange{Min: 30000, Max: 32767}
	for _, tc := range []struct {
		port int
		want bool
	}{{29999, false}, {30000, true}, {32767, true}, {32768, false}, {0, false}, {-30000, false}, {30000 + 65536, false}} {
		if got := r.Contains(tc.port); got != tc.want {
			t.Errorf("%v.Contains(%d) = %v, want %v", r, tc.port, got, tc.want)
		}
	}
	if got := r.String(); got != "30000-32767" {
		t.Errorf("String() = %q, want %q", got, "30000-32767")
	}
}

// TestParseMisspeltTypeReportedOnce: a type or externalTrafficPolicy that
// is not valid is reported once, not again as every field it would allow.
func TestParseMisspeltTypeReportedOnce(t *testing.T) {
	_, err := parseFile(t, makeFile(withServices(makeService("", "web", func(s *ServiceSpec) {
		s.Type, s.ExternalTrafficPolicy = "nodeport", "local"
		s.LoadBalancerIPs = []string{"203.0.113.20"}
		s.HealthCheckNodePort = 30081
		s.Ports[0].NodePort = 30080
	}))))
	var got []string
	for _, fe := range fieldErrors(err) {
		got = append(got, fe.Field)
	}
	if want := []string{"services[0].type", "services[0].externalTrafficPolicy"}; !equalSlices(got, want) {
		t.Errorf("Parse() error fields = %v, want %v; error:\n%v", got, want, err)
	}
}

func TestBusyPoll(t *testing.T) {
	if c := mustParse(t, makeFile()); c.BusyPoll != 0 {
		t.Errorf("BusyPoll without router.busyPoll = %v, want 0 (off)", c.BusyPoll)
	}
	if c := mustParse(t, makeFile(func(f *File) { f.Router.BusyPoll = "10ms" })); c.BusyPoll != 10*time.Millisecond {
		t.Errorf("BusyPoll of router.busyPoll 10ms = %v, want 10ms", c.BusyPoll)
	}
}
