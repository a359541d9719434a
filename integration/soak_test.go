package integration

// The soak-and-attack suite: one scenario on the seed's cluster in nat
// mode, in phases a user can follow in the log, each with its own checks
// and its figures in a table at the end.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201   vrouter: restarted, kill -9'd, flooded, reloaded
//	 │    coredns-8qxfv 10.244.0.3   the attacker: raw SYNs to silent:80 and UDP to
//	 │                               kube-dns:53, from its own address, from
//	 │                               10.244.0.5-.254 (its node's pod CIDR, where
//	 │                               no pod lives) and from 192.0.2.1-.4 (no pod CIDR)
//	 │    coredns-xx6mc 10.244.0.2   the innocent client; also a kube-dns backend
//	 │    nginx-th5pz   10.244.0.4   my-service backend; UDP 5353 backend of soak-frag
//	 └─ hostgw-node   eth0 .202
//	      nginx-4k7xw 10.244.1.2     my-service backend; backend of soak-late
//	      nginx-j6zwk 10.244.1.3     my-service backend that dies last
//
//	default/my-service    10.103.92.81:80/TCP    -> th5pz, 4k7xw, j6zwk (random)
//	kube-system/kube-dns  10.96.0.10:53/UDP      -> coredns-xx6mc, coredns-8qxfv
//	default/soak-frag     10.103.92.88:5353/UDP  -> th5pz (hairpin: source 169.254.244.1)
//	default/silent        10.96.100.20:80/TCP    -> 10.244.1.99 (no pod: SYNs unanswered)
//	default/soak-late     10.103.92.90:80/TCP    -> 4k7xw, added by a reload
//	lb.nat.udpTimeout     5s: the UDP flood's flows expire within the test
//	lb.nat.maxFlows       32768: both floods fill the table in about 2 s
//
// Phases, in order:
//
//  1. restart: long-lived connections through my-service from the
//     innocent pod; the router is restarted (SIGTERM), then killed
//     (SIGKILL) and down for 2 s; none of them may reset.
//  2. flood: the attacker floods (SYNs and UDP) while the innocent pod
//     connects to my-service and asks kube-dns every 50 ms, and the
//     long-lived connections keep talking. Every attempt must succeed.
//     The attacker sends from 251 addresses of its pod CIDR and fills the
//     table (both protocols); early drop must then end the flood's
//     unconfirmed flows, counted, for the innocent pod's. The addresses
//     outside its pod CIDR are dropped and counted.
//  3. fragments: UDP that fragments both ways through soak-frag.
//  4. port reuse: a connection aborted with RST and a new one from the
//     same port at once; the new one must still work after 10 s idle.
//  5. reload: soak-late added while files are written in the config's
//     directory every 10 ms; it must serve within reloadTimeout.
//  6. memory: the flood's flows expire, and the router's anonymous memory
//     comes back below its baseline plus a quarter of what the flood added.
//  7. dead backend: j6zwk's server stops; it is ejected after a few
//     refused connections.
//
// The flood lasts 8 s; -soak=10m (go test ./integration/ -run
// TestSoakAndAttack -soak=10m) makes it last that long.

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
)

var soakFlood = flag.Duration("soak", 8*time.Second, "how long TestSoakAndAttack floods the router")

const soakMetricsAddr = "127.0.0.1:9287"

