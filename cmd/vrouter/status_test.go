package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/pcap"
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
