package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/publish"
)

func TestPublishFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		inStderr string
	}{
		{[]string{"publish"}, "--socket is required"},
		{[]string{"publish", "--socket", "p.sock", "extra"}, "unexpected arguments"},
		{[]string{"publish", "--socket", "p.sock", "--ports", "0-10"}, `--ports "0-10": "0-10": want a port from 1 to 65535`},
		{[]string{"publish", "--socket", "p.sock", "--addresses", "localhost"}, `--addresses "localhost": "localhost": want an IP address or a prefix`},
	} {
		code, stdout, stderr := run(tc.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("vrouter %q = exit %d, stdout %q, stderr %q; want exit 2 with %q", tc.args, code, stdout, stderr, tc.inStderr)
		}
	}
}

// TestPublishCommand runs `vrouter publish` as a user would: a client gets
// a listener of its namespace's through it, a port outside --ports is
// refused, and SIGTERM stops it and removes its socket.
func TestPublishCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "vrouter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()

	socket := filepath.Join(dir, "publish.sock")
	cmd := exec.Command(bin, "publish", "--socket", socket, "--ports", "30000-32767,"+strconv.Itoa(int(addr.Port())))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{}) // closed once it exited, waitErr set
	logs := make(chan string, 2)
	go func() {
		// It logs once it serves; the rest of its log comes at exit.
		r := bufio.NewReader(stderr)
		line, _ := r.ReadString('\n')
		logs <- line
		rest, _ := io.ReadAll(r)
		logs <- string(rest)
		waitErr = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	if line := <-logs; !strings.Contains(line, "publishing node ports") || !strings.Contains(line, socket) {
		t.Fatalf("vrouter publish logged %q first, want \"publishing node ports\" with the socket", line)
	}

	c := &publish.Client{Socket: socket}
	got, err := c.ListenTCP(addr)
	if err != nil {
		t.Fatalf("ListenTCP(%v) through vrouter publish: %v", addr, err)
	}
	defer got.Close()
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %v, published: %v", addr, err)
	}
	conn.Close()
	if _, err := c.ListenUDP(netip.MustParseAddrPort("127.0.0.1:8080")); !errors.Is(err, publish.ErrRefused) {
		t.Errorf("ListenUDP(127.0.0.1:8080) through vrouter publish --ports 30000-32767,%d = %v, want it refused", addr.Port(), err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest := <-logs
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("vrouter publish after SIGTERM: %v, want exit 0\n%s", waitErr, rest)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("vrouter publish still runs 10s after SIGTERM")
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after vrouter publish stopped: %v, want it removed", err)
	}
	for _, want := range []string{"published", "publish refused", "stopped"} {
		if !strings.Contains(rest, want) {
			t.Errorf("vrouter publish's log has no %q:\n%s", want, rest)
		}
	}
}
