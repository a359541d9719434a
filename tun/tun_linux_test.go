package tun

// Real-device tests. Each one runs in a network namespace of its own, made
// on the test goroutine's locked OS thread, so nothing touches the host's
// interfaces or routes; the namespace, and every device in it, goes away
// when the test ends. They need root (CAP_SYS_ADMIN for the namespace,
// CAP_NET_ADMIN in it) and /dev/net/tun, and skip otherwise.
//
// Address plan, after the seed's cluster (node hostgw-master):
//
//	 ┌──────────── test's netns: the node kernel ──────────────┐
//	 │ vr0 10.244.0.0/32, fd00:10:244::1/128, MTU 1400         │
//	 │ route 10.244.0.0/16, 10.96.0.0/12 dev vr0 proto 118     │
//	 │ route fd00:10:244::/56, fd00:10:96::/112 dev vr0        │
//	 └───────────────┬─────────────────────────────────────────┘
//	                 │ TUN: the test plays the router
//	     remote pod 10.244.1.2 / fd00:10:244:1::2 (hand-built packets)

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	nodeAddr4 = netip.MustParsePrefix("10.244.0.0/32")
	nodeAddr6 = netip.MustParsePrefix("fd00:10:244::1/128")
	podAddr4  = netip.MustParseAddr("10.244.1.2")
	podAddr6  = netip.MustParseAddr("fd00:10:244:1::2")

	clusterCIDR4 = netip.MustParsePrefix("10.244.0.0/16")
	serviceCIDR4 = netip.MustParsePrefix("10.96.0.0/12")
	clusterCIDR6 = netip.MustParsePrefix("fd00:10:244::/56")
	serviceCIDR6 = netip.MustParsePrefix("fd00:10:96::/112")
)

func seedConfig() LinkConfig {
	return LinkConfig{
		Addresses: []netip.Prefix{nodeAddr4, nodeAddr6},
		MTU:       1400,
		Routes:    []netip.Prefix{clusterCIDR4, serviceCIDR4, clusterCIDR6, serviceCIDR6},
	}
}

// needRoot skips unless the test can make network namespaces and TUNs.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-device test: needs root (CAP_SYS_ADMIN to make a network namespace, CAP_NET_ADMIN in it); run `sudo go test ./tun/...` or inside `unshare -Urn`")
	}
	if err := unix.Access("/dev/net/tun", unix.R_OK|unix.W_OK); err != nil {
		t.Skipf("real-device test: needs read-write access to /dev/net/tun: %v", err)
	}
}

// inNewNetns moves the calling test goroutine, locked to its OS thread,
// into a fresh network namespace until the test ends. Cleanups registered
// after it run inside the namespace, before it is left. If the thread
// cannot go back, it stays locked so that the runtime discards it with
// the goroutine rather than reuse it.
func inNewNetns(t testing.TB) {
	t.Helper()
	needRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Skipf("real-device test: cannot make a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("return to the original network namespace: %v (thread left locked)", err)
		} else {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	})
}

func mustOpen(t *testing.T, opts Options) Device {
	t.Helper()
	dev, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

// rawTUN opens /dev/net/tun and attaches it to interface name with flags,
// as a privileged helper would, without water or package tun. With
// attach false it stops after open. The descriptor is closed when the test
// ends unless the returned release func is called (Adopt took it).
func rawTUN(t *testing.T, name string, flags uint16, attach bool) (fd int, release func()) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	owned := true
	t.Cleanup(func() {
		if owned {
			unix.Close(fd)
		}
	})
	if attach {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			t.Fatal(err)
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			t.Fatalf("TUNSETIFF %s flags %#x: %v", name, flags, err)
		}
	}
	return fd, func() { owned = false }
}

