package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serveAddrs are the addresses `vrtest serve` listens on.
type serveAddrs struct{ http, tcp, udp string }

// startServe runs `vrtest serve` on loopback ports the kernel picks (the
// HTTP one through $PORT), with its unready file in a temp dir, and stops
// it at the end of the test.
func startServe(t *testing.T) (serveAddrs, string) {
	t.Helper()
	unready := filepath.Join(t.TempDir(), "unready")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		env := environ{stdout: &stderr, stderr: &stderr, getenv: func(k string) string {
			if k == "PORT" {
				return "0"
			}
			return ""
		}}
		done <- run(ctx, env, []string{"serve", "--http", "127.0.0.1:1", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--unready-file", unready})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("vrtest serve after cancel: exit %d, want 0; output:\n%s", code, stderr.String())
		}
	})
	re := regexp.MustCompile(`HTTP (\S+), TCP echo (\S+), UDP echo (\S+)\n`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			_, port, _ := strings.Cut(m[1], "]:") // $PORT=0 listens on all addresses: [::]:port
			return serveAddrs{http: "127.0.0.1:" + port, tcp: m[2], udp: m[3]}, unready
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("vrtest serve exited %d before listening:\n%s", code, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("vrtest serve does not say it listens after 10s:\n%s", stderr.String())
		}
	}
}

func TestServe(t *testing.T) {
	addrs, unready := startServe(t)
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	reply := regexp.QuoteMeta(hostname) + ` 127\.0\.0\.1:\d+` // the pod's name, the client as it sees it
	for _, tc := range []struct {
		args []string
		want string // a regexp of the whole output
	}{
		{[]string{"get", "http://" + addrs.http + "/"}, reply + "\n"},
		{[]string{"get", "http://" + addrs.http + "/any/path", "--timeout", "2s"}, reply + "\n"},
		{[]string{"get", "http://" + addrs.http + "/healthz"}, "ok\n"},
		{[]string{"tcp", addrs.tcp, "hello tcp"}, reply + " hello tcp\n"},
		{[]string{"udp", addrs.udp, "hello udp"}, reply + " hello udp\n"},
		{[]string{"udpburst", addrs.udp, "--count", "30", "--size", "700"}, "30 of 30 datagrams echoed by " + regexp.QuoteMeta(hostname) + "\n"},
	} {
		out := mustVrtest(t, tc.args...)
		if !regexp.MustCompile("^" + tc.want + "$").MatchString(out) {
			t.Errorf("vrtest %s = %q, want a match of %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}

	// Readiness follows the unready file, as `kubectl exec POD -- /vrtest
	// unready` and `ready` set it.
	healthz := "http://" + addrs.http + "/healthz"
	mustVrtest(t, "unready", "--file", unready)
	out, errOut, code := vrtest(context.Background(), nil, "get", healthz)
	if code != 1 || !strings.Contains(errOut, "503 Service Unavailable") || !strings.Contains(out, "unready") {
		t.Errorf("vrtest get %s after unready: exit %d, stdout %q, stderr %q; want exit 1 and 503", healthz, code, out, errOut)
	}
	mustVrtest(t, "ready", "--file", unready)
	mustVrtest(t, "ready", "--file", unready) // removing it twice is fine
	if out := mustVrtest(t, "get", healthz); out != "ok\n" {
		t.Errorf("vrtest get %s after ready = %q, want ok", healthz, out)
	}
}

func TestClientErrors(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	addrs, _ := startServe(t)
	for _, tc := range []struct {
		args    []string
		errPart string
	}{
		{[]string{"get", "http://" + addrs.http + "/", "--timeout", "1ns"}, "Client.Timeout"},
		{[]string{"tcp", "127.0.0.1:1", "x"}, "connection refused"},
		{[]string{"udp", "127.0.0.1:1", "x", "--timeout", "500ms"}, "connection refused"},
		{[]string{"udpburst", "127.0.0.1:1", "--timeout", "500ms"}, "connection refused"},
		{[]string{"udpburst", "127.0.0.1:1", "--count", "1"}, "want 2..64 datagrams"},
		{[]string{"hold", "127.0.0.1:1"}, "connection refused"},
	} {
		_, errOut, code := vrtest(context.Background(), nil, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.errPart) {
			t.Errorf("vrtest %s: exit %d, stderr %q; want exit 1 and %q", strings.Join(tc.args, " "), code, errOut, tc.errPart)
		}
	}
}

func TestHold(t *testing.T) {
	addrs, _ := startServe(t)
	hostname, _ := os.Hostname()
	out := mustVrtest(t, "hold", addrs.tcp, "--duration", "500ms", "--interval", "20ms")
	m := regexp.MustCompile(`^hold (\S+): (\d+) round trips to (\S+) over \S+\n$`).FindStringSubmatch(out)
	if m == nil || m[1] != addrs.tcp || m[3] != hostname {
		t.Fatalf("vrtest hold %s = %q, want \"hold %s: N round trips to %s over D\"", addrs.tcp, out, addrs.tcp, hostname)
	}
	if n, _ := strconv.Atoi(m[2]); n < 2 {
		t.Errorf("vrtest hold %s for 500ms every 20ms: %d round trips, want at least 2", addrs.tcp, n)
	}
}

// TestHoldFails stops the echo server under a running hold, which must
// then fail and say how many round trips succeeded.
func TestHoldFails(t *testing.T) {
	srv := &server{hostname: "pod-a", unreadyFile: filepath.Join(t.TempDir(), "unready")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tcpLn, udp, httpLn := listenLoopback(t)
	served := make(chan error, 1)
	go func() { served <- srv.run(ctx, httpLn, tcpLn, udp) }()

	type result struct {
		out, errOut string
		code        int
	}
	held := make(chan result, 1)
	go func() {
		out, errOut, code := vrtest(context.Background(), nil, "hold", tcpLn.Addr().String(), "--duration", "0", "--interval", "10ms")
		held <- result{out, errOut, code}
	}()
	time.Sleep(200 * time.Millisecond) // some round trips
	cancel()
	if err := <-served; err != nil {
		t.Errorf("server.run after cancel = %v, want nil", err)
	}
	select {
	case r := <-held:
		if r.code != 1 || !regexp.MustCompile(`^hold \S+: \d+ round trips to (pod-a)? over`).MatchString(r.out) || !strings.Contains(r.errOut, "round trip") {
			t.Errorf("vrtest hold while its server stops: exit %d, stdout %q, stderr %q; want exit 1, the count and the failed round trip", r.code, r.out, r.errOut)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("vrtest hold still runs 10s after its server stopped")
	}
}

// listenLoopback returns a TCP listener, a UDP socket and another TCP
// listener on loopback ports the kernel picks, closed at the end of the
// test.
func listenLoopback(t *testing.T) (net.Listener, net.PacketConn, net.Listener) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	return tcp, udp, other
}
