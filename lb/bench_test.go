package lb

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// bigCluster returns n Services shaped like my-service, each with its own
// ClusterIP in 10.96.0.0/12, port 80/TCP and eps ready endpoints.
func bigCluster(n, eps int) []Service {
	svcs := make([]Service, n)
	for i := range svcs {
		vip := netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
		svcs[i] = makeService("bench", fmt.Sprintf("svc-%05d", i), func(s *Service) {
			s.ClusterIPs = []netip.Addr{vip}
			s.Endpoints = make([]Endpoint, eps)
			for j := range s.Endpoints {
				k := i*eps + j
				s.Endpoints[j] = Endpoint{
					Addr:     netip.AddrFrom4([4]byte{10, 244, byte(k >> 8), byte(k)}),
					Ready:    true,
					Serving:  true,
					NodeName: fmt.Sprintf("node-%d", k%100),
				}
			}
		})
	}
	return svcs
}

func bigKey(i int) ServiceKey {
	return ServiceKey{VIP: netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)}), Port: 80, Proto: TCP}
}

// TestPacketPathAllocs asserts what the packet path promises: Lookup,
// Pick (every picker, and an affinity hit) and the Limiter allocate
// nothing per call.
func TestPacketPathAllocs(t *testing.T) {
	tb := newTable(t, Options{})
	mustSet(t, tb, makeService("default", "my-service"),
		makeService("default", "rr", func(s *Service) {
			s.ClusterIPs[0] = netip.MustParseAddr("10.103.92.82")
			s.Picker = PickRoundRobin
		}),
		makeService("default", "lc", func(s *Service) {
			s.ClusterIPs[0] = netip.MustParseAddr("10.103.92.83")
			s.Picker = PickLeastConn
		}),
		makeService("default", "maglev", func(s *Service) {
			s.ClusterIPs[0] = netip.MustParseAddr("10.103.92.84")
			s.Picker = PickMaglev
		}),
		makeService("default", "sticky", func(s *Service) {
			s.ClusterIPs[0] = netip.MustParseAddr("10.103.92.85")
			s.SessionAffinity = AffinityClientIP
		}))
	for _, vip := range []string{"10.103.92.81", "10.103.92.82", "10.103.92.83", "10.103.92.84", "10.103.92.85"} {
		k := serviceKey(vip+":80", TCP)
		f := makeFlow("10.244.0.9", 40000, k)
		e := mustLookup(t, tb, k)
		e.Pick(f) // the sticky client's first Pick records it
		allocs := testing.AllocsPerRun(1000, func() {
			e := tb.Lookup(k)
			b, _ := e.Pick(f)
			b.Acquire()
			b.Release()
		})
		if allocs != 0 {
			t.Errorf("Lookup+Pick+Acquire+Release on %s (%v) = %v allocs/op, want 0", e.Name(), e.PickerKind(), allocs)
		}
	}
	l := mustLimiter(t, LimiterOptions{Max: 1000, MaxPerClient: 10})
	l.Acquire(client1)
	l.Release(client1)
	if allocs := testing.AllocsPerRun(1000, func() {
		l.Acquire(client1)
		l.Release(client1)
	}); allocs != 0 {
		t.Errorf("Limiter Acquire+Release = %v allocs/op, want 0", allocs)
	}
}

// TestEndpointChangeCost shows that one endpoint change costs work for
// that Service only: Upsert at 10,000 Services replaces one Entry and
// copies one shard of the snapshot, and every other Entry is kept. (The
// time it takes is logged, not asserted: BenchmarkEndpointChange10k
// measures it.)
func TestEndpointChangeCost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10,000 Services")
	}
	const n = 10000
	tb := newTable(t, Options{})
	svcs := bigCluster(n, 10)
	mustSet(t, tb, svcs...)
	var durs []time.Duration
	for i := range 50 {
		j := i * 7919 % n
		before := tb.snap.Load()
		s := svcs[j]
		s.Endpoints = slices.Clone(s.Endpoints)
		s.Endpoints[i%10].Ready = false
		start := time.Now()
		if err := tb.Upsert(s); err != nil {
			t.Fatal(err)
		}
		durs = append(durs, time.Since(start))
		after := tb.snap.Load()
		var copied []int
		for k := range before.shards {
			if reflect.ValueOf(before.shards[k]).UnsafePointer() != reflect.ValueOf(after.shards[k]).UnsafePointer() {
				copied = append(copied, k)
			}
		}
		if want := []int{shardOf(bigKey(j))}; !slices.Equal(copied, want) {
			t.Fatalf("Upsert(%s) copied shards %v, want only %v, the shard of its key", s.Name, copied, want)
		}
		for _, other := range []int{(j + 1) % n, (j + n/2) % n} {
			k := bigKey(other)
			if before.shards[shardOf(k)][k] != after.shards[shardOf(k)][k] {
				t.Fatalf("Upsert(%s) rebuilt the entry of %s, want it kept", s.Name, svcs[other].Name)
			}
		}
		if e := after.shards[shardOf(bigKey(j))][bigKey(j)]; len(e.Backends()) != 9 {
			t.Fatalf("Upsert(%s with one endpoint not ready): %d backends, want 9", s.Name, len(e.Backends()))
		}
	}
	slices.Sort(durs)
	t.Logf("Upsert of one endpoint change at %d Services × 10 endpoints: median %v, max %v", n, durs[len(durs)/2], durs[len(durs)-1])
}

