//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
	"github.com/vrouter/vrouter/router/wireguard"
)

// The encrypted rows compare vrouter with overlay.encryption wireguard
// (modeWG) against vrouter's plain overlay and against the standard
// userspace setup on the same namespaces (modeKernelWG): on each node,
// wireguard-go (the userspace WireGuard daemon, built by `make
// wireguard-go` from golang.zx2c4.com/wireguard, whose device vrouter's
// WireGuard interoperates with) makes a TUN interface, Debian's
// wireguard-tools `wg` gives it a key and
// the other node as its one peer, and the kernel routes the peer's pod
// CIDR into it — flannel's wireguard backend, with wireguard-go in place
// of the kernel module:
//
//	hostgw-master                                  hostgw-node
//	  cni0 10.244.0.1/24                             cni0 10.244.1.1/24
//	  10.244.1.0/24 dev wg<pid>m                     10.244.0.0/24 dev wg<pid>n
//	  wg<pid>m mtu 1420 ── UDP 51820 over eth0 ──── wg<pid>n mtu 1420
//	    peer: allowed-ips 10.244.1.0/24,               peer: allowed-ips 10.244.0.0/24,
//	          endpoint 192.168.31.202:51820                  endpoint 192.168.31.201:51820
//
// The Services are kube-proxy's iptables chains (kubeproxy.go), as on the
// kernel bed: DNAT in the node kernels, then the same routes over the
// WireGuard interface. wireguard-go runs in the foreground as the bench's
// child (killed and waited for on close); its control socket is
// /var/run/wireguard/<interface>.sock, shared by every network namespace,
// so the interfaces are named per run and node. Without wireguard-go or
// wg, the bed is not built and its column is n/a, with the reason; the
// run does not fail.
//
// The kernel's own WireGuard would be the third column; hosts without the
// module (`ip link add … type wireguard` fails) report n/a.

const (
	// wgGoPort is the UDP port of the wireguard-go baseline, wg-quick's
	// usual one.
	wgGoPort = 51820
	// wgGoMTU is the wireguard-go interfaces' MTU: wg-quick's and
	// flannel's for a 1500-byte IPv4 underlay (1500 − 80).
	wgGoMTU = 1420
	// wgSocketDir is where wireguard-go puts its control socket and wg
	// looks for it.
	wgSocketDir = "/var/run/wireguard"
)

// wireGuardGoAvailable finds the wireguard-go binary (given by flag, else
// .cache/bin of the module, else on PATH) and wg. It returns the binary,
// or "" and why the baseline cannot be measured.
func wireGuardGoAvailable(ctx context.Context, given string) (string, string) {
	path := given
	if path == "" {
		if root, err := moduleRoot(ctx); err == nil {
			if p := filepath.Join(root, ".cache", "bin", "wireguard-go"); isExecutable(p) {
				path = p
			}
		}
	}
	if path == "" {
		p, err := exec.LookPath("wireguard-go")
		if err != nil {
			return "", "wireguard-go is not built (make wireguard-go builds it into .cache/bin; or pass --wireguard-go)"
		}
		path = p
	}
	if !isExecutable(path) {
		return "", fmt.Sprintf("wireguard-go %s is not an executable file", path)
	}
	if _, err := exec.LookPath("wg"); err != nil {
		return "", "wg is not installed (Debian package wireguard-tools; make check-deps installs it as root)"
	}
	return path, ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// wireGuardGoVersion is the binary's version ("v0.0.20250522"), or "".
func wireGuardGoVersion(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return ""
	}
	var name, v string
	fmt.Sscanf(string(out), "%s %s", &name, &v)
	return v
}

// wgGoIface names node's wireguard-go interface, unique to this run
// (wireguard-go's control socket is named after it): "wg<pid>m" on
// masterNode, "wg<pid>n" on workerNode; at most 11 characters.
func wgGoIface(node string) string {
	tag := 'n'
	if node == masterNode {
		tag = 'm'
	}
	return fmt.Sprintf("wg%d%c", selfPID, tag)
}

func wgSocket(iface string) string { return filepath.Join(wgSocketDir, iface+".sock") }

// wgGoProc is one node's wireguard-go process.
type wgGoProc struct {
	node, iface string
	cmd         *exec.Cmd
	done        chan struct{}
}

