package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestSetUpsertDelete(t *testing.T) {
	tb := newTable(t, Options{})
	if e := tb.Lookup(myServiceKey); e != nil || tb.Len() != 0 {
		t.Fatalf("empty table: Lookup = %v, Len = %d, want nil, 0", e, tb.Len())
	}

	mustSet(t, tb, makeService("default", "my-service"), makeKubeDNS())
	if tb.Len() != 4 {
		t.Fatalf("Set(my-service, kube-dns): Len() = %d, want 4", tb.Len())
	}
	my, dns := mustLookup(t, tb, myServiceKey), mustLookup(t, tb, dnsUDPKey)

	// The same desired state again: nothing is rebuilt.
	mustSet(t, tb, makeService("default", "my-service"), makeKubeDNS())
	if got := tb.Lookup(myServiceKey); got != my {
		t.Errorf("Set(same): my-service entry was rebuilt (%p → %p), want the same entry", my, got)
	}
	if got := tb.Lookup(dnsUDPKey); got != dns {
		t.Errorf("Set(same): kube-dns entry was rebuilt, want the same entry")
	}

	// One endpoint of my-service changes: only my-service's entry is new.
	changed := makeService("default", "my-service", func(s *Service) { notReady(&s.Endpoints[2]) })
	mustSet(t, tb, changed, makeKubeDNS())
	my2 := mustLookup(t, tb, myServiceKey)
	if my2 == my {
		t.Errorf("Set(changed my-service): entry kept, want a new one")
	}
	if got, want := backendAddrs(my2.Backends()), []string{"10.244.0.4:80", "10.244.1.2:80"}; !slices.Equal(got, want) {
		t.Errorf("Set(changed my-service): Backends() = %v, want %v", got, want)
	}
	for _, k := range []ServiceKey{dnsUDPKey, dnsTCPKey, metricsKey} {
		if e := tb.Lookup(k); e == nil || (k == dnsUDPKey && e != dns) {
			t.Errorf("Set(changed my-service): kube-dns %v entry = %p, want it kept", k, e)
		}
	}
	// The replaced entry stays as it was for whoever still holds it.
	if got := len(my.Backends()); got != 3 {
		t.Errorf("old entry: len(Backends()) = %d after an update, want 3 (entries are immutable)", got)
	}

	// Upsert: same Service is a no-op, a changed one replaces.
	if err := tb.Upsert(changed); err != nil {
		t.Fatalf("Upsert(same) = %v", err)
	}
	if tb.Lookup(myServiceKey) != my2 {
		t.Errorf("Upsert(same): entry rebuilt, want kept")
	}
	if err := tb.Upsert(makeService("default", "my-service", func(s *Service) { s.Ports[0].Port = 8080 })); err != nil {
		t.Fatalf("Upsert(port 8080) = %v", err)
	}
	if e := tb.Lookup(myServiceKey); e != nil {
		t.Errorf("Upsert(port 8080): Lookup(:80) = %v, want nil: the old key must go", e.Name())
	}
	mustLookup(t, tb, serviceKey("10.103.92.81:8080", TCP))
	if tb.Lookup(dnsUDPKey) != dns {
		t.Errorf("Upsert(my-service): kube-dns entry rebuilt, want kept")
	}

	// Set without kube-dns deletes it.
	mustSet(t, tb, makeService("default", "my-service"))
	if tb.Len() != 1 || tb.Lookup(dnsUDPKey) != nil {
		t.Errorf("Set(my-service only): Len() = %d, Lookup(kube-dns) = %v, want 1, nil", tb.Len(), tb.Lookup(dnsUDPKey))
	}
	if _, ok := tb.Service("kube-system", "kube-dns"); ok {
		t.Errorf("Service(kube-system, kube-dns) found after Set without it")
	}
	if tb.Delete("kube-system", "kube-dns") {
		t.Errorf("Delete(kube-system, kube-dns) = true for a Service not in the table")
	}
	if !tb.Delete("default", "my-service") || tb.Len() != 0 {
		t.Errorf("Delete(default, my-service): Len() = %d, want 0", tb.Len())
	}
	mustSet(t, tb)
	if tb.Len() != 0 {
		t.Errorf("Set(): Len() = %d, want 0", tb.Len())
	}
}

