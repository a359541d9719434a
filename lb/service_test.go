package lb

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEndpointSelection(t *testing.T) {
	tests := []struct {
		name       string
		node, zone string
		svc        Service
		want       []string
		wantStatus Status
	}{
		{
			name: "all ready",
			svc:  makeService("default", "my-service"),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "not ready left out",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints[1] = makeEndpoint("10.244.1.2", notReady)
			}),
			want: []string{"10.244.0.4:80", "10.244.1.3:80"},
		},
		{
			name: "ready preferred over serving terminating",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints[0] = makeEndpoint("10.244.0.4", servingTerminating)
				s.Endpoints[2] = makeEndpoint("10.244.1.3", servingTerminating)
			}),
			want: []string{"10.244.1.2:80"},
		},
		{
			name: "none ready falls back to serving terminating",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints[0] = makeEndpoint("10.244.0.4", servingTerminating)
				s.Endpoints[1] = makeEndpoint("10.244.1.2", terminatingNotServing)
				s.Endpoints[2] = makeEndpoint("10.244.1.3", servingTerminating)
			}),
			want: []string{"10.244.0.4:80", "10.244.1.3:80"},
		},
		{
			name: "serving but not terminating is no fallback",
			svc: makeService("default", "my-service", func(s *Service) {
				// Not ready yet serving without terminating: kube-proxy
				// uses neither.
				for i := range s.Endpoints {
					s.Endpoints[i].Ready = false
				}
			}),
			wantStatus: StatusNoEndpoints,
		},
		{
			name: "all terminating and not serving",
			svc: makeService("default", "my-service", func(s *Service) {
				for i := range s.Endpoints {
					terminatingNotServing(&s.Endpoints[i])
				}
			}),
			wantStatus: StatusNoEndpoints,
		},
		{
			name:       "no endpoints",
			svc:        makeService("default", "my-service", func(s *Service) { s.Endpoints = nil }),
			wantStatus: StatusNoEndpoints,
		},
		{
			name: "duplicate endpoints once",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.1.2"))
			}),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "target port",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Ports[0].TargetPort = 8080
			}),
			want: []string{"10.244.0.4:8080", "10.244.1.2:8080", "10.244.1.3:8080"},
		},
		{
			name: "other family left out",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints = append(s.Endpoints, makeEndpoint("fd00:10:244:1::2"))
			}),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "local on worker",
			node: workerNode,
			svc:  makeService("default", "my-service", func(s *Service) { s.InternalTrafficPolicy = PolicyLocal }),
			want: []string{"10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "local on master",
			node: masterNode,
			svc:  makeService("default", "my-service", func(s *Service) { s.InternalTrafficPolicy = PolicyLocal }),
			want: []string{"10.244.0.4:80"},
		},
		{
			name: "local falls back to local serving terminating, not remote ready",
			node: masterNode,
			svc: makeService("default", "my-service", func(s *Service) {
				s.InternalTrafficPolicy = PolicyLocal
				s.Endpoints[0] = makeEndpoint("10.244.0.4", servingTerminating)
			}),
			want: []string{"10.244.0.4:80"},
		},
		{
			name: "local without local endpoints drops",
			node: masterNode,
			svc: makeService("default", "my-service", func(s *Service) {
				s.InternalTrafficPolicy = PolicyLocal
				s.Endpoints = s.Endpoints[1:]
			}),
			wantStatus: StatusNoLocalEndpoints,
		},
		{
			name: "local without node name drops",
			svc: makeService("default", "my-service", func(s *Service) {
				s.InternalTrafficPolicy = PolicyLocal
			}),
			wantStatus: StatusNoLocalEndpoints,
		},
		{
			name: "local with no endpoints anywhere rejects",
			node: masterNode,
			svc: makeService("default", "my-service", func(s *Service) {
				s.InternalTrafficPolicy = PolicyLocal
				for i := range s.Endpoints {
					notReady(&s.Endpoints[i])
				}
			}),
			wantStatus: StatusNoEndpoints,
		},
		{
			name: "zone hints",
			node: workerNode, zone: "zone-b",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints[0].ForZones = []string{"zone-a"}
				s.Endpoints[1].ForZones = []string{"zone-b"}
				s.Endpoints[2].ForZones = []string{"zone-a"}
			}),
			want: []string{"10.244.1.2:80"},
		},
		{
			name: "zone hints ignored unless every ready endpoint has them",
			node: workerNode, zone: "zone-b",
			svc: makeService("default", "my-service", func(s *Service) {
				s.Endpoints[1].ForZones = []string{"zone-b"}
			}),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "zone hints ignored when none names our zone",
			node: workerNode, zone: "zone-c",
			svc: makeService("default", "my-service", func(s *Service) {
				for i := range s.Endpoints {
					s.Endpoints[i].ForZones = []string{"zone-a"}
				}
			}),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
		{
			name: "node hints before zone hints",
			node: masterNode, zone: "zone-a",
			svc: makeService("default", "my-service", func(s *Service) {
				for i := range s.Endpoints {
					s.Endpoints[i].ForZones = []string{"zone-a"}
					s.Endpoints[i].ForNodes = []string{s.Endpoints[i].NodeName}
				}
			}),
			want: []string{"10.244.0.4:80"},
		},
		{
			name: "fallback to serving terminating ignores hints",
			zone: "zone-a",
			svc: makeService("default", "my-service", func(s *Service) {
				for i := range s.Endpoints {
					servingTerminating(&s.Endpoints[i])
					s.Endpoints[i].ForZones = []string{"zone-b"}
				}
			}),
			want: []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, Options{NodeName: tt.node, Zone: tt.zone})
			mustSet(t, tb, tt.svc)
			e := mustLookup(t, tb, myServiceKey)
			if got := backendAddrs(e.Backends()); !slices.Equal(got, tt.want) && len(got)+len(tt.want) > 0 {
				t.Errorf("Lookup(%v).Backends() = %v, want %v", myServiceKey, got, tt.want)
			}
			if e.Status() != tt.wantStatus {
				t.Errorf("Lookup(%v).Status() = %v, want %v", myServiceKey, e.Status(), tt.wantStatus)
			}
			if got, want := e.NoEndpoints(), len(tt.want) == 0; got != want {
				t.Errorf("Lookup(%v).NoEndpoints() = %v, want %v", myServiceKey, got, want)
			}
			b, ok := e.Pick(makeFlow("10.244.0.9", 40000, myServiceKey))
			if ok != (len(tt.want) > 0) || ok && !slices.Contains(tt.want, b.AddrPort().String()) {
				t.Errorf("Pick() = %v, %v, want one of %v", b, ok, tt.want)
			}
		})
	}
}

