// Package tuntest provides an in-memory tun.Device, so that router tests
// run the whole packet path inside go test without privileges or a kernel
// device.
//
// NewPair returns the two ends of a fake TUN. The router gets the Device
// (a tun.Device); the test plays the node kernel through the Kernel:
//
//	 test (as node kernel)                       code under test
//	┌───────────────────┐  Send ─▶ ToRouter ─▶  ┌──────────────────┐
//	│ Kernel            │                       │ Device (tun.vr0) │
//	│                   │  Recv ◀─ FromRouter ◀─│  Read / Write    │
//	└───────────────────┘                       └──────────────────┘
//
// Like a real TUN, the Device checks that what it is given to Write is an
// IPv4 or IPv6 packet, truncates a packet larger than Read's buffer, and
// unblocks Read and Write on Close. It has no offloads; one Read returns
// every packet queued, up to BatchSize.
package tuntest
