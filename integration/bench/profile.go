//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
	"github.com/vrouter/vrouter/tun"
)

// Profiling the forwarding path. `vrouter run` has no profiling endpoint
// (and cmd/ is not ours to change), so the benchmark runs the same data
// path in its own process: on the nat bed's hostgw-master it stops the
// vrouter process and wires router.New + tun.Open + router.ListenUDP from
// that node's config file exactly as cmd/vrouter's run does, minus the
// Service load balancer, then drives iperf3 through it with the CPU
// profiler on. Two runs: "tx", pod → TUN → stack → UDP (iperf3's data
// leaves through this router), and "rx", UDP → stack → TUN (iperf3 -R).
// On the encrypted bed (overlay.encryption wireguard) the overlay is
// wireguard.Listen with the node's key file and the peers' public keys,
// as cmd/vrouter opens it, and the runs are "wireguard tx" and
// "wireguard rx": `--modes vrouter-wireguard --only tcp-1` profiles the
// encrypted path alone.
//
// The CPU profiler samples this process's user and system time, so time
// spent inside system calls is attributed to the Go frames that made
// them. Each sample is put in exactly one category (first match in the
// order of classify), then divided by the packets the router moved.

// profileResult is one profiled run.
type profileResult struct {
	Direction       string         `json:"direction"`
	File            string         `json:"file"`
	Gbps            float64        `json:"gbps"`
	Seconds         float64        `json:"seconds"`
	CPUSeconds      float64        `json:"cpu_seconds"` // process user+system over the run
	Packets         uint64         `json:"packets"`     // packets into the router, both NICs
	NsPerPacket     float64        `json:"cpu_ns_per_packet"`
	AllocsPerPacket float64        `json:"allocs_per_packet"`
	BytesPerPacket  float64        `json:"alloc_bytes_per_packet"`
	GCs             uint32         `json:"gcs"`
	SampledSeconds  float64        `json:"sampled_seconds"`
	Categories      []profileShare `json:"categories"`
	Inclusive       []profileShare `json:"inclusive"`
	Top             []string       `json:"top"`
}

type profileShare struct {
	Name        string  `json:"name"`
	Seconds     float64 `json:"seconds"`
	Percent     float64 `json:"percent"`
	NsPerPacket float64 `json:"ns_per_packet"`
}