// readPacket reads the devices (queues of one TUN) in turn until match
// accepts a packet, skipping the kernel's own chatter such as IPv6 router
// solicitations, or fails the test after timeout.
func readPacket(t *testing.T, devs []Device, timeout time.Duration, match func([]byte) bool) []byte {
	t.Helper()
	var skipped []string
	buf := make([]byte, 65535)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		for _, dev := range devs {
			// A short deadline per queue: only one gets the packet.
			f := dev.(*file).f
			if err := f.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
				t.Fatalf("SetReadDeadline: %v (is the descriptor in Go's poller?)", err)
			}
			for {
				n, err := readComplete(dev, buf)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if match(buf[:n]) {
					f.SetReadDeadline(time.Time{})
					return slices.Clone(buf[:n])
				}
				skipped = append(skipped, fmt.Sprintf("%x", buf[:min(n, 48)]))
			}
			f.SetReadDeadline(time.Time{})
		}
	}
	t.Fatalf("no matching packet within %v (skipped %d: %v; kernel counters: %s)", timeout, len(skipped), skipped, snmpCounters())
	return nil
}

// snmpCounters returns the non-zero IP and ICMP counters of this thread's
// network namespace, to tell why the kernel dropped a packet.
func snmpCounters() string {
	var out []string
	for _, file := range []string{"snmp", "snmp6"} {
		b, _ := os.ReadFile("/proc/thread-self/net/" + file)
		lines := strings.Split(string(b), "\n")
		if file == "snmp" {
			// Header and value lines alternate: "Ip: Forwarding ..." / "Ip: 2 ...".
			for i := 0; i+1 < len(lines); i += 2 {
				names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				for j := 1; j < len(names) && j < len(values); j++ {
					if values[j] != "0" && (names[0] == "Ip:" || names[0] == "Icmp:") {
						out = append(out, strings.TrimSuffix(names[0], ":")+names[j]+"="+values[j])
					}
				}
			}
			continue
		}
		for _, l := range lines {
			if f := strings.Fields(l); len(f) == 2 && f[1] != "0" {
				out = append(out, f[0]+"="+f[1])
			}
		}
	}
	return strings.Join(out, " ")
}

func TestOpenConfigureEcho(t *testing.T) {
	inNewNetns(t)
	dev := mustOpen(t, Options{})
	if got := dev.Name(); got != "vr0" {
		t.Fatalf("Open(Options{}).Name() = %q, want %q", got, "vr0")
	}
	cfg := seedConfig()
	if err := Configure("vr0", cfg); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	checkLink(t, "vr0", cfg)

	// Configure again, as a reload would: no error, nothing doubled.
	if err := Configure("vr0", cfg); err != nil {
		t.Fatalf("second Configure: %v", err)
	}
	checkLink(t, "vr0", cfg)

	// The kernel answers a remote pod's ping to the node address, and
	// routes the answer back into vr0.
	checkEcho4(t, dev, podAddr4, nodeAddr4.Addr())
	checkEcho6(t, dev, podAddr6, nodeAddr6.Addr())
}

