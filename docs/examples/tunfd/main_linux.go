package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/tun"
)

// tunFD is the descriptor the command finds the device on.
const tunFD = 3

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tunfd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("tunfd", flag.ContinueOnError)
	var (
		name   = fs.String("name", "vr0", "the TUN device's name: the router's tun.name")
		addrs  = fs.String("addresses", "", "comma-separated addresses of the node kernel on the device, with prefix length (10.244.1.0/32)")
		mtu    = fs.Int("mtu", 0, "the device's MTU: the router's overlay.mtu (0 leaves the kernel's default)")
		routes = fs.String("routes", "", "comma-separated destinations the kernel routes into the device (10.244.0.0/16,10.96.0.0/12)")
		user   = fs.String("user", "", "UID:GID to run the command as (empty: stay as we are)")
	)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: tunfd [flags] -- COMMAND [ARGS...]   (COMMAND gets the device as fd 3, e.g. vrouter run --config FILE --tun-fd 3)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("no command: want -- vrouter run --config FILE --tun-fd 3")
	}
	lc := tun.LinkConfig{MTU: *mtu}
	var err error
	if lc.Addresses, err = prefixes("--addresses", *addrs); err != nil {
		return err
	}
	if lc.Routes, err = prefixes("--routes", *routes); err != nil {
		return err
	}
	uid, gid, err := ids(*user)
	if err != nil {
		return err
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}

	dev, err := tun.Open(tun.Options{Name: *name})
	if err != nil {
		return err
	}
	if err := tun.Configure(dev.Name(), lc); err != nil {
		dev.Close()
		return err
	}
	// Put the device on fd 3 without close-on-exec. dev's own descriptor
	// has close-on-exec, so the command holds exactly one.
	rc, err := dev.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var dupErr error
	if err := rc.Control(func(fd uintptr) { dupErr = unix.Dup3(int(fd), tunFD, 0) }); err != nil {
		return err
	}
	if dupErr != nil {
		return fmt.Errorf("dup the TUN onto fd %d: %w", tunFD, dupErr)
	}
	if uid >= 0 {
		// Go applies these to every thread of the process. Leaving root
		// for another user clears every capability.
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("setgid %d: %w", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("setuid %d: %w", uid, err)
		}
	}
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("execute %s as uid %d: %w", path, os.Getuid(), err)
	}
	return nil // not reached: Exec replaced this program
}

// prefixes parses the comma-separated prefixes of flag name.
func prefixes(name, s string) ([]netip.Prefix, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%s %q: %q is not a prefix (want e.g. 10.244.0.0/16)", name, s, f)
		}
		out = append(out, p)
	}
	return out, nil
}

// ids parses --user UID:GID; -1, -1 for "".
func ids(s string) (uid, gid int, err error) {
	if s == "" {
		return -1, -1, nil
	}
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("--user %q: want numeric UID:GID, e.g. 65534:65534", s)
	}
	return uid, gid, nil
}
