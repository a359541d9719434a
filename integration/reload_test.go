package integration

// The routers reload their config files while they run: a peer added to the
// files becomes reachable and a removed one unreachable, without a restart
// and without disturbing traffic between the other nodes.
//
// TestPeerAddedAndRemoved (topology.ThreeNodes; hostgw-node2 starts out of
// the other two nodes' peer lists, while its own file lists both):
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  nginx-th5pz 10.244.0.4 ─┐ long-lived TCP
//	 │                           coredns-xx6mc 10.244.0.2 │ connection, kept
//	 │                           coredns-8qxfv 10.244.0.3 │ across every change
//	 ├─ hostgw-node   eth0 .202  nginx-4k7xw 10.244.1.2 ◀─┘
//	 │                           nginx-j6zwk 10.244.1.3
//	 └─ hostgw-node2  eth0 .203  busybox 10.244.2.2    peer of the others: no → yes → no
//
// TestReloadOnSIGHUP (topology.Seed; hostgw-master starts without its one
// peer, hostgw-node):
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201  nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 └─ hostgw-node   eth0 .202  nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//
// hostgw-master's file is changed where the router's file watcher cannot
// see it (see mapFile), so only SIGHUP applies the change.
//
// TestReloadInvalidConfig (topology.Seed, both routers peered): an invalid
// file on hostgw-master is logged once and changes nothing; the next valid
// file (without the peer) is applied.

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// reloadTimeout bounds how long a config change may take to apply: the
// watcher waits 100 ms for writes to settle, the router applies the
// difference at once.
const reloadTimeout = 3 * time.Second

func TestPeerAddedAndRemoved(t *testing.T) {
	without := harness.ConfigOptions{Exclude: []string{thirdNode}}
	e := newEnv(t, "peers", topology.ThreeNodes(), without)
	e.startAll()
	pids := map[string]int{}
	for n, r := range e.routers {
		pids[n] = r.PID()
	}
	if _, err := e.c.ServeTCPEcho(nginx4k7xw.name, ":7"); err != nil {
		t.Fatalf("ServeTCPEcho: %v", err)
	}
	conn := e.openSession(nginxTh5pz, nginx4k7xw, 7)
	if err := conn.echo("before the peer is added", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// Without the peer, hostgw-master and hostgw-node have no route to
	// 10.244.2.0/24: their routers answer "net unreachable".
	for _, from := range []pod{nginxTh5pz, nginxJ6zwk} {
		if err := e.unreachableWith(from.name, busybox.addr, netUnreachable); err != nil {
			t.Errorf("before the peer is added: %v", err)
		}
	}

	e.opts = harness.ConfigOptions{}
	e.writeConfig(masterNode)
	e.writeConfig(workerNode)
	took := eventually(t, reloadTimeout, "busybox reachable from nginx-th5pz after adding hostgw-node2", func() error {
		return e.reachable(nginxTh5pz.name, busybox.addr)
	})
	t.Logf("hostgw-node2's pods reachable %v after the config files changed", took.Round(time.Millisecond))
	eventually(t, reloadTimeout, "busybox reachable from nginx-j6zwk after adding hostgw-node2", func() error {
		return e.reachable(nginxJ6zwk.name, busybox.addr)
	})
	e.mustPing(nginxTh5pz.name, busybox.addr, ttlAcrossNodes)
	e.mustPing(busybox.name, nginx4k7xw.addr, ttlAcrossNodes)
	if err := conn.echo("after the peer is added", 5*time.Second); err != nil {
		t.Error(err)
	}

	e.opts = without
	e.writeConfig(masterNode)
	e.writeConfig(workerNode)
	for _, from := range []pod{nginxTh5pz, nginxJ6zwk} {
		eventually(t, reloadTimeout, fmt.Sprintf("busybox unreachable from %s after removing hostgw-node2", from.name), func() error {
			return e.unreachableWith(from.name, busybox.addr, netUnreachable)
		})
	}
	if err := conn.echo("after the peer is removed", 5*time.Second); err != nil {
		t.Error(err)
	}
	e.mustPing(nginx4k7xw.name, nginxTh5pz.addr, ttlAcrossNodes)

	for n, r := range e.routers {
		if r.PID() != pids[n] || r.Exited() {
			t.Errorf("router on %s: pid %d (exited %v), want the first one, pid %d, still running", n, r.PID(), r.Exited(), pids[n])
		}
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	e := newEnv(t, "sighup", topology.Seed(), harness.ConfigOptions{})
	spec := e.c.Spec()
	// hostgw-master's file in two versions of the same length, without and
	// with its peer. The router starts with the first.
	without := configBytes(t, spec, masterNode, harness.ConfigOptions{Exclude: []string{workerNode}})
	with := configBytes(t, spec, masterNode, harness.ConfigOptions{})
	size := max(len(without), len(with)) + 16
	without, with = padConfig(t, without, size), padConfig(t, with, size)
	path := e.configPath(masterNode)
	if err := writeAtomic(path, without); err != nil {
		t.Fatal(err)
	}
	mapping := mapFile(t, path, size) // before the router watches the file
	e.startAll()
	r := e.router(masterNode)

	if err := e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable); err != nil {
		t.Fatalf("before the peer is added: %v", err)
	}

	// The test's premise: the watcher does not see the change. Its
	// debounce is 100 ms; after five times that the old config must still
	// be in force. One exception: the watcher reads the file once as it
	// starts, which may come after this write. Then it applies the change
	// on its own; put the old file back with SIGHUP (which the watcher
	// serves only after that first read) and write again.
	unseen := func() error {
		copy(mapping, with)
		for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err := e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable); err != nil {
				return fmt.Errorf("after an in-place write the router's file watcher cannot see, without SIGHUP: %w", err)
			}
		}
		return nil
	}
	if err := unseen(); err != nil {
		t.Logf("%v; the watcher's first read came late, trying again", err)
		copy(mapping, without)
		if err := r.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
		eventually(t, reloadTimeout, "nginx-4k7xw unreachable after SIGHUP with the old file back", func() error {
			return e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable)
		})
		if err := unseen(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	took := eventually(t, reloadTimeout, "nginx-4k7xw reachable after SIGHUP", func() error {
		return e.reachable(nginxTh5pz.name, nginx4k7xw.addr)
	})
	t.Logf("peer added %v after SIGHUP", took.Round(time.Millisecond))
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)

	// SIGHUP with an unchanged file changes nothing.
	if err := r.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)

	copy(mapping, without)
	if err := r.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	eventually(t, reloadTimeout, "nginx-4k7xw unreachable after SIGHUP with the peer removed", func() error {
		return e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable)
	})
	if r.Exited() {
		t.Errorf("router on %s exited after SIGHUP", masterNode)
	}
}