func TestNamedTargetPorts(t *testing.T) {
	svc := makeService("default", "my-service", func(s *Service) {
		s.Ports = []ServicePort{
			{Name: "http", Port: 80, Proto: TCP, TargetPortName: "web"},
			{Name: "dns", Port: 53, Proto: UDP, TargetPortName: "dns"},
		}
		s.Endpoints = []Endpoint{
			makeEndpoint("10.244.0.4", func(e *Endpoint) {
				e.Ports = []EndpointPort{{Name: "web", Port: 8080, Proto: TCP}, {Name: "dns", Port: 5353, Proto: UDP}}
			}),
			makeEndpoint("10.244.1.2", func(e *Endpoint) {
				// Proto 0 matches any protocol.
				e.Ports = []EndpointPort{{Name: "web", Port: 9090}}
			}),
			makeEndpoint("10.244.1.3", func(e *Endpoint) {
				// A TCP port named dns does not back the UDP port.
				e.Ports = []EndpointPort{{Name: "dns", Port: 53, Proto: TCP}}
			}),
		}
	})
	tb := newTable(t, Options{})
	mustSet(t, tb, svc)
	for _, tc := range []struct {
		key  ServiceKey
		want []string
	}{
		{myServiceKey, []string{"10.244.0.4:8080", "10.244.1.2:9090"}},
		{serviceKey("10.103.92.81:53", UDP), []string{"10.244.0.4:5353"}},
	} {
		e := mustLookup(t, tb, tc.key)
		if got := backendAddrs(e.Backends()); !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%v).Backends() = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestDualStackExpandsToTwoKeys(t *testing.T) {
	svc := makeService("default", "my-service", func(s *Service) {
		s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr("fd00:10:96::5c51"))
		s.Endpoints = append(s.Endpoints, makeEndpoint("fd00:10:244::4"), makeEndpoint("fd00:10:244:1::2"))
	})
	if got := svc.Keys(); len(got) != 2 {
		t.Fatalf("Keys() = %v, want 2 keys", got)
	}
	tb := newTable(t, Options{})
	mustSet(t, tb, svc)
	if tb.Len() != 2 {
		t.Errorf("Len() = %d, want 2", tb.Len())
	}
	for _, tc := range []struct {
		key  ServiceKey
		want []string
	}{
		{myServiceKey, []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80"}},
		{serviceKey("[fd00:10:96::5c51]:80", TCP), []string{"[fd00:10:244::4]:80", "[fd00:10:244:1::2]:80"}},
	} {
		e := mustLookup(t, tb, tc.key)
		if got := backendAddrs(e.Backends()); !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%v).Backends() = %v, want %v", tc.key, got, tc.want)
		}
		if name := e.Name().String(); name != "default/my-service" {
			t.Errorf("Lookup(%v).Name() = %q, want default/my-service", tc.key, name)
		}
	}
}

