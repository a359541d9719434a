//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/lb"
)

// Control plane: programming a large Service table, vrouter's lb.Table
// against kube-proxy's iptables-restore, in this process and in a
// scratch namespace.

// controlResult is what both sides report.
type controlResult struct {
	Services  int `json:"services"`
	Endpoints int `json:"endpoints_per_service"`
	// Build is the time to program the whole table from empty.
	BuildMS float64 `json:"build_ms"`
	// ResyncMS is applying the same desired state again (vrouter: Set
	// with nothing changed; kube-proxy: a full restore, what it does on
	// its periodic full sync).
	ResyncMS float64 `json:"resync_ms"`
	// One endpoint of one Service leaves: vrouter's Upsert, kube-proxy's
	// partial restore.
	Changes       int     `json:"changes"`
	ChangeP50MS   float64 `json:"change_p50_ms"`
	ChangeP99MS   float64 `json:"change_p99_ms"`
	ChangeMaxMS   float64 `json:"change_max_ms"`
	HeapMiB       float64 `json:"heap_mib,omitempty"`
	Rules         int     `json:"rules,omitempty"`
	RestoreBinary string  `json:"restore_binary,omitempty"`
}

// syntheticVIP is Service i's ClusterIP in 10.96.0.0/12.
func syntheticVIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)})
}

// syntheticEndpoint is endpoint j of Service i: a pod in 10.244.0.0/16
// spread over 100 nodes.
func syntheticEndpoint(i, j, per int) (netip.Addr, string) {
	k := i*per + j
	return netip.AddrFrom4([4]byte{10, 244, byte(k >> 8), byte(k)}), fmt.Sprintf("node-%d", k%100)
}

func syntheticServices(n, per int) []lb.Service {
	svcs := make([]lb.Service, n)
	for i := range svcs {
		s := lb.Service{
			Namespace:  "bench",
			Name:       fmt.Sprintf("svc-%05d", i),
			ClusterIPs: []netip.Addr{syntheticVIP(i)},
			Ports:      []lb.ServicePort{{Port: 80, Proto: lb.TCP}},
			Endpoints:  make([]lb.Endpoint, per),
		}
		for j := range s.Endpoints {
			a, node := syntheticEndpoint(i, j, per)
			s.Endpoints[j] = lb.Endpoint{Addr: a, Ready: true, Serving: true, NodeName: node}
		}
		svcs[i] = s
	}
	return svcs
}

// settledHeap is the live heap once it stops shrinking: collected until
// two readings 50 ms apart agree within 1%, at most ten times. What the
// bench's earlier phases left behind (routers, devices, profiles whose
// goroutines are still ending) would otherwise be freed between the
// readings around the table, and its heap come out negative.
func settledHeap() uint64 {
	var ms runtime.MemStats
	prev := ^uint64(0)
	for range 10 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc >= prev-prev/100 {
			break
		}
		prev = ms.HeapAlloc
		time.Sleep(50 * time.Millisecond)
	}
	return ms.HeapAlloc
}