// TestReadTruncates checks the Device contract on a real TUN: a packet
// longer than Read's buffer comes back cut to the buffer, and the rest of
// it is gone rather than returned by the next Read.
func TestReadTruncates(t *testing.T) {
	inNewNetns(t)
	dev := mustOpen(t, Options{})
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	big := bytes.Repeat([]byte("x"), 1000)
	if _, err := writePlain(dev, echo4(podAddr4, nodeAddr4.Addr(), 0x7672, 7, big)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	f := dev.(*file).f
	f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer f.SetReadDeadline(time.Time{})
	small := make([]byte, 64)
	for {
		n, err := readComplete(dev, small)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if small[0]>>4 == 4 && small[9] == 1 && small[20] == 0 { // the echo reply
			if n != len(small) {
				t.Errorf("Read(64-byte buffer) of a %d-byte reply = %d, want 64", 20+8+len(big), n)
			}
			if got := binary.BigEndian.Uint16(small[2:]); got != 1028 {
				t.Errorf("reply total length field = %d, want 1028", got)
			}
			break
		}
	}
	// The next packet is the next reply, whole.
	checkEcho4(t, dev, podAddr4, nodeAddr4.Addr())
}

// checkLink asserts, through netlink, that name is up and has c's MTU,
// addresses and routes, each route once.
func checkLink(t *testing.T, name string, c LinkConfig) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%q): %v", name, err)
	}
	attrs := link.Attrs()
	if attrs.MTU != c.MTU {
		t.Errorf("%s MTU = %d, want %d", name, attrs.MTU, c.MTU)
	}
	if attrs.Flags&net.FlagUp == 0 {
		t.Errorf("%s flags = %v, want up", name, attrs.Flags)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("AddrList(%s): %v", name, err)
	}
	var gotAddrs []netip.Prefix
	for _, a := range addrs {
		p, _ := prefixOf(a.IPNet)
		addr, _ := netip.AddrFromSlice(a.IP)
		gotAddrs = append(gotAddrs, netip.PrefixFrom(addr.Unmap(), p.Bits()))
	}
	for _, want := range c.Addresses {
		if n := count(gotAddrs, want); n != 1 {
			t.Errorf("%s has address %s %d times, want once (addresses: %v)", name, want, n, gotAddrs)
		}
	}
	routes := ourRoutes(t, name)
	for _, want := range c.Routes {
		r, ok := routes[want]
		if !ok {
			t.Errorf("%s: no route %s proto %d (routes: %v)", name, want, RouteProtocol, routes)
			continue
		}
		if r.Table != unix.RT_TABLE_MAIN {
			t.Errorf("route %s table = %d, want main (%d)", want, r.Table, unix.RT_TABLE_MAIN)
		}
		if want.Addr().Is4() && r.Scope != netlink.SCOPE_LINK {
			t.Errorf("route %s scope = %v, want link", want, r.Scope)
		}
	}
	if len(routes) != len(c.Routes) {
		t.Errorf("%s has %d routes with proto %d, want %d: %v", name, len(routes), RouteProtocol, len(c.Routes), routes)
	}
}

func count[T comparable](s []T, v T) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// ourRoutes lists the routes via name carrying RouteProtocol, in any
// table, keyed by destination.
func ourRoutes(t *testing.T, name string) map[netip.Prefix]netlink.Route {
	t.Helper()
	return routesVia(t, name, func(r netlink.Route) bool { return r.Protocol == RouteProtocol })
}

func routesVia(t *testing.T, name string, keep func(netlink.Route) bool) map[netip.Prefix]netlink.Route {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%q): %v", name, err)
	}
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("RouteListFiltered(dev %s): %v", name, err)
	}
	m := make(map[netip.Prefix]netlink.Route)
	for _, r := range rs {
		if p, ok := prefixOf(r.Dst); ok && keep(r) {
			m[p] = r
		}
	}
	return m
}

