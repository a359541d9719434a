package main

// The status commands: clients of a running router's admin API.
//
//	vrouter status         the router at a glance
//	vrouter routes [-v]    the route table, as `ip route` prints it
//	vrouter peers          peer routers, last seen, counters
//	vrouter services       Services as `kubectl get svc`, then their endpoints
//	vrouter conns          nat flows and proxied connections; --delete
//	vrouter ping PEER|IP   probe a peer through the overlay: round trip, path MTU
//	vrouter log-level [L]  print or set the log level
//	vrouter capture        packets crossing a NIC, as a pcap file
//
// Each takes --socket (default: the socket of this network namespace's
// router, admin.DefaultSocket) and, except capture, -o json.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/admin"
	"github.com/vrouter/vrouter/cmd/vrouter/internal/pcap"
	"github.com/vrouter/vrouter/tun"
)

// statusTimeout bounds one status request.
const statusTimeout = 10 * time.Second

// statusFlags are the flags every status command takes.
type statusFlags struct {
	socket string
	output string
}

func (f *statusFlags) register(fs *flag.FlagSet, withOutput bool) {
	fs.StringVar(&f.socket, "socket", "", "the router's admin socket, as vrouter run --admin-socket (default: that of the router of this network namespace, "+
		admin.SocketDir+"/"+tun.DefaultName+".netns-<inode>.sock, as `readlink /proc/self/ns/net` shows net:[inode])")
	if withOutput {
		fs.StringVar(&f.output, "o", "", "output format: json (default: a table)")
	}
}

// parse parses args, flags and at most maxArgs arguments in any order
// (`vrouter log-level debug --socket S` as well as `--socket S debug`),
// and returns the arguments.
func (f *statusFlags) parse(fs *flag.FlagSet, args []string, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) > maxArgs {
		return nil, usageErrorf("unexpected arguments %q", pos[maxArgs:])
	}
	if f.output != "" && f.output != "json" {
		return nil, usageErrorf("-o %q: want json", f.output)
	}
	if f.socket == "" {
		f.socket = admin.DefaultSocket(tun.DefaultName)
	}
	return pos, nil
}

func (f *statusFlags) json() bool { return f.output == "json" }

func newStatusFlagSet(name, usage string, stderr io.Writer, f *statusFlags, withOutput bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.register(fs, withOutput)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("status", `Usage: vrouter status [-o json]

Prints the running router at a glance: version, where its desired state comes
from (a file, the API server, a sidecar's) and the last reload's outcome,
readiness, the TUN device, the overlay (plain, or WireGuard with its public
key and sessions up), how many peers were heard from, Services and
endpoints, host sockets, and the packets refused since the start by reason.`, stderr, &f, true)
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := admin.NewClient(f.socket).Status(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		return admin.WriteJSON(stdout, st)
	}
	return admin.WriteStatus(stdout, st, time.Now())
}

func routesCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("routes", "Usage: vrouter routes [-v] [-o json]\n\nPrints the running router's route table as `ip route` does; -v adds each route's\ncounters (a peer route's are the peer's, a local route's the TUN device's).", stderr, &f, true)
	verbose := fs.Bool("v", false, "print each route's packet and byte counters")
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	routes, err := admin.NewClient(f.socket).Routes(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		return admin.WriteJSON(stdout, routes)
	}
	return admin.WriteRoutes(stdout, routes, *verbose)
}

func peersCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("peers", "Usage: vrouter peers [-o json]\n\nPrints the peer routers: overlay endpoint, pod CIDRs, when a datagram from each was\nlast accepted, and packet and byte counters; over a WireGuard overlay also each\npeer's latest handshake and whether its session is up (down, or no key).", stderr, &f, true)
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	peers, err := admin.NewClient(f.socket).Peers(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		return admin.WriteJSON(stdout, peers)
	}
	return admin.WritePeers(stdout, peers, time.Now())
}

func servicesCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("services", "Usage: vrouter services [-o json]\n\nPrints the Services as `kubectl get svc` does, then each Service port's endpoints\nwith their conditions, whether new connections go to them, and their active and\ntotal connections.", stderr, &f, true)
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	svcs, err := admin.NewClient(f.socket).Services(ctx)
	if err != nil {
		return err
	}
	if f.json() {
		return admin.WriteJSON(stdout, svcs)
	}
	return admin.WriteServices(stdout, svcs)
}

func connsCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("conns", `Usage: vrouter conns [--service NS/NAME] [--backend IP[:PORT]] [--client IP[:PORT]] [--limit N] [--delete] [-o json]

Prints the connections and flows the Service load balancer carries: nat mode
flows with their TCP state, age, idle time and packets and bytes each way
(from the client/from the backend), and proxied connections. The router
selects them (the filters combine) and sends the first --limit in order.

--delete removes the selected nat flows from the flow table and resets the
selected proxied connections, as conntrack -D does, and says how many: the
next packet of a deleted TCP flow is answered with a reset, the next UDP
datagram starts a flow to a backend picked again. It needs a filter.`, stderr, &f, true)
	var (
		service = fs.String("service", "", "only the connections of Service NAMESPACE/NAME (add :PORT-NAME for one named port)")
		backend = fs.String("backend", "", "only the connections to endpoint IP, or IP:PORT")
		client  = fs.String("client", "", "only the connections from client IP, or IP:PORT")
		limit   = fs.Int("limit", admin.DefaultConnsLimit, "list at most N connections; 0 lists all")
		del     = fs.Bool("delete", false, "delete the selected connections instead of listing them")
	)
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	q := admin.ConnQuery{Service: *service, Limit: *limit}
	if *limit < 0 {
		return usageErrorf("--limit %d: want a number ≥ 0 (0: all)", *limit)
	}
	if *limit == 0 {
		q.Limit = -1
	}
	if q.Service != "" {
		if ns, name, ok := strings.Cut(q.Service, "/"); !ok || ns == "" || name == "" {
			return usageErrorf("--service %q: want NAMESPACE/NAME", q.Service)
		}
	}
	for _, a := range []struct {
		flag, v string
		f       *admin.AddrFilter
	}{{"backend", *backend, &q.Backend}, {"client", *client, &q.Client}} {
		if a.v == "" {
			continue
		}
		af, err := admin.ParseAddrFilter(a.v)
		if err != nil {
			return usageErrorf("--%s %v", a.flag, err)
		}
		*a.f = af
	}
	if *del && !q.Filtered() {
		return usageErrorf("--delete needs --service, --backend or --client (it will not delete every connection)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	c := admin.NewClient(f.socket)
	if *del {
		d, err := c.DeleteConns(ctx, q)
		if err != nil {
			return err
		}
		if f.json() {
			return admin.WriteJSON(stdout, d)
		}
		return admin.WriteDeleted(stdout, d)
	}
	conns, matched, err := c.QueryConns(ctx, q)
	if err != nil {
		return err
	}
	if f.json() {
		if more := matched - len(conns); more > 0 {
			fmt.Fprintf(stderr, "%d more connections matched; --limit N lists more, 0 all\n", more)
		}
		return admin.WriteJSON(stdout, conns)
	}
	return admin.WriteConns(stdout, conns, matched, time.Now())
}

func pingCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("ping", `Usage: vrouter ping [-c N] [--size N] [--timeout D] [--mtu=false] [-o json] PEER|POD-IP

Probes a peer router through the overlay, as tailscale ping does: the running
router sends ICMP echo requests from its overlay identity (the network
address of its pod CIDR, 10.244.0.0) to the peer's (10.244.1.0 for PEER, which
the peer router answers itself) or to a pod of the peer, and times the
replies. Then it searches for the largest packet that passes, up to the
tunnel MTU: the tunnel MTU first, else halving the range. It exits 1 when no
probe was answered.`, stderr, &f, true)
	var (
		count    = fs.Int("c", admin.DefaultPingCount, "send N probes")
		size     = fs.Int("size", 0, "the probes' IP packet size (default 84, or 104 to an IPv6 address)")
		timeout  = fs.Duration("timeout", admin.DefaultPingTimeout, "how long to wait for each reply")
		interval = fs.Duration("interval", admin.DefaultPingInterval, "the time between probes")
		mtu      = fs.Bool("mtu", true, "search for the largest packet that passes, up to the tunnel MTU")
	)
	pos, err := f.parse(fs, args, 1)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return usageErrorf("want a peer's name or a pod IP, e.g. vrouter ping hostgw-node")
	case *count < 1 || *count > 100:
		return usageErrorf("-c %d: want a number from 1 to 100", *count)
	case *size < 0:
		return usageErrorf("--size %d: want a number ≥ 0", *size)
	case *timeout <= 0 || *timeout > time.Minute || *interval <= 0 || *interval > time.Minute:
		return usageErrorf("--timeout and --interval: want durations up to 1m")
	}
	q := admin.PingRequest{Target: pos[0], Count: *count, Size: *size, Timeout: *timeout, Interval: *interval, MTU: *mtu}
	ctx, cancel := context.WithTimeout(context.Background(), q.Duration()+statusTimeout)
	defer cancel()
	rep, err := admin.NewClient(f.socket).Ping(ctx, q)
	if err != nil {
		return err
	}
	if f.json() {
		err = admin.WriteJSON(stdout, rep)
	} else {
		err = admin.WritePing(stdout, rep)
	}
	if err != nil {
		return err
	}
	for _, p := range rep.Probes {
		if p.Error == "" {
			return nil
		}
	}
	return fmt.Errorf("no reply from %s", rep.Target)
}

func logLevelCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("log-level", "Usage: vrouter log-level [debug|info|warn|error] [-o json]\n\nPrints the running router's log level, or sets it. (SIGUSR1 to the router toggles\nbetween debug and its configured level.)", stderr, &f, true)
	pos, err := f.parse(fs, args, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	c := admin.NewClient(f.socket)
	var level string
	if len(pos) == 1 {
		level, err = c.SetLogLevel(ctx, pos[0])
	} else {
		level, err = c.LogLevel(ctx)
	}
	if err != nil {
		return err
	}
	if f.json() {
		return admin.WriteJSON(stdout, admin.LogLevel{Level: level})
	}
	_, err = fmt.Fprintln(stdout, level)
	return err
}

func captureCmd(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	fs := newStatusFlagSet("capture", `Usage: vrouter capture --nic tun|overlay|vr0 [--host IP] [--port N] [--proto tcp|udp|icmp] [-w FILE] [--count N] [--snaplen N]

Captures the packets crossing one of the running router's NICs, without
restarting it, and writes them as a pcap file (link type RAW: IP packets, no
link header) that tcpdump -r and Wireshark read. The tun NIC (also named by
the TUN device's own name, vr0) carries the packets exchanged with the node
kernel; the overlay NIC the inner packets of the overlay datagrams. --host,
--port and --proto select packets in the router, before they are copied
(they combine, as tcpdump's "host H and port P and tcp"). Without -w the
file goes to stdout, e.g.

    vrouter capture --nic overlay --host 10.244.1.2 --proto icmp | tcpdump -n -r -

It stops after --count packets, or on Ctrl-C. One capture per NIC at a time.`, stderr, &f, false)
	var (
		nic     = fs.String("nic", "", "the NIC to capture: tun (or the TUN device's name) or overlay (required)")
		host    = fs.String("host", "", "only packets from or to this IP address")
		port    = fs.Uint("port", 0, "only TCP, UDP and SCTP packets from or to this port")
		proto   = fs.String("proto", "", "only packets of this protocol: tcp, udp, icmp (ICMPv6 too) or an IP protocol number")
		file    = fs.String("w", "", "write the capture to FILE (default stdout)")
		count   = fs.Int("count", 0, "stop after N packets (default: until Ctrl-C)")
		snapLen = fs.Int("snaplen", 0, "keep at most N bytes of each packet (default: whole packets)")
	)
	if _, err := f.parse(fs, args, 0); err != nil {
		return err
	}
	portStr := ""
	if *port != 0 {
		portStr = strconv.FormatUint(uint64(*port), 10)
	}
	filter, ferr := admin.ParseCaptureFilter(*host, portStr, *proto)
	switch {
	case *nic == "":
		return usageErrorf("--nic is required: tun (or the TUN device's name, e.g. vr0) or overlay")
	case ferr != nil:
		return usageErrorf("--%v", ferr)
	case *count < 0:
		return usageErrorf("--count %d: want a number ≥ 0", *count)
	case *snapLen < 0:
		return usageErrorf("--snaplen %d: want a number ≥ 0", *snapLen)
	}
	out := stdout
	if *file == "" || *file == "-" {
		if isTerminal(stdout) {
			return usageErrorf("refusing to write a pcap file to a terminal: use -w FILE, or pipe it (| tcpdump -n -r -)")
		}
	} else {
		fh, err := os.OpenFile(*file, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer fh.Close()
		out = fh
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	stream, err := admin.NewClient(f.socket).Capture(ctx, admin.CaptureRequest{
		NIC: *nic, Count: *count, SnapLen: *snapLen, Host: filter.Host, Port: filter.Port, Proto: *proto,
	})
	if err != nil {
		return err
	}
	defer stream.Close()
	n, err := copyCapture(out, stream)
	if ctx.Err() != nil {
		err = nil // Ctrl-C: a clean end
	}
	stream.Close()
	if fh, ok := out.(*os.File); ok && out != stdout {
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
	}
	fmt.Fprintf(stderr, "%d packets captured\n", n)
	if d := stream.Dropped(); d > 0 {
		fmt.Fprintf(stderr, "%d packets dropped by the router (the capture fell behind)\n", d)
	}
	return err
}

// copyCapture copies a pcap stream record by record, so that out only
// ever holds whole records, and returns how many it copied.
func copyCapture(out io.Writer, in io.Reader) (int, error) {
	r, err := pcap.NewReader(in)
	if err != nil {
		return 0, err
	}
	w, err := pcap.NewWriter(out, int(r.Header().SnapLen))
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if err := w.WritePacket(rec.Time, rec.Data, rec.OrigLen); err != nil {
			return n, err
		}
		n++
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
