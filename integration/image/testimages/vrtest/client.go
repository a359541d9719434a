package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// getCmd prints the body of GET URL; a non-2xx status is an error (the
// body is printed too).
func getCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	cacert := fs.String("cacert", "", "verify an https server against the CA certificates (PEM) in this file")
	pos, err := parseFlags(fs, env, args, 1)
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--cacert %s: no PEM certificate in it", *cacert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: *timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pos[0], nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err // "Get URL: ..."
	}
	defer resp.Body.Close()
	if _, err := io.Copy(env.stdout, resp.Body); err != nil {
		return fmt.Errorf("GET %s: read body: %w", pos[0], err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", pos[0], resp.Status)
	}
	return nil
}

// tcpCmd sends MSG as one line to a TCP echo and prints the reply line.
func tcpCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("tcp", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	pos, err := parseFlags(fs, env, args, 2)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", pos[0])
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := fmt.Fprintf(c, "%s\n", pos[1]); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply from %s: %w", pos[0], err)
	}
	fmt.Fprint(env.stdout, line)
	return nil
}

// udpCmd sends MSG to a UDP echo, again every second until a reply comes
// or the timeout passes, and prints the reply.
func udpCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("udp", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	pos, err := parseFlags(fs, env, args, 2)
	if err != nil {
		return err
	}
	reply, err := exchangeUDP(ctx, pos[0], []byte(pos[1]), *timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s\n", reply)
	return nil
}

// exchangeUDP sends msg to addr, again every second, and returns the first
// datagram that comes back, or an error after timeout.
func exchangeUDP(ctx context.Context, addr string, msg []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		deadline, _ := ctx.Deadline()
		if next := time.Now().Add(time.Second); next.Before(deadline) {
			deadline = next
		}
		c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n], nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no reply from %s within %v: %w", addr, timeout, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, fmt.Errorf("read reply from %s: %w", addr, err)
		}
	}
}

// udpBurstCmd sends --count datagrams of --size bytes to a UDP echo in one
// write with UDP_SEGMENT (as QUIC stacks send), so that the node kernel
// hands them to the router as one UDP super-packet, and waits until every
// one has come back intact. It prints how many did and who answered.
func udpBurstCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("udpburst", flag.ContinueOnError)
	count := fs.Int("count", 20, "datagrams in the burst, 2..64")
	size := fs.Int("size", 1000, "bytes per datagram, 8..1400")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	pos, err := parseFlags(fs, env, args, 1)
	if err != nil {
		return err
	}
	if *count < 2 || *count > 64 || *size < 8 || *size > 1400 {
		return fmt.Errorf("udpburst: --count %d --size %d: want 2..64 datagrams of 8..1400 bytes", *count, *size)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", pos[0])
	if err != nil {
		return err
	}
	defer c.Close()
	if err := setUDPSegment(c.(*net.UDPConn), *size); err != nil {
		return err
	}
	// Datagram i: its index in four digits, then letters, all text, so
	// that the echo's reply ("<hostname> <client> <datagram>") can be
	// matched against it.
	burst := make([]byte, 0, *count**size)
	sent := make([]string, *count)
	for i := range *count {
		dg := []byte(fmt.Sprintf("%04d", i))
		for len(dg) < *size {
			dg = append(dg, byte('a'+(i+len(dg))%26))
		}
		sent[i] = string(dg)
		burst = append(burst, dg...)
	}
	if _, err := c.Write(burst); err != nil {
		return fmt.Errorf("udpburst: one write of %d datagrams of %d bytes (UDP_SEGMENT): %w", *count, *size, err)
	}
	deadline, _ := ctx.Deadline()
	c.SetReadDeadline(deadline)
	got := make(map[int]bool)
	host := ""
	buf := make([]byte, 64<<10)
	for len(got) < *count {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("udpburst: %d of %d datagrams came back from %s: %w", len(got), *count, pos[0], err)
		}
		f := strings.SplitN(string(buf[:n]), " ", 3)
		if len(f) != 3 {
			return fmt.Errorf("udpburst: reply %q: want \"<hostname> <client> <datagram>\"", buf[:min(n, 80)])
		}
		i, err := strconv.Atoi(f[2][:min(4, len(f[2]))])
		if err != nil || i < 0 || i >= *count || f[2] != sent[i] {
			return fmt.Errorf("udpburst: reply %q is not a datagram of the burst, intact", buf[:min(n, 80)])
		}
		got[i], host = true, f[0]
	}
	fmt.Fprintf(env.stdout, "%d of %d datagrams echoed by %s\n", len(got), *count, host)
	return nil
}