func TestSyncRoutes(t *testing.T) {
	inNewNetns(t)
	mustOpen(t, Options{})
	// An address whose prefix route the kernel makes (proto kernel).
	kernelAddr := netip.MustParsePrefix("10.244.0.1/24")
	if err := Configure("vr0", LinkConfig{
		Addresses: []netip.Prefix{kernelAddr, nodeAddr6},
		MTU:       1400,
		Routes:    []netip.Prefix{clusterCIDR4, serviceCIDR4, clusterCIDR6},
	}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	// A route an operator added by hand (proto static) on the same device.
	link, err := netlink.LinkByName("vr0")
	if err != nil {
		t.Fatal(err)
	}
	operator := netip.MustParsePrefix("192.0.2.0/24")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(operator),
		Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatalf("RouteAdd(%s proto static): %v", operator, err)
	}
	// The kernel's own routes, but for the link-local address's host
	// route, which IPv6 autoconfiguration adds when it gets to it (seen
	// after the first listing on a loaded machine).
	linkLocal := netip.MustParsePrefix("fe80::/10")
	others := func() map[netip.Prefix]netlink.Route {
		return routesVia(t, "vr0", func(r netlink.Route) bool {
			if r.Protocol == RouteProtocol {
				return false
			}
			if r.Dst == nil {
				return true
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, bits := r.Dst.Mask.Size()
			return ones != 128 || bits != 128 || !linkLocal.Contains(a)
		})
	}
	before := others()
	if _, ok := before[kernelAddr.Masked()]; !ok {
		t.Fatalf("no kernel prefix route %s to test against: %v", kernelAddr.Masked(), before)
	}
	t.Logf("routes on vr0 SyncRoutes must not touch: %v", keys(before))

	newService4 := netip.MustParsePrefix("10.100.0.0/16")
	for _, want := range [][]netip.Prefix{
		{serviceCIDR4, serviceCIDR6, newService4}, // keep one, drop two, add two
		{serviceCIDR4, serviceCIDR6, newService4}, // again: nothing to do
		{serviceCIDR4, serviceCIDR4},              // duplicates are one route
		nil,                                       // remove all of ours
		{clusterCIDR6},
	} {
		if err := SyncRoutes("vr0", want); err != nil {
			t.Fatalf("SyncRoutes(%v): %v", want, err)
		}
		got := keys(ourRoutes(t, "vr0"))
		wantSet := slices.Compact(slices.SortedFunc(slices.Values(want), netip.Prefix.Compare))
		if !slices.Equal(got, wantSet) {
			t.Errorf("after SyncRoutes(%v): routes with proto %d = %v, want %v", want, RouteProtocol, got, wantSet)
		}
		if after := keys(others()); !slices.Equal(after, keys(before)) {
			t.Errorf("after SyncRoutes(%v): other routes on vr0 = %v, want them untouched: %v", want, after, keys(before))
		}
	}

	if err := SyncRoutes("vr0", []netip.Prefix{netip.MustParsePrefix("10.96.1.0/12")}); err == nil ||
		!strings.Contains(err.Error(), "want[0] 10.96.1.0/12: host bits are set") {
		t.Errorf("SyncRoutes(10.96.1.0/12) = %v, want an error naming want[0] and its host bits", err)
	}
}

func keys(m map[netip.Prefix]netlink.Route) []netip.Prefix {
	return slices.SortedFunc(func(yield func(netip.Prefix) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}, netip.Prefix.Compare)
}

func TestConfigureRefuses(t *testing.T) {
	inNewNetns(t)
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "uplink0"}}); err != nil {
		t.Fatalf("add bridge uplink0: %v", err)
	}
	for _, tc := range []struct {
		name string
		c    LinkConfig
		want string
	}{
		{"vr0", seedConfig(), "configure TUN vr0: no interface vr0 in this network namespace"},
		{"uplink0", seedConfig(), "configure TUN uplink0: interface uplink0 is a bridge device, not a TUN; refusing to configure it"},
		{"vr0", LinkConfig{MTU: 10}, "configure TUN vr0: LinkConfig.MTU 10"},
	} {
		err := Configure(tc.name, tc.c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Configure(%q, %+v) = %v, want an error containing %q", tc.name, tc.c, err, tc.want)
		}
	}
	if err := SyncRoutes("uplink0", nil); err == nil || !strings.Contains(err.Error(), "not a TUN") {
		t.Errorf("SyncRoutes(uplink0) = %v, want a refusal", err)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	inNewNetns(t)
	for _, how := range []string{"Open", "Adopt"} {
		var dev Device
		switch how {
		case "Open":
			dev = mustOpen(t, Options{})
		case "Adopt":
			fd, release := rawTUN(t, "vr1", unix.IFF_TUN|unix.IFF_NO_PI, true)
			var err error
			if dev, err = Adopt(fd, "vr1"); err != nil {
				t.Fatalf("Adopt: %v", err)
			}
			release()
		}
		name := dev.Name()
		// The device is down, so nothing arrives and Read blocks.
		errc := make(chan error, 1)
		go func() {
			_, err := readComplete(dev, make([]byte, 1500))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond) // let Read block; the test is valid either way
		if err := dev.Close(); err != nil {
			t.Fatalf("%s: Close: %v", how, err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("%s: pending Read after Close = %v, want an error wrapping os.ErrClosed", how, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Read still blocked 5s after Close: the descriptor is not in Go's poller", how)
		}
		if err := dev.Close(); err != nil {
			t.Errorf("%s: second Close = %v, want nil", how, err)
		}
		if _, err := readComplete(dev, make([]byte, 10)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s: Read after Close = %v, want os.ErrClosed", how, err)
		}
		if _, err := writePlain(dev, echo4(podAddr4, nodeAddr4.Addr(), 1, 1, nil)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s: Write after Close = %v, want os.ErrClosed", how, err)
		}
		// Closing the last queue of a non-persistent TUN deletes it.
		if _, err := netlink.LinkByName(name); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("%s: LinkByName(%q) after Close = %v, want not found", how, name, err)
		}
	}
}

// TestDescriptorFlags checks what the Devices' descriptors look like to
// the kernel: close-on-exec (no child inherits the TUN and keeps it
// alive) and non-blocking (Read parks in the poller).
func TestDescriptorFlags(t *testing.T) {
	inNewNetns(t)
	opened := mustOpen(t, Options{})
	fd, release := rawTUN(t, "vr1", unix.IFF_TUN|unix.IFF_NO_PI, true)
	adopted, err := Adopt(fd, "")
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	release()
	defer adopted.Close()
	for _, dev := range []Device{opened, adopted} {
		sc, ok := dev.(syscall.Conn)
		if !ok {
			t.Fatalf("%s: %T does not implement syscall.Conn", dev.Name(), dev)
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			t.Fatalf("%s: SyscallConn: %v", dev.Name(), err)
		}
		var fdFlags, flFlags int
		var ctlErr error
		rc.Control(func(fd uintptr) {
			if fdFlags, ctlErr = unix.FcntlInt(fd, unix.F_GETFD, 0); ctlErr == nil {
				flFlags, ctlErr = unix.FcntlInt(fd, unix.F_GETFL, 0)
			}
		})
		if ctlErr != nil {
			t.Fatalf("%s: fcntl: %v", dev.Name(), ctlErr)
		}
		if fdFlags&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: descriptor flags %#x lack FD_CLOEXEC", dev.Name(), fdFlags)
		}
		if flFlags&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: file status flags %#x lack O_NONBLOCK", dev.Name(), flFlags)
		}
	}
}

