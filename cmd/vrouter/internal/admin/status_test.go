package admin

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/router"
)

// TestStatus: vrouter status of hostgw-master after pod-to-pod traffic,
// three connections to my-service and a datagram from a stranger, with a
// refused reload and one of two host sockets failing.
func TestStatus(t *testing.T) {
	started := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	reload := &Reload{Time: started.Add(time.Hour), Error: `peers[0].endpoint: "192.168.31.202" has no port`}
	s := serve(t, func(o *Options) {
		o.Process = func() Process {
			return Process{
				Version: "v0.2.0", Commit: "378a812", Mode: "file", Source: "/etc/vrouter/node.yaml",
				Started: started, LastReload: reload, Ready: true,
			}
		}
		o.HostSockets = func() []HostPort {
			return []HostPort{
				{Address: netip.MustParseAddrPort("192.168.31.201:30080"), Protocol: "TCP", State: "listening"},
				{Address: netip.MustParseAddrPort("127.0.0.1:30080"), Protocol: "TCP", State: "failed", Error: "address already in use"},
			}
		}
	})
	s.traffic(t)
	// A datagram from an address that is no peer's.
	s.c.Net.Send(netip.MustParseAddrPort("192.168.31.99:8285"), seedtest.MasterUnderlay,
		seedtest.ICMPEcho(nginx4k7xw, nginxTh5pz, 1, 1, false))
	waitFor(t, "the stranger's datagram counted", func() bool {
		return s.c.Master.Router.Stats().Drops[router.DropUnknownPeer] == 1
	})

	st, err := s.client.Status(ctx(t))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	lastSeen := st.Peers.OldestLastSeen
	if time.Since(lastSeen) > time.Minute {
		t.Fatalf("Status().Peers = %+v, want hostgw-node heard from just now", st.Peers)
	}
	var out bytes.Buffer
	if err := WriteStatus(&out, st, started.Add(time.Hour+10*time.Second)); err != nil {
		t.Fatal(err)
	}
	peerAgo := started.Add(time.Hour + 10*time.Second).Sub(lastSeen).Round(time.Second).String()
	want := `Version:      v0.2.0 (commit 378a812)
Mode:         file, from /etc/vrouter/node.yaml
Started:      1h0m10s ago
Last reload:  10s ago, refused: peers[0].endpoint: "192.168.31.202" has no port (the router keeps what it ran)
Ready:        yes
TUN:          vr0, tunnel MTU 1472, offload off
Overlay:      plain (unauthenticated and unencrypted; see docs/wireguard.md)
Peers:        1/1 heard from, least recently hostgw-node (` + peerAgo + ` ago)
Services:     2 (4 ports, 5 endpoints)
Host sockets: 1 listening, 1 failed
Drops:        unknown_peer 1
`
	if out.String() != want {
		t.Errorf("vrouter status printed\n%s\nwant\n%s", out.String(), want)
	}
	roundTrip(t, "status", st)
}

// TestStatusNotReadyNeverHeard: a router not ready yet, whose peer was
// never heard from, says so.
func TestStatusNotReadyNeverHeard(t *testing.T) {
	s := serve(t, func(o *Options) {
		o.Process = func() Process {
			return Process{Version: "(devel)", Mode: "kubernetes", Source: "https://10.0.0.1:6443", NotReady: "source unavailable"}
		}
	})
	st, err := s.client.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	WriteStatus(&out, st, time.Now())
	want := `Version:      (devel)
Mode:         kubernetes, from https://10.0.0.1:6443
Last reload:  none since the start
Ready:        no (source unavailable)
TUN:          vr0, tunnel MTU 1472, offload off
Overlay:      plain (unauthenticated and unencrypted; see docs/wireguard.md)
Peers:        0/1 heard from, least recently hostgw-node (never)
Services:     2 (4 ports, 5 endpoints)
Host sockets: 0 listening, 0 failed
Drops:        none
`
	if out.String() != want {
		t.Errorf("vrouter status printed\n%s\nwant\n%s", out.String(), want)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
