package configs

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/lb"
)

// richFile sets every field of the schema to a non-default value, so that
// every field of Config is reachable by TestEqualSeesEveryField.
func richFile() *File {
	return makeFile(func(f *File) {
		f.Node.Zone = "zone-a"
		f.Node.PodCIDRs = []string{"10.244.0.0/24", "fd00:10:244::/64"}
		f.ClusterCIDRs = []string{"10.244.0.0/16", "fd00:10:244::/56"}
		f.ServiceCIDRs = []string{"10.96.0.0/12", "fd00:10:96::/112"}
		f.TUN = TUNSpec{Name: "vr1", FD: 3, MTU: 1400, Configure: ptr(false), Addresses: []string{"10.244.0.1/24"}, MultiQueue: true, Offload: ptr(false)}
		f.Overlay = OverlaySpec{Port: 9000, ListenAddress: "0.0.0.0", UnderlayMTU: 1450, MTU: 1420}
		f.Router.Addresses = []string{"169.254.1.1", "fd69::1"}
		f.LB = LBSpec{Mode: "proxy", Picker: "maglev",
			Proxy:              ProxySpec{DialTimeout: "2s", IdleTimeout: "2h", DrainTimeout: "10s"},
			NAT:                NATSpec{MaxFlows: 5000, MaxFlowsPerClient: 50, UDPTimeout: "1m", TCPEstablishedTimeout: "1h"},
			NodePortRange:      "20000-29999",
			NodePortAddresses:  []string{"192.168.31.0/24", "fd00:31::/64"},
			LocalhostNodePorts: ptr(false),
		}
		f.Egress = EgressSpec{Masquerade: true, NonMasqueradeCIDRs: []string{"10.0.0.0/8", "fd00::/8"}, MaxFlows: 1000, MaxFlowsPerPod: 100}
	}, withPeers(hostgwNode(func(p *PeerSpec) { p.Zone = "zone-b"; p.Port = 9001 })),
		withServices(makeService("kube-system", "web", func(s *ServiceSpec) {
			s.ClusterIPs = []string{"10.96.0.20", "fd00:10:96::20"}
			s.Ports = []ServicePortSpec{{Name: "http", Port: 80, TargetPort: "web"}, {Name: "dns", Port: 53, Protocol: "UDP", TargetPort: "5353"}}
			s.Mode, s.Picker = "nat", "round-robin"
			s.SessionAffinity, s.SessionAffinityTimeoutSeconds = "ClientIP", 60
			s.InternalTrafficPolicy = "Local"
			s.Type = "LoadBalancer"
			s.Ports[0].NodePort, s.Ports[1].NodePort = 20080, 20053
			s.ExternalIPs = []string{"203.0.113.10", "2001:db8::10"}
			s.LoadBalancerIPs = []string{"203.0.113.20", "2001:db8::20"}
			s.ExternalTrafficPolicy, s.HealthCheckNodePort = "Local", 20100
			s.Endpoints = []EndpointSpec{makeEndpoint("10.244.1.2", "hostgw-node", func(e *EndpointSpec) {
				e.Addresses = append(e.Addresses, "fd00:10:244:1::2")
				e.Zone = "zone-b"
				e.Terminating, e.Serving = true, ptr(true)
				e.Ports = []EndpointPortSpec{{Name: "web", Port: 8080}}
			})}
		}), makeService("", "pp", func(s *ServiceSpec) {
			s.Mode, s.ProxyProtocol = "proxy", true
			// A LoadBalancer Service without node ports.
			s.Type = "LoadBalancer"
			s.ExternalIPs, s.LoadBalancerIPs = []string{"203.0.113.30"}, []string{"203.0.113.31"}
			s.Endpoints[0].Ports = []EndpointPortSpec{{Name: "metrics", Port: 9153}}
		})))
}

func TestEqual(t *testing.T) {
	a, b := mustParse(t, richFile()), mustParse(t, richFile())
	if !a.Equal(b) || !b.Equal(a) {
		t.Errorf("Equal(two parses of the same file) = false, want true")
	}
	var nilc *Config
	if !nilc.Equal(nil) || a.Equal(nil) || nilc.Equal(a) {
		t.Errorf("Equal with nil: nil.Equal(nil)=%v a.Equal(nil)=%v nil.Equal(a)=%v, want true, false, false",
			nilc.Equal(nil), a.Equal(nil), nilc.Equal(a))
	}
}

