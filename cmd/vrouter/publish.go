package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/publish"
)

func publishCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		socket     = fs.String("socket", "", "the unix socket to serve (required; its directory must exist): vrouter run --publish-socket names the same path")
		ports      = fs.String("ports", publish.NodePortRange.String(), "the ports it binds: ports and ranges, comma-separated (30000-32767,8080)")
		addrs      = fs.String("addresses", "", "the only addresses it binds, comma-separated, as addresses or prefixes (127.0.0.1,192.168.1.0/24); \"\" means any address this namespace can bind")
		privileged = fs.Bool("allow-privileged", false, "bind ports below 1024 that --ports lists (the kernel asks for CAP_NET_BIND_SERVICE or a lower net.ipv4.ip_unprivileged_port_start too)")
		lf         logFlags
	)
	lf.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter publish --socket PATH [--ports 30000-32767] [--addresses LIST] [--allow-privileged]

Publishes a rootless router's node ports on this network namespace's
addresses, until SIGINT or SIGTERM. Run it, unprivileged, in the namespace
that should answer (the host's); start vrouter in the node's user and
network namespace with --publish-socket PATH. For each node port, the router
asks here for a socket: this command binds it here and passes its file
descriptor to the router, which accepts on it in its own namespace. It keeps
nothing: a socket lives as long as the router holds it.

Flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	if *socket == "" {
		return usageErrorf("--socket is required")
	}
	var opts publish.Options
	var err error
	if opts.Ports, err = publish.ParsePorts(*ports); err != nil {
		return usageErrorf("--%v", err)
	}
	if *addrs != "" {
		if opts.Addrs, err = publish.ParseAddrs(*addrs); err != nil {
			return usageErrorf("--%v", err)
		}
	}
	opts.AllowPrivileged = *privileged
	log, _, err := lf.build()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	log = log.Named("publish")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := publish.Listen(*socket, log, opts)
	if err != nil {
		return err
	}
	log.Info("publishing node ports", zap.String("socket", s.Path()), zap.String("ports", *ports),
		zap.String("addresses", *addrs), zap.Bool("allow_privileged", *privileged))
	err = s.Serve(ctx)
	log.Info("stopped", zap.NamedError("reason", context.Cause(ctx)))
	return err
}
