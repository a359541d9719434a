package integration

// The encrypted overlay (overlay.encryption: wireguard) on the seed's
// cluster in namespaces: everything the plain overlay carries still
// crosses; what an attacker on the underlay sees and sends does not —
// shown against the plain overlay, which is readable and injectable:
//
//	TestWireGuardSeed          the seed checks, encrypted; a capture on the
//	                           underlay; a spoofed datagram; a key rotated
//	                           at runtime
//	TestPlainOverlayExposed    the same capture and datagram, plain
//	TestWireGuardMixedPair     one side encrypted, one plain: no traffic,
//	                           a log line on each side that says why

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/router/wireguard"
)

// secretMarker is the payload an eavesdropper on the underlay looks for.
const secretMarker = "vrouter-overlay-secret-7f3a"

// wireGuardKeys makes a private key for every node of spec.
func wireGuardKeys(t *testing.T, spec topology.Spec) map[string]wireguard.Key {
	t.Helper()
	keys := map[string]wireguard.Key{}
	for _, n := range spec.Nodes {
		k, err := wireguard.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[n.Name] = k
	}
	return keys
}

// waitAcross waits until a pod on each node reaches a pod on the other:
// the first packet each way waits for a handshake (and, when both routers
// start one at once, for WireGuard's retry 5 s later).
func (e *env) waitAcross() {
	e.t.Helper()
	took := eventually(e.t, 20*time.Second, "pods reach each other across the encrypted overlay", func() error {
		if err := e.reachable(nginxTh5pz.name, nginx4k7xw.addr); err != nil {
			return err
		}
		return e.reachable(nginx4k7xw.name, nginxTh5pz.addr)
	})
	e.t.Logf("sessions up after %v", took.Round(time.Millisecond))
}

func TestWireGuardSeed(t *testing.T) {
	spec := topology.Seed()
	keys := wireGuardKeys(t, spec)
	e := newEnv(t, "wg", spec, harness.ConfigOptions{WireGuard: keys})
	e.startAll()
	e.waitAcross()

	seedChecks(t, e)

	t.Run("peers and status show the sessions", func(t *testing.T) {
		out, err := e.command(masterNode, vrouterBin, "peers", "-o", "json")
		if err != nil {
			t.Fatalf("vrouter peers: %v\n%s", err, out)
		}
		var peers []struct {
			PublicKey string
			WireGuard *struct {
				LatestHandshake time.Time
				Session         string
			}
		}
		if err := json.Unmarshal([]byte(out), &peers); err != nil {
			t.Fatalf("vrouter peers -o json: %v\n%s", err, out)
		}
		if len(peers) != 1 || peers[0].WireGuard == nil || peers[0].WireGuard.Session != "up" ||
			peers[0].WireGuard.LatestHandshake.IsZero() || peers[0].PublicKey != keys[workerNode].Public().String() {
			t.Fatalf("vrouter peers on %s: %s\nwant %s with %s's key and a session up", masterNode, out, workerNode, workerNode)
		}
		out, err = e.command(workerNode, vrouterBin, "status")
		if err != nil {
			t.Fatalf("vrouter status: %v\n%s", err, out)
		}
		if want := "wireguard, public key " + keys[workerNode].Public().String() + ", sessions up 1/1"; !strings.Contains(out, want) {
			t.Fatalf("vrouter status on %s:\n%s\nwant it to say %q", workerNode, out, want)
		}
	})

	t.Run("underlay carries no inner payload", func(t *testing.T) {
		frames, payloads := e.captureOverlay(t, workerNode, func() {
			if err := e.sendMarker(nginxTh5pz, nginx4k7xw); err != nil {
				t.Error(err)
			}
		})
		if frames == 0 {
			t.Fatal("the capture saw no overlay datagram while the marker crossed")
		}
		for _, p := range payloads {
			if bytes.Contains(p, []byte(secretMarker)) {
				t.Fatalf("an overlay datagram on the underlay carries the marker in clear: %q", p)
			}
			if !wireguard.IsMessage(p) {
				t.Fatalf("an overlay datagram on the underlay is not a WireGuard message: % x", p[:min(len(p), 24)])
			}
		}
		t.Logf("%d overlay datagrams captured, none readable", frames)
	})

	t.Run("spoofed datagram from the underlay does not reach the pod", func(t *testing.T) {
		before := e.logCount(masterNode, "dropped a datagram that is not WireGuard")
		delivered := e.spoofFromPeer(t)
		if delivered {
			t.Fatal("a plain datagram with the peer's address and port reached the pod through the encrypted overlay")
		}
		eventually(t, 5*time.Second, "the refusal is logged", func() error {
			if e.logCount(masterNode, "dropped a datagram that is not WireGuard") <= before {
				return fmt.Errorf("no log line on %s", masterNode)
			}
			return nil
		})
	})

	t.Run("a key rotated at runtime re-handshakes without a restart", func(t *testing.T) {
		pids := map[string]int{masterNode: e.router(masterNode).PID(), workerNode: e.router(workerNode).PID()}
		next, err := wireguard.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		e.opts.WireGuard[workerNode] = next
		// The worker's key file, then the master's config with the
		// worker's new public key (its watcher applies it); the worker's
		// own config is unchanged, so SIGHUP makes it re-read its key.
		e.writeConfig(workerNode)
		e.writeConfig(masterNode)
		if err := e.router(workerNode).Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the worker takes its new key", func() error {
			if e.logCount(workerNode, next.Public().String()) == 0 {
				return fmt.Errorf("%s has not logged its new public key", workerNode)
			}
			return nil
		})
		e.waitAcross()
		for _, pr := range [][2]pod{{nginxTh5pz, nginx4k7xw}, {nginxJ6zwk, coredns8qxfv}} {
			if err := e.tcpEcho(pr[0], pr[1], 7); err != nil {
				t.Error(err)
			}
		}
		for n, pid := range pids {
			if r := e.router(n); r.PID() != pid || r.Exited() {
				t.Errorf("router on %s restarted (pid %d, was %d)", n, r.PID(), pid)
			}
		}
	})
}