// setUDPSegment turns on UDP_SEGMENT (Linux 4.18): each write to c leaves
// as datagrams of size bytes, in one pass through the kernel's stack.
func setUDPSegment(c *net.UDPConn, size int) error {
	const solUDP, udpSegment = 17, 103 // SOL_UDP, UDP_SEGMENT
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), solUDP, udpSegment, size) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("udpburst: setsockopt UDP_SEGMENT %d: %w", size, serr)
	}
	return nil
}

// resolveCmd prints NAME's addresses of one type, one per line, as the
// DNS server answers them; NAME is taken as fully qualified.
func resolveCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("resolve", flag.ContinueOnError)
	server := fs.String("server", "", "DNS server `IP:port` (default: the first nameserver of /etc/resolv.conf, port 53)")
	useTCP := fs.Bool("tcp", false, "ask over TCP instead of UDP")
	qtype := fs.String("type", "A", "record `type`: A or AAAA")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	pos, err := parseFlags(fs, env, args, 1)
	if err != nil {
		return err
	}
	var t dnsmessage.Type
	switch strings.ToUpper(*qtype) {
	case "A":
		t = dnsmessage.TypeA
	case "AAAA":
		t = dnsmessage.TypeAAAA
	default:
		return fmt.Errorf("%w: --type %q: want A or AAAA", errUsage, *qtype)
	}
	if *server == "" {
		if *server, err = resolvConfServer("/etc/resolv.conf"); err != nil {
			return err
		}
	}
	addrs, err := resolve(ctx, *server, pos[0], t, *useTCP, *timeout)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Fprintln(env.stdout, a)
	}
	return nil
}

// resolvConfServer returns the first nameserver of a resolv.conf file as
// IP:53.
func resolvConfServer(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("no --server: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			return net.JoinHostPort(f[1], "53"), nil
		}
	}
	return "", fmt.Errorf("no --server, and %s has no nameserver line", path)
}

// resolve asks server for name's records of type t and returns the
// addresses; an answer with another RCode than success, or without
// records, is an error naming it.
func resolve(ctx context.Context, server, name string, t dnsmessage.Type, useTCP bool, timeout time.Duration) ([]netip.Addr, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("name %q: %w", name, err)
	}
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	q := dnsmessage.Question{Name: qname, Type: t, Class: dnsmessage.ClassINET}
	if err := errors.Join(b.StartQuestions(), b.Question(q)); err != nil {
		return nil, err
	}
	query, err := b.Finish()
	if err != nil {
		return nil, err
	}
	var resp []byte
	if useTCP {
		resp, err = exchangeTCP(ctx, server, query, timeout)
	} else {
		resp, err = exchangeUDP(ctx, server, query, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s %s at %s: %w", name, typeName(t), server, err)
	}
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: bad response: %w", name, server, err)
	}
	if h.ID != id || !h.Response {
		return nil, fmt.Errorf("resolve %s at %s: response ID %d, want %d", name, server, h.ID, id)
	}
	if h.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("resolve %s %s at %s: %s", name, typeName(t), server, rcodeName(h.RCode))
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, fmt.Errorf("resolve %s at %s: bad response: %w", name, server, err)
	}
	answers, err := p.AllAnswers()
	if err != nil {
		return nil, fmt.Errorf("resolve %s at %s: bad response: %w", name, server, err)
	}
	var addrs []netip.Addr
	for _, a := range answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			addrs = append(addrs, netip.AddrFrom4(r.A))
		case *dnsmessage.AAAAResource:
			addrs = append(addrs, netip.AddrFrom16(r.AAAA))
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s %s at %s: no records", name, typeName(t), server)
	}
	return addrs, nil
}

