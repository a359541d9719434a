package tun

import (
	"encoding/binary"
	"fmt"
)

// GSOType is a virtio_net_hdr gso_type.
type GSOType uint8

// The gso_types a Device with Offload carries. The kernel sets bit 0x80
// (VIRTIO_NET_HDR_GSO_ECN) on a super-packet whose segments carry CWR; such
// a Device never asks for those (it does not set TUN_F_TSO_ECN, so the
// kernel segments them itself), but Read reports the bit as-is should it
// appear: GSOTCPv4|0x80 is not GSOTCPv4.
const (
	GSONone  GSOType = 0 // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 GSOType = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	GSOTCPv6 GSOType = 4 // VIRTIO_NET_HDR_GSO_TCPV6
	// GSOUDPL4 is a UDP super-packet (VIRTIO_NET_HDR_GSO_UDP_L4, Linux
	// 6.2 and later): datagrams of GSOSize payload bytes each (the last
	// may be shorter) behind one IP and UDP header, IPv4 or IPv6 as the
	// packet's version says. Only a device with UDPOffload carries it.
	GSOUDPL4 GSOType = 5
)

// gsoECN is VIRTIO_NET_HDR_GSO_ECN, a flag on the TCP gso_types.
const gsoECN GSOType = 0x80

func (t GSOType) String() string {
	var s string
	switch t &^ gsoECN {
	case GSONone:
		s = "none"
	case GSOTCPv4:
		s = "tcpv4"
	case GSOTCPv6:
		s = "tcpv6"
	case GSOUDPL4:
		if t != GSOUDPL4 {
			return fmt.Sprintf("GSOType(%#x)", uint8(t)) // ECN is TCP's
		}
		s = "udp_l4"
	default:
		return fmt.Sprintf("GSOType(%#x)", uint8(t))
	}
	if t&gsoECN != 0 {
		s += "|ecn"
	}
	return s
}

// Offload is the offload metadata carried with a packet (struct
// virtio_net_hdr); the zero Offload is a plain packet with a complete
// checksum. A device opened with offloads (Options.Offload: IFF_VNET_HDR
// and TUNSETOFFLOAD with TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6) reads packets
// with partial checksums (NeedsCsum) and TCP super-packets of up to 64 KiB
// (GSOType), and takes them back: one system call per 64 KiB instead of
// per segment.
//
// Where the kernel allows it (Linux 6.2: TUN_F_USO4|TUN_F_USO6), the
// device carries UDP super-packets too (GSOUDPL4, Device.UDPOffload).
//
// On a packet Read returns, HdrLen of a super-packet is the length of its
// IP and transport headers (CsumStart plus the TCP data offset, or plus 8
// for UDP), computed from the packet: the kernel fills hdr_len with the
// length of the packet's linear buffer, which may include payload. For
// other packets it is what the kernel said (0).
type Offload struct {
	NeedsCsum  bool // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum at CsumStart+CsumOffset holds only the pseudo-header sum
	GSOType    GSOType
	HdrLen     uint16 // IP + TCP (or UDP) header bytes
	GSOSize    uint16 // TCP payload bytes per segment (MSS), UDP payload bytes per datagram
	CsumStart  uint16 // offset of the transport header
	CsumOffset uint16 // offset of the checksum field within it (16 for TCP, 6 for UDP)
}

// virtio_net_hdr, as the kernel's include/uapi/linux/virtio_net.h has it.
const (
	virtioNetHdrLen = 10 // sizeof(struct virtio_net_hdr)

	virtioFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
)

// putOffload encodes o into b[:virtioNetHdrLen] in the kernel's layout
// (little endian: the device is set to TUNSETVNETLE).
func putOffload(b []byte, o Offload) {
	_ = b[virtioNetHdrLen-1]
	b[0] = 0
	if o.NeedsCsum {
		b[0] = virtioFlagNeedsCsum
	}
	b[1] = uint8(o.GSOType)
	binary.LittleEndian.PutUint16(b[2:], o.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], o.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], o.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], o.CsumOffset)
}