func TestOpenNameTaken(t *testing.T) {
	inNewNetns(t)

	// A single-queue TUN held open here: a second Open is refused.
	mustOpen(t, Options{})
	_, err := Open(Options{})
	wantErr(t, "second Open(vr0)", err, ErrBusy, "create TUN vr0: interface name in use: TUN vr0 is in use by another process")

	// An interface of another kind has the name.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatalf("add bridge br0: %v", err)
	}
	_, err = Open(Options{Name: "br0"})
	wantErr(t, "Open(br0)", err, ErrBusy, "an interface br0 of type bridge already exists: delete it (ip link del br0) or choose another name")

	// A multiqueue TUN cannot be attached to as single-queue.
	mustOpen(t, Options{Name: "mq0", MultiQueue: true})
	_, err = Open(Options{Name: "mq0"})
	wantErr(t, "Open(mq0 single-queue)", err, ErrBusy, "TUN mq0 exists with multiqueue on but MultiQueue is false")

	// A TAP of the name.
	rawTUN(t, "tap0", unix.IFF_TAP|unix.IFF_NO_PI, true)
	_, err = Open(Options{Name: "tap0"})
	wantErr(t, "Open(tap0)", err, ErrBusy, "tap0 is a TAP device")

	_, err = Open(Options{Name: "a-name-too-long-for-linux"})
	if err == nil || !strings.Contains(err.Error(), `create TUN: Options.Name: interface name "a-name-too-long-for-linux" is 25 bytes; the kernel allows at most 15`) {
		t.Errorf("Open(long name) = %v, want an error naming Options.Name and the limit", err)
	}
}

