package main

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// TestAttachOverlay: attach hands an encrypted overlay to the admin API
// and the metrics, so that vrouter status names it with its public key
// and a scrape has its series; a plain overlay gets neither.
func TestAttachOverlay(t *testing.T) {
	for _, encrypted := range []bool{true, false} {
		name := "plain"
		if encrypted {
			name = "wireguard"
		}
		t.Run(name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "vr0.sock")
			o, _, _ := testOps(t, "--health-address", "", "--metrics-address", "127.0.0.1:0", "--admin-socket", socket)
			var overlay router.Conn
			var public wireguard.Key
			if encrypted {
				k, err := wireguard.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				wg, err := wireguard.Listen(wireguard.Options{PrivateKey: k, MTU: 1420})
				if err != nil {
					t.Fatal(err)
				}
				overlay, public = wg, k.Public()
			} else {
				udp, err := router.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"))
				if err != nil {
					t.Fatal(err)
				}
				overlay = udp
			}
			dev, _ := tuntest.NewPair(tuntest.Options{})
			r, err := router.New(router.Options{TUN: dev, Overlay: overlay, MTU: 1420})
			if err != nil {
				overlay.Close()
				t.Fatal(err)
			}
			defer r.Close()
			// A peer without a key: not routed to over WireGuard.
			if err := r.Set(router.Config{
				PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")},
				Peers:    []router.Peer{{Name: "hostgw-node", Endpoint: netip.MustParseAddrPort("127.0.0.2:8285"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
			}); err != nil {
				t.Fatal(err)
			}
			if err := o.attach(r, nil, nil, nil, nil, nil, overlay); err != nil {
				t.Fatalf("attach: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { o.run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			st, err := admin.NewClient(socket).Status(sctx)
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			switch ov := st.Overlay; {
			case ov == nil:
				t.Errorf("Status().Overlay absent")
			case encrypted && (ov.Encryption != "wireguard" || ov.WireGuard == nil || ov.WireGuard.PublicKey != public || ov.WireGuard.PeersWithoutKey != 1):
				t.Errorf("Status().Overlay = %+v (%+v), want wireguard with public key %s and 1 peer without a key", ov, ov.WireGuard, public)
			case !encrypted && (ov.Encryption != "none" || ov.WireGuard != nil):
				t.Errorf("Status().Overlay = %+v (%+v), want none", ov, ov.WireGuard)
			}

			resp, err := http.Get("http://" + o.addrs["metrics"].String() + "/metrics")
			if err != nil {
				t.Fatalf("GET /metrics: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			withoutKey := "vrouter_overlay_peers_without_key 0"
			if encrypted {
				withoutKey = "vrouter_overlay_peers_without_key 1"
			}
			if !strings.Contains(string(b), withoutKey+"\n") {
				t.Errorf("GET /metrics: no line %q", withoutKey)
			}
			refused := `vrouter_wireguard_refused_total{reason="bad_mac"} 0`
			if got := strings.Contains(string(b), refused+"\n"); got != encrypted {
				t.Errorf("GET /metrics has %q: %v, want %v", refused, got, encrypted)
			}
		})
	}
}