func TestSetCopiesInput(t *testing.T) {
	tb := newTable(t, Options{})
	svcs := []Service{makeService("default", "my-service")}
	mustSet(t, tb, svcs...)
	e := mustLookup(t, tb, myServiceKey)
	svcs[0].Endpoints[0].Addr = netip.MustParseAddr("10.244.9.9")
	svcs[0].Ports[0].TargetPort = 1
	got, _ := tb.Service("default", "my-service")
	if !got.Equal(ptrTo(makeService("default", "my-service"))) {
		t.Errorf("Service() after the caller changed its slices = %+v, want the Service as set", got)
	}
	mustSet(t, tb, makeService("default", "my-service"))
	if tb.Lookup(myServiceKey) != e {
		t.Errorf("Set(original) after the caller changed its copy: entry rebuilt, want kept")
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestSetRefusesBadInput(t *testing.T) {
	tests := []struct {
		name    string
		svcs    []Service
		wantErr string
	}{
		{"invalid service", []Service{makeService("default", "my-service", func(s *Service) { s.Ports = nil })}, "services[0]: service default/my-service: ports: missing"},
		{"same name twice", []Service{makeKubeDNS(), makeKubeDNS()}, "kube-system/kube-dns is also services[0]"},
		{"known name twice", []Service{makeService("default", "my-service"), makeService("default", "my-service")}, "default/my-service is listed twice"},
		{"two services, one key", []Service{makeService("default", "my-service"), makeService("default", "other")}, "key 10.103.92.81:80/TCP is also Service default/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, Options{})
			mustSet(t, tb, makeService("default", "my-service"))
			before := mustLookup(t, tb, myServiceKey)
			err := tb.Set(tt.svcs)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Set = %v, want an error containing %q", err, tt.wantErr)
			}
			if tb.Len() != 1 || tb.Lookup(myServiceKey) != before {
				t.Errorf("after a refused Set: Len() = %d, entry kept = %v, want 1, true", tb.Len(), tb.Lookup(myServiceKey) == before)
			}
		})
	}

	tb := newTable(t, Options{})
	mustSet(t, tb, makeService("default", "my-service"))
	err := tb.Upsert(makeService("default", "other"))
	if err == nil || !strings.Contains(err.Error(), "is also Service default/my-service's") {
		t.Errorf("Upsert(other with my-service's key) = %v, want a key conflict", err)
	}
	if e := tb.Lookup(myServiceKey); e == nil || e.Name().Name != "my-service" {
		t.Errorf("after a refused Upsert: Lookup(%v) = %v, want my-service's entry", myServiceKey, e)
	}
}

