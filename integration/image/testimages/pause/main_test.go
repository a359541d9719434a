package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// buildPause builds this command as the image has it: static.
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startPause starts bin with attr and waits for the line that says it
// handles SIGTERM and SIGINT. The process is killed at the end of the test
// unless the test waited for it.
func startPause(t *testing.T, bin string, attr *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.SysProcAttr = attr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if want := "pause: waiting for SIGTERM or SIGINT\n"; line != want || err != nil {
		t.Fatalf("pause's first line = %q, %v; want %q", line, err, want)
	}
	return cmd
}

func TestExitsOnSignal(t *testing.T) {
	bin := buildPause(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := startPause(t, bin, nil)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- cmd.Wait() }()
			select {
			case err := <-errc:
				if err != nil {
					t.Fatalf("pause after %v: %v, want exit status 0", sig, err)
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-errc
				t.Fatalf("pause still runs 10s after %v", sig)
			}
		})
	}
}

// TestReapsOrphans runs pause as PID 1 of a new PID namespace, starts a
// shell in that namespace whose background child outlives it, and checks
// that the orphan is reparented to pause and reaped when it exits.
func TestReapsOrphans(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a PID namespace")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	cmd := startPause(t, buildPause(t), &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	pid := cmd.Process.Pid
	out, err := exec.Command(nsenter, "--target", strconv.Itoa(pid), "--pid", "--",
		"/bin/sh", "-c", "sleep 1 </dev/null >/dev/null 2>&1 & exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter --target %d --pid sh: %v\n%s", pid, err, out)
	}
	orphans := children(t, pid)
	if len(orphans) != 1 || orphans[0].state == 'Z' {
		t.Fatalf("children of pause after the shell exited = %v, want the running sleep", orphans)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(orphans) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("children of pause 9s after its sleep 1 ended = %v, want none (reaped)", orphans)
		}
		time.Sleep(50 * time.Millisecond)
		orphans = children(t, pid)
	}
}

// proc is a process as /proc/PID/stat shows it.
type proc struct {
	pid   int
	state byte
}

func (p proc) String() string { return fmt.Sprintf("%d(%c)", p.pid, p.state) }

// children lists the processes whose parent is ppid.
func children(t *testing.T, ppid int) []proc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if p, _ := strconv.Atoi(fields[1]); p == ppid {
			out = append(out, proc{pid: pid, state: fields[0][0]})
		}
	}
	return out
}
