package tun

import "errors"

// Device is an open TUN device: a point-to-point link between the node
// kernel and the router that carries raw IP packets (IFF_TUN|IFF_NO_PI: no
// packet information header, the first byte is the IP version nibble).
//
// Batches are its one contract, as with wireguard-go's tun.Device: Read
// returns one or more packets, Write takes one or more, and a plain packet
// is a batch of one. Each packet comes with its offload metadata (an
// Offload; the zero Offload is a plain packet with a complete checksum).
// Whether a device carries TCP super-packets is fixed when it is opened
// (Options.Offload, or an adopted IFF_VNET_HDR descriptor) and reported by
// Offload; a device without offloads reads only zero Offloads and refuses
// any other.
//
// Read and Write may be called concurrently with each other, from one
// reader goroutine and any number of writers. Close unblocks a pending Read,
// which then returns an error wrapping os.ErrClosed; Read and Write after
// Close return such an error too. Close is idempotent.
type Device interface {
	// Read reads at least one and at most min(len(bufs), BatchSize())
	// packets, blocking until one is available, and returns how many: n.
	// Packet i is sizes[i] bytes in bufs[i], with its metadata in
	// offs[i]; sizes and offs are at least as long as bufs. A packet
	// longer than its buffer is truncated to it; with Offload, TCP
	// super-packets are up to 64 KiB, so size buffers to 65535 bytes. A
	// packet whose offload header is malformed or does not describe it
	// is consumed and reported as an error wrapping ErrBadOffload (and
	// n == 0), which the caller counts as a drop before reading on.
	Read(bufs [][]byte, sizes []int, offs []Offload) (n int, err error)
	// Write writes each of bufs, in order, with offs[i] as its metadata
	// (offs may be nil: plain packets), and returns how many it wrote; on
	// error, those before the one that failed. A metadata that cannot
	// describe its packet — any but the zero Offload, on a device without
	// Offload — is refused with an error wrapping ErrBadOffload. Write
	// does not retain the buffers.
	Write(bufs [][]byte, offs []Offload) (n int, err error)
	// BatchSize is the most packets one Read returns.
	BatchSize() int
	// Offload reports whether the kernel hands the device TCP
	// super-packets of up to 64 KiB with partial checksums (TSO), and
	// takes them back: IFF_VNET_HDR and TUNSETOFFLOAD, see Offload.
	Offload() bool
	// UDPOffload reports whether the device carries UDP super-packets
	// (GSOUDPL4) both ways too: Offload, on a kernel that takes
	// TUN_F_USO4|TUN_F_USO6 (Linux 6.2 and later).
	UDPOffload() bool
	// Name is the kernel's name of the device ("vr0").
	Name() string
	// Close releases the device (or the adopted descriptor).
	Close() error
}

// BatchIO reports whether d moves a burst of packets in one system call
// (io_uring, Linux 6.3 and later: see the offload device) and, if not, why.
// Only the offload device (Options.Offload) does; it falls back to one
// system call per packet where io_uring is unavailable — refused by a
// seccomp filter or kernel.io_uring_disabled, or an older kernel.
func BatchIO(d Device) (bool, error) {
	if b, ok := d.(interface{ BatchIO() (bool, error) }); ok {
		return b.BatchIO()
	}
	return false, errors.New("the device moves one packet per system call")
}