func BenchmarkLookup(b *testing.B) {
	tb := newTable(b, Options{})
	mustSet(b, tb, bigCluster(10000, 10)...)
	keys := make([]ServiceKey, 1024)
	for i := range keys {
		keys[i] = bigKey(i * 9)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if tb.Lookup(keys[i&1023]) == nil {
			b.Fatal("Lookup = nil")
		}
	}
}

// BenchmarkLookupBaseline is a plain map lookup of the same keys: the
// baseline for BenchmarkLookup's extra snapshot load and shard hash.
func BenchmarkLookupBaseline(b *testing.B) {
	m := make(map[ServiceKey]*Entry)
	for i := range 10000 {
		m[bigKey(i)] = &Entry{}
	}
	keys := make([]ServiceKey, 1024)
	for i := range keys {
		keys[i] = bigKey(i * 9)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if m[keys[i&1023]] == nil {
			b.Fatal("lookup = nil")
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, tc := range []struct {
		name   string
		mutate func(*Service)
	}{
		{"random", func(s *Service) { s.Picker = PickRandom }},
		{"round-robin", func(s *Service) { s.Picker = PickRoundRobin }},
		{"least-connections", func(s *Service) { s.Picker = PickLeastConn }},
		{"maglev", func(s *Service) { s.Picker = PickMaglev }},
		{"random+affinity", func(s *Service) { s.SessionAffinity = AffinityClientIP }},
	} {
		for _, eps := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/%d", tc.name, eps), func(b *testing.B) {
				tb, err := NewTable(nil, Options{}) // the real clock and random source
				if err != nil {
					b.Fatal(err)
				}
				svc := bigCluster(1, eps)[0]
				tc.mutate(&svc)
				mustSet(b, tb, svc)
				e := mustLookup(b, tb, bigKey(0))
				flows := make([]Flow, 256)
				for i := range flows {
					flows[i] = makeFlow(fmt.Sprintf("10.244.%d.%d", i/16, i), uint16(30000+i), bigKey(0))
				}
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						e.Pick(flows[i&255])
					}
				})
			})
		}
	}
}

func BenchmarkMaglevBuild(b *testing.B) {
	for _, m := range []int{4093, 65537} {
		for _, n := range []int{3, 10, 100, 1000} {
			b.Run(fmt.Sprintf("M=%d/N=%d", m, n), func(b *testing.B) {
				bs := nginxBackends(n)
				b.ReportAllocs()
				for b.Loop() {
					newMaglev(bs, m, false)
				}
			})
		}
	}
}

// BenchmarkTableSet10kServices builds the table of 10,000 Services × 10
// endpoints from empty, then re-applies the same desired state (which
// must change nothing).
func BenchmarkTableSet10kServices(b *testing.B) {
	svcs := bigCluster(10000, 10)
	b.Run("from-empty", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tb := newTable(b, Options{})
			mustSet(b, tb, svcs...)
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		tb := newTable(b, Options{})
		mustSet(b, tb, svcs...)
		b.ReportAllocs()
		for b.Loop() {
			mustSet(b, tb, svcs...)
		}
	})
}

// BenchmarkEndpointChange10k changes one endpoint of one Service in a
// table of 10,000 Services × 10 endpoints, through Upsert (the incremental
// path) and through Set with the whole desired state. It reports the p99
// of single changes; the target is ≤ 5 ms.
func BenchmarkEndpointChange10k(b *testing.B) {
	for _, via := range []string{"upsert", "set"} {
		b.Run(via, func(b *testing.B) {
			tb := newTable(b, Options{})
			svcs := bigCluster(10000, 10)
			mustSet(b, tb, svcs...)
			durs := make([]time.Duration, 0, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				j := i * 7919 % len(svcs)
				s := &svcs[j]
				s.Endpoints[i%10].Ready = !s.Endpoints[i%10].Ready
				start := time.Now()
				var err error
				if via == "upsert" {
					err = tb.Upsert(*s)
				} else {
					err = tb.Set(svcs)
				}
				durs = append(durs, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(durs)
			b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns/change")
			if e := tb.Lookup(bigKey(0)); e == nil {
				b.Fatal("Lookup(svc-00000) = nil")
			}
		})
	}
}

func BenchmarkLimiter(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts LimiterOptions
	}{{"global", LimiterOptions{Max: 1 << 20}}, {"global+per-client", LimiterOptions{Max: 1 << 20, MaxPerClient: 1 << 10}}} {
		b.Run(tc.name, func(b *testing.B) {
			l := mustLimiter(b, tc.opts)
			clients := make([]netip.Addr, 256)
			for i := range clients {
				clients[i] = netip.AddrFrom4([4]byte{10, 244, 0, byte(i)})
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					c := clients[i&255]
					l.Acquire(c)
					l.Release(c)
				}
			})
		})
	}
}
