//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// Per-packet forwarding cost in memory: one router.Router between a fake
// TUN (tun/tuntest) and an in-memory underlay (router/overlaytest), with
// 2 or 1,000 peers, so 2 or 1,000 pod-CIDR routes in its stack. Packets
// from a local pod go to pods of a few peers spread over the table; the
// time per packet is wall time over the whole pipelined run. No kernel
// is involved: this isolates the router's own cost, and how it grows with
// the size of the route table (gVisor scans its route list per packet).
//
//	sender ─▶ tuntest Kernel ─▶ router (TUN NIC → stack → overlay NIC) ─▶ overlaytest ─▶ receivers
//	          10.255.255.2 → 10.<i>.<j>.2, 64-byte UDP payload

// forwardResult is one route count's cost.
type forwardResult struct {
	Peers            int     `json:"peers"`
	Routes           int     `json:"routes"`
	Packets          int     `json:"packets"`
	Received         int     `json:"received"`
	NsPerPacket      float64 `json:"ns_per_packet"`
	CPUNsPerPacket   float64 `json:"cpu_ns_per_packet"`
	AllocsPerPacket  float64 `json:"allocs_per_packet"`
	BytesAllocPerPkt float64 `json:"bytes_alloc_per_packet"`
	// RouteLookupNsPerPacket is the CPU time per packet in gVisor's
	// stack.(*Stack).FindRoute (everything it calls included), from a CPU
	// profile of the run; 0 without one.
	RouteLookupNsPerPacket float64 `json:"route_lookup_ns_per_packet,omitempty"`
	Profile                string  `json:"profile,omitempty"`
}

// peerAddr is peer i's underlay address, 100.64.0.0/10 from .1.
func peerAddr(i int) netip.AddrPort {
	v := uint32(100<<24|64<<16) + uint32(i) + 1
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrPortFrom(netip.AddrFrom4(a), 8285)
}

// peerCIDR is peer i's pod CIDR, 10.<i/256>.<i%256>.0/24.
func peerCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
}

var (
	fwdSelf    = netip.MustParseAddrPort("100.127.255.254:8285")
	fwdPodCIDR = netip.MustParsePrefix("10.255.255.0/24")
	fwdSrc     = netip.MustParseAddr("10.255.255.2")
)

// udpPacket builds an IPv4/UDP packet with a payload of size bytes and a
// valid header checksum (UDP checksum 0: none, legal over IPv4).
func udpPacket(src, dst netip.Addr, size int) []byte {
	b := make([]byte, 28+size)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8] = 64
	b[9] = 17
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], 9)
	binary.BigEndian.PutUint16(b[24:], uint16(8+size))
	return b
}

// benchForward forwards packets through a router with peers peers. With
// profile set, the timed part runs under the CPU profiler, which writes
// there.
func benchForward(ctx context.Context, peers, packets int, profile string) (forwardResult, error) {
	res := forwardResult{Peers: peers, Packets: packets}
	netw := overlaytest.NewNetwork()
	conn, err := netw.Listen(fwdSelf)
	if err != nil {
		return res, err
	}
	dev, kern := tuntest.NewPair(tuntest.Options{QueueLen: 4096})
	r, err := router.New(router.Options{TUN: dev, Overlay: conn})
	if err != nil {
		return res, err
	}
	cfg := router.Config{
		PodCIDRs:  []netip.Prefix{fwdPodCIDR},
		Addresses: []netip.Addr{netip.MustParseAddr("169.254.244.1")},
	}
	for i := range peers {
		cfg.Peers = append(cfg.Peers, router.Peer{Name: fmt.Sprintf("node-%d", i), Endpoint: peerAddr(i), PodCIDRs: []netip.Prefix{peerCIDR(i)}})
	}
	if err := r.Set(cfg); err != nil {
		r.Close()
		return res, fmt.Errorf("router.Set(%d peers): %w", peers, err)
	}
	res.Routes = len(r.Routes())

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })

	// Receivers at up to 8 peers spread over the list; packets go to them
	// in turn. Closing their Conns (before waiting) ends their goroutines.
	var (
		received atomic.Int64
		dsts     [][]byte
		rconns   []*overlaytest.Conn
	)
	defer func() {
		cancel()
		for _, rc := range rconns {
			rc.Close()
		}
		wg.Wait()
	}()
	nrecv := min(peers, 8)
	for k := range nrecv {
		i := k * peers / nrecv
		rc, err := netw.Listen(peerAddr(i))
		if err != nil {
			return res, err
		}
		rconns = append(rconns, rc)
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := rc.ReadFrom(buf); err != nil {
					return
				}
				received.Add(1)
			}
		})
		dst := peerCIDR(i).Addr().Next().Next()
		dsts = append(dsts, udpPacket(fwdSrc, dst, 64))
	}

	// send queues n packets and returns when the last has arrived, or
	// when nothing has arrived for 200ms (some were dropped): the time
	// the last one arrived.
	send := func(n int) (time.Time, error) {
		want := received.Load() + int64(n)
		for i := range n {
			select {
			case kern.ToRouter() <- dsts[i%len(dsts)]:
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			}
		}
		last, lastChange := received.Load(), time.Now()
		for last < want {
			time.Sleep(50 * time.Microsecond)
			if now := received.Load(); now != last {
				last, lastChange = now, time.Now()
			} else if time.Since(lastChange) > 200*time.Millisecond {
				break
			}
		}
		return lastChange, nil
	}
	if _, err := send(min(packets/10, 10000)); err != nil { // warm up
		return res, err
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, err := procCPU(selfPID)
	if err != nil {
		return res, err
	}
	got0 := received.Load()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		res.Profile = profile
	}
	t0 := time.Now()
	end, err := send(packets)
	if profile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return res, err
	}
	elapsed := end.Sub(t0)
	cpu1, err := procCPU(selfPID)
	if err != nil {
		return res, err
	}
	runtime.ReadMemStats(&ms1)
	res.Received = int(received.Load() - got0)
	if res.Received == 0 {
		return res, fmt.Errorf("forwarding through a router with %d peers: nothing arrived (stats %+v)", peers, r.Stats())
	}
	n := float64(res.Received)
	res.NsPerPacket = float64(elapsed.Nanoseconds()) / n
	res.CPUNsPerPacket = (cpu1 - cpu0) * 1e9 / n
	res.AllocsPerPacket = float64(ms1.Mallocs-ms0.Mallocs) / float64(packets)
	res.BytesAllocPerPkt = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(packets)
	if profile != "" {
		samples, err := profileSamples(ctx, profile)
		if err != nil && !errors.Is(err, errNoSamples) {
			return res, err
		}
		// Too short a run for a sample (the fast path takes microseconds
		// for a smoke run's packets): the lookup share stays 0.
		var secs float64
		for _, s := range samples {
			if anyFrame(s.frames, "(*Stack).FindRoute") {
				secs += s.secs
			}
		}
		res.RouteLookupNsPerPacket = secs * 1e9 / n
	}
	return res, nil
}