// rcodeName is an RCode as dig prints it.
func rcodeName(rc dnsmessage.RCode) string {
	switch rc {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// typeName is a query type as dig prints it.
func typeName(t dnsmessage.Type) string {
	return strings.TrimPrefix(t.String(), "Type")
}

// exchangeTCP sends a DNS message over TCP and returns the response.
func exchangeTCP(ctx context.Context, server string, msg []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)); err != nil {
		return nil, err
	}
	var n uint16
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	resp := make([]byte, n)
	if _, err := io.ReadFull(c, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// holdCmd keeps one connection to a TCP echo busy — a numbered line every
// interval, each answered before the next — for duration (or until
// SIGTERM/SIGINT), to show no established connection is lost meanwhile.
// It prints how many round trips succeeded, and fails at the first that
// does not, or when another pod than the first answers.
func holdCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	interval := fs.Duration("interval", 200*time.Millisecond, "time between round trips")
	duration := fs.Duration("duration", 10*time.Second, "how long to hold the connection; 0: until SIGTERM or SIGINT")
	timeout := fs.Duration("timeout", 2*time.Second, "longest a round trip (or the connect) may take")
	pos, err := parseFlags(fs, env, args, 1)
	if err != nil {
		return err
	}
	addr := pos[0]
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	start := time.Now()
	dctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var backend string
	n := 0
	report := func() {
		fmt.Fprintf(env.stdout, "hold %s: %d round trips to %s over %v\n", addr, n, backend, time.Since(start).Round(time.Millisecond))
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		msg := fmt.Sprintf("hold-%d", n+1)
		c.SetDeadline(time.Now().Add(*timeout))
		if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
			report()
			return fmt.Errorf("round trip %d after %v: %w", n+1, time.Since(start).Round(time.Millisecond), err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			report()
			return fmt.Errorf("round trip %d after %v: %w", n+1, time.Since(start).Round(time.Millisecond), err)
		}
		host, _, _ := strings.Cut(line, " ")
		if !strings.HasSuffix(line, " "+msg+"\n") || (backend != "" && host != backend) {
			report()
			return fmt.Errorf("round trip %d: reply %q, want \"%s <client> %s\"", n+1, line, backend, msg)
		}
		backend = host
		n++
		select {
		case <-ctx.Done():
			report()
			return nil
		case <-tick.C:
		}
	}
}

// pingCmd sends ICMP echo requests to ADDR from an unprivileged ping
// socket (containerd's enable_unprivileged_icmp opens ping_group_range in
// pods) and prints each reply, as ping(8) does.
func pingCmd(ctx context.Context, env environ, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	count := fs.Int("c", 3, "echo requests to send; all must be answered")
	timeout := fs.Duration("timeout", 2*time.Second, "longest wait for each reply")
	pos, err := parseFlags(fs, env, args, 1)
	if err != nil {
		return err
	}
	dst, err := netip.ParseAddr(pos[0])
	if err != nil || !dst.Is4() {
		return fmt.Errorf("%w: %q is not an IPv4 address", errUsage, pos[0])
	}
	c, err := icmp.ListenPacket("udp4", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("open a ping socket: %w", err)
	}
	defer c.Close()
	for seq := 1; seq <= *count; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{Seq: seq, Data: []byte("vrtest")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := c.WriteTo(b, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
			return fmt.Errorf("icmp_seq=%d: %w", seq, err)
		}
		for {
			c.SetReadDeadline(start.Add(*timeout))
			buf := make([]byte, 1500)
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("icmp_seq=%d: no reply from %s: %w", seq, dst, err)
			}
			reply, err := icmp.ParseMessage(1, buf[:n])
			if err != nil {
				continue
			}
			if echo, ok := reply.Body.(*icmp.Echo); ok && reply.Type == ipv4.ICMPTypeEchoReply && echo.Seq == seq {
				fmt.Fprintf(env.stdout, "%d bytes from %s: icmp_seq=%d time=%v\n", n, from.(*net.UDPAddr).IP, seq, time.Since(start).Round(time.Microsecond))
				break
			}
		}
		if seq < *count {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
