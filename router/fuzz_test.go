package router

import (
	"net/netip"
	"testing"

	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun"
)

// FuzzReceive feeds arbitrary bytes to both link endpoints' receive paths:
// whatever arrives, the router counts or forwards it and never panics.
func FuzzReceive(f *testing.F) {
	f.Add(udp4(addr("10.244.1.2"), addr("10.244.0.4"), 64, true, []byte("x")))
	f.Add(udp6(addr("fd00::1"), addr("fd00::2"), 1, nil))
	f.Add([]byte{0x45, 0, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		nw := overlaytest.NewNetwork()
		conn, err := nw.Listen(netip.MustParseAddrPort("192.168.31.201:8285"))
		if err != nil {
			t.Fatal(err)
		}
		tn := newMemTUN("vr0")
		r, err := New(Options{TUN: tn, Overlay: conn})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cfg := Config{
			PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
			Addresses: []netip.Addr{routerAddr4},
			Peers:     []Peer{{Name: "b", Endpoint: netip.MustParseAddrPort("192.168.31.202:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
		}
		if err := r.Set(cfg); err != nil {
			t.Fatal(err)
		}
		r.overlay.receive([][]byte{append([]byte(nil), b...)}, []int{len(b)}, []int{len(b)}, []netip.AddrPort{netip.MustParseAddrPort("192.168.31.202:8285")})
		r.tun.receive(append([]byte(nil), b...), tun.Offload{})
	})
}