func wantErr(t *testing.T, call string, err, target error, text string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want an error wrapping %v", call, target)
		return
	}
	t.Logf("%s: %v", call, err)
	if !errors.Is(err, target) {
		t.Errorf("%s = %q, want errors.Is(_, %v)", call, err, target)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("%s = %q, want it to contain %q", call, err, text)
	}
}

func TestOpenQueues(t *testing.T) {
	inNewNetns(t)
	queues, err := OpenQueues(Options{Name: "vr0"}, 2)
	if err != nil {
		t.Fatalf("OpenQueues(vr0, 2): %v", err)
	}
	for _, q := range queues {
		t.Cleanup(func() { q.Close() })
	}
	// Open with MultiQueue attaches one more queue.
	third := mustOpen(t, Options{Name: "vr0", MultiQueue: true})
	if third.Name() != "vr0" {
		t.Errorf("third queue Name() = %q, want vr0", third.Name())
	}
	link, err := netlink.LinkByName("vr0")
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tt.Queues != 3 {
		t.Fatalf("vr0 = %#v, want a multiqueue TUN with 3 queues", link)
	}
	// Every queue carries traffic: a reply comes back on one of them.
	if err := Configure("vr0", seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	checkEcho4Any(t, append(queues, third), podAddr4, nodeAddr4.Addr())

	if _, err := OpenQueues(Options{Name: "vr9"}, 0); err == nil {
		t.Errorf("OpenQueues(vr9, 0) succeeded, want an error")
	}
}

// TestOpenKeepsPersistence: an operator made vr0 persistent (ip tuntap add
// vr0 mode tun), so that vrouter attaches to it; closing the Device must
// not delete it, which water's TUNSETPERSIST 0 would do.
func TestOpenKeepsPersistence(t *testing.T) {
	inNewNetns(t)
	pre := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "vr0"}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}
	if err := netlink.LinkAdd(pre); err != nil {
		t.Fatalf("create persistent TUN vr0: %v", err)
	}
	for _, f := range pre.Fds {
		f.Close()
	}
	dev, err := Open(Options{})
	if err != nil {
		t.Fatalf("Open(vr0) on a persistent TUN: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("vr0")
	if err != nil {
		t.Fatalf("LinkByName(vr0) after Close: %v, want the persistent TUN still there", err)
	}
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.NonPersist {
		t.Errorf("vr0 after Close = %#v, want still persistent", link)
	}
}

// TestOpenWithoutCapNetAdmin drops CAP_NET_ADMIN from one thread (Linux
// capabilities are per thread) and checks the message a user sees.
func TestOpenWithoutCapNetAdmin(t *testing.T) {
	needRoot(t)
	errc := make(chan error, 1)
	go func() {
		// This thread's credentials get changed for good: never unlock, so
		// the runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			errc <- fmt.Errorf("netns.New: %w", err)
			return
		}
		defer ns.Close()
		if err := dropCap(unix.CAP_NET_ADMIN); err != nil {
			errc <- err
			return
		}
		dev, err := Open(Options{})
		if err == nil {
			dev.Close()
			errc <- errors.New("Open without CAP_NET_ADMIN succeeded")
			return
		}
		errc <- err
	}()
	wantErr(t, "Open without CAP_NET_ADMIN", <-errc, ErrPermission,
		"create TUN vr0: permission denied: creating TUN vr0 needs CAP_NET_ADMIN in this network namespace; run as root, inside `unshare -Urn`, or let a privileged helper open it and pass --tun-fd")
}

// TestConfigureWithoutCapNetAdmin: the device exists, but whoever calls
// Configure may not change it (a helper made it and vrouter runs
// unprivileged with configuration left on).
func TestConfigureWithoutCapNetAdmin(t *testing.T) {
	needRoot(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread loses a capability
		ns, err := netns.New()
		if err != nil {
			errc <- fmt.Errorf("netns.New: %w", err)
			return
		}
		defer ns.Close()
		dev, err := Open(Options{})
		if err != nil {
			errc <- err
			return
		}
		defer dev.Close()
		if err := dropCap(unix.CAP_NET_ADMIN); err != nil {
			errc <- err
			return
		}
		err = Configure("vr0", seedConfig())
		if err == nil {
			err = errors.New("Configure without CAP_NET_ADMIN succeeded")
		}
		errc <- err
	}()
	wantErr(t, "Configure without CAP_NET_ADMIN", <-errc, ErrPermission,
		"configure TUN vr0: set MTU 1400: permission denied: this needs CAP_NET_ADMIN in the network namespace")
}