// benchTable builds an lb.Table of n Services × per endpoints from empty,
// re-applies it unchanged, then times changes single endpoint changes
// through Upsert, each to a different Service.
func benchTable(n, per, changes int) (controlResult, error) {
	res := controlResult{Services: n, Endpoints: per, Changes: changes}
	svcs := syntheticServices(n, per)
	before := settledHeap()
	tb, err := lb.NewTable(nil, lb.Options{NodeName: "node-0"})
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := tb.Set(svcs); err != nil {
		return res, fmt.Errorf("lb.Table.Set(%d Services): %w", n, err)
	}
	res.BuildMS = ms(time.Since(t0))
	res.HeapMiB = (float64(settledHeap()) - float64(before)) / (1 << 20)

	t0 = time.Now()
	if err := tb.Set(svcs); err != nil {
		return res, fmt.Errorf("lb.Table.Set (unchanged): %w", err)
	}
	res.ResyncMS = ms(time.Since(t0))

	durs := make([]time.Duration, 0, changes)
	for c := range changes {
		i := c * 7919 % n
		s := svcs[i]
		s.Endpoints = slices.Clone(s.Endpoints)
		s.Endpoints[c%per].Ready = false
		t0 := time.Now()
		if err := tb.Upsert(s); err != nil {
			return res, fmt.Errorf("lb.Table.Upsert(%s): %w", s.Name, err)
		}
		durs = append(durs, time.Since(t0))
	}
	if tb.Len() != n {
		return res, fmt.Errorf("lb.Table.Len() = %d after the changes, want %d", tb.Len(), n)
	}
	res.ChangeP50MS = percentile(durs, 0.50) / 1e3
	res.ChangeP99MS = percentile(durs, 0.99) / 1e3
	res.ChangeMaxMS = percentile(durs, 1) / 1e3
	runtime.KeepAlive(tb)
	return res, nil
}

// benchIptables programs kube-proxy's rules for the same n Services ×
// per endpoints into a scratch namespace with iptables-restore, restores
// them again (kube-proxy's periodic full sync), and times changes
// partial syncs, each removing one endpoint of a different Service.
func benchIptables(ctx context.Context, prefix string, n, per, changes int) (controlResult, error) {
	res := controlResult{Services: n, Endpoints: per, Changes: changes}
	spec := topology.Spec{
		Prefix:   prefix,
		Underlay: netip.MustParsePrefix("192.168.31.0/24"),
		Nodes: []topology.NodeSpec{{
			Name:     "node",
			Underlay: netip.MustParseAddr("192.168.31.201"),
			PodCIDR:  netip.MustParsePrefix("10.244.0.0/24"),
		}},
	}
	c, err := topology.Build(spec)
	if err != nil {
		return res, err
	}
	defer c.Close()

	ports := make([]kpPort, n)
	for i := range ports {
		p := kpPort{name: fmt.Sprintf("bench/svc-%05d", i), vip: syntheticVIP(i), port: 80, proto: "tcp"}
		for j := range per {
			a, _ := syntheticEndpoint(i, j, per)
			p.endpoints = append(p.endpoints, netip.AddrPortFrom(a, 80))
		}
		ports[i] = p
	}
	rules := kubeProxyRules(clusterCIDR, ports)
	res.Rules = countRules(rules)

	t0 := time.Now()
	prog, err := iptablesRestore(ctx, c, "node", rules, "")
	if err != nil {
		return res, err
	}
	res.BuildMS = ms(time.Since(t0))
	res.RestoreBinary = prog

	t0 = time.Now()
	if _, err := iptablesRestore(ctx, c, "node", rules, prog); err != nil {
		return res, err
	}
	res.ResyncMS = ms(time.Since(t0))

	var durs []time.Duration
	for k := range changes {
		i := k * 7919 % n
		changed := ports[i]
		gone := changed.endpoints[k%per]
		changed.endpoints = slices.Delete(slices.Clone(changed.endpoints), k%per, k%per+1)
		ports[i] = changed
		input := kubeProxyPartialSync(clusterCIDR, ports, changed, gone)
		t0 := time.Now()
		if _, err := iptablesRestore(ctx, c, "node", input, prog, "--noflush"); err != nil {
			return res, fmt.Errorf("partial sync of %s: %w", changed.name, err)
		}
		durs = append(durs, time.Since(t0))
	}
	res.ChangeP50MS = percentile(durs, 0.50) / 1e3
	res.ChangeP99MS = percentile(durs, 0.99) / 1e3
	res.ChangeMaxMS = percentile(durs, 1) / 1e3
	return res, nil
}

// countRules counts the "-A" lines of iptables-restore input.
func countRules(s string) int {
	n := 0
	for i := 0; i+3 <= len(s); i++ {
		if (i == 0 || s[i-1] == '\n') && s[i:i+3] == "-A " {
			n++
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
