package wireguard

import (
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// Refusal says why the overlay refused a datagram before it reached the
// router.
type Refusal int

// Refusals.
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
	// such as a plain overlay packet, or a handshake message of the
	// wrong size.
	RefusedNotWireGuard
	// RefusedUnauthenticated: a transport message for no session this
	// router has (an old one, or one of another router's), whose tag
	// does not authenticate, whose counter was seen before (a replay),
	// or that holds no IP packet.
	RefusedUnauthenticated
	// RefusedUnderLoad: a handshake message this router did not compute
	// on while under load (a flood of them): answered with a cookie
	// reply, or over its source's rate.
	RefusedUnderLoad
	numRefusals
)

var refusalNames = [numRefusals]string{
	RefusedBadMAC:           "bad_mac",
	RefusedUnknownKey:       "unknown_key",
	RefusedStaleResponse:    "stale_response",
	RefusedReplay:           "replay",
	RefusedDisallowedSource: "disallowed_source",
	RefusedNotWireGuard:     "not_wireguard",
	RefusedUnauthenticated:  "unauthenticated",
	RefusedUnderLoad:        "under_load",
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

// refuse counts a refusal and logs the first of each reason that has a
// why, and then at most one a minute.
func (c *Conn) refuse(r Refusal, why string, from netip.AddrPort) {
	c.refused[r].Add(1)
	now := time.Now().UnixNano()
	last := c.refusedLogged[r].Load()
	if why == "" || (last != 0 && now-last < int64(time.Minute)) || !c.refusedLogged[r].CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("WireGuard refused a datagram: "+why, zap.Stringer("reason", r), zap.Stringer("from", from))
}
