//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vrouter/vrouter/integration/harness"
)

// The egress measurements: pods reaching a server outside the cluster
// (egressServer, on outsideClient's loopback, which each node routes via
// outsideClient as via an upstream gateway) with their node's address.
// kernel: flannel's masquerade rules (flannelMasq) in the nodes' nat
// tables; vrouter: egress.masquerade, which terminates the pod's
// connection in the router and dials the server from the node.

var (
	egressServer         = netip.MustParseAddr("198.51.100.10")
	egressIperfPort      = 5202
	egressLoad           = loadTarget{"egress", httpClientPod, netip.AddrPortFrom(egressServer, 80), []string{outsideClient}}
	egressMeasurementSet = map[string]bool{"egress-tcp": true, "egress-close": true}
)

// flannelMasq are flannel's --ip-masq rules as the seed's nodes hold
// them.
const flannelMasq = `*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
`

// egressAvailable reports whether this vrouter masquerades pods' egress:
// `vrouter validate` accepts egress.masquerade (a --vrouter binary from
// before it does not, and its egress rows are n/a).
func egressAvailable(ctx context.Context, bin, work string) (bool, string) {
	dir := filepath.Join(work, "egress-check")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err.Error()
	}
	opts := harness.ConfigOptions{Services: harness.SeedServices(""), Exclude: []string{outsideClient}}
	opts.Egress.Masquerade = true
	path, err := harness.WriteConfig(dir, benchSpec(), masterNode, opts)
	if err != nil {
		return false, fmt.Sprintf("the config package refuses egress.masquerade: %v", err)
	}
	if out, err := exec.CommandContext(ctx, bin, "validate", path).CombinedOutput(); err != nil {
		return false, fmt.Sprintf("`vrouter validate` refuses egress.masquerade: %s", firstLines(out, 2))
	}
	return true, ""
}

// setupEgress puts egressServer on outsideClient with an iperf3 server
// and an HTTP server, routes it from each node via outsideClient, and in
// kernel mode installs flannel's masquerade rules (vrouter's are the
// router's own, from its config).
func (b *bed) setupEgress(ctx context.Context) error {
	if err := b.addOutsideAddr(egressServer, masterNode, workerNode); err != nil {
		return err
	}
	for _, n := range []string{masterNode, workerNode} {
		if b.mode == modeKernel {
			if _, err := iptablesRestore(ctx, b.c, n, flannelMasq, b.iptablesRestore, "--noflush"); err != nil {
				return fmt.Errorf("flannel's masquerade rules on %s: %w", n, err)
			}
		}
	}
	logf, err := os.Create(filepath.Join(b.dir, "iperf3-egress-server.log"))
	if err != nil {
		return err
	}
	cmd := b.c.Command(outsideClient, "iperf3", "-s", "-B", egressServer.String(), "-p", fmt.Sprint(egressIperfPort))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(cmd.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start iperf3 server in %s: %w", outsideClient, err)
	}
	b.egressIperf, b.egressIperfDone = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(b.egressIperfDone)
	}()
	if err := b.startNginx(outsideClient, netip.AddrPortFrom(egressServer, 80)); err != nil {
		return err
	}
	if err := b.waitListening(outsideClient, egressIperfPort, 5*time.Second); err != nil {
		return err
	}
	// A pod reaches it, seen as its node.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		r, err := b.c.HTTPGet(ctx, httpClientPod, "http://"+egressLoad.addr.String()+"/")
		if err == nil && r.Client.Addr() == nodeAddr(masterNode) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("the outside server saw %v, want %s's address %v", r.Client, masterNode, nodeAddr(masterNode))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("egress check from %s: %w", httpClientPod, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measureEgressTCP runs iperf3 with one TCP stream from clientPod to
// egressServer, upload and download.
func measureEgressTCP(ctx context.Context, b *bed, dur time.Duration) (map[string]float64, error) {
	return egressIperf(ctx, clientPod, func(ctx context.Context, args ...string) *exec.Cmd {
		return b.c.CommandContext(ctx, clientPod, "iperf3", args...)
	}, "egress_tcp_gbps", dur)
}

// egressIperf runs iperf3 (by way of iperf3Cmd, which runs it in pod
// from) with one TCP stream to egressServer, upload and download, and
// returns <key>_up and <key>_down in Gbit/s.
func egressIperf(ctx context.Context, from string, iperf3Cmd func(ctx context.Context, args ...string) *exec.Cmd, key string, dur time.Duration) (map[string]float64, error) {
	m := map[string]float64{}
	for _, dir := range []struct {
		key  string
		args []string
	}{{key + "_up", nil}, {key + "_down", []string{"-R"}}} {
		argv := append([]string{"-c", egressServer.String(), "-p", fmt.Sprint(egressIperfPort), "-J",
			"-t", fmt.Sprint(int(dur.Seconds() + 0.999))}, dir.args...)
		cctx, cancel := context.WithTimeout(ctx, dur+20*time.Second)
		out, err := iperf3Cmd(cctx, argv...).Output()
		cancel()
		var rep iperfReport
		if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil || rep.Error != "" {
			return nil, fmt.Errorf("iperf3 %v from %s: %v %v %s", argv, from, err, jerr, rep.Error)
		}
		if rx := rep.End.SumReceived; rx.BitsPerSec > 0 {
			m[dir.key] = rx.BitsPerSec / 1e9
		}
	}
	return m, nil
}

// addOutsideAddr puts addr on outsideClient's loopback and routes it from
// each of nodes via outsideClient, as a node routes the world via its
// upstream gateway.
func (b *bed) addOutsideAddr(addr netip.Addr, nodes ...string) error {
	host := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}
	if err := b.c.Do(outsideClient, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: host})
	}); err != nil {
		return fmt.Errorf("add %v to %s: %w", addr, outsideClient, err)
	}
	for _, n := range nodes {
		if err := b.c.Do(n, func() error {
			return netlink.RouteAdd(&netlink.Route{Dst: host, Gw: outsideClientAddr.AsSlice()})
		}); err != nil {
			return fmt.Errorf("route %v via %v on %s: %w", addr, outsideClientAddr, n, err)
		}
	}
	return nil
}