// TestOpenDevNetTunNotAccessible opens /dev/net/tun as an unprivileged
// filesystem user (setfsuid is per thread).
func TestOpenDevNetTunNotAccessible(t *testing.T) {
	needRoot(t)
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o006 == 0o006 {
		t.Skipf("/dev/net/tun is %v: every user may open it here", st.Mode())
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's fsuid changes
		unix.Setfsuid(65534)
		dev, err := Open(Options{})
		if err == nil {
			dev.Close()
			errc <- errors.New("Open as fsuid 65534 succeeded")
			return
		}
		errc <- err
	}()
	wantErr(t, "Open as an unprivileged user", <-errc, ErrPermission, "cannot open /dev/net/tun: run as root")
}

func dropCap(c uintptr) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[c/32].Effective &^= 1 << (c % 32)
	data[c/32].Permitted &^= 1 << (c % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

func TestAdopt(t *testing.T) {
	inNewNetns(t)
	fd, release := rawTUN(t, "helper0", unix.IFF_TUN|unix.IFF_NO_PI, true)

	// A wrong name is refused, and the descriptor stays the caller's.
	_, err := Adopt(fd, "vr0")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("adopt TUN fd %d: it is TUN helper0, not vr0", fd)) {
		t.Errorf("Adopt(fd, vr0) = %v, want it to name both interfaces", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("descriptor after a refused Adopt: %v, want it still open", err)
	}

	// No name: the descriptor's.
	dev, err := Adopt(fd, "")
	if err != nil {
		t.Fatalf("Adopt(fd, \"\"): %v", err)
	}
	release()
	t.Cleanup(func() { dev.Close() })
	if got := dev.Name(); got != "helper0" {
		t.Errorf("Adopt(fd, \"\").Name() = %q, want %q", got, "helper0")
	}
	if err := Configure(dev.Name(), seedConfig()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	checkEcho4(t, dev, podAddr4, nodeAddr4.Addr())
	checkEcho6(t, dev, podAddr6, nodeAddr6.Addr())

	// Naming it right works too.
	fd2, release2 := rawTUN(t, "helper1", unix.IFF_TUN|unix.IFF_NO_PI, true)
	dev2, err := Adopt(fd2, "helper1")
	if err != nil {
		t.Fatalf("Adopt(fd, helper1): %v", err)
	}
	release2()
	dev2.Close()
}

func TestAdoptRefuses(t *testing.T) {
	inNewNetns(t)
	for _, tc := range []struct {
		desc   string
		name   string
		flags  uint16
		attach bool
		want   string
	}{
		{"TAP", "tap0", unix.IFF_TAP | unix.IFF_NO_PI, true, "it is TAP device tap0 (Ethernet frames); vrouter needs a TUN (IFF_TUN) carrying IP packets"},
		{"no IFF_NO_PI", "pi0", unix.IFF_TUN, true, "TUN pi0 was opened without IFF_NO_PI, so every packet carries a 4-byte packet-information header; the helper must open it with IFF_TUN|IFF_NO_PI"},
		{"IFF_VNET_HDR without IFF_NO_PI", "vnet0", unix.IFF_TUN | unix.IFF_VNET_HDR, true, "TUN vnet0 was opened without IFF_NO_PI"},
		{"not attached", "", 0, false, "it is /dev/net/tun but not attached to an interface: the helper must call TUNSETIFF"},
	} {
		fd, _ := rawTUN(t, tc.name, tc.flags, tc.attach)
		dev, err := Adopt(fd, "")
		if err == nil {
			dev.Close()
		}
		wantErr(t, fmt.Sprintf("%s: Adopt(fd %d)", tc.desc, fd), err, ErrNotTUN, tc.want)
	}
}

// checkEcho4 writes an ICMP echo request from src to the node address dst
// into dev and expects the kernel's echo reply back out of it.
func checkEcho4(t *testing.T, dev Device, src, dst netip.Addr) {
	t.Helper()
	checkEcho4Any(t, []Device{dev}, src, dst)
}

func checkEcho4Any(t *testing.T, devs []Device, src, dst netip.Addr) {
	t.Helper()
	payload := []byte("vrouter tun test v4")
	if _, err := writePlain(devs[0], echo4(src, dst, 0x7672, 1, payload)); err != nil {
		t.Fatalf("Write(echo request %s > %s): %v", src, dst, err)
	}
	isReply := func(p []byte) bool {
		return len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && // ICMP
			netip.AddrFrom4([4]byte(p[12:16])) == dst && netip.AddrFrom4([4]byte(p[16:20])) == src &&
			p[20] == 0 // echo reply
	}
	reply := readPacket(t, devs, 5*time.Second, isReply)
	ihl := int(reply[0]&0xf) * 4
	icmp := reply[ihl:]
	if inetChecksum(reply[:ihl], 0) != 0 || inetChecksum(icmp, 0) != 0 {
		t.Errorf("echo reply %x has a bad checksum", reply)
	}
	if id, seq := binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:]); id != 0x7672 || seq != 1 {
		t.Errorf("echo reply id %#x seq %d, want %#x seq 1", id, seq, 0x7672)
	}
	if !bytes.Equal(icmp[8:], payload) {
		t.Errorf("echo reply payload %q, want %q", icmp[8:], payload)
	}
}

