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
//	vrouter routes|peers|services|conns   a running router's state
//	vrouter log-level [LEVEL]         print or set a running router's log level
//	vrouter capture --nic tun         a running router's packets, as pcap
//	vrouter version
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
		{"routes", "print a running router's route table", routesCmd},
		{"peers", "print a running router's peers", peersCmd},
		{"services", "print a running router's Services and their endpoints", servicesCmd},
		{"conns", "print the connections a running router load-balances", connsCmd},
		{"log-level", "print or set a running router's log level", logLevelCmd},
		{"capture", "capture a running router's packets to a pcap file", captureCmd},
		{"version", "print the version", versionCmd},
	}
}

func main() {
	os.Exit(mainWithArgs(os.Args[1:], os.Stdout, os.Stderr))
}

func mainWithArgs(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
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

func usage(w io.Writer) {
	fmt.Fprintln(w, "vrouter — a userspace pod router and Service load balancer on gVisor netstack")
	fmt.Fprintln(w, "\nUsage: vrouter <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'vrouter <command> -h' for a command's flags.")
}

// usageErrorf wraps a command-line mistake.
func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
