package router

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/router/packet"
)

func pingCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestPingPeer: a probe to a peer's identity is answered by the peer
// router itself, which hands nothing to its node kernel.
func TestPingPeer(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	if got := b.r.Identity(true); got != addr("10.244.1.0") {
		t.Fatalf("hostgw-node Identity(v4) = %v, want 10.244.1.0", got)
	}
	res, err := a.r.Ping(pingCtx(t, 5*time.Second), addr("10.244.1.0"), PingMinSize4)
	if err != nil {
		t.Fatalf("Ping(10.244.1.0): %v", err)
	}
	if res.Peer != "hostgw-node" || res.Src != addr("10.244.0.0") || res.RTT <= 0 || res.Size != PingMinSize4 {
		t.Errorf("Ping(10.244.1.0) = %+v, want hostgw-node answering 10.244.0.0 with an RTT", res)
	}
	res, err = a.r.Ping(pingCtx(t, 5*time.Second), addr("10.244.1.0"), DefaultMTU)
	if err != nil || res.Size != DefaultMTU {
		t.Errorf("Ping(10.244.1.0, %d bytes) = %+v, %v; want a reply", DefaultMTU, res, err)
	}
	b.tun.expectNone(t, 50*time.Millisecond)
	a.tun.expectNone(t, 50*time.Millisecond)
	if got := a.r.Stats().Peers["hostgw-node"]; got.TxPackets != 2 || got.RxPackets != 2 {
		t.Errorf("hostgw-node's counters = %+v, want the 2 probes out and their 2 replies in", got)
	}
}

// TestPingPod: a probe to a pod goes through the peer router to the pod,
// whose reply comes back to the probe and not to the node kernel; a reply
// no probe awaits is forwarded as before.
func TestPingPod(t *testing.T) {
	_, a, b := seedPair(t, Options{})
	type result struct {
		res PingResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := a.r.Ping(pingCtx(t, 5*time.Second), addr("10.244.1.2"), 100)
		done <- result{res, err}
	}()
	req := b.tun.recv(t)
	var pp packet.Parsed
	if pp.Decode(req) != packet.FaultNone || pp.Src != addr("10.244.0.0") || pp.Dst != addr("10.244.1.2") || len(req) != 100 ||
		header.ICMPv4(req[pp.L4:]).Type() != header.ICMPv4Echo {
		t.Fatalf("hostgw-node's kernel got % x, want a 100-byte echo request from 10.244.0.0 to the pod", req)
	}
	// The pod answers; the reply crosses hostgw-node's router back.
	b.tun.send(echoReply(&pp, req))
	r := <-done
	if r.err != nil || r.res.Peer != "hostgw-node" || r.res.RTT <= 0 {
		t.Fatalf("Ping(10.244.1.2) = %+v, %v; want a reply through hostgw-node", r.res, r.err)
	}
	a.tun.expectNone(t, 50*time.Millisecond)

	// The same reply again: no probe awaits it, so it goes on to
	// hostgw-master's kernel (which owns 10.244.0.0 by default).
	b.tun.send(echoReply(&pp, req))
	if got := a.tun.recv(t); len(got) != 100 {
		t.Errorf("hostgw-master's kernel got % x, want the unawaited reply", got)
	}
}

// TestPingNoReply: a probe larger than the peer's tunnel MTU is dropped
// there and times out; one that fits passes. Probes outside a peer's pod
// CIDRs or the size range are refused.
func TestPingNoReply(t *testing.T) {
	nw := overlaytest.NewNetwork()
	a := startNode(t, nw, "hostgw-master", "192.168.31.201:8285", "10.244.0.0/24", Options{},
		Peer{Name: "hostgw-node", Endpoint: netip.MustParseAddrPort("192.168.31.202:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}})
	b := startNode(t, nw, "hostgw-node", "192.168.31.202:8285", "10.244.1.0/24", Options{MTU: 1400}, a.asPeer())
	if _, err := a.r.Ping(pingCtx(t, 200*time.Millisecond), addr("10.244.1.0"), 1401); !errors.Is(err, ErrPingTimeout) {
		t.Errorf("Ping(1401 bytes) to a peer with tunnel MTU 1400 = %v, want ErrPingTimeout", err)
	}
	if got := b.r.Stats().Drops[DropOversize]; got != 1 {
		t.Errorf("hostgw-node oversize drops = %d, want 1", got)
	}
	if _, err := a.r.Ping(pingCtx(t, 5*time.Second), addr("10.244.1.0"), 1400); err != nil {
		t.Errorf("Ping(1400 bytes) to a peer with tunnel MTU 1400 = %v, want a reply", err)
	}
	for _, tc := range []struct {
		dst  string
		size int
		want string
	}{
		{"10.244.0.4", 100, "no peer's pod CIDR holds it"},
		{"10.244.1.0", 20, "size 20 out of range (want 44..1472, the tunnel MTU)"},
		{"10.244.1.0", 1500, "size 1500 out of range"},
	} {
		if _, err := a.r.Ping(pingCtx(t, time.Second), addr(tc.dst), tc.size); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ping(%s, %d) = %v, want an error saying %q", tc.dst, tc.size, err, tc.want)
		}
	}
}

// TestPingIPv6OverIPv4: a dual-stack peer answers on its IPv6 identity
// over the IPv4 underlay.
func TestPingIPv6OverIPv4(t *testing.T) {
	a, b := dualPair(t, Options{})
	dst := b.r.Identity(false)
	if !dst.Is6() {
		t.Fatalf("hostgw-node Identity(v6) = %v, want its IPv6 pod CIDR's network address", dst)
	}
	res, err := a.r.Ping(pingCtx(t, 5*time.Second), dst, 200)
	if err != nil || res.Src != a.r.Identity(false) {
		t.Errorf("Ping(%v) = %+v, %v; want a reply to %v", dst, res, err, a.r.Identity(false))
	}
}
