package admin

import (
	"bytes"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
)

// startWireGuard is seedtest.StartWireGuard: hostgw-master's router over
// WireGuard with a keyed peer (hostgw-node) and one without a key.
func startWireGuard(t *testing.T) *seedtest.WireGuard { return seedtest.StartWireGuard(t) }

// squeeze is a table with its column padding squeezed to one space.
func squeeze(s string) []string {
	return strings.Split(regexp.MustCompile(` +`).ReplaceAllString(s, " "), "\n")
}

// TestPeersWireGuard: over an encrypted overlay, vrouter peers shows each
// peer's key, its latest handshake and session: up for the peer whose
// device handshook, "no key" for the one without a key.
func TestPeersWireGuard(t *testing.T) {
	w := startWireGuard(t)
	w.WaitSession(t)
	s := serveOn(t, nil, func(o *Options) { o.Router, o.WireGuard = w.Router, w.Master })
	peers, err := s.client.Peers(ctx(t))
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	if len(peers) != 2 {
		t.Fatalf("Peers = %+v, want hostgw-node and hostgw-spare", peers)
	}
	node, spare := peers[0], peers[1]
	nodeKey := w.Node.PublicKey()
	if node.Name != "hostgw-node" || node.PublicKey != nodeKey || node.WireGuard == nil ||
		node.WireGuard.Session != SessionUp || node.WireGuard.Handshakes < 1 ||
		time.Since(node.WireGuard.LatestHandshake) > time.Minute || node.WireGuard.Endpoint.IsValid() {
		t.Errorf("Peers[0] = %+v (wireguard %+v), want hostgw-node with key %s, session up after a handshake just now, at its configured endpoint",
			node, node.WireGuard, nodeKey)
	}
	if spare.Name != "hostgw-spare" || !spare.PublicKey.IsZero() || spare.WireGuard == nil ||
		spare.WireGuard.Session != SessionNoKey || !spare.WireGuard.LatestHandshake.IsZero() {
		t.Errorf("Peers[1] = %+v (wireguard %+v), want hostgw-spare with no key and session \"no key\"", spare, spare.WireGuard)
	}

	var out bytes.Buffer
	if err := WritePeers(&out, peers, node.WireGuard.LatestHandshake.Add(12*time.Second)); err != nil {
		t.Fatal(err)
	}
	lines := squeeze(out.String())
	for _, line := range []string{
		"NAME ENDPOINT POD CIDRS LAST SEEN HANDSHAKE SESSION RX PACKETS RX BYTES TX PACKETS TX BYTES",
		"hostgw-node " + w.NodeAt.String() + " 10.244.1.0/24 never 12s ago up 0 0 0 0",
		"hostgw-spare 127.0.0.9:8285 10.244.2.0/24 never never no key 0 0 0 0",
	} {
		if !slices.Contains(lines, line) {
			t.Errorf("vrouter peers: no line %q in\n%s", line, out.String())
		}
	}

	out.Reset()
	WriteJSON(&out, peers)
	for _, want := range []string{`"publicKey": "` + nodeKey.String() + `"`, `"session": "up"`, `"session": "no key"`, `"latestHandshake": "`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("vrouter peers -o json: no %s in\n%s", want, out.String())
		}
	}
	roundTrip(t, "peers", peers)
}

// TestStatusWireGuard: vrouter status says the overlay is WireGuard, with
// this router's public key, the sessions up and the peers left out for
// want of a key.
func TestStatusWireGuard(t *testing.T) {
	w := startWireGuard(t)
	w.WaitSession(t)
	s := serveOn(t, nil, func(o *Options) { o.Router, o.WireGuard = w.Router, w.Master })
	st, err := s.client.Status(ctx(t))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var out bytes.Buffer
	WriteStatus(&out, st, time.Now())
	want := "Overlay:      wireguard, public key " + w.Master.PublicKey().String() + ", sessions up 1/1, peers without key 1\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("vrouter status printed\n%s\nwant the line\n%s", out.String(), want)
	}
	roundTrip(t, "status", st)
}

// TestWritePeersSessions: a peer that roamed shows where it is now; one
// whose session lapsed is down; a peer without session facts in a table
// that has them (a router that predates them) shows dashes.
func TestWritePeersSessions(t *testing.T) {
	at := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	peer := func(name, endpoint string, wg *PeerSession) Peer {
		return Peer{Name: name, Endpoint: netip.MustParseAddrPort(endpoint), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, WireGuard: wg}
	}
	peers := []Peer{
		peer("roamed", "192.168.31.202:8285", &PeerSession{Session: SessionUp, LatestHandshake: at, Endpoint: netip.MustParseAddrPort("192.168.31.250:40000")}),
		peer("lapsed", "192.168.31.203:8285", &PeerSession{Session: SessionDown, LatestHandshake: at.Add(-time.Hour)}),
		peer("older", "192.168.31.204:8285", nil),
	}
	var out bytes.Buffer
	WritePeers(&out, peers, at.Add(3*time.Second))
	lines := squeeze(out.String())
	for _, line := range []string{
		"roamed 192.168.31.202:8285 (now 192.168.31.250:40000) 10.244.1.0/24 never 3s ago up 0 0 0 0",
		"lapsed 192.168.31.203:8285 10.244.1.0/24 never 1h0m3s ago down 0 0 0 0",
		"older 192.168.31.204:8285 10.244.1.0/24 never - - 0 0 0 0",
	} {
		if !slices.Contains(lines, line) {
			t.Errorf("vrouter peers: no line %q in\n%s", line, out.String())
		}
	}
}