// getOffload decodes b[:virtioNetHdrLen] without checking it. Flags other
// than NEEDS_CSUM (DATA_VALID, RSC_INFO) are dropped: the kernel sets none
// of them on a TUN read.
func getOffload(b []byte) Offload {
	_ = b[virtioNetHdrLen-1]
	return Offload{
		NeedsCsum:  b[0]&virtioFlagNeedsCsum != 0,
		GSOType:    GSOType(b[1]),
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// parseOffload decodes the header hdr the kernel gave with pkt and checks
// it against pkt, so that a caller can use CsumStart, CsumOffset and
// HdrLen as offsets into pkt without further checks. For a super-packet
// it replaces HdrLen with the real IP+TCP (or IP+UDP) header length.
func parseOffload(hdr, pkt []byte) (Offload, error) {
	if len(hdr) < virtioNetHdrLen {
		return Offload{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadOffload, len(hdr), virtioNetHdrLen)
	}
	o := getOffload(hdr)
	if err := o.check(pkt); err != nil {
		return Offload{}, err
	}
	switch o.GSOType &^ gsoECN {
	case GSONone:
	case GSOUDPL4:
		o.HdrLen = o.CsumStart + udpHdrLen
	default:
		o.HdrLen = o.CsumStart + uint16(pkt[o.CsumStart+12]>>4)*4
	}
	return o, nil
}

// check reports whether o can describe pkt: a known gso_type, checksum
// offsets inside pkt and, for a TCP super-packet, an IP version that
// matches, a TCP header inside pkt and a non-zero segment size; for a UDP
// one, an IPv4 or IPv6 packet with a UDP header inside it, a UDP partial
// checksum and a non-zero segment size.
func (o Offload) check(pkt []byte) error {
	n := len(pkt)
	if o.NeedsCsum && int(o.CsumStart)+int(o.CsumOffset)+2 > n {
		return fmt.Errorf("%w: checksum at %d+%d is past the end of the %d-byte packet", ErrBadOffload, o.CsumStart, o.CsumOffset, n)
	}
	var version byte
	switch o.GSOType &^ gsoECN {
	case GSONone:
		if o.GSOType != GSONone {
			return fmt.Errorf("%w: gso_type %v: ECN flag without a GSO type", ErrBadOffload, o.GSOType)
		}
		return nil
	case GSOTCPv4:
		version = 4
	case GSOTCPv6:
		version = 6
	case GSOUDPL4:
		return o.checkUDP(pkt)
	default:
		return fmt.Errorf("%w: unknown gso_type %#x; want none (0), tcpv4 (1), tcpv6 (4) or udp_l4 (5)", ErrBadOffload, uint8(o.GSOType))
	}
	switch {
	case n == 0 || pkt[0]>>4 != version:
		return fmt.Errorf("%w: gso_type %v on a packet that is not IPv%d", ErrBadOffload, o.GSOType, version)
	case !o.NeedsCsum || o.CsumOffset != 16:
		return fmt.Errorf("%w: gso_type %v without a TCP partial checksum (needs_csum %t, csum_offset %d; want true, 16)", ErrBadOffload, o.GSOType, o.NeedsCsum, o.CsumOffset)
	case o.GSOSize == 0:
		return fmt.Errorf("%w: gso_type %v with gso_size 0", ErrBadOffload, o.GSOType)
	}
	start, minStart := int(o.CsumStart), 20
	if version == 6 {
		minStart = 40
	}
	if start < minStart {
		return fmt.Errorf("%w: csum_start %d is inside the IPv%d header", ErrBadOffload, start, version)
	}
	if start+20 > n {
		return fmt.Errorf("%w: TCP header at %d is past the end of the %d-byte packet", ErrBadOffload, start, n)
	}
	if doff := int(pkt[start+12]>>4) * 4; doff < 20 || start+doff > n {
		return fmt.Errorf("%w: TCP data offset %d at %d does not fit the %d-byte packet", ErrBadOffload, doff, start, n)
	}
	return nil
}

// udpHdrLen is the length of a UDP header.
const udpHdrLen = 8

// checkUDP is check for a UDP super-packet (GSOUDPL4).
func (o Offload) checkUDP(pkt []byte) error {
	n := len(pkt)
	switch {
	case o.GSOType != GSOUDPL4:
		return fmt.Errorf("%w: gso_type %v: ECN flag on a UDP super-packet", ErrBadOffload, o.GSOType)
	case n == 0 || pkt[0]>>4 != 4 && pkt[0]>>4 != 6:
		return fmt.Errorf("%w: gso_type %v on a packet that is neither IPv4 nor IPv6", ErrBadOffload, o.GSOType)
	case !o.NeedsCsum || o.CsumOffset != 6:
		return fmt.Errorf("%w: gso_type %v without a UDP partial checksum (needs_csum %t, csum_offset %d; want true, 6)", ErrBadOffload, o.GSOType, o.NeedsCsum, o.CsumOffset)
	case o.GSOSize == 0:
		return fmt.Errorf("%w: gso_type %v with gso_size 0", ErrBadOffload, o.GSOType)
	}
	minStart := 20
	if pkt[0]>>4 == 6 {
		minStart = 40
	}
	if start := int(o.CsumStart); start < minStart {
		return fmt.Errorf("%w: csum_start %d is inside the IPv%d header", ErrBadOffload, start, pkt[0]>>4)
	} else if start+udpHdrLen > n {
		return fmt.Errorf("%w: UDP header at %d is past the end of the %d-byte packet", ErrBadOffload, start, n)
	}
	return nil
}
