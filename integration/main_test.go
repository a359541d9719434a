package integration

// Every test here runs on the seed's cluster, or ThreeNodes, in namespaces
// named "vrit-<pid>-<test>-<short name>":
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 192.168.31.201  vrouter :8285  vr0 mtu 1472
//	 │    cni0 10.244.0.1/24 ─┬─ nginx-th5pz   10.244.0.4
//	 │                        ├─ coredns-xx6mc 10.244.0.2
//	 │                        └─ coredns-8qxfv 10.244.0.3
//	 ├─ hostgw-node   eth0 192.168.31.202  vrouter :8285  vr0 mtu 1472
//	 │    cni0 10.244.1.1/24 ─┬─ nginx-4k7xw   10.244.1.2
//	 │                        └─ nginx-j6zwk   10.244.1.3
//	 └─ hostgw-node2  eth0 192.168.31.203  vrouter :8285  (ThreeNodes only)
//	      cni0 10.244.2.1/24 ─── busybox       10.244.2.2
//
//	cluster CIDR 10.244.0.0/16, service CIDR 10.96.0.0/12,
//	router address (ICMP error source) 169.254.244.1 on every node.
//
// TestMain builds the vrouter binary once, removes the namespaces a crashed
// run left behind, and checks that no goroutine outlives the tests (every
// router a test starts is stopped in its cleanup). The process ID in the
// names lets several runs share the machine: each removes only the
// leftovers of runs whose process is gone.

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/vrouter/vrouter/integration/topology"
)

// testPrefix starts every namespace name this package makes; runPrefix
// every name this run makes.
const testPrefix = "vrit-"

var runPrefix = fmt.Sprintf("%s%d-", testPrefix, os.Getpid())

var (
	// vrouterBin is the binary TestMain built; empty when not root.
	vrouterBin string
	// buildErr is why the build failed; each test then fails with it.
	buildErr error
)

func TestMain(m *testing.M) {
	var tmp string
	if os.Geteuid() == 0 {
		var err error
		tmp, err = os.MkdirTemp("", "vrouter-integration-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "integration: %v\n", err)
			os.Exit(1)
		}
		vrouterBin = filepath.Join(tmp, "vrouter")
		cmd := exec.Command("go", "build", "-o", vrouterBin, "github.com/vrouter/vrouter/cmd/vrouter")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build github.com/vrouter/vrouter/cmd/vrouter: %v\n%s", err, out)
		}
		if err := cleanupStale(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: remove a previous run's namespaces: %v\n", err)
			os.Exit(1)
		}
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if tmp != "" {
			os.RemoveAll(tmp)
		}
		os.Exit(code)
	}))
}

// cleanupStale removes the namespaces of earlier runs ("vrit-<pid>-...")
// whose process no longer exists, and leaves those of live runs alone.
func cleanupStale() error {
	entries, err := os.ReadDir(topology.DefaultNetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	stale := map[string]bool{}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), testPrefix)
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "-")
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			stale[e.Name()] = true // no process ID: an older layout
			continue
		}
		if err := syscall.Kill(n, 0); errors.Is(err, syscall.ESRCH) {
			stale[testPrefix+pid+"-"] = true
		}
	}
	var errs []error
	for prefix := range stale {
		errs = append(errs, topology.Cleanup(prefix))
	}
	return errors.Join(errs...)
}

// requireRoot skips t unless it runs as root, and fails it if the router
// binary could not be built.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates network namespaces and TUN devices and runs vrouter in them (try sudo go test ./integration/)")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// The reference cluster's nodes and pods, as topology.Seed and
// topology.ThreeNodes declare them; newEnv checks that they still match.
const (
	masterNode = "hostgw-master"
	workerNode = "hostgw-node"
	thirdNode  = "hostgw-node2"
)

// pod is one pod of the reference cluster.
type pod struct {
	name string
	addr netip.Addr
	node string
}

var (
	nginxTh5pz   = pod{"nginx-th5pz", netip.MustParseAddr("10.244.0.4"), masterNode}
	corednsXx6mc = pod{"coredns-xx6mc", netip.MustParseAddr("10.244.0.2"), masterNode}
	coredns8qxfv = pod{"coredns-8qxfv", netip.MustParseAddr("10.244.0.3"), masterNode}
	nginx4k7xw   = pod{"nginx-4k7xw", netip.MustParseAddr("10.244.1.2"), workerNode}
	nginxJ6zwk   = pod{"nginx-j6zwk", netip.MustParseAddr("10.244.1.3"), workerNode}
	busybox      = pod{"busybox", netip.MustParseAddr("10.244.2.2"), thirdNode}
)

// Addresses every test refers to.
var (
	// stackAddr is the router's own address in its stack, the source of
	// the ICMP errors it sends (router.addresses default).
	stackAddr = netip.MustParseAddr("169.254.244.1")
	// unrouted lies in the cluster CIDR but in no node's pod CIDR.
	unrouted = netip.MustParseAddr("10.244.9.9")
)

// gateway is cni0's address on a node: the source of the ICMP errors the
// node kernel sends to its pods.
func gateway(nodeName string) netip.Addr {
	switch nodeName {
	case masterNode:
		return netip.MustParseAddr("10.244.0.1")
	case workerNode:
		return netip.MustParseAddr("10.244.1.1")
	case thirdNode:
		return netip.MustParseAddr("10.244.2.1")
	}
	panic("unknown node " + nodeName)
}

// underlay is a node's eth0 address.
func underlay(nodeName string) netip.Addr {
	switch nodeName {
	case masterNode:
		return netip.MustParseAddr("192.168.31.201")
	case workerNode:
		return netip.MustParseAddr("192.168.31.202")
	case thirdNode:
		return netip.MustParseAddr("192.168.31.203")
	}
	panic("unknown node " + nodeName)
}

// netUnreachable is how topology.Ping reports the ICMP "net unreachable"
// a router without a route for the destination answers with.
var netUnreachable = fmt.Sprintf("%s: destination unreachable (code 0)", stackAddr)

// TTLs of replies to a pod's ping (Linux starts at 64): across nodes the
// reply crosses the remote node kernel, both routers and the local node
// kernel; on the same node it is only bridged.
const (
	ttlAcrossNodes = 60
	ttlNodeToPod   = 61 // from a node: no local node kernel hop on the way back
	ttlSameNode    = 64
)
