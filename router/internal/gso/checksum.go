package gso

import (
	"encoding/binary"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// udpCsumOffset is the checksum field's offset within a UDP header.
const udpCsumOffset = 6

// SetPartial writes the TCP pseudo-header sum of pkt (over source,
// destination, protocol TCP and the TCP length; not complemented) into its
// TCP checksum field, as virtio_net_hdr's NEEDS_CSUM and Linux's
// CHECKSUM_PARTIAL expect, and returns csumStart (the IP header length) and
// csumOffset (16). pkt must be a whole IPv4 or IPv6 TCP packet, as for
// Segment.
func SetPartial(pkt []byte) (csumStart, csumOffset int, err error) {
	p, f := parse(pkt)
	if f.format != "" {
		return 0, 0, f.err("set partial checksum")
	}
	setPartial(pkt, p)
	return p.ipLen, tcpCsumOffset, nil
}

func setPartial(pkt []byte, p shape) {
	sum := pseudoSum(p.addrSum(pkt), len(pkt)-p.ipLen)
	binary.BigEndian.PutUint16(pkt[p.ipLen+tcpCsumOffset:], sum)
}

// Complete finishes a partial checksum in place: it stores the one's
// complement of the sum of pkt[csumStart:] (which includes the field, holding
// the partial sum) at csumStart+csumOffset. A computed 0 is stored as 0xffff
// when csumOffset is 6, UDP's checksum field, because 0 means "no checksum"
// in UDP (RFC 768). Offsets outside pkt are an error.
func Complete(pkt []byte, csumStart, csumOffset int) error {
	if csumStart < 0 || csumOffset < 0 || csumStart > len(pkt) || csumOffset > len(pkt)-csumStart-2 {
		return fmt.Errorf("complete checksum: field at csum start %d + offset %d does not fit a %d-byte packet", csumStart, csumOffset, len(pkt))
	}
	sum := ^checksum.Checksum(pkt[csumStart:], 0)
	if sum == 0 && csumOffset == udpCsumOffset {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[csumStart+csumOffset:], sum)
	return nil
}