// TestEqualSeesEveryField changes each field of a parsed Config in turn,
// every slice element and every slice length included, and checks that
// Equal notices. A field added to Config but forgotten in Equal fails
// here.
func TestEqualSeesEveryField(t *testing.T) {
	base := mustParse(t, richFile())
	var paths [][]int
	collectPaths(reflect.ValueOf(base).Elem(), nil, &paths)
	if len(paths) < 60 {
		t.Fatalf("collectPaths found %d fields, want the whole Config (>= 60)", len(paths))
	}
	for _, path := range paths {
		c := mustParse(t, richFile())
		v := reflect.ValueOf(c).Elem()
		name := "Config"
		for _, i := range path {
			if v.Kind() == reflect.Struct {
				name += "." + v.Type().Field(i).Name
				v = v.Field(i)
			} else {
				name += fmt.Sprintf("[%d]", i)
				v = v.Index(i)
			}
		}
		mutate(t, v, name)
		if base.Equal(c) || c.Equal(base) {
			t.Errorf("Equal() = true after changing %s, want false", name)
		}
	}
}

// outsideFile are fields of Config that no file sets, left empty by
// Parse: lb's topology hints, which only the Kubernetes source fills.
var outsideFile = []string{".ForZones", ".ForNodes"}

type fixedClock struct{}

func (fixedClock) Now() time.Time { return time.Time{} }

var (
	addrType     = reflect.TypeFor[netip.Addr]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrPortType = reflect.TypeFor[netip.AddrPort]()
)

// collectPaths lists the field and element indexes of every leaf under v,
// and of every slice (whose length can change).
func collectPaths(v reflect.Value, path []int, out *[][]int) {
	switch {
	case v.Type() == addrType, v.Type() == prefixType, v.Type() == addrPortType:
		*out = append(*out, path)
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			collectPaths(v.Field(i), append(path[:len(path):len(path)], i), out)
		}
	case v.Kind() == reflect.Slice:
		*out = append(*out, path)
		for i := range v.Len() {
			collectPaths(v.Index(i), append(path[:len(path):len(path)], i), out)
		}
	default:
		*out = append(*out, path)
	}
}

func mutate(t *testing.T, v reflect.Value, name string) {
	switch {
	case v.Type() == addrType:
		v.Set(reflect.ValueOf(netip.MustParseAddr("192.0.2.99")))
	case v.Type() == prefixType:
		v.Set(reflect.ValueOf(netip.MustParsePrefix("192.0.2.0/24")))
	case v.Type() == addrPortType:
		v.Set(reflect.ValueOf(netip.MustParseAddrPort("192.0.2.99:1")))
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			if !slices.ContainsFunc(outsideFile, func(f string) bool { return strings.HasSuffix(name, f) }) {
				t.Fatalf("%s is empty in richFile: fill it so its elements are checked", name)
			}
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
			return
		}
		v.Set(v.Slice(0, v.Len()-1))
	case v.Kind() == reflect.Interface:
		v.Set(reflect.ValueOf(lb.Clock(fixedClock{})))
	case v.Kind() == reflect.String:
		v.SetString(v.String() + "x")
	case v.Kind() == reflect.Int, v.Kind() == reflect.Int64:
		v.SetInt(v.Int() + 1)
	case v.Kind() == reflect.Uint8, v.Kind() == reflect.Uint16:
		v.SetUint(v.Uint() + 1)
	case v.Kind() == reflect.Bool:
		v.SetBool(!v.Bool())
	case v.Kind() == reflect.Array && v.Type().Elem().Kind() == reflect.Uint8:
		v.Index(0).SetUint(v.Index(0).Uint() + 1)
	default:
		t.Fatalf("mutate(%s): unhandled kind %s; teach the test", name, v.Kind())
	}
}

// TestSpellings holds the schema's enum spellings, which code writing a
// File uses, to what Parse accepts: the lb types' String methods.
func TestSpellings(t *testing.T) {
	for _, tc := range []struct {
		spelling string
		value    fmt.Stringer
	}{
		{ProtocolTCP, lb.TCP}, {ProtocolUDP, lb.UDP},
		{ModeNAT, lb.ModeNAT}, {ModeProxy, lb.ModeProxy},
		{PickerRandom, lb.PickRandom}, {PickerRoundRobin, lb.PickRoundRobin},
		{PickerLeastConnections, lb.PickLeastConn}, {PickerMaglev, lb.PickMaglev},
		{AffinityNone, lb.AffinityNone}, {AffinityClientIP, lb.AffinityClientIP},
		{TrafficPolicyCluster, lb.PolicyCluster}, {TrafficPolicyLocal, lb.PolicyLocal},
		{ServiceTypeClusterIP, lb.TypeClusterIP}, {ServiceTypeNodePort, lb.TypeNodePort},
		{ServiceTypeLoadBalancer, lb.TypeLoadBalancer},
	} {
		if got := tc.value.String(); got != tc.spelling {
			t.Errorf("%#v.String() = %q, want the schema's spelling %q", tc.value, got, tc.spelling)
		}
	}
}