// profileForwarding replaces the nat bed's master router with an
// in-process one and profiles it under iperf3 in both directions. The
// profiles are written to dir.
func profileForwarding(ctx context.Context, b *bed, dur time.Duration, dir string) ([]profileResult, error) {
	if len(b.routers) == 0 {
		return nil, errors.New("profile: the bed runs no routers")
	}
	hr := b.routers[0]
	cfg, err := configs.Load(hr.Config)
	if err != nil {
		return nil, err
	}
	if err := hr.Stop(); err != nil {
		return nil, fmt.Errorf("stop the vrouter process on %s: %w", hr.Node, err)
	}
	b.pids = nil // its CPU is no longer the routers' CPU
	if err := b.waitLinkGone(hr.Node, cfg.TUN.Name, 5*time.Second); err != nil {
		return nil, err
	}

	encrypted := cfg.Overlay.Encryption == configs.EncryptionWireGuard
	var (
		dev  tun.Device
		conn router.Conn
	)
	err = b.c.Do(hr.Node, func() error {
		var err error
		if dev, err = tun.Open(tun.Options{Name: cfg.TUN.Name, Offload: cfg.TUN.Offload}); err != nil {
			return err
		}
		routes := slices.Concat(cfg.ClusterCIDRs, cfg.ServiceCIDRs)
		for _, a := range cfg.RouterAddresses {
			routes = append(routes, netip.PrefixFrom(a, a.BitLen()))
		}
		if err = tun.Configure(dev.Name(), tun.LinkConfig{Addresses: cfg.TUN.Addresses, MTU: cfg.TUN.MTU, Routes: routes}); err != nil {
			dev.Close()
			return err
		}
		if encrypted {
			conn, err = listenWireGuard(cfg)
		} else {
			conn, err = router.ListenUDP(cfg.Overlay.Listen)
		}
		if err != nil {
			dev.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("profile: open the data path on %s: %w", hr.Node, err)
	}
	r, err := router.New(router.Options{TUN: dev, Overlay: conn, MTU: cfg.Overlay.MTU, TUNMTU: cfg.TUN.MTU})
	if err != nil {
		dev.Close()
		conn.Close()
		return nil, err
	}
	rc := router.Config{PodCIDRs: cfg.Node.PodCIDRs, Addresses: cfg.RouterAddresses}
	for _, p := range cfg.Peers {
		rc.Peers = append(rc.Peers, router.Peer{Name: p.Name, Endpoint: p.Underlay, PodCIDRs: p.PodCIDRs, PublicKey: p.PublicKey})
	}
	if err := r.Set(rc); err != nil {
		r.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(rctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	// An encrypted overlay forwards once the peers have handshaken.
	pings := 3
	if encrypted {
		pings = 10
	}
	if res, err := b.c.Ping(clientPod, serverAddr, pings, time.Second); err != nil || res.Received == 0 {
		return nil, fmt.Errorf("profile: in-process router does not forward: ping %v: %v %v", serverAddr, res, err)
	}

	var out []profileResult
	var errs []error
	for _, dirn := range []string{"tx", "rx"} {
		if encrypted {
			dirn = "wireguard " + dirn
		}
		p, err := profileRun(ctx, b, r, dirn, dur, dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// listenWireGuard opens the encrypted overlay as cmd/vrouter does: the
// key in overlay.privateKeyFile, WireGuard on overlay.port.
func listenWireGuard(cfg *configs.Config) (router.Conn, error) {
	key, _, err := wireguard.LoadOrCreateKey(cfg.Overlay.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	sock, err := router.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(cfg.Overlay.Port)))
	if err != nil {
		return nil, err
	}
	return wireguard.Listen(wireguard.Options{PrivateKey: key, MTU: cfg.Overlay.MTU, Socket: sock})
}

// waitLinkGone waits until link name no longer exists in namespace ns.
func (b *bed) waitLinkGone(ns, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var gone bool
		if err := b.c.Do(ns, func() error {
			_, err := netlink.LinkByName(name)
			gone = err != nil
			return nil
		}); err != nil {
			return err
		}
		if gone {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still exists in %s %v after its router exited", name, ns, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// profileRun profiles one iperf3 run through r: "tx" sends from clientPod
// (behind r) to serverPod, "rx" the reverse.
func profileRun(ctx context.Context, b *bed, r *router.Router, dirn string, dur time.Duration, dir string) (profileResult, error) {
	res := profileResult{Direction: dirn, File: filepath.Join(dir, "cpu-"+strings.ReplaceAll(dirn, " ", "-")+".pprof")}
	args := []string{"-P", "1"}
	if strings.HasSuffix(dirn, "rx") {
		args = append(args, "-R")
	}
	f, err := os.Create(res.File)
	if err != nil {
		return res, err
	}
	defer f.Close()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	st0 := r.Stats()
	cpu0, err := procCPU(selfPID)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := pprof.StartCPUProfile(f); err != nil {
		return res, err
	}
	rep, err := iperf(ctx, b, dur, args...)
	pprof.StopCPUProfile()
	res.Seconds = time.Since(t0).Seconds()
	cpu1, _ := procCPU(selfPID)
	st1 := r.Stats()
	runtime.ReadMemStats(&ms1)
	if err != nil {
		return res, fmt.Errorf("profile %s: %w", dirn, err)
	}
	res.Gbps = rep.End.SumReceived.BitsPerSec / 1e9
	res.CPUSeconds = cpu1 - cpu0
	res.Packets = (st1.TUN.RxPackets - st0.TUN.RxPackets) + (st1.Overlay.RxPackets - st0.Overlay.RxPackets)
	if res.Packets == 0 {
		return res, fmt.Errorf("profile %s: the router moved no packets", dirn)
	}
	pk := float64(res.Packets)
	res.NsPerPacket = res.CPUSeconds * 1e9 / pk
	res.AllocsPerPacket = float64(ms1.Mallocs-ms0.Mallocs) / pk
	res.BytesPerPacket = float64(ms1.TotalAlloc-ms0.TotalAlloc) / pk
	res.GCs = ms1.NumGC - ms0.NumGC
	if err := f.Close(); err != nil {
		return res, err
	}
	if err := analyzeProfile(ctx, &res); err != nil {
		return res, fmt.Errorf("analyze %s: %w", res.File, err)
	}
	return res, nil
}

// sample is one stack of a CPU profile (leaf first) with its CPU time.
type sample struct {
	secs   float64
	frames []string
}

// analyzeProfile reads res.File with `go tool pprof -traces` and fills in
// the categories, the inclusive shares and the top functions.
func analyzeProfile(ctx context.Context, res *profileResult) error {
	samples, err := profileSamples(ctx, res.File)
	if err != nil {
		return err
	}
	var total float64
	byCat := map[string]float64{}
	incl := make([]float64, len(inclusiveProbes))
	for _, s := range samples {
		total += s.secs
		byCat[classify(s.frames)] += s.secs
		for i, pr := range inclusiveProbes {
			if anyFrame(s.frames, pr.match...) {
				incl[i] += s.secs
			}
		}
	}
	res.SampledSeconds = total
	if total == 0 {
		return errors.New("profile has no samples")
	}
	pk := float64(res.Packets)
	share := func(name string, secs float64) profileShare {
		return profileShare{Name: name, Seconds: secs, Percent: 100 * secs / total, NsPerPacket: secs * 1e9 / pk}
	}
	for _, c := range categories {
		if s := byCat[c]; s > 0 {
			res.Categories = append(res.Categories, share(c, s))
		}
	}
	for i, pr := range inclusiveProbes {
		if incl[i] > 0 { // the encrypted overlay's probes match nothing on the plain one
			res.Inclusive = append(res.Inclusive, share(pr.name, incl[i]))
		}
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", res.File).Output()
	if err != nil {
		return fmt.Errorf("go tool pprof -top: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(top))
	started := false
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "flat%") {
			started = true
		}
		if started {
			res.Top = append(res.Top, line)
		}
	}
	return nil
}

// profileSamples reads a CPU profile's samples with `go tool pprof
// -traces`.
func profileSamples(ctx context.Context, file string) ([]sample, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", file).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof -traces %s: %w", file, err)
	}
	return parseTraces(out)
}

// errNoSamples: the profiled run was too short for the profiler to take a
// sample.
var errNoSamples = errors.New("no samples in go tool pprof -traces output")

// parseTraces parses `go tool pprof -traces` output: blocks separated by
// "-----------+----" lines, each starting with the sample's value and
// leaf frame, followed by one caller frame per line.
func parseTraces(out []byte) ([]sample, error) {
	var (
		samples []sample
		cur     *sample
	)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		if cur == nil {
			if len(fs) < 2 {
				continue // header lines or labels
			}
			d, err := time.ParseDuration(fs[0])
			if err != nil {
				continue // a header line ("File: ...", "Duration: ...")
			}
			samples = append(samples, sample{secs: d.Seconds()})
			cur = &samples[len(samples)-1]
			fs = fs[1:]
		}
		cur.frames = append(cur.frames, fs[0])
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(samples) == 0 {
		return nil, errNoSamples
	}
	return samples, nil
}

// Categories, in the order samples are tested against them.
var categories = []string{
	"syscall: UDP send (overlay out)",
	"syscall: TUN write (to node kernel)",
	"syscall: UDP receive (overlay in)",
	"syscall: TUN read (from node kernel)",
	"syscall: other",
	"crypto: ChaCha20-Poly1305",
	"copy (runtime.memmove)",
	"allocation (runtime.mallocgc)",
	"garbage collection",
	"Go runtime: scheduler, netpoll, locks",
	"gVisor: checksums",
	"gVisor: stack (forwarding, routing, packet buffers)",
	"vrouter: router package",
	"vrouter: router/wireguard (sessions, replay window, handshakes)",
	"other",
}

// classify puts one stack (leaf first) in a category.
func classify(frames []string) string {
	if len(frames) == 0 {
		return "other"
	}
	leaf := frames[0]
	if isSyscall(frames) {
		switch {
		// The stack's writes (WritePackets) and the fast path's
		// (send), made from either reader.
		case anyFrame(frames, "(*overlayEndpoint).WritePackets", "(*overlayEndpoint).send", "wireguard.(*Conn).sealRun", "wireguard.(*Conn).initiateLocked", "wireguard.(*Conn).receiveInitiation"):
			return categories[0]
		case anyFrame(frames, "(*tunEndpoint).WritePackets", "(*tunEndpoint).send"):
			return categories[1]
		case anyFrame(frames, "(*overlayEndpoint).readLoop", "wireguard.(*Conn).fill"):
			return categories[2]
		case anyFrame(frames, "(*tunEndpoint).readLoop"):
			return categories[3]
		}
		return categories[4]
	}
	switch {
	case strings.Contains(leaf, "chacha20") || strings.Contains(leaf, "poly1305"):
		return "crypto: ChaCha20-Poly1305"
	case leaf == "runtime.memmove":
		return "copy (runtime.memmove)"
	case anyFrame(frames, "runtime.mallocgc"):
		return "allocation (runtime.mallocgc)"
	case anyFrame(frames, "runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcAssistAlloc", "runtime.markroot", "runtime.gcDrain"):
		return "garbage collection"
	case strings.HasPrefix(leaf, "runtime.") || strings.HasPrefix(leaf, "internal/runtime/") || strings.HasPrefix(leaf, "sync."):
		return "Go runtime: scheduler, netpoll, locks"
	case strings.Contains(leaf, "gvisor/pkg/tcpip/checksum"):
		return "gVisor: checksums"
	case strings.HasPrefix(leaf, "gvisor.dev/"):
		return "gVisor: stack (forwarding, routing, packet buffers)"
	case strings.HasPrefix(leaf, "github.com/vrouter/vrouter/router/wireguard."):
		return "vrouter: router/wireguard (sessions, replay window, handshakes)"
	case strings.HasPrefix(leaf, "github.com/vrouter/vrouter/"):
		return "vrouter: router package"
	}
	return "other"
}

// isSyscall reports whether the stack is in a system call made by Go code
// (not the runtime's own futex, epoll and signal calls).
func isSyscall(frames []string) bool {
	for _, f := range frames {
		if strings.HasPrefix(f, "syscall.") || strings.HasPrefix(f, "internal/runtime/syscall") ||
			strings.HasPrefix(f, "golang.org/x/sys/unix.") {
			return true
		}
	}
	return false
}

func anyFrame(frames []string, subs ...string) bool {
	for _, f := range frames {
		for _, s := range subs {
			if strings.Contains(f, s) {
				return true
			}
		}
	}
	return false
}

// inclusiveProbes are functions whose cumulative share (everything they
// call included) says where a "close the gap" change would bite.
var inclusiveProbes = []struct {
	name  string
	match []string
}{
	{"into the stack: DeliverNetworkPacket and below", []string{"DeliverNetworkPacket"}},
	{"route lookup: stack.(*Stack).FindRoute", []string{"(*Stack).FindRoute"}},
	{"packet buffers: NewPacketBuffer, ToView, DecRef, Release", []string{"stack.NewPacketBuffer", "(*PacketBuffer).ToView", "(*PacketBuffer).DecRef", "(*View).Release", "buffer.MakeWithData"}},
	{"checksums: tcpip/checksum", []string{"tcpip/checksum."}},
	{"all system calls", []string{"syscall.", "internal/runtime/syscall", "golang.org/x/sys/unix."}},
	// The encrypted overlay (overlay.encryption wireguard).
	{"encryption and decryption: chacha20poly1305", []string{"chacha20poly1305."}},
	{"encrypted overlay: router/wireguard's WriteBatch and ReadBatch and below", []string{"router/wireguard.(*Conn).WriteBatch", "router/wireguard.(*Conn).ReadBatch"}},
	{"all allocation: runtime.mallocgc", []string{"runtime.mallocgc"}},
}