func checkEcho6(t *testing.T, dev Device, src, dst netip.Addr) {
	t.Helper()
	payload := []byte("vrouter tun test v6")
	if _, err := writePlain(dev, echo6(src, dst, 0x7672, 2, payload)); err != nil {
		t.Fatalf("Write(echo request %s > %s): %v", src, dst, err)
	}
	reply := readPacket(t, []Device{dev}, 5*time.Second, func(p []byte) bool {
		return len(p) >= 48 && p[0]>>4 == 6 && p[6] == 58 && // ICMPv6
			netip.AddrFrom16([16]byte(p[8:24])) == dst && netip.AddrFrom16([16]byte(p[24:40])) == src &&
			p[40] == 129 // echo reply
	})
	icmp := reply[40:]
	if inetChecksum(icmp, pseudo6(dst, src, len(icmp))) != 0 {
		t.Errorf("echo reply %x has a bad checksum", reply)
	}
	if id, seq := binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:]); id != 0x7672 || seq != 2 {
		t.Errorf("echo reply id %#x seq %d, want %#x seq 2", id, seq, 0x7672)
	}
	if !bytes.Equal(icmp[8:], payload) {
		t.Errorf("echo reply payload %q, want %q", icmp[8:], payload)
	}
}

// echo4 builds an IPv4 ICMP echo request.
func echo4(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	p := make([]byte, 20+8+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000) // DF
	p[8] = 64                                 // TTL
	p[9] = 1                                  // ICMP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20], 0))
	icmp := p[20:]
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, 0))
	return p
}

// echo6 builds an IPv6 ICMPv6 echo request.
func echo6(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	p := make([]byte, 40+8+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(8+len(payload)))
	p[6] = 58 // ICMPv6
	p[7] = 64 // hop limit
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	icmp := p[40:]
	icmp[0] = 128 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, pseudo6(src, dst, len(icmp))))
	return p
}

// pseudo6 is the unfolded sum of the IPv6 pseudo-header for ICMPv6.
func pseudo6(src, dst netip.Addr, n int) uint32 {
	var sum uint32
	s, d := src.As16(), dst.As16()
	for i := 0; i < 16; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(s[i:])) + uint32(binary.BigEndian.Uint16(d[i:]))
	}
	return sum + uint32(n) + 58
}
