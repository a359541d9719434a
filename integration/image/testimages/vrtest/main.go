package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUsage marks command-line mistakes: they exit 2.
var errUsage = errors.New("usage")

type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, env environ, args []string) error
}

// environ is what a command may touch of its process, so tests can run
// commands in-process.
type environ struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func commands() []command {
	return []command{
		{"serve", "[--http :8080] [--tcp :9000] [--udp :9001]", "HTTP, TCP echo and UDP echo servers", serveCmd},
		{"dns", "[--domain cluster.local] [--listen :53] [--health :8080]", "DNS for Services", dnsCmd},
		{"get", "URL [--timeout 5s] [--cacert FILE]", "HTTP GET, print the body", getCmd},
		{"tcp", "ADDR MSG [--timeout 5s]", "one line to a TCP echo, print the reply", tcpCmd},
		{"udp", "ADDR MSG [--timeout 5s]", "one datagram to a UDP echo, print the reply", udpCmd},
		{"udpburst", "ADDR [--count 20] [--size 1000] [--timeout 5s]", "datagrams to a UDP echo in one UDP_SEGMENT write; wait for every one back", udpBurstCmd},
		{"resolve", "NAME [--server IP:53] [--tcp] [--type A|AAAA]", "print NAME's addresses", resolveCmd},
		{"ping", "ADDR [-c 3] [--timeout 2s]", "ICMP echo from a ping socket, print each reply", pingCmd},
		{"hold", "ADDR [--interval 200ms] [--duration 10s]", "keep one TCP echo connection busy", holdCmd},
		{"unready", "[--file /tmp/unready]", "make serve's /healthz fail", unreadyCmd},
		{"ready", "[--file /tmp/unready]", "make serve's /healthz pass again", readyCmd},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, environ{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, env environ, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(env.stderr, "vrtest %s: %v\nusage: vrtest %s %s\n", c.name, err, c.name, c.args)
			return 2
		default:
			fmt.Fprintf(env.stderr, "vrtest %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(env.stderr, "vrtest: unknown command %q\n\n", args[0])
	usage(env.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: vrtest COMMAND [ARGS]")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %-50s %s\n", c.name, c.args, c.summary)
	}
}

// parseFlags parses args with fs, allowing flags after the positional
// arguments (vrtest get URL --timeout 2s), and checks there are npos
// positional arguments.
func parseFlags(fs *flag.FlagSet, env environ, args []string, npos int) ([]string, error) {
	fs.SetOutput(env.stderr)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != npos {
		return nil, fmt.Errorf("%w: %d arguments %q, want %d", errUsage, len(pos), pos, npos)
	}
	return pos, nil
}
