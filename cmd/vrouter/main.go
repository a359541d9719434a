// Command vrouter is a userspace virtual router for Kubernetes pod networks:
// one per node, it forwards pod subnets between nodes over a UDP overlay
// and load-balances Services, inside a gVisor TCP/IP stack attached to a
// TUN device.
//
// Usage:
//
//	vrouter run --config node.yaml    route this node's pods
//	vrouter validate node.yaml ...    check config files
//	vrouter demo                      the seed's two-node cluster in namespaces
//	vrouter status|routes|peers|services|conns   a running router's state
//	vrouter ping PEER|POD-IP          probe a peer through a running router's overlay
//	vrouter log-level [LEVEL]         print or set a running router's log level
//	vrouter capture --nic tun         a running router's packets, as pcap
//	vrouter version                   (or vrouter --version)
//
// -h on any command prints its usage to stdout.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// errUsage marks command-line mistakes: they exit 2 after the usage text.
var errUsage = errors.New("usage")

// errFlags marks flags the flag package refused. It has printed the error
// and the usage already; they exit 2.
var errFlags = errors.New("bad flags")

// parseFlags parses args with fs; a refused flag comes back as errFlags,
// a help request as flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %w", errFlags, err)
}

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the router for this node", runCmd},
		{"validate", "check config files and print what they configure", validateCmd},
		{"demo", "build the seed's two-node cluster in network namespaces and show it working", demoCmd},
		{"publish", "publish a rootless router's node ports on this namespace's addresses", publishCmd},
		{"status", "print a running router at a glance", statusCmd},
		{"routes", "print a running router's route table", routesCmd},
		{"peers", "print a running router's peers", peersCmd},
		{"services", "print a running router's Services and their endpoints", servicesCmd},
		{"conns", "print or delete the connections a running router load-balances", connsCmd},
		{"ping", "probe a peer router through the overlay: round trip and path MTU", pingCmd},
		{"log-level", "print or set a running router's log level", logLevelCmd},
		{"capture", "capture a running router's packets to a pcap file", captureCmd},
		{"genkey", "print a new WireGuard private key (as wg genkey)", genkeyCmd},
		{"pubkey", "print the public key of the private key on stdin (as wg pubkey)", pubkeyCmd},
		{"version", "print the version", versionCmd},
	}
}

func main() {
	os.Exit(mainWithArgs(os.Args[1:], os.Stdout, os.Stderr))
}

func mainWithArgs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-version", "--version":
		args = []string{"version"}
	case "help": // vrouter help [COMMAND]
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		args = []string{args[1], "-h"}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		// Asked for, a command's usage is its output: stdout, exit 0.
		// A mistake's usage stays on stderr.
		errOut := stderr
		if helpRequested(args[1:]) {
			errOut = stdout
		}
		err := c.run(args[1:], stdout, errOut)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errFlags):
			return 2
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "vrouter %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "vrouter %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "vrouter: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// helpRequested reports whether a command's arguments ask for its usage:
// -h, -help or --help before any "--".
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "vrouter — a userspace pod router and Service load balancer on gVisor netstack")
	fmt.Fprintln(w, "\nUsage: vrouter <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'vrouter <command> -h' for a command's flags; 'vrouter --version' for the version.")
}

// usageErrorf wraps a command-line mistake.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