func TestMultiplePorts(t *testing.T) {
	tb := newTable(t, Options{})
	mustSet(t, tb, makeKubeDNS())
	if tb.Len() != 3 {
		t.Errorf("Len() = %d, want 3 (dns, dns-tcp, metrics)", tb.Len())
	}
	for _, tc := range []struct {
		key  ServiceKey
		name string
		want []string
	}{
		{dnsUDPKey, "kube-system/kube-dns:dns", []string{"10.244.0.2:53", "10.244.0.3:53"}},
		{dnsTCPKey, "kube-system/kube-dns:dns-tcp", []string{"10.244.0.2:53", "10.244.0.3:53"}},
		{metricsKey, "kube-system/kube-dns:metrics", []string{"10.244.0.2:9153", "10.244.0.3:9153"}},
	} {
		e := mustLookup(t, tb, tc.key)
		if e.Name().String() != tc.name {
			t.Errorf("Lookup(%v).Name() = %v, want %v", tc.key, e.Name(), tc.name)
		}
		if got := backendAddrs(e.Backends()); !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%v).Backends() = %v, want %v", tc.key, got, tc.want)
		}
	}
	if e := tb.Lookup(serviceKey("10.96.0.10:9153", UDP)); e != nil {
		t.Errorf("Lookup(10.96.0.10:9153/UDP) = %v, want nil: only TCP is served", e.Name())
	}
	if !tb.Delete("kube-system", "kube-dns") {
		t.Fatalf("Delete(kube-system, kube-dns) = false, want true")
	}
	if tb.Len() != 0 {
		t.Errorf("after Delete: Len() = %d, want 0", tb.Len())
	}
}