// measureEgressClose measures new connections from t's pod to the egress
// server twice, back to back: for httpDur, as every HTTP row
// (measureHTTP; on the kernel bed also its run with more generator), and
// then for sustainedDur more, by when the ports toward the server have
// all been used at least once, as they are on a node whose pods keep
// connecting to one destination. The second run is the sustained rate;
// with it come the SYNs retransmitted (by the pod, or by the node's
// sockets that vrouter and slirp4netns dial from) and the SYNs the server
// refused in TIME_WAIT for an old timestamp (PAWS), per 100 connections
// the server opened, which say why a rate fell.
func measureEgressClose(ctx context.Context, b *bed, p params, t loadTarget) (map[string]float64, error) {
	m, err := measureHTTP(ctx, b, t, false, p.httpThreads, p.httpConns, p.httpDur)
	if err != nil {
		return nil, err
	}
	nss := []string{t.from, masterNode, outsideClient}
	c0, err := b.tcpCounters(ctx, nss)
	if err != nil {
		return nil, err
	}
	r, err := runWrk(ctx, b, t, false, p.httpThreads, p.httpConns, p.sustainedDur)
	if err != nil {
		return nil, fmt.Errorf("sustained: %w", err)
	}
	c1, err := b.tcpCounters(ctx, nss)
	if err != nil {
		return nil, err
	}
	delta := func(ns, name string) float64 { return c1[ns][name] - c0[ns][name] }
	opened := delta(outsideClient, "Tcp.PassiveOpens")
	if opened <= 0 {
		return nil, fmt.Errorf("sustained: the server at %v opened no connection (%d requests)", t.addr, r.requests)
	}
	name := t.name + "_close_sustained"
	m[name+"_per_s"] = r.perSec
	m[name+"_errors"] = float64(r.errs)
	m[name+"_syn_retrans_per_100"] = 100 * (delta(t.from, "TcpExt.TCPSynRetrans") + delta(masterNode, "TcpExt.TCPSynRetrans")) / opened
	m[name+"_paws_per_100"] = 100 * delta(outsideClient, "TcpExt.PAWSTimewait") / opened
	return m, nil
}

// tcpCounters reads the Tcp and TcpExt counters of each namespace in nss
// (/proc/net/snmp and /proc/net/netstat, as nstat does), keyed
// "Tcp.PassiveOpens", "TcpExt.PAWSTimewait" and so on.
func (b *bed) tcpCounters(ctx context.Context, nss []string) (map[string]map[string]float64, error) {
	all := map[string]map[string]float64{}
	for _, ns := range nss {
		path, err := b.nsPath(ns)
		if err != nil {
			return nil, err
		}
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+path, "--", "cat", "/proc/net/snmp", "/proc/net/netstat").Output()
		if err != nil {
			return nil, fmt.Errorf("TCP counters of %s: %w", ns, err)
		}
		all[ns] = harness.ParseNetstat(out, "Tcp", "TcpExt")
	}
	return all, nil
}
