package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Process is a child process of a test cluster (etcd, kube-apiserver, a
// kubelet, ...) with its log file and the goroutine that waits for it.
type Process struct {
	// Name names the process in errors.
	Name string
	// Cmd is the started command.
	Cmd *exec.Cmd
	// Log is the file its standard output and error go to.
	Log string

	done chan struct{} // closed once Cmd.Wait returned
	err  error         // Cmd.Wait's result, set before done closes
}

// StartProcess starts cmd with its output appended to the file logPath,
// in a process group of its own, killed with the test binary if that dies
// first (on Linux). The caller owns the process: Stop it.
func StartProcess(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited; Err then says how.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is Cmd.Wait's result, once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, SIGKILL after timeout, and
// waits for the process; the error says if it still runs after that.
func (p *Process) Stop(timeout time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	pgid := -p.Cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) still runs after SIGKILL", p.Name, p.Cmd.Process.Pid)
	}
}

// WaitFor polls ready every 100 ms until it holds, the process exits or
// ctx ends; what names the wait in the error, which carries the log's
// tail.
func (p *Process) WaitFor(ctx context.Context, what string, ready func() bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s: %v\n%s", p.Name, what, p.err, Tail(p.Log, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s: %w\n%s", p.Name, what, ctx.Err(), Tail(p.Log, 30))
		case <-tick.C:
		}
	}
	return nil
}

// Tail returns the last n lines of the file at path, headed by its name.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- last lines of " + filepath.Base(path) + " ---\n" + strings.Join(lines, "\n")
}
