package wireguard

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Refusal says why the overlay refused a datagram before it reached the
// router.
type Refusal int

// Refusals. wireguard-go drops a transport message whose authentication
// tag is wrong without a word; those are not counted here.
const (
	// RefusedBadMAC: a handshake message whose MAC is not keyed to this
	// router's public key — its sender has the wrong key for it.
	RefusedBadMAC Refusal = iota
	// RefusedUnknownKey: a handshake initiation that passes the MAC but
	// does not authenticate as any peer: a sender whose key is not a
	// configured peer's, or a forged message.
	RefusedUnknownKey
	// RefusedStaleResponse: a handshake response that answers no
	// initiation in progress. Two routers that initiate at once make
	// one (harmless: the other handshake completes); else it is forged.
	RefusedStaleResponse
	// RefusedReplay: a handshake initiation replayed, or sent faster
	// than WireGuard accepts from one peer.
	RefusedReplay
	// RefusedDisallowedSource: an authenticated packet whose inner
	// source is outside its peer's allowed IPs.
	RefusedDisallowedSource
	// RefusedNotWireGuard: a datagram that is not a WireGuard message,
	// such as a plain overlay packet.
	RefusedNotWireGuard
	numRefusals
)

var refusalNames = [numRefusals]string{
	RefusedBadMAC:           "bad_mac",
	RefusedUnknownKey:       "unknown_key",
	RefusedStaleResponse:    "stale_response",
	RefusedReplay:           "replay",
	RefusedDisallowedSource: "disallowed_source",
	RefusedNotWireGuard:     "not_wireguard",
}

func (r Refusal) String() string {
	if r >= 0 && r < numRefusals {
		return refusalNames[r]
	}
	return fmt.Sprintf("refusal(%d)", int(r))
}

// Refusals lists every Refusal, in order.
func Refusals() []Refusal {
	out := make([]Refusal, numRefusals)
	for i := range out {
		out[i] = Refusal(i)
	}
	return out
}

// Stats are the overlay's handshake and refusal counters since Listen.
type Stats struct {
	// InitiationsSent and InitiationsReceived count handshake
	// initiations (retries included, refused ones not);
	// ResponsesSent and ResponsesReceived the responses, each of which
	// completes a handshake.
	InitiationsSent, InitiationsReceived uint64
	ResponsesSent, ResponsesReceived     uint64
	// Refused counts datagrams refused, by reason.
	Refused [numRefusals]uint64
}

// Stats reports the counters.
func (c *Conn) Stats() Stats {
	var s Stats
	s.InitiationsSent = c.hsTotal.initiationsSent.Load()
	s.InitiationsReceived = c.hsTotal.initiationsReceived.Load()
	s.ResponsesSent = c.hsTotal.responsesSent.Load()
	s.ResponsesReceived = c.hsTotal.responsesReceived.Load()
	for i := range s.Refused {
		s.Refused[i] = c.refused[i].Load()
	}
	return s
}

// verbosef is the device's verbose log: the router counts handshakes and
// refusals from it by the format of each line, which names the event.
// The lines themselves are logged at debug level (the device logs per
// keepalive).
func (c *Conn) verbosef(format string, args ...any) {
	if c.closed.Load() {
		return // the device's workers stop after Close returns
	}
	if c.debug {
		c.log.Debug("wireguard: " + fmt.Sprintf(format, args...))
	}
	switch format {
	case "%v - Sending handshake initiation":
		c.hsTotal.initiationsSent.Add(1)
	case "%v - Received handshake initiation":
		c.hsTotal.initiationsReceived.Add(1)
	case "%v - Sending handshake response":
		c.hsTotal.responsesSent.Add(1)
		c.completed(args)
	case "%v - Received handshake response":
		c.hsTotal.responsesReceived.Add(1)
		c.completed(args)
	case "Received packet with invalid mac1":
		c.refuse(RefusedBadMAC, "a handshake message's MAC is not for this router's public key: its sender has another key for this router", args)
	case "Received invalid initiation message from %s":
		c.refuse(RefusedUnknownKey, "a handshake initiation does not authenticate as any peer: its sender's public key is not a configured peer's", args)
	case "Received invalid response message from %s":
		c.refuse(RefusedStaleResponse, "", args)
	case "%v - ConsumeMessageInitiation: handshake replay @ %v", "%v - ConsumeMessageInitiation: handshake flood":
		c.refuse(RefusedReplay, "", args)
	case "IPv4 packet with disallowed source address from %v", "IPv6 packet with disallowed source address from %v":
		c.refuse(RefusedDisallowedSource, "", args)
	}
}

// completed counts a completed handshake with the peer args[0] names.
func (c *Conn) completed(args []any) {
	name := c.peerName(args)
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.shorts[shortOf(args)]; ok {
		c.shook[k] = true
	}
	h := c.hs[name]
	if h == nil {
		h = &handshakes{}
		c.hs[name] = h
	}
	if h.total > 0 {
		h.rekeys++
	}
	h.total++
}

// peerName is the name of the peer the device's log argument args[0]
// stands for ("peer(AbCd…WxYz)").
func (c *Conn) peerName(args []any) string {
	if len(args) == 0 {
		return ""
	}
	short := shortOf(args)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.names[short]; ok {
		return n
	}
	return short
}

// shortOf is the abbreviated key in the device's log argument args[0]
// ("peer(AbCd…WxYz)"), or "".
func shortOf(args []any) string {
	if len(args) == 0 {
		return ""
	}
	s, ok := args[0].(fmt.Stringer)
	if !ok {
		return ""
	}
	short := s.String()
	if len(short) > 6 && short[:5] == "peer(" {
		short = short[5 : len(short)-1]
	}
	return short
}

// refuse counts a refusal and logs the first of each reason, and then at
// most one a minute.
func (c *Conn) refuse(r Refusal, why string, args []any) {
	c.refused[r].Add(1)
	now := time.Now().UnixNano()
	last := c.refusedLogged[r].Load()
	if why == "" || (last != 0 && now-last < int64(time.Minute)) || !c.refusedLogged[r].CompareAndSwap(last, now) {
		return
	}
	fields := []zap.Field{zap.Stringer("reason", r)}
	if len(args) > 0 {
		fields = append(fields, zap.String("from", fmt.Sprint(args[0])))
	}
	c.log.Warn("WireGuard refused a datagram: "+why, fields...)
}

// errorf is the device's error log.
func (c *Conn) errorf(format string, args ...any) {
	if c.closed.Load() {
		return
	}
	c.log.Warn("wireguard: " + fmt.Sprintf(format, args...))
}
