//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The userspace anchor of the egress rows: a pod whose only way out is
// slirp4netns, as rootless runtimes (rootless Docker, Podman, usernetes)
// give a container its outside access. A namespace of its own (slirpPod,
// held open by a sleeping process, the way a runtime's container process
// holds it) gets tap0 from `slirp4netns --configure --mtu=65520` running
// in masterNode's namespace on the kernel bed, with Podman's defaults
// (--disable-host-loopback, --enable-sandbox, --enable-seccomp). slirp4netns
// terminates the pod's connections in its userspace stack (libslirp) and
// re-originates them from the node's sockets, the job vrouter's egress
// stack does; the outside server and the node's route to it are the
// egress rows' own (setupEgress). It runs on the kernel bed only because
// that bed's node is a plain host: the node's masquerade rules match only
// pod sources, not slirp4netns's sockets.
//
// The anchor is optional: without slirp4netns installed, or when it cannot
// be set up, its rows are n/a with the reason, and nothing fails.

const (
	// slirpPod names the anchor's pod namespace in loads and errors.
	slirpPod = "slirp4netns-pod"
	// slirpMTU is what rootless runtimes pass (Podman's and rootless
	// Docker's default), the fastest setting slirp4netns has.
	slirpMTU = 65520
)

var slirpMeasurementSet = map[string]bool{"egress-slirp4netns-tcp": true, "egress-slirp4netns-close": true}

// slirpServer is the anchor's HTTP server: the egress server's host
// (outsideClient) on an address of its own, so that the TIME_WAIT the
// kernel bed's masqueraded connections leave there (from the same node
// address, with other timestamps) never meets the anchor's.
var slirpServer = netip.MustParseAddr("198.51.100.11")

// slirpLoad is the new-connection load from the anchor's pod.
var slirpLoad = loadTarget{"egress_slirp4netns", slirpPod, netip.AddrPortFrom(slirpServer, 80), egressLoad.servers}

// slirpArgs are slirp4netns's arguments for the pod process pid: Podman's
// defaults.
func slirpArgs(pid int) []string {
	return []string{"--configure", fmt.Sprintf("--mtu=%d", slirpMTU), "--disable-host-loopback",
		"--enable-sandbox", "--enable-seccomp", fmt.Sprint(pid), "tap0"}
}

// slirpAvailable reports whether the anchor can be measured: slirp4netns
// is installed.
func slirpAvailable() (bool, string) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		return false, "slirp4netns is not installed (Debian package slirp4netns; make check-deps installs it as root)"
	}
	return true, ""
}

// slirp is the anchor's pod namespace and the slirp4netns serving it.
type slirp struct {
	holder, proc         *exec.Cmd
	holderDone, procDone chan struct{}
	netns                string // /proc/<holder>/ns/net
}

// setupSlirp starts the anchor on b (the kernel bed, after setupEgress)
// and checks that its pod reaches the outside server. On error it stops
// what it started.
func (b *bed) setupSlirp(ctx context.Context) (err error) {
	s := &slirp{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := b.addOutsideAddr(slirpServer, masterNode); err != nil {
		return err
	}
	if err := b.startNginx(outsideClient, slirpLoad.addr); err != nil {
		return err
	}
	// The pod: a sleeping process in a new network namespace.
	s.holder = exec.Command("unshare", "--net", "--", "sleep", "infinity")
	s.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(s.holder.Start); err != nil {
		return fmt.Errorf("start the anchor's pod (unshare --net sleep): %w", err)
	}
	s.holderDone = make(chan struct{})
	go func() { s.holder.Wait(); close(s.holderDone) }()
	pid := s.holder.Process.Pid
	s.netns = fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := waitNewNetns(s.netns, s.holderDone, 5*time.Second); err != nil {
		return err
	}

	logPath := filepath.Join(b.dir, "slirp4netns.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	// slirp4netns's sandbox (a mount namespace with pivot_root) is
	// given a mount namespace of its own to start from, with private
	// propagation: started in the bench's, it unmounted the beds'
	// /run/netns files.
	argv := append([]string{"--mount", "--propagation", "private", "--", "slirp4netns"}, slirpArgs(pid)...)
	s.proc = b.c.Command(masterNode, "unshare", argv...)
	s.proc.Stdout, s.proc.Stderr = logf, logf
	s.proc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(s.proc.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start slirp4netns in %s: %w", masterNode, err)
	}
	s.procDone = make(chan struct{})
	go func() { s.proc.Wait(); logf.Close(); close(s.procDone) }()

	// Ready when the pod reaches the outside server through it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := inNetnsGoroutine(s.netns, func() error {
			c, err := net.DialTimeout("tcp", slirpLoad.addr.String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			b.slirp = s
			return nil
		}
		select {
		case <-s.procDone:
			return fmt.Errorf("slirp4netns exited: %s", firstLines(readFile(logPath), 3))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not reach %v through slirp4netns: %w (log: %s)", slirpPod, slirpLoad.addr, err, firstLines(readFile(logPath), 3))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// close stops slirp4netns and the pod's process, which takes the
// namespace with it. Safe on a partly started slirp.
func (s *slirp) close() {
	for _, p := range []struct {
		cmd  *exec.Cmd
		done chan struct{}
	}{{s.proc, s.procDone}, {s.holder, s.holderDone}} {
		if p.cmd != nil && p.cmd.Process != nil && p.done != nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// waitNewNetns waits until path is a network namespace other than the
// caller's: the holder has unshared.
func waitNewNetns(path string, exited chan struct{}, timeout time.Duration) error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		if ns, err := os.Readlink(path); err == nil && ns != self {
			return nil
		}
		select {
		case <-exited:
			return errors.New("the anchor's pod process (unshare --net sleep) exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is no new network namespace after %v", path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// inNetnsGoroutine runs fn inside the namespace at path on a goroutine
// of its own, which inNetns may leave to die with its thread.
func inNetnsGoroutine(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- inNetns(path, fn) }()
	return <-errc
}

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// measureSlirpTCP is measureEgressTCP from the anchor's pod.
func measureSlirpTCP(ctx context.Context, b *bed, dur time.Duration) (map[string]float64, error) {
	return egressIperf(ctx, slirpPod, func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + b.slirp.netns, "--", "iperf3"}, args...)...)
	}, "egress_slirp4netns_tcp_gbps", dur)
}

// slirpVersion is slirp4netns's version ("1.2.0"), or "" if unknown.
func slirpVersion() string {
	out, err := exec.Command("slirp4netns", "--version").Output()
	if err != nil {
		return ""
	}
	var v string
	fmt.Sscanf(string(out), "slirp4netns version %s", &v)
	return v
}
