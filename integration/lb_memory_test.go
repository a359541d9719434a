package integration

// Memory after a flood: a pod floods a ClusterIP with UDP flows up to the
// NAT's cap, the flows expire, and the router's memory must come back
// near where it started (Go maps never shrink by themselves: lb/shrink.go).
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  vr0 10.244.0.0/32, router 169.254.244.1
//	 │    coredns-8qxfv 10.244.0.3  raw socket: UDP from 10.244.0.100-.107
//	 │                              (its node's pod CIDR), ports 1024-17407
//	 └─ hostgw-node   eth0 .202  vr0 10.244.1.0/32
//	      (10.244.1.99: no pod; the flood's datagrams die there)
//
//	default/mem-flood  10.96.100.30:53/UDP -> 10.244.1.99 (hostgw-node)
//	lb.nat.udpTimeout  45s: longer than the flood takes, so its flows
//	                   pile up to the cap, then all expire
//
// 8 sources × 16,384 ports = 131,072 flows: the default caps
// (lb.nat.maxFlows per protocol, lb.nat.maxFlowsPerClient), reached when
// no datagram is lost at vr0's queue.

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
)

const (
	memMetricsAddr = "127.0.0.1:9287"
	memUDPTimeout  = 45 * time.Second
)

var memFloodVIP = netip.AddrPortFrom(netip.MustParseAddr("10.96.100.30"), 53)

func TestLBMemoryAfterFlood(t *testing.T) {
	svc := configs.ServiceSpec{
		Namespace: "default", Name: "mem-flood", ClusterIPs: []string{memFloodVIP.Addr().String()},
		Ports:     []configs.ServicePortSpec{{Port: 53, Protocol: "UDP"}},
		Endpoints: []configs.EndpointSpec{{Addresses: []string{"10.244.1.99"}, NodeName: lbWorker}},
	}
	e := startLBWith(t, "mem", lbOptions{
		LB:         configs.LBSpec{NAT: configs.NATSpec{UDPTimeout: memUDPTimeout.String()}},
		RouterArgs: []string{"--metrics-address", memMetricsAddr},
	}, []configs.ServiceSpec{svc})
	r := e.routers[lbMaster]
	raw := e.rawSender(lbCoredns8qxfv.name)

	// The baseline: a router that has translated a little, settled.
	for p := range 100 {
		raw.send(udpDatagram(netip.AddrPortFrom(lbCoredns8qxfv.addr, uint16(40000+p)), memFloodVIP, []byte("warm up")))
	}
	time.Sleep(3 * time.Second)
	base := readProcMem(t, r.PID())

	const sources, ports = 8, 16384
	start := time.Now()
	sent := 0
	for pass := range 2 {
		// The second pass makes the flows the first lost at vr0's
		// queue; it refreshes the others.
		for port := range ports {
			for s := range sources {
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(100 + s)}), uint16(1024+port))
				if err := raw.send(udpDatagram(src, memFloodVIP, []byte("flood"))); err != nil {
					t.Fatalf("pass %d: datagram %d: %v", pass, sent, err)
				}
				if sent++; sent%500 == 0 {
					time.Sleep(20 * time.Millisecond) // 25,000 a second
				}
			}
		}
	}
	took := time.Since(start)
	if took > memUDPTimeout*3/4 {
		t.Logf("the flood took %v, near lb.nat.udpTimeout %v: its first flows may have expired before the last began", took, memUDPTimeout)
	}
	time.Sleep(2 * time.Second) // the router's queue drains
	flows := e.metric(lbMaster, "vrouter_nat_flows")
	refusedCap := e.metric(lbMaster, `vrouter_nat_refused_total{reason="cap"}`)
	peak := readProcMem(t, r.PID())
	t.Logf("%d datagrams in %v: %.0f flows (cap %d), %.0f refused by the caps", sent, took.Round(time.Millisecond), flows, sources*ports, refusedCap)
	if flows < sources*ports/2 {
		t.Fatalf("the flood made %.0f flows, want at least half of %d: the test would measure little", flows, sources*ports)
	}

	// Wait for the flows to expire, then for the memory to come back.
	deadline := time.Now().Add(memUDPTimeout + 30*time.Second)
	for e.metric(lbMaster, "vrouter_nat_flows") > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%.0f flows left %v after the flood; want them expired after lb.nat.udpTimeout %v", e.metric(lbMaster, "vrouter_nat_flows"), time.Since(start), memUDPTimeout)
		}
		time.Sleep(time.Second)
	}
	expired := time.Now()
	// Heap back: the anonymous memory (the file-backed flow file keeps
	// its pages; see docs/operations.md) below baseline plus a quarter
	// of what the flood added.
	limit := base.anon + (peak.anon-base.anon)/4
	after := memoryBack(t, r.PID(), limit, 60*time.Second)
	t.Logf("router on %s: baseline %v; peak (%.0f flows) %v; %v after the flows expired: %v",
		lbMaster, base, flows, peak, time.Since(expired).Round(time.Second), after)
	t.Logf("per flow at the peak: %.0f B anonymous, %.0f B resident in all", float64(peak.anon-base.anon)/flows, float64(peak.rss-base.rss)/flows)
	if after.anon > limit {
		t.Errorf("anonymous memory %d MiB a minute after the flood's flows expired, want at most %d MiB (baseline %d MiB + a quarter of the flood's %d MiB)",
			after.anon>>20, limit>>20, base.anon>>20, (peak.anon-base.anon)>>20)
	}
	e.requireRouters()
}

// memoryBack waits up to wait for process pid's anonymous memory to fall
// to limit, and returns the last reading.
func memoryBack(t *testing.T, pid int, limit uint64, wait time.Duration) procMem {
	t.Helper()
	start := time.Now()
	for {
		m := readProcMem(t, pid)
		if m.anon <= limit || time.Since(start) > wait {
			return m
		}
		time.Sleep(time.Second)
	}
}

// procMem is a process's memory as /proc/<pid>/status tells it.
type procMem struct {
	rss, anon, file, shmem uint64 // bytes
}

func (m procMem) String() string {
	return fmt.Sprintf("VmRSS %d MiB (anonymous %d MiB, file %d MiB, shmem %d MiB)", m.rss>>20, m.anon>>20, m.file>>20, m.shmem>>20)
}

func readProcMem(t *testing.T, pid int) procMem {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the router's memory: %v", err)
	}
	var m procMem
	fields := map[string]*uint64{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file, "RssShmem:": &m.shmem}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && fields[f[0]] != nil {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			*fields[f[0]] = kb << 10
		}
	}
	if m.rss == 0 || m.anon == 0 {
		t.Fatalf("/proc/%d/status has no VmRSS or RssAnon:\n%s", pid, b)
	}
	return m
}

// metric returns the value of the sample named series (name{labels}, as
// /metrics writes it) of node's router, started with --metrics-address
// memMetricsAddr.
func (e *lbEnv) metric(node, series string) float64 {
	e.t.Helper()
	return sample(e.t, scrapeMetrics(e.t, e.c, node, memMetricsAddr), node, series)
}

// sample is series (name{labels}) of node's metrics m, failing t if m has
// none.
func sample(t *testing.T, m map[string]float64, node, series string) float64 {
	t.Helper()
	v, ok := m[series]
	if !ok {
		t.Fatalf("/metrics of %s has no %s", node, series)
	}
	return v
}
