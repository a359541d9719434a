package tun

// Device is an open TUN device: a point-to-point link between the node
// kernel and the router that carries raw IP packets (IFF_TUN|IFF_NO_PI: no
// packet information header, the first byte is the IP version nibble).
//
// Read and Write may be called concurrently with each other, from one
// reader goroutine and any number of writers. Close unblocks a pending Read,
// which then returns an error wrapping os.ErrClosed; Read and Write after
// Close return such an error too. Close is idempotent.
type Device interface {
	// Read reads one IP packet into p and returns its length. A packet
	// longer than p is truncated and reported with its full length
	// capped at len(p); callers size p to MTU plus headroom.
	Read(p []byte) (int, error)
	// Write writes one IP packet.
	Write(p []byte) (int, error)
	// Name is the kernel's name of the device ("vr0").
	Name() string
	// Close releases the device (or the adopted descriptor).
	Close() error
}