func TestSoakAndAttack(t *testing.T) {
	attacker, innocent := lbCoredns8qxfv, lbCorednsXx6mc
	dead := lbNginxJ6zwk
	fragVIP := netip.AddrPortFrom(netip.MustParseAddr("10.103.92.88"), 5353)
	lateVIP := netip.AddrPortFrom(netip.MustParseAddr("10.103.92.90"), 80)
	vip := netip.AddrPortFrom(myServiceVIP, 80)
	dns := netip.AddrPortFrom(kubeDNSVIP, 53)
	services := []configs.ServiceSpec{
		myService(),
		kubeDNS(),
		silentService(),
		myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.Endpoints = "soak-frag", []string{fragVIP.Addr().String()}, lbEndpoints(lbNginxTh5pz)
			s.Ports = []configs.ServicePortSpec{{Name: "dns", Port: int(fragVIP.Port()), Protocol: "UDP"}}
		}),
	}
	const udpTimeout = 5 * time.Second
	const maxFlows = 32768
	e := startLBWith(t, "soak", lbOptions{
		LB:         configs.LBSpec{NAT: configs.NATSpec{UDPTimeout: udpTimeout.String(), MaxFlows: maxFlows}},
		RouterArgs: []string{"--metrics-address", soakMetricsAddr},
	}, services)
	e.serveOn(e.c.ServeTCPEcho, 80, lbNginxTh5pz, lbNginx4k7xw)
	deadSrv, err := e.c.ServeTCPEcho(dead.name, netip.AddrPortFrom(dead.addr, 80).String())
	if err != nil {
		t.Fatalf("serve on %s: %v", dead.name, err)
	}
	e.serveOn(e.c.ServeUDPEcho, 53, lbCoreDNS...)
	const answerLen = 3000
	serveBigUDP(t, e, lbNginxTh5pz, fragVIP.Port(), answerLen)

	var figures [][2]string
	figure := func(phase, format string, args ...any) {
		figures = append(figures, [2]string{phase, fmt.Sprintf(format, args...)})
	}
	start := time.Now()
	defer func() {
		var b strings.Builder
		fmt.Fprintf(&b, "soak and attack, %v in all:\n", time.Since(start).Round(time.Second))
		for _, f := range figures {
			fmt.Fprintf(&b, "  %-12s %s\n", f[0], f[1])
		}
		t.Log(b.String())
	}()

	// 1. restart: long-lived connections through a restart and a crash.
	var conns []*restartConn
	for range 6 {
		conn, rep, err := e.dialFrom(innocent.name, netip.AddrPortFrom(innocent.addr, 0), vip, 5*time.Second)
		if err != nil {
			t.Fatalf("long-lived connection %s -> %v: %v", innocent.name, vip, err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, &restartConn{conn: conn, from: innocent.name, vip: vip, backend: rep.Server})
	}
	talk := func(when string) (kept int, errs []error) {
		for i, c := range conns {
			if err := echoWithin(c.conn, fmt.Sprintf("%s %d\n", when, i), 10*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("%s: connection %d %v -> %v (backend %s): %w", when, i, c.conn.LocalAddr(), c.vip, c.backend, err))
				continue
			}
			kept++
		}
		return kept, errs
	}
	if _, errs := talk("before the restart"); len(errs) > 0 {
		t.Fatalf("long-lived connections before the restart: %v", errs)
	}
	for _, stop := range []struct {
		name string
		sig  syscall.Signal
		down time.Duration
	}{{"restart", syscall.SIGTERM, 0}, {"kill -9", syscall.SIGKILL, 2 * time.Second}} {
		o := e.outage(stop.name, lbMaster, stop.sig, stop.down, conns)
		for _, err := range o.errs {
			t.Error(err)
		}
		kept, errs := talk("after " + stop.name)
		for _, err := range errs {
			t.Error(err)
		}
		figure(stop.name, "%d/%d connections kept; router back %v after the signal, data sent while down delivered after %v",
			kept, len(conns), o.up.Round(time.Millisecond), o.resumed.Round(time.Millisecond))
	}
	if t.Failed() {
		t.FailNow()
	}

	// The memory baseline: the router that will be flooded, after a
	// little traffic, settled.
	for i := range 10 {
		if _, err := e.exchange(innocent.name, vip, fmt.Sprintf("warm %d", i)); err != nil {
			t.Fatalf("connection before the flood: %v", err)
		}
		if _, err := e.udpExchange(innocent.name, dns, fmt.Sprintf("warm %d", i), 3*time.Second); err != nil {
			t.Fatalf("DNS before the flood: %v", err)
		}
	}
	time.Sleep(2 * time.Second)
	r := e.routers[lbMaster]
	base := readProcMem(t, r.PID())
	m0 := e.metricsOf(lbMaster, soakMetricsAddr)

	// 2. flood.
	ctx, cancel := context.WithTimeout(context.Background(), *soakFlood)
	defer cancel()
	spoofed := append(addrRange(netip.AddrFrom4([4]byte{10, 244, 0, 5}), 250), addrRange(netip.AddrFrom4([4]byte{192, 0, 2, 1}), 4)...)
	floods := []rawFlood{
		{own: attacker.addr, spoofed: spoofed, dst: netip.AddrPortFrom(silentVIP, 80), proto: protoTCP},
		{own: attacker.addr, spoofed: spoofed, dst: dns, proto: protoUDP},
	}
	sent := make([]atomic.Int64, len(floods))
	floodErrs := make([]error, len(floods))
	var wg sync.WaitGroup
	for i, f := range floods {
		wg.Go(func() {
			floodErrs[i] = e.c.Do(attacker.name, func() error { return f.run(ctx, &sent[i]) })
		})
	}
	// The long-lived connections talk every second of the flood.
	var longKept, longRounds atomic.Int64
	var longErrs []error
	wg.Go(func() {
		for ctx.Err() == nil {
			kept, errs := talk("during the flood")
			longKept.Add(int64(kept))
			longRounds.Add(1)
			if len(longErrs) < 5 {
				longErrs = append(longErrs, errs...)
			}
			time.Sleep(time.Second)
		}
	})
	var peakFlows float64
	wg.Go(func() {
		for ctx.Err() == nil {
			time.Sleep(time.Second)
			if f := e.metric(lbMaster, "vrouter_nat_flows"); f > peakFlows {
				peakFlows = f
			}
		}
	})
	floodStart := time.Now()
	pr := e.probe(ctx, innocent.name, vip, dns)
	wg.Wait()
	floodEnd := time.Now()
	peak := readProcMem(t, r.PID())
	m := e.metricsOf(lbMaster, soakMetricsAddr)
	for i, err := range floodErrs {
		if err != nil {
			t.Fatalf("flood %d from %s: %v", i, attacker.name, err)
		}
	}
	delta := func(series string) float64 { return m[series] - m0[series] }
	evicted := delta(`vrouter_nat_evicted_total{reason="cap"}`)
	figure("flood", "%d SYNs and %d UDP datagrams in %v from %s (%d source addresses); peak %.0f NAT flows (cap %d per protocol); %.0f unconfirmed flows ended by early drop; %.0f new flows refused by the caps, %.0f for want of a source port; %.0f packets from outside the pod CIDR dropped",
		sent[0].Load(), sent[1].Load(), floodEnd.Sub(floodStart).Round(time.Second), attacker.name, len(spoofed)+1, peakFlows, maxFlows,
		evicted, delta(`vrouter_nat_refused_total{reason="cap"}`), delta(`vrouter_nat_refused_total{reason="ports"}`),
		delta(`vrouter_packets_dropped_total{reason="source_not_local"}`))
	figure("innocent", "during the flood: %d/%d connections, %d/%d DNS queries answered (%d on a later try); connect+echo p50 %v, p99 %v, max %v",
		pr.tcpOK, pr.tcpOK+pr.tcpFailed, pr.dnsOK, pr.dnsOK+pr.dnsFailed, pr.dnsRetried, pr.pct(0.5), pr.pct(0.99), pr.pct(1))
	figure("long-lived", "during the flood: %d/%d exchanges on %d connections", longKept.Load(), longRounds.Load()*int64(len(conns)), len(conns))
	for i := range sent {
		if n := sent[i].Load(); n < 1000 {
			t.Errorf("flood %d sent %d packets, want ≥ 1000 for the phase to mean anything", i, n)
		}
	}
	if peakFlows < 2*maxFlows*0.95 {
		t.Errorf("the flood made at most %.0f NAT flows, want both tables full (%d each) for the phase to mean anything", peakFlows, maxFlows)
	}
	if evicted == 0 {
		t.Errorf("vrouter_nat_evicted_total{reason=\"cap\"} did not move: the full table made no room by early drop")
	}
	if pr.tcpFailed > 0 || pr.dnsFailed > 0 || pr.tcpOK == 0 {
		t.Errorf("innocent %s during the flood: %d/%d connections and %d/%d DNS queries failed, want none, e.g. %v",
			innocent.name, pr.tcpFailed, pr.tcpOK+pr.tcpFailed, pr.dnsFailed, pr.dnsOK+pr.dnsFailed, pr.errs)
	}
	if len(longErrs) > 0 || longRounds.Load() == 0 {
		t.Errorf("long-lived connections during the flood (%d rounds): %v", longRounds.Load(), longErrs)
	}
	if d := delta(`vrouter_packets_dropped_total{reason="source_not_local"}`); d == 0 {
		t.Errorf("the router counted no packet from a source outside its pod CIDRs as source_not_local; the flood sent some")
	}
	if _, err := e.exchange(innocent.name, vip, "after the flood"); err != nil {
		t.Errorf("connection after the flood: %v", err)
	}
	if _, err := e.udpExchange(innocent.name, dns, "after the flood", 3*time.Second); err != nil {
		t.Errorf("DNS after the flood: %v", err)
	}

	// 3. fragments, both ways, through a hairpin ClusterIP.
	if err := fragmentedUDP(t, e, innocent, fragVIP, lbNginxTh5pz, lbRouterAddr, answerLen); err != nil {
		t.Errorf("fragments: %v", err)
		figure("fragments", "FAILED: %v", err)
	} else {
		figure("fragments", "a request one byte over the MTU and a %d-byte answer through %v: both whole", answerLen, fragVIP)
	}

	// 4. port reuse: the 5-tuple of a connection aborted a moment ago.
	local := netip.AddrPortFrom(innocent.addr, 20200) // below the ephemeral range: no earlier connection holds it in TIME_WAIT
	first, _, err := e.dialFrom(innocent.name, local, vip, 5*time.Second)
	if err != nil {
		t.Fatalf("connection from %v: %v", local, err)
	}
	first.(*net.TCPConn).SetLinger(0) // close with RST
	first.Close()
	reused, reusedRep, err := e.dialFrom(innocent.name, local, vip, 5*time.Second)
	if err != nil {
		t.Fatalf("connection from %v right after the last one from it was aborted: %v", local, err)
	}
	defer reused.Close()
	if err := lbEcho(reused, "reused\n"); err != nil {
		t.Errorf("reused port: %v", err)
	}
	reusedAt := time.Now()

	// 5. reload under directory churn.
	churnCtx, stopChurn := context.WithCancel(context.Background())
	var churnWrites atomic.Int64
	var churn sync.WaitGroup
	dir := filepath.Dir(e.configPath(lbMaster))
	churn.Go(func() {
		for i := 0; churnCtx.Err() == nil; i++ {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("churn-%d.tmp", i%16)), []byte("churn\n"), 0o644)
			churnWrites.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond) // the churn is on before the change
	late := myService(func(s *configs.ServiceSpec) {
		s.Name, s.ClusterIPs, s.Endpoints = "soak-late", []string{lateVIP.Addr().String()}, lbEndpoints(lbNginx4k7xw)
	})
	e.setServices(append(services, late)...)
	changed := time.Now()
	var applied time.Duration
	for {
		cctx, ccancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := e.c.TCPExchange(cctx, innocent.name, lateVIP, []byte("late"))
		ccancel()
		if err == nil {
			applied = time.Since(changed)
			break
		}
		if time.Since(changed) > 10*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopChurn()
	churn.Wait()
	if applied == 0 {
		t.Errorf("reload: %v not served 10 s after the config file gained it, with the directory written to every 10 ms", lateVIP)
		figure("reload", "FAILED: not applied in 10 s under %d writes to the directory", churnWrites.Load())
	} else {
		figure("reload", "a new Service served %v after the config changed, under %d writes to its directory", applied.Round(time.Millisecond), churnWrites.Load())
		if applied > reloadTimeout {
			t.Errorf("reload: %v served %v after the config file gained it, want within %v (the debounce is bounded) though the directory is written to every 10 ms", lateVIP, applied, reloadTimeout)
		}
	}

	// 6. memory: the flood's flows expire (SYNs unanswered: 30 s; UDP:
	// udpTimeout), then the memory comes back.
	ours := float64(len(conns) + 1)
	deadline := floodEnd.Add(30*time.Second + udpTimeout + 30*time.Second)
	for e.metric(lbMaster, "vrouter_nat_flows") > ours+10 {
		if time.Now().After(deadline) {
			t.Fatalf("%.0f NAT flows left %v after the flood, want the flood's expired", e.metric(lbMaster, "vrouter_nat_flows"), time.Since(floodEnd).Round(time.Second))
		}
		time.Sleep(time.Second)
	}
	expired := time.Now()
	limit := base.anon + (peak.anon-min(peak.anon, base.anon))/4
	after := memoryBack(t, r.PID(), limit, 60*time.Second)
	figure("memory", "anonymous %d MiB before the flood, %d MiB at its end, %d MiB %v after its flows expired (%v after the flood); RSS %d, %d, %d MiB",
		base.anon>>20, peak.anon>>20, after.anon>>20, time.Since(expired).Round(time.Second), expired.Sub(floodEnd).Round(time.Second), base.rss>>20, peak.rss>>20, after.rss>>20)
	if after.anon > limit {
		t.Errorf("anonymous memory %d MiB after the flood's flows expired, want at most %d MiB (baseline %d MiB + a quarter of the flood's %d MiB)",
			after.anon>>20, limit>>20, base.anon>>20, (peak.anon-base.anon)>>20)
	}
	// The reused port's connection, idle all this while, and the
	// long-lived ones still work.
	idle := time.Since(reusedAt)
	if err := lbEcho(reused, "reused, later\n"); err != nil {
		t.Errorf("connection from reused port %v (backend %s) after %v idle: %v", local, reusedRep.Server, idle.Round(time.Second), err)
		figure("port reuse", "FAILED after %v idle: %v", idle.Round(time.Second), err)
	} else {
		figure("port reuse", "a connection from the port of one aborted a moment before works, and still after %v idle", idle.Round(time.Second))
	}
	kept, errs := talk("at the end")
	for _, err := range errs {
		t.Error(err)
	}
	figure("long-lived", "at the end: %d/%d kept, %v after they opened", kept, len(conns), time.Since(start).Round(time.Second))

	// 7. dead backend: ejected after a few failed connections.
	deadSrv.Close()
	const n = 30
	failed := 0
	for i := range n {
		if _, err := e.exchange(innocent.name, vip, fmt.Sprintf("dead %d", i)); err != nil {
			failed++
		}
	}
	ep := e.endpointStatus(lbMaster, netip.AddrPortFrom(dead.addr, 80))
	figure("dead backend", "%d of %d connections failed after %s's server stopped; ejected %d times (now: %v)", failed, n, dead.name, ep.Ejections, ep.Ejected)
	if ep.Ejections < 1 {
		t.Errorf("dead backend %s: ejections = %d, want ≥ 1", dead.name, ep.Ejections)
	}
	// Three refusals in a row eject it; one more if a slow run let the
	// ejection lapse.
	if failed > 4 {
		t.Errorf("dead backend %s: %d of %d connections failed, want at most 4 (3 eject it)", dead.name, failed, n)
	}
	e.requireRouters()
}