func TestEntrySettings(t *testing.T) {
	tb := newTable(t, Options{Mode: ModeProxy, Picker: PickRoundRobin})
	mustSet(t, tb,
		makeService("default", "my-service"),
		makeKubeDNS(func(s *Service) {
			s.Mode = ModeNAT
			s.Picker = PickMaglev
			s.SessionAffinity = AffinityClientIP
			s.ProxyProtocol = true
		}))
	my := mustLookup(t, tb, myServiceKey)
	if my.Mode() != ModeProxy || my.PickerKind() != PickRoundRobin {
		t.Errorf("my-service: Mode(), PickerKind() = %v, %v, want the table's defaults proxy, round-robin", my.Mode(), my.PickerKind())
	}
	if a, d := my.SessionAffinity(); a != AffinityNone || d != 0 {
		t.Errorf("my-service: SessionAffinity() = %v, %v, want None, 0", a, d)
	}
	dns := mustLookup(t, tb, dnsTCPKey)
	if dns.Mode() != ModeNAT || dns.PickerKind() != PickMaglev || !dns.ProxyProtocol() {
		t.Errorf("kube-dns: Mode(), PickerKind(), ProxyProtocol() = %v, %v, %v, want nat, maglev, true", dns.Mode(), dns.PickerKind(), dns.ProxyProtocol())
	}
	if a, d := dns.SessionAffinity(); a != AffinityClientIP || d != 10800*time.Second {
		t.Errorf("kube-dns: SessionAffinity() = %v, %v, want ClientIP, 3h0m0s", a, d)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		svc     Service
		wantErr string // "" for valid
	}{
		{"valid", makeService("default", "my-service"), ""},
		{"valid kube-dns", makeKubeDNS(), ""},
		{"no name", makeService("default", ""), "name: missing"},
		{"no clusterIP", makeService("default", "my-service", func(s *Service) { s.ClusterIPs = nil }), "clusterIPs: missing"},
		{"invalid clusterIP", makeService("default", "my-service", func(s *Service) { s.ClusterIPs = []netip.Addr{{}} }), "clusterIPs[0]: invalid address"},
		{"duplicate clusterIP", makeService("default", "my-service", func(s *Service) { s.ClusterIPs = append(s.ClusterIPs, s.ClusterIPs[0]) }), "clusterIPs[1]: 10.103.92.81 is listed twice"},
		{"no ports", makeService("default", "my-service", func(s *Service) { s.Ports = nil }), "ports: missing"},
		{"port 0", makeService("default", "my-service", func(s *Service) { s.Ports[0].Port = 0 }), "ports[0].port: 0 (want 1..65535)"},
		{"bad protocol", makeService("default", "my-service", func(s *Service) { s.Ports[0].Proto = 1 }), "ports[0].proto: Protocol(1) (want TCP or UDP)"},
		{"duplicate port", makeKubeDNS(func(s *Service) { s.Ports[2].Port, s.Ports[2].Proto = 53, UDP }), "ports[2]: 53/UDP is also ports[0]"},
		{"duplicate port name", makeKubeDNS(func(s *Service) { s.Ports[2].Name = "dns" }), `ports[2].name: "dns" is also ports[0].name`},
		{"both target ports", makeService("default", "my-service", func(s *Service) { s.Ports[0].TargetPort, s.Ports[0].TargetPortName = 8080, "http" }), "both targetPort 8080 and targetPortName"},
		{"bad endpoint", makeService("default", "my-service", func(s *Service) { s.Endpoints[1].Addr = netip.Addr{} }), "endpoints[1].addr: invalid address"},
		{"bad mode", makeService("default", "my-service", func(s *Service) { s.Mode = 7 }), "mode: Mode(7)"},
		{"bad picker", makeService("default", "my-service", func(s *Service) { s.Picker = 9 }), "picker: PickerKind(9)"},
		{"negative timeout", makeService("default", "my-service", func(s *Service) { s.SessionAffinityTimeout = -time.Second }), "sessionAffinityTimeout: -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.svc.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"random", "round-robin", "least-connections", "maglev"} {
		k, err := ParsePickerKind(s)
		if err != nil || k.String() != s {
			t.Errorf("ParsePickerKind(%q) = %v, %v, want %s", s, k, err, s)
		}
	}
	if _, err := ParsePickerKind("wrr"); err == nil {
		t.Errorf(`ParsePickerKind("wrr") = nil error, want one`)
	}
	for _, s := range []string{"nat", "proxy"} {
		if m, err := ParseMode(s); err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if p, err := ParseProtocol("udp"); err != nil || p != UDP {
		t.Errorf(`ParseProtocol("udp") = %v, %v, want UDP`, p, err)
	}
	if a, err := ParseAffinity("ClientIP"); err != nil || a != AffinityClientIP {
		t.Errorf(`ParseAffinity("ClientIP") = %v, %v`, a, err)
	}
	if p, err := ParseTrafficPolicy("Local"); err != nil || p != PolicyLocal {
		t.Errorf(`ParseTrafficPolicy("Local") = %v, %v`, p, err)
	}
}