// setupWireGuardGo starts wireguard-go on both nodes, configures each
// with the other as its peer, routes the peer's pod CIDR into it and
// installs kube-proxy's chains for svcs.
func (b *bed) setupWireGuardGo(ctx context.Context, prog string, svcs []configs.ServiceSpec) error {
	if prog == "" {
		return errors.New("no wireguard-go binary")
	}
	nodes := []string{masterNode, workerNode}
	keys := map[string]wireguard.Key{}
	for _, n := range nodes {
		k, err := wireguard.GenerateKey()
		if err != nil {
			return err
		}
		keys[n] = k
		if err := os.WriteFile(b.wgKeyFile(n), []byte(k.String()+"\n"), 0o600); err != nil {
			return err
		}
		if err := b.startWireGuardGo(prog, n); err != nil {
			return err
		}
	}
	for i, n := range nodes {
		peer := nodes[1-i]
		if err := b.configureWireGuardGo(ctx, n, peer, keys[peer].Public()); err != nil {
			return err
		}
	}
	return b.installKubeProxy(ctx, svcs)
}

func (b *bed) wgKeyFile(node string) string {
	return filepath.Join(b.dir, node+".wireguard-go.key")
}

// startWireGuardGo runs `wireguard-go -f <iface>` in node's namespace and
// waits for its control socket.
func (b *bed) startWireGuardGo(prog, node string) error {
	iface := wgGoIface(node)
	logPath := filepath.Join(b.dir, "wireguard-go-"+node+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := b.c.Command(node, prog, "-f", iface)
	cmd.Env = append(os.Environ(), "WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.spawn.do(cmd.Start); err != nil {
		logf.Close()
		return fmt.Errorf("start wireguard-go in %s: %w", node, err)
	}
	p := &wgGoProc{node: node, iface: iface, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	b.wgGo = append(b.wgGo, p)
	// nsenter execs wireguard-go: the same process, whose CPU the TCP
	// rows count as the routers'.
	b.pids = append(b.pids, cmd.Process.Pid)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(wgSocket(iface)); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("wireguard-go %s in %s exited: %s", iface, node, firstLines(readFile(logPath), 3))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wireguard-go %s in %s: no control socket %s after 5s", iface, node, wgSocket(iface))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configureWireGuardGo gives node's interface its key and peer, brings it
// up and routes the peer's pod CIDR into it.
func (b *bed) configureWireGuardGo(ctx context.Context, node, peer string, peerKey wireguard.Key) error {
	pn, ok := benchSpec().Node(peer)
	if !ok {
		return fmt.Errorf("no node %s", peer)
	}
	iface, cidr := wgGoIface(node), pn.PodCIDR.String()
	port := strconv.Itoa(wgGoPort)
	for _, argv := range [][]string{
		{"wg", "set", iface, "private-key", b.wgKeyFile(node), "listen-port", port,
			"peer", peerKey.String(), "allowed-ips", cidr, "endpoint", netip.AddrPortFrom(pn.Underlay, wgGoPort).String()},
		{"ip", "link", "set", iface, "up", "mtu", strconv.Itoa(wgGoMTU)},
		{"ip", "route", "add", cidr, "dev", iface},
	} {
		if out, err := b.c.CommandContext(ctx, node, argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s in %s: %w: %s", argv, node, err, firstLines(out, 3))
		}
	}
	return nil
}

// stop ends wireguard-go (SIGTERM, which removes its interface and
// socket; SIGKILL after 5 s) and waits for it.
func (p *wgGoProc) stop() error {
	if p.cmd.Process == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	if err := os.Remove(wgSocket(p.iface)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove wireguard-go's socket on %s: %w", p.node, err)
	}
	return nil
}

// staleWGSocket matches the control sockets of this program's
// wireguard-go interfaces (wgGoIface), with the run's process ID.
var staleWGSocket = regexp.MustCompile(`^wg([0-9]+)[mn]\.sock$`)

// cleanupStaleWireGuardGo removes the control sockets a killed run's
// wireguard-go left behind (it dies with the run: Pdeathsig).
func cleanupStaleWireGuardGo() error {
	entries, err := os.ReadDir(wgSocketDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		m := staleWGSocket.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 1 || pid == selfPID || procComm(pid) != "" {
			continue
		}
		if err := os.Remove(filepath.Join(wgSocketDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// kernelWireGuard tries to make a kernel WireGuard interface in
// namespace ns of c (and removes it). It returns "" when the kernel has
// WireGuard, else why not.
func kernelWireGuard(ctx context.Context, c *topology.Cluster, ns string) string {
	out, err := c.CommandContext(ctx, ns, "ip", "link", "add", "wgtest", "type", "wireguard").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("this kernel has no WireGuard (`ip link add wgtest type wireguard`: %s)", firstLines(out, 1))
	}
	c.CommandContext(ctx, ns, "ip", "link", "del", "wgtest").Run()
	return ""
}