func TestKeyMovesBetweenServices(t *testing.T) {
	tb := newTable(t, Options{})
	mustSet(t, tb, makeService("default", "my-service"))
	// In one Set, my-service moves to another ClusterIP and "other" takes
	// its old one: no conflict, and the key ends with "other".
	mustSet(t, tb,
		makeService("default", "my-service", func(s *Service) { s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.103.92.82")} }),
		makeService("default", "other", func(s *Service) { s.Endpoints = s.Endpoints[:1] }))
	if e := mustLookup(t, tb, myServiceKey); e.Name().Name != "other" || len(e.Backends()) != 1 {
		t.Errorf("Lookup(%v) = %v with %d backends, want default/other with 1", myServiceKey, e.Name(), len(e.Backends()))
	}
	if e := mustLookup(t, tb, serviceKey("10.103.92.82:80", TCP)); e.Name().Name != "my-service" {
		t.Errorf("Lookup(10.103.92.82:80) = %v, want default/my-service", e.Name())
	}
	// Deleting a Service and giving its key to a new one in one Set.
	mustSet(t, tb, makeService("default", "third"))
	if e := mustLookup(t, tb, myServiceKey); e.Name().Name != "third" || tb.Len() != 1 {
		t.Errorf("Lookup(%v) = %v, Len() = %d, want default/third, 1", myServiceKey, e.Name(), tb.Len())
	}
}

// TestStateCarriesOver checks that counters, the round-robin cursor and
// backends' active connections survive an endpoint change, and restart for
// a deleted and re-added Service.
func TestStateCarriesOver(t *testing.T) {
	tb := newTable(t, Options{Picker: PickRoundRobin})
	mustSet(t, tb, makeService("default", "my-service"))
	e := mustLookup(t, tb, myServiceKey)
	var got []string
	for range 2 {
		b, _ := e.Pick(makeFlow("10.244.0.9", 1, myServiceKey))
		b.Acquire()
		got = append(got, b.String())
	}
	// Add a fourth endpoint: rotation goes on where it was.
	mustSet(t, tb, makeService("default", "my-service", func(s *Service) {
		s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.1.4"))
	}))
	e2 := mustLookup(t, tb, myServiceKey)
	for range 2 {
		b, _ := e2.Pick(makeFlow("10.244.0.9", 1, myServiceKey))
		got = append(got, b.String())
	}
	want := []string{"10.244.0.4:80", "10.244.1.2:80", "10.244.1.3:80", "10.244.1.4:80"}
	if !slices.Equal(got, want) {
		t.Errorf("round-robin across an update: picks = %v, want %v", got, want)
	}
	st := e2.Stats()
	if st.Picks != 4 || st.Conns != 2 || st.Active != 2 {
		t.Errorf("Stats() after update = picks %d conns %d active %d, want 4 2 2", st.Picks, st.Conns, st.Active)
	}
	if a := e2.Backends()[0].Active(); a != 1 {
		t.Errorf("10.244.0.4 Active() after update = %d, want 1 (carried over)", a)
	}
	// A connection acquired on the old entry is released on the new one's
	// counters.
	e.Backends()[0].Release()
	if a := e2.Backends()[0].Active(); a != 0 {
		t.Errorf("10.244.0.4 Active() after Release on the old entry = %d, want 0", a)
	}
	// Deleting the Service forgets its state.
	tb.Delete("default", "my-service")
	mustSet(t, tb, makeService("default", "my-service"))
	if st := mustLookup(t, tb, myServiceKey).Stats(); st.Picks != 0 || st.Active != 0 {
		t.Errorf("Stats() after delete and re-add = picks %d active %d, want 0 0", st.Picks, st.Active)
	}
}

func TestNoEndpointsRefuses(t *testing.T) {
	tb := newTable(t, Options{})
	mustSet(t, tb, makeService("default", "my-service", func(s *Service) { s.Endpoints = nil }))
	e := mustLookup(t, tb, myServiceKey)
	for range 3 {
		if b, ok := e.Pick(makeFlow("10.244.0.9", 1, myServiceKey)); ok {
			t.Fatalf("Pick() = %v, true on a Service without endpoints, want false", b)
		}
	}
	if st := e.Stats(); st.Refused != 3 || st.Status != StatusNoEndpoints {
		t.Errorf("Stats() = refused %d status %v, want 3, %v", st.Refused, st.Status, StatusNoEndpoints)
	}
}

func TestStats(t *testing.T) {
	tb := newTable(t, Options{Picker: PickRoundRobin})
	mustSet(t, tb, makeService("default", "my-service"), makeKubeDNS())
	e := mustLookup(t, tb, myServiceKey)
	for range 6 {
		b, _ := e.Pick(makeFlow("10.244.0.9", 1, myServiceKey))
		b.Acquire()
	}
	e.Backends()[2].Release()
	stats := tb.Stats()
	var names []string
	for _, s := range stats {
		names = append(names, fmt.Sprintf("%v %v", s.Name, s.Key))
	}
	wantNames := []string{
		"default/my-service 10.103.92.81:80/TCP",
		"kube-system/kube-dns:dns 10.96.0.10:53/UDP",
		"kube-system/kube-dns:dns-tcp 10.96.0.10:53/TCP",
		"kube-system/kube-dns:metrics 10.96.0.10:9153/TCP",
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("Stats() names = %q, want %q", names, wantNames)
	}
	s := stats[0]
	if s.Picks != 6 || s.Conns != 6 || s.Active != 5 {
		t.Errorf("my-service Stats() = picks %d conns %d active %d, want 6 6 5", s.Picks, s.Conns, s.Active)
	}
	for i, b := range s.Backends {
		wantActive := int64(2)
		if i == 2 {
			wantActive = 1
		}
		if b.Picks != 2 || b.Conns != 2 || b.Active != wantActive {
			t.Errorf("backend %v stats = picks %d conns %d active %d, want 2 2 %d", b.AddrPort, b.Picks, b.Conns, b.Active, wantActive)
		}
	}
}

// TestConcurrentLookupDuringSet runs readers that Lookup and Pick while
// the table flips between two versions of my-service and adds and removes
// other Services. Run with -race. Every Entry a reader sees must be whole:
// one of the two backend sets, never a mix.
func TestConcurrentLookupDuringSet(t *testing.T) {
	tb := newTable(t, Options{})
	v1 := makeService("default", "my-service")
	v2 := makeService("default", "my-service", func(s *Service) { s.Endpoints = s.Endpoints[:1] })
	mustSet(t, tb, v1)

	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		bad   atomic.Value
		reads atomic.Int64
	)
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := makeFlow(fmt.Sprintf("10.244.0.%d", 10+r), 1, myServiceKey)
			for !stop.Load() {
				e := tb.Lookup(myServiceKey)
				if e == nil {
					bad.Store("Lookup(my-service) = nil during updates")
					return
				}
				n := len(e.Backends())
				b, ok := e.Pick(f)
				if !ok || (n != 3 && n != 1) || !slices.Contains(e.Backends(), b) {
					bad.Store(fmt.Sprintf("Pick = %v, %v from an entry with %d backends", b, ok, n))
					return
				}
				b.Acquire()
				b.Release()
				tb.Lookup(serviceKey("10.96.0.10:53", UDP))
				reads.Add(1)
			}
		}()
	}
	for i := range 300 {
		svcs := []Service{v1}
		if i%2 == 1 {
			svcs[0] = v2
		}
		if i%3 == 0 {
			svcs = append(svcs, makeKubeDNS())
		}
		mustSet(t, tb, svcs...)
		if i%10 == 0 {
			if err := tb.Upsert(v1); err != nil {
				t.Errorf("Upsert: %v", err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
	if st := mustLookup(t, tb, myServiceKey).Stats(); st.Active != 0 {
		t.Errorf("Active = %d after every Acquire was released, want 0", st.Active)
	}
	t.Logf("%d lookups during 300 updates", reads.Load())
}

// TestShardSpread checks that consecutive ClusterIPs, as an allocator
// hands them out, spread over the snapshot's shards: an update copies
// whole shards, so a crowded one would make updates slow.
func TestShardSpread(t *testing.T) {
	const n = 10000
	var counts [1 << shardBits]int
	for i := range n {
		counts[shardOf(bigKey(i))]++
	}
	for _, k := range []ServiceKey{serviceKey("[fd00:10:96::a]:53", UDP), serviceKey("[fd00:10:96::b]:53", UDP)} {
		counts[shardOf(k)]++
	}
	mean := float64(n) / float64(len(counts))
	if hi := slices.Max(counts[:]); float64(hi) > 2*mean {
		t.Errorf("10,000 consecutive ClusterIPs: fullest shard has %d keys, want ≤ 2× the mean %.0f", hi, mean)
	}
}
