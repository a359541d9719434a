package lb

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The seed's cluster (see DESIGN.md, "Reference topology").
const (
	masterNode = "hostgw-master" // podCIDR 10.244.0.0/24
	workerNode = "hostgw-node"   // podCIDR 10.244.1.0/24
)

// makeService returns the Service namespace/name shaped like the seed's
// my-service (ClusterIP 10.103.92.81, 80/TCP → nginx on 10.244.0.4,
// 10.244.1.2, 10.244.1.3, all ready), then applies each mutation.
func makeService(namespace, name string, mutate ...func(*Service)) Service {
	s := Service{
		Namespace:  namespace,
		Name:       name,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.103.92.81")},
		Ports:      []ServicePort{{Port: 80, Proto: TCP}},
		Endpoints: []Endpoint{
			makeEndpoint("10.244.0.4"),
			makeEndpoint("10.244.1.2"),
			makeEndpoint("10.244.1.3"),
		},
	}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

// makeKubeDNS returns the seed's kube-system/kube-dns: ClusterIP
// 10.96.0.10, ports dns 53/UDP, dns-tcp 53/TCP, metrics 9153/TCP, backed by
// the two coredns pods on the master.
func makeKubeDNS(mutate ...func(*Service)) Service {
	return makeService("kube-system", "kube-dns", func(s *Service) {
		s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.96.0.10")}
		s.Ports = []ServicePort{
			{Name: "dns", Port: 53, Proto: UDP, TargetPort: 53},
			{Name: "dns-tcp", Port: 53, Proto: TCP, TargetPort: 53},
			{Name: "metrics", Port: 9153, Proto: TCP, TargetPort: 9153},
		}
		s.Endpoints = []Endpoint{makeEndpoint("10.244.0.2"), makeEndpoint("10.244.0.3")}
	}, func(s *Service) {
		for _, m := range mutate {
			m(s)
		}
	})
}

// makeEndpoint returns a ready endpoint at addr on the node whose pod CIDR
// holds it, then applies each mutation.
func makeEndpoint(addr string, mutate ...func(*Endpoint)) Endpoint {
	e := Endpoint{Addr: netip.MustParseAddr(addr), Ready: true, Serving: true}
	switch {
	case strings.HasPrefix(addr, "10.244.0."), strings.HasPrefix(addr, "fd00:10:244::"):
		e.NodeName = masterNode
	case strings.HasPrefix(addr, "10.244.1."), strings.HasPrefix(addr, "fd00:10:244:1::"):
		e.NodeName = workerNode
	}
	for _, m := range mutate {
		m(&e)
	}
	return e
}

// Endpoint condition mutations.
func notReady(e *Endpoint) { e.Ready, e.Serving = false, false }

func servingTerminating(e *Endpoint) { e.Ready, e.Serving, e.Terminating = false, true, true }

func terminatingNotServing(e *Endpoint) { e.Ready, e.Serving, e.Terminating = false, false, true }

// newTable returns a Table with a deterministic random source and a fake
// clock unless opts sets them.
func newTable(t testing.TB, opts Options) *Table {
	t.Helper()
	if opts.Rand == nil {
		opts.Rand = newLockedSource(1)
	}
	if opts.Clock == nil {
		opts.Clock = newFakeClock()
	}
	tb, err := NewTable(nil, opts)
	if err != nil {
		t.Fatalf("NewTable(%+v) = %v", opts, err)
	}
	return tb
}

// mustSet calls tb.Set and fails the test on error.
func mustSet(t testing.TB, tb *Table, svcs ...Service) {
	t.Helper()
	if err := tb.Set(svcs); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

// mustLookup returns the Entry for key or fails the test.
func mustLookup(t testing.TB, tb *Table, key ServiceKey) *Entry {
	t.Helper()
	e := tb.Lookup(key)
	if e == nil {
		t.Fatalf("Lookup(%v) = nil, want an entry", key)
	}
	return e
}

func serviceKey(addrPort string, proto Protocol) ServiceKey {
	ap := netip.MustParseAddrPort(addrPort)
	return ServiceKey{VIP: ap.Addr(), Port: ap.Port(), Proto: proto}
}

var (
	myServiceKey = serviceKey("10.103.92.81:80", TCP)
	dnsUDPKey    = serviceKey("10.96.0.10:53", UDP)
	dnsTCPKey    = serviceKey("10.96.0.10:53", TCP)
	metricsKey   = serviceKey("10.96.0.10:9153", TCP)
)

// flow returns a TCP flow from client:sport to key.
func makeFlow(client string, sport uint16, k ServiceKey) Flow {
	return Flow{
		Src:   netip.AddrPortFrom(netip.MustParseAddr(client), sport),
		Dst:   netip.AddrPortFrom(k.VIP, k.Port),
		Proto: k.Proto,
	}
}

// backendAddrs lists the backends' address:port strings.
func backendAddrs(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.AddrPort().String()
	}
	return out
}

// lockedSource is a deterministic rand.Source safe for concurrent use.
type lockedSource struct {
	mu  sync.Mutex
	src *rand.PCG
}

func newLockedSource(seed uint64) *lockedSource {
	return &lockedSource{src: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}
}

func (s *lockedSource) Uint64() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.src.Uint64()
}

// fakeClock is a Clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2022, 8, 27, 10, 10, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