func TestPlainOverlayExposed(t *testing.T) {
	e := newEnv(t, "plainexp", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	e.serve(nginx4k7xw)
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)

	t.Run("underlay carries the inner payload in clear", func(t *testing.T) {
		_, payloads := e.captureOverlay(t, workerNode, func() {
			if err := e.sendMarker(nginxTh5pz, nginx4k7xw); err != nil {
				t.Error(err)
			}
		})
		for _, p := range payloads {
			if bytes.Contains(p, []byte(secretMarker)) {
				return
			}
		}
		t.Fatalf("the capture of %d overlay datagrams never saw the marker: the capture itself is broken", len(payloads))
	})

	t.Run("spoofed datagram from the underlay reaches the pod", func(t *testing.T) {
		if !e.spoofFromPeer(t) {
			t.Fatal("a datagram with the peer's address and port did not reach the pod over the plain overlay")
		}
	})
}

func TestWireGuardMixedPair(t *testing.T) {
	spec := topology.Seed()
	e := newEnv(t, "wgmixed", spec, harness.ConfigOptions{WireGuard: wireGuardKeys(t, spec)})
	// The worker runs the plain overlay; the master, encrypted, knows its key.
	if _, err := harness.WriteConfig(e.configDir(workerNode), e.spec, workerNode, harness.ConfigOptions{}); err != nil {
		t.Fatal(err)
	}
	e.startAll()
	for range 3 {
		if err := e.reachable(nginxTh5pz.name, nginx4k7xw.addr); err == nil {
			t.Fatal("a pod reached across a pair of routers of which one encrypts and one does not")
		}
		if err := e.reachable(nginx4k7xw.name, nginxTh5pz.addr); err == nil {
			t.Fatal("a pod reached across a pair of routers of which one encrypts and one does not")
		}
	}
	for node, line := range map[string]string{
		masterNode: "dropped a datagram that is not WireGuard: its sender's overlay is plain",
		workerNode: "dropped a WireGuard datagram: its sender's overlay is encrypted",
	} {
		eventually(t, 10*time.Second, "the mismatch is logged on "+node, func() error {
			if e.logCount(node, line) == 0 {
				return fmt.Errorf("no %q in the log", line)
			}
			return nil
		})
	}
}

// sendMarker sends secretMarker over TCP from pod from to the echo server
// of pod to, and checks that it comes back.
func (e *env) sendMarker(from, to pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := []byte(strings.Repeat(secretMarker+" ", 40))
	rep, err := e.c.TCPExchange(ctx, from.name, netip.AddrPortFrom(to.addr, 7), msg)
	if err != nil {
		return fmt.Errorf("tcp %s -> %s: %w", from.name, to.name, err)
	}
	if !bytes.Equal(rep.Payload, msg) {
		return fmt.Errorf("tcp %s -> %s: echoed %d bytes, want the %d sent", from.name, to.name, len(rep.Payload), len(msg))
	}
	return nil
}

// spoofFromPeer sends, from the worker node's namespace, a datagram to the
// master's overlay port with the worker router's own address and port as
// its source, carrying a plain IPv4 packet from a worker pod address to a
// sink on nginx-th5pz, and reports whether the sink received it. A plain
// overlay cannot tell it from the peer's; an encrypted one drops it.
func (e *env) spoofFromPeer(t *testing.T) bool {
	t.Helper()
	sink := e.udpSink(nginxTh5pz, 9100)
	target := netip.AddrPortFrom(underlay(masterNode), harness.OverlayPort)
	from := e.peerSender(workerNode, target)
	inner := ipv4UDP(netip.MustParseAddrPort("10.244.1.99:5555"), sink.addr, 64, []byte("spoofed"))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if err := from.send(inner); err != nil {
			t.Fatalf("send spoofed datagram: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		for _, got := range sink.received() {
			if strings.HasPrefix(got, "spoofed from 10.244.1.99:5555") {
				return true
			}
		}
	}
	return false
}

// captureOverlay captures the IPv4 packets on node's underlay link (eth0)
// while during runs, and returns how many were overlay datagrams (UDP to
// or from the overlay port) and their UDP payloads.
func (e *env) captureOverlay(t *testing.T, node string, during func()) (int, [][]byte) {
	t.Helper()
	return captureUDP(t, e.c, node, harness.OverlayPort, during)
}

// captureUDP captures the IPv4 packets on the link eth0 of namespace node
// of c while during runs, and returns how many were UDP to or from port
// and their UDP payloads.
func captureUDP(t *testing.T, c *topology.Cluster, node string, port uint16, during func()) (int, [][]byte) {
	t.Helper()
	fd := -1
	err := c.Do(node, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		t.Fatalf("capture on %s eth0: %v", node, err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		payloads [][]byte
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 28 || buf[0]>>4 != 4 || buf[9] != unix.IPPROTO_UDP {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if n < ihl+8 {
				continue
			}
			sport, dport := binary.BigEndian.Uint16(buf[ihl:]), binary.BigEndian.Uint16(buf[ihl+2:])
			if sport != port && dport != port {
				continue
			}
			mu.Lock()
			payloads = append(payloads, bytes.Clone(buf[ihl+8:n]))
			mu.Unlock()
		}
	})
	during()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	unix.Close(fd)
	return len(payloads), payloads
}
