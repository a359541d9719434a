package admin

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
)

// TestPingPeer: vrouter ping hostgw-node in the seed cluster: three
// probes to the peer's overlay identity, all answered, and the tunnel MTU
// passes.
func TestPingPeer(t *testing.T) {
	s := serve(t)
	q := PingRequest{Target: "hostgw-node", Interval: time.Millisecond, MTU: true}
	rep, err := s.client.Ping(ctx(t), q)
	if err != nil {
		t.Fatalf("Ping(hostgw-node): %v", err)
	}
	if rep.Peer != "hostgw-node" || rep.Endpoint != seedtest.NodeUnderlay || rep.Dst != netip.MustParseAddr("10.244.1.0") ||
		rep.Src != netip.MustParseAddr("10.244.0.0") || len(rep.Probes) != 3 {
		t.Fatalf("Ping(hostgw-node) = %+v, want 3 probes from 10.244.0.0 to 10.244.1.0 through hostgw-node at %v", rep, seedtest.NodeUnderlay)
	}
	for _, p := range rep.Probes {
		if p.Error != "" || p.RTT <= 0 || p.Size != 84 {
			t.Errorf("probe %+v, want an 84-byte probe answered", p)
		}
	}
	if rep.MTU == nil || *rep.MTU != (PingMTU{Largest: 1472, TunnelMTU: 1472, Probes: 1}) {
		t.Errorf("MTU = %+v, want the tunnel MTU 1472 passing at the first probe", rep.MTU)
	}
	var out bytes.Buffer
	WritePing(&out, rep)
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 7 || lines[0] != "PING hostgw-node (10.244.1.0) from 10.244.0.0 through the overlay to hostgw-node at 192.168.31.202:8285" ||
		!strings.HasPrefix(lines[1], "84 bytes from 10.244.1.0: seq=1 time=") ||
		!strings.HasPrefix(lines[4], "--- hostgw-node: 3 probes, 3 answered, 0% loss; rtt min/avg/max ") ||
		lines[5] != "path MTU: 1472-byte packets pass, the tunnel MTU" {
		t.Errorf("vrouter ping printed\n%s", out.String())
	}
	roundTrip(t, "ping", rep)
}

// TestPingPathMTU: hostgw-node's tunnel MTU is 1400: the search finds
// it, and says it is less than this router's.
func TestPingPathMTU(t *testing.T) {
	s := serveOn(t, seedtest.StartWith(t, seedtest.Options{NodeMTU: 1400}))
	rep, err := s.client.Ping(ctx(t), PingRequest{Target: "10.244.1.0", Count: 1, Timeout: 100 * time.Millisecond, MTU: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.MTU == nil || rep.MTU.Largest != 1400 || rep.MTU.TunnelMTU != 1472 {
		t.Fatalf("MTU = %+v, want 1400 of 1472", rep.MTU)
	}
	var out bytes.Buffer
	WritePing(&out, rep)
	want := "path MTU: 1400-byte packets pass, less than the tunnel MTU 1472: larger ones are lost on the way (" + itoa(rep.MTU.Probes) + " probes)\n"
	if !strings.HasSuffix(out.String(), want) {
		t.Errorf("vrouter ping --mtu printed\n%s\nwant it to end with\n%s", out.String(), want)
	}
}

// TestPingPod: probes to a pod cross hostgw-node's router to the pod
// (played by the test) and back; an unanswered probe is reported, not
// failed.
func TestPingPod(t *testing.T) {
	s := serve(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The pod answers the first probe only.
		req := s.c.Node.Recv()
		ip := header.IPv4(req)
		reply := append([]byte(nil), req...)
		rip := header.IPv4(reply)
		rip.SetSourceAddress(ip.DestinationAddress())
		rip.SetDestinationAddress(ip.SourceAddress())
		rip.SetChecksum(0)
		rip.SetChecksum(^rip.CalculateChecksum())
		icmp := header.ICMPv4(rip.Payload())
		icmp.SetType(header.ICMPv4EchoReply)
		icmp.SetChecksum(0)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		s.c.Node.Send(reply)
		s.c.Node.Recv() // the second probe, unanswered
	}()
	rep, err := s.client.Ping(ctx(t), PingRequest{Target: "10.244.1.2", Count: 2, Timeout: 300 * time.Millisecond, Interval: time.Millisecond})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Probes) != 2 || rep.Probes[0].Error != "" || rep.Probes[1].Error != "no reply within 300ms" {
		t.Fatalf("Ping(10.244.1.2) probes = %+v, want the first answered and the second not", rep.Probes)
	}
	var out bytes.Buffer
	WritePing(&out, rep)
	for _, line := range []string{
		"PING 10.244.1.2 (10.244.1.2) from 10.244.0.0 through the overlay to hostgw-node at 192.168.31.202:8285\n",
		"seq=2 size=84: no reply within 300ms\n",
		"--- 10.244.1.2: 2 probes, 1 answered, 50% loss; rtt min/avg/max ",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("vrouter ping printed\n%s\nwant a line %q", out.String(), line)
		}
	}
}

func TestPingRefused(t *testing.T) {
	s := serve(t)
	for _, tc := range []struct {
		q    PingRequest
		want string
	}{
		{PingRequest{Target: "worker-9"}, `"worker-9" is neither an IP address nor a peer's name (peers: [hostgw-node])`},
		{PingRequest{Target: "10.244.0.4"}, "no peer's pod CIDR holds it"},
		{PingRequest{Target: "hostgw-node", Size: 9000}, "size 9000 out of range"},
		{PingRequest{Target: "hostgw-node", Count: 1000}, `count "1000": want a number from 1 to 100`},
	} {
		if _, err := s.client.Ping(ctx(t), tc.q); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Ping(%+v) = %v, want an error saying %q", tc.q, err, tc.want)
		}
	}
}

// TestWritePing: the text of a report, to the byte.
func TestWritePing(t *testing.T) {
	rep := PingReport{
		Target: "hostgw-node", Peer: "hostgw-node", Endpoint: seedtest.NodeUnderlay,
		Src: netip.MustParseAddr("10.244.0.0"), Dst: netip.MustParseAddr("10.244.1.0"),
		Probes: []PingProbe{
			{Seq: 1, Size: 84, RTT: 412 * time.Microsecond},
			{Seq: 2, Size: 84, RTT: 310 * time.Microsecond},
			{Seq: 3, Size: 84, Error: "no reply within 1s"},
		},
		MTU: &PingMTU{Largest: 1472, TunnelMTU: 1472, Probes: 1},
	}
	var out bytes.Buffer
	WritePing(&out, rep)
	want := `PING hostgw-node (10.244.1.0) from 10.244.0.0 through the overlay to hostgw-node at 192.168.31.202:8285
84 bytes from 10.244.1.0: seq=1 time=0.412ms
84 bytes from 10.244.1.0: seq=2 time=0.310ms
seq=3 size=84: no reply within 1s
--- hostgw-node: 3 probes, 2 answered, 33% loss; rtt min/avg/max 0.310ms/0.361ms/0.412ms
path MTU: 1472-byte packets pass, the tunnel MTU
`
	if out.String() != want {
		t.Errorf("vrouter ping printed\n%s\nwant\n%s", out.String(), want)
	}
}
