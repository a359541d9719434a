package router

import "sync/atomic"

// DropReason says why the router refused a packet or datagram.
type DropReason int

// Drop reasons. Each is counted; none is logged per packet.
const (
	// DropShort: a datagram or TUN read too short to hold an IP header.
	DropShort DropReason = iota
	// DropNotIP: the version nibble is neither 4 nor 6.
	DropNotIP
	// DropMalformed: the IP header is inconsistent (bad IHL, total length
	// shorter than the header).
	DropMalformed
	// DropTruncated: the IP header claims more bytes than were received.
	DropTruncated
	// DropOversize: a packet larger than the tunnel MTU.
	DropOversize
	// DropUnknownPeer: an overlay datagram from an address and port that
	// is not a configured peer's endpoint (a peer's address but another
	// port is another socket on that node, not the peer's router).
	DropUnknownPeer
	// DropSpoofed: an overlay datagram from a known peer whose inner source
	// is not in that peer's pod CIDRs.
	DropSpoofed
	// DropNoPeer: a packet routed to the overlay whose next hop maps to no
	// peer (the peer went away between route lookup and transmit).
	DropNoPeer
	// DropFamily: a packet of an address family the router has no address
	// for (e.g. IPv6 on an IPv4-only router).
	DropFamily
	// DropTxError: the TUN or the overlay socket refused a write.
	DropTxError
	// DropSourceNotLocal: a packet from the TUN whose source is neither
	// in this node's pod CIDRs nor one of the node's addresses (see
	// Config.NodeAddresses): a spoofed source.
	DropSourceNotLocal
	// DropBadChecksum: an IPv4 packet whose header checksum is wrong (the
	// stack would drop it; the fast path never takes it).
	DropBadChecksum
	// DropBadOptions: an IPv4 packet with an option whose length runs
	// past the header or is below 2.
	DropBadOptions
	// DropBroadcast: an overlay datagram whose inner destination is
	// broadcast (255.255.255.255) or multicast: the router forwards
	// unicast only, and no peer sends either.
	DropBroadcast
	// DropEncrypted: an overlay datagram that is a WireGuard message,
	// sent to this plain overlay by a router whose overlay is encrypted.
	DropEncrypted
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	DropShort:          "short",
	DropEncrypted:      "encrypted_overlay",
	DropNotIP:          "not_ip",
	DropMalformed:      "malformed",
	DropTruncated:      "truncated",
	DropOversize:       "oversize",
	DropUnknownPeer:    "unknown_peer",
	DropSpoofed:        "spoofed_source",
	DropNoPeer:         "no_peer",
	DropFamily:         "address_family",
	DropTxError:        "tx_error",
	DropSourceNotLocal: "source_not_local",
	DropBadChecksum:    "bad_checksum",
	DropBadOptions:     "bad_options",
	DropBroadcast:      "broadcast_multicast",
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return "unknown"
	}
	return dropReasonNames[r]
}

// DropReasons lists every reason, in order.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

// drops counts drops by reason, lock-free.
type drops [numDropReasons]atomic.Uint64

func (d *drops) add(r DropReason) { d[r].Add(1) }

// LinkStats are a NIC's counters as seen by the router's link endpoints.
type LinkStats struct {
	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
}

type linkCounters struct {
	rxPackets, rxBytes atomic.Uint64
	txPackets, txBytes atomic.Uint64
}

func (c *linkCounters) snapshot() LinkStats {
	return LinkStats{
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(),
	}
}

// Stats is a snapshot of the router's counters.
type Stats struct {
	// Drops counts refused packets by reason, across both NICs.
	Drops map[DropReason]uint64
	// TUN and Overlay count packets that crossed each link endpoint.
	TUN, Overlay LinkStats
	// TUNWriteBatches counts the bursts of more than one packet the
	// fast path handed the TUN in one write — one system call where the
	// device has batched I/O (Router.BatchIO) — and TUNWriteBatchPackets
	// the packets they carried.
	TUNWriteBatches, TUNWriteBatchPackets uint64
	// NoRoute, TTLExceeded and TooBig count packets the stack could not
	// forward, from gVisor's own counters.
	NoRoute, TTLExceeded, TooBig uint64
	// ICMPErrorsSent counts ICMP errors the router sent (destination
	// unreachable, time exceeded, packet too big).
	ICMPErrorsSent uint64
	// Peers holds per-peer counters by peer name.
	Peers map[string]PeerStats
	// PeersWithoutKey counts the configured peers that an encrypted
	// overlay does not route to because they have no public key.
	PeersWithoutKey int
}

// PeerStats are one peer's counters.
type PeerStats struct {
	LinkStats
	// LastSeenUnixNano is when the last datagram from the peer was
	// accepted (0: never).
	LastSeenUnixNano int64
}