func TestReloadInvalidConfig(t *testing.T) {
	e := newEnv(t, "badcfg", topology.Seed(), harness.ConfigOptions{})
	e.startAll()
	r := e.router(masterNode)
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)

	bad := configBytes(t, e.c.Spec(), masterNode, harness.ConfigOptions{})
	bad = append(bad, []byte("peers: not-a-list\n")...)
	if _, err := configs.Parse(bad); err == nil {
		t.Fatalf("configs.Parse accepts the invalid file:\n%s", bad)
	}
	if err := writeAtomic(e.configPath(masterNode), bad); err != nil {
		t.Fatal(err)
	}
	const failed = "config reload failed, keeping the running config"
	eventually(t, reloadTimeout, "router logs the invalid file", func() error {
		if n := e.logCount(masterNode, failed); n != 1 {
			return fmt.Errorf("%d lines %q in the log, want 1", n, failed)
		}
		return nil
	})
	e.mustPing(nginxTh5pz.name, nginx4k7xw.addr, ttlAcrossNodes)
	if r.Exited() {
		t.Fatalf("router on %s exited after an invalid config file", masterNode)
	}

	e.opts = harness.ConfigOptions{Exclude: []string{workerNode}}
	e.writeConfig(masterNode)
	eventually(t, reloadTimeout, "the next valid file is applied: nginx-4k7xw unreachable", func() error {
		return e.unreachableWith(nginxTh5pz.name, nginx4k7xw.addr, netUnreachable)
	})
	if n := e.logCount(masterNode, failed); n != 1 {
		t.Errorf("%d lines %q in the log, want the one for the invalid file", n, failed)
	}
}

// configBytes is node's config file for opts, as harness.WriteConfig
// would write it, checked to parse.
func configBytes(t *testing.T, spec topology.Spec, nodeName string, opts harness.ConfigOptions) []byte {
	t.Helper()
	f, err := harness.NodeFile(spec, nodeName, opts)
	if err != nil {
		t.Fatalf("harness.NodeFile(%s): %v", nodeName, err)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatalf("marshal config of %s: %v", nodeName, err)
	}
	return b
}

// padConfig appends a comment line to b so that it is size bytes long, and
// checks that the result still parses.
func padConfig(t *testing.T, b []byte, size int) []byte {
	t.Helper()
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	pad := size - len(b)
	if pad < 2 {
		t.Fatalf("padConfig: %d bytes do not fit in %d", len(b), size)
	}
	b = append(slices.Clone(b), '#')
	for len(b) < size-1 {
		b = append(b, '#')
	}
	b = append(b, '\n')
	if _, err := configs.Parse(b); err != nil {
		t.Fatalf("padded config does not parse: %v\n%s", err, b)
	}
	return b
}

// writeAtomic replaces path with b in one rename.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// mapFile maps the size-byte file at path shared and writable, and unmaps
// it when t ends. Writes through the mapping change the file without any
// inotify event (inotify(7): "inotify does not report file accesses and
// modifications that may occur because of mmap(2), msync(2), and
// munmap(2)"), so a router watching the file's directory misses them; the
// file is opened and mapped before the router starts, so that not even the
// open and close are seen while it runs.
func mapFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(size) {
		t.Fatalf("mapFile(%s): file has %d bytes, want %d", path, st.Size(), size)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}
