package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// stopTimeout is how long a process gets after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// process is a child process of the cluster and the goroutine that waits
// for it.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result, set before done closes
}

// run starts cmd with its output in <logs>/<name>.log, in its own process
// group, killed with the test process if that dies first.
func (c *Cluster) run(name string, cmd *exec.Cmd) (*process, error) {
	logPath := c.logDir() + "/" + name + ".log"
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether p has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to p's process group, then SIGKILL after
// stopTimeout, and waits for p.
func (p *process) stop() error {
	if p == nil || p.exited() {
		return nil
	}
	pgid := -p.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s (pid %d) still runs after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// waitFor polls ready every 200 ms until it holds, p exits or ctx ends.
func waitFor(ctx context.Context, p *process, what string, ready func() bool) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before %s: %v\n%s", p.name, what, p.err, tail(p.log, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s: %w\n%s", p.name, what, ctx.Err(), tail(p.log, 30))
		case <-tick.C:
		}
	}
	return nil
}
