package metrics

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// startWireGuard is seedtest.StartWireGuard: it returns the router, its
// overlay and the overlay's address.
func startWireGuard(t *testing.T) (*router.Router, *wireguard.Conn, netip.AddrPort) {
	w := seedtest.StartWireGuard(t)
	return w.Router, w.Master, w.MasterAt
}

// TestCollectorWireGuard: a scrape of a router over an encrypted overlay
// shows the handshake that brought its session with hostgw-node up, that
// session up, a plain datagram refused, and hostgw-spare counted as a
// peer without a key (and not as a WireGuard peer).
func TestCollectorWireGuard(t *testing.T) {
	r, wg, at := startWireGuard(t)
	col := NewCollector(Sources{Router: r, WireGuard: wg})

	// A plain overlay's datagram: refused as not WireGuard.
	u, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(at))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 1, 2, 10, 244, 0, 4}); err != nil {
		t.Fatal(err)
	}

	// The side with the lower key starts the handshake at once, or, were
	// its first initiation lost, 5 s later.
	var s []sample
	deadline := time.Now().Add(15 * time.Second)
	for {
		s = gather(t, col)
		if value(t, s, "vrouter_wireguard_peer_session_up", labels{"peer": "hostgw-node"}) == 1 &&
			value(t, s, "vrouter_wireguard_refused_total", labels{"reason": "not_wireguard"}) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session with hostgw-node and no refused datagram within 15 s: %v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}

	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"vrouter_wireguard_peer_handshakes_total", labels{"peer": "hostgw-node"}, 1},
		{"vrouter_wireguard_peer_rekeys_total", labels{"peer": "hostgw-node"}, 0},
		{"vrouter_wireguard_refused_total", labels{"reason": "bad_mac"}, 0},
		{"vrouter_wireguard_refused_total", labels{"reason": "unknown_key"}, 0},
		{"vrouter_wireguard_refused_total", labels{"reason": "disallowed_source"}, 0},
		{"vrouter_overlay_peers_without_key", nil, 1},
		{"vrouter_peers", nil, 2},
	} {
		if got := value(t, s, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Every reason, with or without refusals.
	for _, r := range wireguard.Refusals() {
		value(t, s, "vrouter_wireguard_refused_total", labels{"reason": r.String()})
	}
	// One handshake: an initiation one way, its response the other.
	var initiations, responses float64
	for _, dir := range []string{"sent", "received"} {
		initiations += value(t, s, "vrouter_wireguard_handshake_messages_total", labels{"message": "initiation", "direction": dir})
		responses += value(t, s, "vrouter_wireguard_handshake_messages_total", labels{"message": "response", "direction": dir})
	}
	if initiations < 1 || responses != 1 {
		t.Errorf("vrouter_wireguard_handshake_messages_total: %v initiations, %v responses; want at least 1 and 1", initiations, responses)
	}
	last := value(t, s, "vrouter_wireguard_peer_last_handshake_timestamp_seconds", labels{"peer": "hostgw-node"})
	if d := time.Since(time.Unix(0, int64(last*1e9))); d < 0 || d > time.Minute {
		t.Errorf("vrouter_wireguard_peer_last_handshake_timestamp_seconds{peer=hostgw-node} = %v, want about now", last)
	}
	// A peer without a key is no WireGuard peer.
	for _, x := range s {
		if strings.HasPrefix(x.name, "vrouter_wireguard_peer_") && x.labels["peer"] != "hostgw-node" {
			t.Errorf("%s exported for a peer without a key", formatSample(x))
		}
	}

	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestCollectorWireGuardNeverHandshaken: a keyed peer that has not
// completed a handshake has a last-handshake time of 0 and its session
// down, not no sample, so that alerts on them fire for it.
func TestCollectorWireGuardNeverHandshaken(t *testing.T) {
	k, err := wireguard.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	wg, err := wireguard.Listen(wireguard.Options{PrivateKey: k, MTU: 1420, Keepalive: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	other, err := wireguard.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody listens there.
	if err := wg.SetPeers([]wireguard.Peer{{Name: "hostgw-node", PublicKey: other.Public(), Endpoint: netip.MustParseAddrPort("127.0.0.1:9")}}); err != nil {
		t.Fatal(err)
	}
	// The collector reads the overlay it is given, whatever the router.
	s := gather(t, NewCollector(Sources{Router: seedtest.Start(t).Master.Router, WireGuard: wg}))
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"vrouter_wireguard_peer_last_handshake_timestamp_seconds", 0},
		{"vrouter_wireguard_peer_session_up", 0},
		{"vrouter_wireguard_peer_handshakes_total", 0},
	} {
		if got := value(t, s, tc.name, labels{"peer": "hostgw-node"}); got != tc.want {
			t.Errorf("%s{peer=hostgw-node} before any handshake = %v, want %v", tc.name, got, tc.want)
		}
	}
}
