package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/pcap"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
)

func TestStatusCommandLine(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"routes", "--socket", none}, 1, "is `vrouter run` running?"},
		{[]string{"status", "--socket", none}, 1, "is `vrouter run` running?"},
		{[]string{"status", "-o", "yaml"}, 2, `-o "yaml": want json`},
		{[]string{"peers", "--socket", none, "-o", "json"}, 1, none},
		{[]string{"services", "-o", "yaml"}, 2, `-o "yaml": want json`},
		{[]string{"conns", "extra"}, 2, "unexpected arguments"},
		{[]string{"conns", "--delete"}, 2, "--delete needs --service, --backend or --client"},
		{[]string{"conns", "--backend", "10.244.1"}, 2, `--backend "10.244.1": want IP or IP:PORT`},
		{[]string{"conns", "--service", "my-service"}, 2, `--service "my-service": want NAMESPACE/NAME`},
		{[]string{"conns", "--limit", "-1"}, 2, "--limit -1"},
		{[]string{"conns", "--client", "10.244.0.2:40000", "--delete", "--socket", none}, 1, "is `vrouter run` running?"},
		{[]string{"log-level", "debug", "info"}, 2, `unexpected arguments ["info"]`},
		{[]string{"log-level", "debug", "--socket", none}, 1, none}, // flags after the argument too
		{[]string{"capture"}, 2, "--nic is required"},
		{[]string{"capture", "--nic", "vr0", "--host", "10.244.1"}, 2, `--host "10.244.1": want an IP address`},
		{[]string{"capture", "--nic", "vr0", "--port", "70000"}, 2, `--port "70000": want a number from 1 to 65535`},
		{[]string{"capture", "--nic", "vr0", "--proto", "sctpx"}, 2, `--proto "sctpx": want tcp, udp, icmp or an IP protocol number`},
		{[]string{"capture", "--nic", "vr0", "-w", filepath.Join(t.TempDir(), "y.pcap"), "--socket", none}, 1, "is `vrouter run` running?"},
		{[]string{"capture", "--nic", "tun", "--count", "-1"}, 2, "--count -1"},
		{[]string{"capture", "--nic", "tun", "-w", filepath.Join(t.TempDir(), "x.pcap"), "--socket", none}, 1, "is `vrouter run` running?"},
		{[]string{"routes", "--bogus"}, 2, "Usage: vrouter routes"},
		{[]string{"ping"}, 2, "want a peer's name or a pod IP"},
		{[]string{"ping", "hostgw-node", "-c", "0"}, 2, "-c 0: want a number from 1 to 100"},
		{[]string{"ping", "a", "b"}, 2, `unexpected arguments ["b"]`},
		{[]string{"ping", "hostgw-node", "--socket", none}, 1, "is `vrouter run` running?"},
	} {
		var out, errb bytes.Buffer
		code := mainWithArgs(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.inStderr) {
			t.Errorf("vrouter %q = exit %d, stderr %q; want exit %d with %q", tc.args, code, errb.String(), tc.code, tc.inStderr)
		}
	}
}

func TestCopyCaptureKeepsWholeRecords(t *testing.T) {
	var in bytes.Buffer
	w, _ := pcap.NewWriter(&in, 0)
	for i := range 3 {
		w.WritePacket(time.Unix(int64(i), 0), []byte{0x45, byte(i)}, 0)
	}
	// A stream cut in the middle of the third record, as when the router
	// stops mid-write.
	cut := in.Bytes()[:in.Len()-1]
	var out bytes.Buffer
	n, err := copyCapture(&out, bytes.NewReader(cut))
	if n != 2 || err == nil {
		t.Errorf("copyCapture(cut stream) = %d, %v; want 2 records and an error", n, err)
	}
	r, err := pcap.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if rec, err := r.Next(); err != nil || !bytes.Equal(rec.Data, []byte{0x45, byte(i)}) {
			t.Errorf("copied record %d = %x, %v", i, rec.Data, err)
		}
	}
	if _, err := r.Next(); err == nil {
		t.Error("copied file has a third record, want only whole ones")
	}
}

// serveSeed serves the admin API of hostgw-master of an in-memory seed
// cluster until the test ends, and returns its socket.
func serveSeed(t *testing.T) (string, *seedtest.Cluster) {
	t.Helper()
	c := seedtest.Start(t)
	socket := filepath.Join(t.TempDir(), "vr0.sock")
	ln, err := admin.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := admin.NewServer(admin.Options{Router: c.Master.Router, Table: c.Master.Table, NAT: c.Master.NAT,
		Process: func() admin.Process {
			return admin.Process{Version: "v0.2.0", Mode: "file", Source: "node.yaml", Ready: true}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- admin.ServeHTTP(ctx, ln, srv.Handler()) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return socket, c
}

// TestPingCommand: vrouter ping through the admin socket of a running
// router, and its exit status when nothing answers.
func TestPingCommand(t *testing.T) {
	socket, _ := serveSeed(t)
	var out, errb bytes.Buffer
	if code := mainWithArgs([]string{"ping", "hostgw-node", "-c", "2", "--interval", "1ms", "--socket", socket}, &out, &errb); code != 0 {
		t.Fatalf("vrouter ping hostgw-node = exit %d, stderr %q", code, errb.String())
	}
	if got := out.String(); !strings.HasPrefix(got, "PING hostgw-node (10.244.1.0) from 10.244.0.0 through the overlay to hostgw-node at 192.168.31.202:8285\n84 bytes from 10.244.1.0: seq=1 time=") ||
		!strings.HasSuffix(got, "path MTU: 1472-byte packets pass, the tunnel MTU\n") {
		t.Errorf("vrouter ping hostgw-node printed\n%s", got)
	}
	// A pod nobody plays: no reply, exit 1.
	out.Reset()
	errb.Reset()
	code := mainWithArgs([]string{"ping", "10.244.1.9", "-c", "1", "--timeout", "50ms", "--mtu=false", "--socket", socket}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), "seq=1 size=84: no reply within 50ms") || !strings.Contains(errb.String(), "no reply from 10.244.1.9") {
		t.Errorf("vrouter ping 10.244.1.9 = exit %d, stdout %q, stderr %q; want exit 1 saying no reply", code, out.String(), errb.String())
	}
}

// TestStatusCommand: vrouter status -o json through the admin socket.
func TestStatusCommand(t *testing.T) {
	socket, _ := serveSeed(t)
	var out, errb bytes.Buffer
	if code := mainWithArgs([]string{"status", "-o", "json", "--socket", socket}, &out, &errb); code != 0 {
		t.Fatalf("vrouter status -o json = exit %d, stderr %q", code, errb.String())
	}
	var st admin.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("vrouter status -o json: %v\n%s", err, out.String())
	}
	if st.Version != "v0.2.0" || st.Mode != "file" || st.TUN.Name != "vr0" || st.Peers.Total != 1 || st.Services != 2 {
		t.Errorf("vrouter status -o json = %+v, want v0.2.0, file mode, vr0, 1 peer, 2 Services", st)
	}
}
