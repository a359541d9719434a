package topology

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// PingResult is what Ping saw.
type PingResult struct {
	Sent, Received int
	// RTTs holds one round-trip time per reply, in order.
	RTTs []time.Duration
	// TTL is the IPv4 TTL or IPv6 hop limit of the last reply, 0 without
	// replies. Replies start at 64 on Linux, so each router on the way
	// back takes one off: 63 across one node, 62 across two.
	TTL int
	// Errors lists the ICMP errors answered to our probes, e.g.
	// "10.244.0.1: destination unreachable (code 0)".
	Errors []string
}

// String reads like ping's summary line.
func (r PingResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sent, %d received", r.Sent, r.Received)
	if len(r.RTTs) > 0 {
		mn, mx := slices.Min(r.RTTs), slices.Max(r.RTTs)
		var sum time.Duration
		for _, d := range r.RTTs {
			sum += d
		}
		fmt.Fprintf(&b, ", ttl %d, rtt min/avg/max %v/%v/%v", r.TTL, mn, sum/time.Duration(len(r.RTTs)), mx)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, ", errors: %s", strings.Join(r.Errors, "; "))
	}
	return b.String()
}

// Ping sends count ICMP echo requests to dst from inside namespace fromNS
// on a raw socket (so it needs root in that namespace's user namespace)
// and waits up to timeout for each reply, or for an ICMP error about the
// request, before sending the next, as `ping -c count -W timeout` does.
// Lost probes are not an error: see Received. IPv4 and IPv6.
func (c *Cluster) Ping(fromNS string, dst netip.Addr, count int, timeout time.Duration) (PingResult, error) {
	var res PingResult
	if !dst.IsValid() || count < 1 || timeout <= 0 {
		return res, fmt.Errorf("ping %v from %s: want a valid address, count >= 1 and timeout > 0, got count %d timeout %v", dst, fromNS, count, timeout)
	}
	dst = dst.Unmap()
	network, laddr := "ip4:icmp", "0.0.0.0"
	if dst.Is6() {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	var conn *icmp.PacketConn
	err := c.Do(fromNS, func() error {
		var err error
		conn, err = icmp.ListenPacket(network, laddr)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("ping %v from %s: %w", dst, fromNS, err)
	}
	defer conn.Close()

	p := pinger{conn: conn, dst: dst}
	if err := p.setup(); err != nil {
		return res, fmt.Errorf("ping %v from %s: %w", dst, fromNS, err)
	}
	for seq := 1; seq <= count; seq++ {
		if err := p.probe(seq, timeout, &res); err != nil {
			return res, fmt.Errorf("ping %v from %s: %w", dst, fromNS, err)
		}
	}
	return res, nil
}

// pinger holds one Ping's socket and echo identifier. A raw socket sees
// every ICMP message the namespace receives, so replies are matched on
// identifier and sequence number.
type pinger struct {
	conn *icmp.PacketConn
	dst  netip.Addr
	id   int
	// proto is the IANA protocol number for icmp.ParseMessage.
	proto int
}

func (p *pinger) setup() error {
	var b [2]byte
	rand.Read(b[:])
	p.id = int(binary.BigEndian.Uint16(b[:]))
	if p.dst.Is4() {
		p.proto = 1
		return p.conn.IPv4PacketConn().SetControlMessage(ipv4.FlagTTL, true)
	}
	p.proto = 58
	var f ipv6.ICMPFilter
	f.SetAll(true)
	for _, t := range []ipv6.ICMPType{ipv6.ICMPTypeEchoReply, ipv6.ICMPTypeDestinationUnreachable,
		ipv6.ICMPTypePacketTooBig, ipv6.ICMPTypeTimeExceeded, ipv6.ICMPTypeParameterProblem} {
		f.Accept(t)
	}
	if err := p.conn.IPv6PacketConn().SetICMPFilter(&f); err != nil {
		return err
	}
	return p.conn.IPv6PacketConn().SetControlMessage(ipv6.FlagHopLimit, true)
}

// probe sends echo request seq and waits for its answer.
func (p *pinger) probe(seq int, timeout time.Duration, res *PingResult) error {
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if p.dst.Is6() {
		typ = ipv6.ICMPTypeEchoRequest
	}
	sent := time.Now()
	data := make([]byte, 56) // like ping's default payload
	binary.BigEndian.PutUint64(data, uint64(sent.UnixNano()))
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: p.id, Seq: seq, Data: data}}
	b, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
	if err != nil {
		return err
	}
	if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: p.dst.AsSlice()}); err != nil {
		// Like ping: a local send error (no route, say) is a lost probe.
		res.Sent++
		res.Errors = append(res.Errors, fmt.Sprintf("send: %v", err))
		return nil
	}
	res.Sent++

	if err := p.conn.SetReadDeadline(sent.Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, ttl, src, err := p.read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // lost
		}
		if err != nil {
			return err
		}
		m, err := icmp.ParseMessage(p.proto, buf[:n])
		if err != nil {
			continue
		}
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) ||
				body.ID != p.id || body.Seq != seq || src != p.dst {
				continue
			}
			res.Received++
			res.RTTs = append(res.RTTs, time.Since(sent))
			res.TTL = ttl
			return nil
		case *icmp.DstUnreach:
			if p.isOurs(body.Data, seq) {
				res.Errors = append(res.Errors, fmt.Sprintf("%v: destination unreachable (code %d)", src, m.Code))
				return nil
			}
		case *icmp.TimeExceeded:
			if p.isOurs(body.Data, seq) {
				res.Errors = append(res.Errors, fmt.Sprintf("%v: time exceeded (code %d)", src, m.Code))
				return nil
			}
		case *icmp.PacketTooBig:
			if p.isOurs(body.Data, seq) {
				res.Errors = append(res.Errors, fmt.Sprintf("%v: packet too big (mtu %d)", src, body.MTU))
				return nil
			}
		}
	}
}

// read returns one ICMP message with the TTL or hop limit it arrived with.
func (p *pinger) read(buf []byte) (n, ttl int, src netip.Addr, err error) {
	var from net.Addr
	if p.dst.Is4() {
		var cm *ipv4.ControlMessage
		n, cm, from, err = p.conn.IPv4PacketConn().ReadFrom(buf)
		if cm != nil {
			ttl = cm.TTL
		}
	} else {
		var cm *ipv6.ControlMessage
		n, cm, from, err = p.conn.IPv6PacketConn().ReadFrom(buf)
		if cm != nil {
			ttl = cm.HopLimit
		}
	}
	if ip, ok := from.(*net.IPAddr); ok {
		src, _ = netip.AddrFromSlice(ip.IP)
		src = src.Unmap()
	}
	return n, ttl, src, err
}

// isOurs reports whether the datagram quoted in an ICMP error is our echo
// request seq: an IP header, then at least the first 8 bytes of ICMP.
func (p *pinger) isOurs(quoted []byte, seq int) bool {
	var hl int
	if p.dst.Is4() {
		if len(quoted) < ipv4.HeaderLen {
			return false
		}
		hl = int(quoted[0]&0x0f) << 2
	} else {
		hl = ipv6.HeaderLen // no extension headers on our requests
	}
	if len(quoted) < hl+8 {
		return false
	}
	icmpHdr := quoted[hl:]
	return int(binary.BigEndian.Uint16(icmpHdr[4:])) == p.id && int(binary.BigEndian.Uint16(icmpHdr[6:])) == seq
}
