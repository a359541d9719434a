package integration

// UDP datagrams that fragment, through a ClusterIP in nat mode, both ways:
// a request larger than the client's link MTU (1,473 bytes or more of
// payload on a 1,500-byte veth) and a small query answered with 3,000
// bytes (a large DNS answer), to a backend on the client's node (hairpin)
// and to one on the other node.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master  vr0 10.244.0.0/32, router 169.254.244.1
//	 │    coredns-xx6mc 10.244.0.2 (client; eth0 MTU 1500)
//	 │    nginx-th5pz   10.244.0.4 (backend of frag-local)
//	 └─ hostgw-node    vr0 10.244.1.0/32
//	      nginx-4k7xw   10.244.1.2 (backend of frag-remote)
//
//	default/frag-local   10.103.92.88:5353/UDP -> 10.244.0.4 (hairpin: source 169.254.244.1)
//	default/frag-remote  10.103.92.89:5353/UDP -> 10.244.1.2 (over the overlay)
//
// Each fragment crosses the router on its own: the NAT translates the
// first by its flow and the later ones by the datagram they belong to, and
// the receiver reassembles.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestLBFragmentedUDP(t *testing.T) {
	const port = 5353
	localVIP, remoteVIP := netip.MustParseAddr("10.103.92.88"), netip.MustParseAddr("10.103.92.89")
	svc := func(name string, vip netip.Addr, p lbPod) configs.ServiceSpec {
		return myService(func(s *configs.ServiceSpec) {
			s.Name, s.ClusterIPs, s.Endpoints = name, []string{vip.String()}, lbEndpoints(p)
			s.Ports = []configs.ServicePortSpec{{Name: "dns", Port: port, Protocol: "UDP"}}
		})
	}
	e := startLB(t, "frag", []configs.ServiceSpec{
		svc("frag-local", localVIP, lbNginxTh5pz),
		svc("frag-remote", remoteVIP, lbNginx4k7xw),
	})
	const answerLen = 3000
	for _, p := range []lbPod{lbNginxTh5pz, lbNginx4k7xw} {
		serveBigUDP(t, e, p, port, answerLen)
	}
	client := lbCorednsXx6mc
	for _, tc := range []struct {
		name    string
		vip     netip.Addr
		backend lbPod
		seen    netip.Addr
	}{
		{"local backend (hairpin)", localVIP, lbNginxTh5pz, netip.MustParseAddr("169.254.244.1")},
		{"remote backend", remoteVIP, lbNginx4k7xw, client.addr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Sent to the pod directly, then through the VIP: both must
			// be answered in full.
			if err := fragmentedUDP(t, e, client, netip.AddrPortFrom(tc.backend.addr, port), tc.backend, netip.Addr{}, answerLen); err != nil {
				t.Fatal(err)
			}
			if err := fragmentedUDP(t, e, client, netip.AddrPortFrom(tc.vip, port), tc.backend, tc.seen, answerLen); err != nil {
				t.Error(err)
			}
		})
	}
}

// fragmentedUDP sends two queries that fragment from client to `to` (a
// serveBigUDP server, or a VIP in front of one): a request one byte over
// the client's MTU, and a small query answered with answerLen bytes. It
// returns an error unless backend answers each in full, having seen the
// client as seen (if valid).
func fragmentedUDP(t *testing.T, e *lbEnv, client lbPod, to netip.AddrPort, backend lbPod, seen netip.Addr, answerLen int) error {
	t.Helper()
	mtu := linkMTU(t, e, client.name, topology.PodLink)
	// The largest payload that fits one packet is mtu-28; one more byte
	// fragments.
	big := strings.Repeat("r", mtu-28+1)
	var errs []error
	for _, q := range []struct {
		what, payload string
	}{
		{fmt.Sprintf("a %d-byte request (MTU %d)", len(big), mtu), big},
		{fmt.Sprintf("a small query with a %d-byte answer", answerLen), "q"},
	} {
		server, saw, answer, err := bigQuery(t, e, client.name, to, q.payload)
		if err != nil {
			return fmt.Errorf("%s from %s to %v: %w", q.what, client.name, to, err)
		}
		want := q.payload + strings.Repeat("a", max(0, answerLen-len(q.payload)))
		if server != backend.name || !bytes.Equal(answer, []byte(want)) {
			errs = append(errs, fmt.Errorf("%s from %s to %v: answered by %s with %d bytes (intact: %v); want %s, %d bytes",
				q.what, client.name, to, server, len(answer), bytes.Equal(answer, []byte(want)), backend.name, len(want)))
		}
		if seen.IsValid() && saw.Addr() != seen {
			errs = append(errs, fmt.Errorf("%s to %v: the backend saw the client as %v, want %v", q.what, to, saw, seen))
		}
	}
	return errors.Join(errs...)
}

// serveBigUDP answers each datagram to p's port with "<identity>
// <client>\n", the datagram and then "a" up to answerLen bytes after the
// line, until the test ends.
func serveBigUDP(t *testing.T, e *lbEnv, p lbPod, port uint16, answerLen int) {
	t.Helper()
	conn := e.udpListen(p.name, netip.AddrPortFrom(p.addr, port))
	var wg sync.WaitGroup
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if strings.Contains(err.Error(), "closed") {
					return
				}
				continue
			}
			reply := fmt.Appendf(nil, "%s %s\n", p.name, from)
			reply = append(reply, buf[:n]...)
			reply = append(reply, bytes.Repeat([]byte("a"), max(0, answerLen-n))...)
			conn.WriteToUDPAddrPort(reply, from)
		}
	})
}

// bigQuery sends payload from namespace ns to to in one datagram and
// returns who answered, the client address it saw and the rest of its
// answer. It tries three times: a datagram may be lost on a loaded
// machine, but a fragmented one that the router cannot translate is lost
// every time.
func bigQuery(t *testing.T, e *lbEnv, ns string, to netip.AddrPort, payload string) (server string, seen netip.AddrPort, answer []byte, err error) {
	t.Helper()
	conn := e.udpSocket(ns, netip.AddrPort{}, to)
	defer conn.Close()
	buf := make([]byte, 64<<10)
	for range 3 {
		if _, err = conn.Write([]byte(payload)); err != nil {
			return "", seen, nil, err
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var n int
		n, err = conn.Read(buf)
		if err != nil {
			continue
		}
		line, rest, ok := bytes.Cut(buf[:n], []byte("\n"))
		id, addr, ok2 := strings.Cut(string(line), " ")
		if !ok || !ok2 {
			return "", seen, nil, fmt.Errorf("answer %.80q: want \"<identity> <client>\\n...\"", buf[:n])
		}
		if seen, err = netip.ParseAddrPort(addr); err != nil {
			return "", seen, nil, fmt.Errorf("answer's client %q: %w", addr, err)
		}
		return id, seen, rest, nil
	}
	return "", seen, nil, fmt.Errorf("no answer in 3 tries of 2s: %w", err)
}

// linkMTU returns the MTU of link name in namespace ns.
func linkMTU(t *testing.T, e *lbEnv, ns, name string) int {
	t.Helper()
	var mtu int
	err := e.c.Do(ns, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		mtu = ifc.MTU
		return nil
	})
	if err != nil {
		t.Fatalf("%s: MTU of %s: %v", ns, name, err)
	}
	return mtu
}
