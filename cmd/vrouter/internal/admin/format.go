package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The text the status commands print. Tables are aligned with tabwriter,
// as kubectl's are; `-o json` prints the API's JSON instead (WriteJSON).

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
}

// WriteRoutes writes the table one route per line, as `ip route` shows
// routes; verbose adds each route's counters on the line below it.
func WriteRoutes(w io.Writer, routes []Route, verbose bool) error {
	var b strings.Builder
	for _, r := range routes {
		b.WriteString(r.String())
		b.WriteByte('\n')
		if !verbose {
			continue
		}
		who := "device " + r.Dev
		if r.Peer != "" {
			who = "peer " + r.Peer
		}
		c := r.Counters
		fmt.Fprintf(&b, "    %s: rx %d packets %d bytes, tx %d packets %d bytes\n",
			who, c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ago says how long before now t was: "3s ago", "never" for the zero
// Time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// WritePeers writes the peers as a table. Over an encrypted overlay it
// adds each peer's WireGuard session as `wg show` does: HANDSHAKE, the
// latest handshake ("never" before the first), and SESSION: up, down or
// no key. An ENDPOINT the peer roamed from says where it is now.
func WritePeers(w io.Writer, peers []Peer, now time.Time) error {
	wg := slices.ContainsFunc(peers, func(p Peer) bool { return p.WireGuard != nil })
	tw := newTable(w)
	if wg {
		fmt.Fprintln(tw, "NAME\tENDPOINT\tPOD CIDRS\tLAST SEEN\tHANDSHAKE\tSESSION\tRX PACKETS\tRX BYTES\tTX PACKETS\tTX BYTES")
	} else {
		fmt.Fprintln(tw, "NAME\tENDPOINT\tPOD CIDRS\tLAST SEEN\tRX PACKETS\tRX BYTES\tTX PACKETS\tTX BYTES")
	}
	for _, p := range peers {
		cidrs := make([]string, len(p.PodCIDRs))
		for i, c := range p.PodCIDRs {
			cidrs[i] = c.String()
		}
		c := p.Counters
		endpoint, session := p.Endpoint.String(), ""
		if s := p.WireGuard; s != nil {
			if s.Endpoint.IsValid() {
				endpoint += " (now " + s.Endpoint.String() + ")"
			}
			session = "\t" + ago(now, s.LatestHandshake) + "\t" + s.Session
		} else if wg {
			session = "\t-\t-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\t%d\t%d\t%d\t%d\n", p.Name, endpoint, strings.Join(cidrs, ","),
			ago(now, p.LastSeen), session, c.RxPackets, c.RxBytes, c.TxPackets, c.TxBytes)
	}
	return tw.Flush()
}

// WriteServices writes the Services as `kubectl get svc` does, then a
// table of every Service port's endpoints with their conditions, whether
// new connections may go to them, and their connection counts.
func WriteServices(w io.Writer, svcs []Service) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)")
	for _, s := range svcs {
		// Every ClusterIP: a dual-stack Service has one per family.
		clusterIP := "None"
		if len(s.ClusterIPs) > 0 {
			ips := make([]string, len(s.ClusterIPs))
			for i, a := range s.ClusterIPs {
				ips[i] = a.String()
			}
			clusterIP = strings.Join(ips, ",")
		}
		external := "<none>"
		if ext := slices.Concat(s.LoadBalancerIPs, s.ExternalIPs); len(ext) > 0 {
			var items []string
			for _, a := range ext {
				items = append(items, a.String())
			}
			external = strings.Join(items, ",")
		} else if s.Type == "LoadBalancer" {
			external = "<pending>"
		}
		// One PORT(S) item per Service port, "port[:nodePort]/proto":
		// the ClusterIPs of other families and the external keys
		// repeat them.
		nodePorts := map[string]uint16{}
		for _, p := range s.Ports {
			if p.NodePort {
				nodePorts[p.Name+"/"+p.Protocol] = p.Port
			}
		}
		var ports []string
		seen := map[string]bool{}
		for _, p := range s.Ports {
			if p.External {
				continue
			}
			item := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if np, ok := nodePorts[p.Name+"/"+p.Protocol]; ok {
				item = fmt.Sprintf("%d:%d/%s", p.Port, np, p.Protocol)
			}
			if !seen[p.Name+" "+item] {
				seen[p.Name+" "+item] = true
				ports = append(ports, item)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.Type, clusterIP, external, strings.Join(ports, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(svcs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "SERVICE\tPORT\tENDPOINT\tSTATE\tNODE\tIN USE\tACTIVE\tCONNS")
	for _, s := range svcs {
		for _, p := range s.Ports {
			name := s.Namespace + "/" + s.Name
			if p.Name != "" {
				name += ":" + p.Name
			}
			port := fmt.Sprintf("%s/%s", netip.AddrPortFrom(p.ClusterIP, p.Port), p.Protocol)
			switch {
			case p.NodePort:
				port = fmt.Sprintf("nodePort %d/%s", p.Port, p.Protocol)
				if p.ClusterIP.Is6() {
					port += " (IPv6)"
				}
			case p.External:
				port += " (external)"
			}
			if len(p.Endpoints) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t<none>\t%s\t\t\t%d\t%d\n", name, port, p.Status, p.Active, p.Conns)
				continue
			}
			for _, e := range p.Endpoints {
				inUse := "no"
				switch {
				case e.Ejected:
					inUse = "ejected"
				case e.InUse:
					inUse = "yes"
				}
				node := e.Node
				if node == "" {
					node = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", name, port, e.Address, e.State(), node, inUse, e.Active, e.Conns)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !slices.ContainsFunc(svcs, func(s Service) bool { return len(s.HostPorts) > 0 }) {
		return nil
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "SERVICE\tHOST PORT\tPROTO\tSTATE")
	for _, s := range svcs {
		for _, h := range s.HostPorts {
			name := s.Namespace + "/" + s.Name
			if h.Port != "" {
				name += ":" + h.Port
			}
			state := h.State
			if h.Error != "" {
				state += ": " + h.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, h.Address, h.Protocol, state)
		}
	}
	return tw.Flush()
}

// WriteConns writes the load balancer's connections and flows as a table:
// STATE is a TCP connection's (conntrack's names), AGE how long since it
// began, IDLE since its last packet, PACKETS and BYTES what a nat flow
// carried from the client/from the backend. matched counts every
// connection the query selected: when it is more than conns, a last line
// says how many were left out.
func WriteConns(w io.Writer, conns []Conn, matched int, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "MODE\tPROTO\tCLIENT\tSERVICE\tVIP\tBACKEND\tSNAT\tSTATE\tAGE\tIDLE\tPACKETS\tBYTES")
	since := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String()
	}
	for _, c := range conns {
		svc, snat, state := c.Service, "-", c.State
		if svc == "" {
			svc = "-"
		}
		if c.SNAT.IsValid() {
			snat = c.SNAT.String()
		}
		if state == "" {
			state = "-"
		}
		if !c.DrainAt.IsZero() {
			state += ", draining: reset in " + c.DrainAt.Sub(now).Round(time.Second).String()
		}
		packets, bytes := "-", "-"
		if c.Orig != nil && c.Reply != nil {
			if c.Mode != "proxy" { // a stream: bytes only
				packets = fmt.Sprintf("%d/%d", c.Orig.Packets, c.Reply.Packets)
			}
			bytes = fmt.Sprintf("%d/%d", c.Orig.Bytes, c.Reply.Bytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Mode, c.Protocol, c.Client, svc, c.VIP, c.Backend, snat,
			state, since(c.Started), since(c.LastSeen), packets, bytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more := matched - len(conns); more > 0 {
		_, err := fmt.Fprintf(w, "... and %d more (--limit N lists more, 0 all; --service, --backend and --client select)\n", more)
		return err
	}
	return nil
}

// WriteDeleted says what vrouter conns --delete deleted.
func WriteDeleted(w io.Writer, d ConnsDeleted) error {
	plural := func(n int, one, many string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, one)
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	_, err := fmt.Fprintf(w, "deleted %s, reset %s\n", plural(d.NAT, "nat flow", "nat flows"), plural(d.Proxy, "proxied connection", "proxied connections"))
	return err
}

// WriteStatus writes the router at a glance, one fact per line, as
// `cilium status` does.
func WriteStatus(w io.Writer, st Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", key, fmt.Sprintf(format, args...))
	}
	version := st.Version
	if st.Commit != "" {
		version += " (commit " + st.Commit + ")"
	}
	line("Version", "%s", version)
	mode := st.Mode
	if st.Source != "" {
		mode += ", from " + st.Source
	}
	line("Mode", "%s", mode)
	if !st.Started.IsZero() {
		line("Started", "%s ago", now.Sub(st.Started).Round(time.Second))
	}
	switch rl := st.LastReload; {
	case rl == nil:
		line("Last reload", "none since the start")
	case rl.Applied:
		line("Last reload", "%s, applied", ago(now, rl.Time))
	default:
		line("Last reload", "%s, refused: %s (the router keeps what it ran)", ago(now, rl.Time), rl.Error)
	}
	ready := "yes"
	if !st.Ready {
		ready = "no"
		if st.NotReady != "" {
			ready += " (" + st.NotReady + ")"
		}
	}
	line("Ready", "%s", ready)
	offload := "off"
	if st.TUN.Offload {
		offload = "on (TCP)"
		if st.TUN.UDPOffload {
			offload = "on (TCP, UDP)"
		}
	}
	switch {
	case st.TUN.BatchIO:
		offload += ", batched I/O"
	case st.TUN.Offload && st.TUN.BatchIOOff != "":
		offload += ", one packet per system call (" + st.TUN.BatchIOOff + ")"
	}
	if st.TUN.BusyPoll != "" {
		offload += ", busy polling " + st.TUN.BusyPoll
	}
	line("TUN", "%s, tunnel MTU %d, offload %s", st.TUN.Name, st.TUN.MTU, offload)
	switch o := st.Overlay; {
	case o == nil: // a router that predates the line
	case o.WireGuard != nil:
		wg := o.WireGuard
		line("Overlay", "wireguard, public key %s, sessions up %d/%d, peers without key %d", wg.PublicKey, wg.SessionsUp, wg.PeersWithKey, wg.PeersWithoutKey)
	default:
		line("Overlay", "plain (unauthenticated and unencrypted; see docs/wireguard.md)")
	}
	peers := fmt.Sprintf("%d/%d heard from", st.Peers.HeardFrom, st.Peers.Total)
	if st.Peers.Oldest != "" {
		peers += fmt.Sprintf(", least recently %s (%s)", st.Peers.Oldest, ago(now, st.Peers.OldestLastSeen))
	}
	line("Peers", "%s", peers)
	line("Services", "%d (%d ports, %d endpoints)", st.Services, st.ServicePorts, st.Endpoints)
	line("Host sockets", "%d listening, %d failed", st.HostSockets.Listening, st.HostSockets.Failed)
	if len(st.Drops) == 0 {
		line("Drops", "none")
	} else {
		reasons := slices.Sorted(maps.Keys(st.Drops))
		items := make([]string, len(reasons))
		for i, r := range reasons {
			items[i] = fmt.Sprintf("%s %d", r, st.Drops[r])
		}
		line("Drops", "%s", strings.Join(items, ", "))
	}
	return tw.Flush()
}

// WritePing writes a ping report as ping(8) does: a line per probe, a
// summary, and the path MTU search's outcome.
func WritePing(w io.Writer, rep PingReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "PING %s (%s) from %s through the overlay to %s", rep.Target, rep.Dst, rep.Src, rep.Peer)
	if rep.Endpoint.IsValid() {
		fmt.Fprintf(&b, " at %s", rep.Endpoint)
	}
	b.WriteByte('\n')
	var replies int
	var minRTT, maxRTT, sum time.Duration
	for _, p := range rep.Probes {
		if p.Error != "" {
			fmt.Fprintf(&b, "seq=%d size=%d: %s\n", p.Seq, p.Size, p.Error)
			continue
		}
		fmt.Fprintf(&b, "%d bytes from %s: seq=%d time=%s\n", p.Size, rep.Dst, p.Seq, ms(p.RTT))
		if replies == 0 || p.RTT < minRTT {
			minRTT = p.RTT
		}
		maxRTT = max(maxRTT, p.RTT)
		sum += p.RTT
		replies++
	}
	if n := len(rep.Probes); n > 0 {
		fmt.Fprintf(&b, "--- %s: %d probes, %d answered, %d%% loss", rep.Target, n, replies, 100*(n-replies)/n)
		if replies > 0 {
			fmt.Fprintf(&b, "; rtt min/avg/max %s/%s/%s", ms(minRTT), ms(sum/time.Duration(replies)), ms(maxRTT))
		}
		b.WriteByte('\n')
	}
	if m := rep.MTU; m != nil {
		switch {
		case m.Largest == m.TunnelMTU:
			fmt.Fprintf(&b, "path MTU: %d-byte packets pass, the tunnel MTU\n", m.Largest)
		case m.Largest == 0:
			fmt.Fprintf(&b, "path MTU: no probe passed (%d sent)\n", m.Probes)
		default:
			fmt.Fprintf(&b, "path MTU: %d-byte packets pass, less than the tunnel MTU %d: larger ones are lost on the way (%d probes)\n", m.Largest, m.TunnelMTU, m.Probes)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms writes d in milliseconds, as ping(8) does.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
}
