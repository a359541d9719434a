package tuntest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/vrouter/vrouter/tun"
)

// Options configures NewPair. The zero value is a device named "vr0" with
// room for 256 packets each way.
type Options struct {
	// Name is what Device.Name reports. Default tun.DefaultName.
	Name string
	// QueueLen is how many packets each direction holds before Send (or
	// Device.Write) blocks. Default 256.
	QueueLen int
}

// pipe is the state both ends share.
type pipe struct {
	name       string
	toRouter   chan []byte
	fromRouter chan []byte

	closeOnce sync.Once
	closed    chan struct{}
}

// Device is the router's end of a fake TUN, without offloads. Read returns
// the packets the test sends through the Kernel, all that are queued up
// to BatchSize at a time; Write passes packets to the Kernel. Read and
// Write are safe to call concurrently. Close unblocks both, which then
// return an error wrapping os.ErrClosed, as do later calls; Close is
// idempotent.
type Device struct{ p *pipe }

var _ tun.Device = (*Device)(nil)

// batchSize is what Device.BatchSize reports.
const batchSize = 8

// Kernel is the test's end of a fake TUN: it plays the node kernel.
// Its methods are safe to call concurrently. The Kernel never closes the
// device; only Device.Close does.
type Kernel struct{ p *pipe }

// NewPair returns the two ends of a new fake TUN.
func NewPair(opts Options) (*Device, *Kernel) {
	if opts.Name == "" {
		opts.Name = tun.DefaultName
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 256
	}
	p := &pipe{
		name:       opts.Name,
		toRouter:   make(chan []byte, opts.QueueLen),
		fromRouter: make(chan []byte, opts.QueueLen),
		closed:     make(chan struct{}),
	}
	return &Device{p}, &Kernel{p}
}

// Read waits for the next packet the Kernel sent, then takes those queued
// behind it, up to len(bufs) and BatchSize. A packet longer than its
// buffer is truncated to it, as a TUN does. Every packet is plain: offs[i]
// is the zero Offload.
func (d *Device) Read(bufs [][]byte, sizes []int, offs []tun.Offload) (int, error) {
	if d.isClosed() {
		return 0, d.closedError("read")
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	select {
	case pkt := <-d.p.toRouter:
		sizes[0], offs[0] = copy(bufs[0], pkt), tun.Offload{}
	case <-d.p.closed:
		return 0, d.closedError("read")
	}
	n := 1
	for n < min(len(bufs), batchSize) {
		select {
		case pkt := <-d.p.toRouter:
			sizes[n], offs[n] = copy(bufs[n], pkt), tun.Offload{}
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// Write passes a copy of each of bufs to the Kernel, in order. Like a TUN,
// it refuses with EINVAL what is not an IPv4 or IPv6 packet (by the
// version nibble), and as a device without offloads it refuses any but
// the zero Offload (tun.ErrBadOffload). It blocks while the queue to the
// Kernel is full, until Close.
func (d *Device) Write(bufs [][]byte, offs []tun.Offload) (int, error) {
	for i, b := range bufs {
		if d.isClosed() {
			return i, d.closedError("write")
		}
		if offs != nil && offs[i] != (tun.Offload{}) {
			return i, fmt.Errorf("write %s: %w: %+v on a device without offloads", d.p.name, tun.ErrBadOffload, offs[i])
		}
		if len(b) == 0 || (b[0]>>4 != 4 && b[0]>>4 != 6) {
			return i, fmt.Errorf("write %s: not an IPv4 or IPv6 packet: %w", d.p.name, syscall.EINVAL)
		}
		pkt := append([]byte(nil), b...)
		select {
		case d.p.fromRouter <- pkt:
		case <-d.p.closed:
			return i, d.closedError("write")
		}
	}
	return len(bufs), nil
}

// BatchSize implements tun.Device.
func (d *Device) BatchSize() int { return batchSize }

// Offload implements tun.Device: false.
func (d *Device) Offload() bool { return false }

// UDPOffload implements tun.Device: false.
func (d *Device) UDPOffload() bool { return false }

// Name returns Options.Name.
func (d *Device) Name() string { return d.p.name }

// Close closes the device. It always returns nil.
func (d *Device) Close() error {
	d.p.closeOnce.Do(func() { close(d.p.closed) })
	return nil
}

func (d *Device) isClosed() bool {
	select {
	case <-d.p.closed:
		return true
	default:
		return false
	}
}

func (d *Device) closedError(op string) error {
	return fmt.Errorf("%s %s: %w", op, d.p.name, os.ErrClosed)
}

// Send queues a copy of pkt for the router's next Read, as if the kernel
// routed it into the device. It waits while the queue is full, and fails
// when ctx ends or the device is closed (wrapping os.ErrClosed).
func (k *Kernel) Send(ctx context.Context, pkt []byte) error {
	select {
	case <-k.p.closed:
		return fmt.Errorf("send to %s: %w", k.p.name, os.ErrClosed)
	default:
	}
	pkt = append([]byte(nil), pkt...)
	select {
	case k.p.toRouter <- pkt: // room: queue it even if ctx is done
		return nil
	default:
	}
	select {
	case k.p.toRouter <- pkt:
		return nil
	case <-k.p.closed:
		return fmt.Errorf("send to %s: %w", k.p.name, os.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("send to %s: %w", k.p.name, context.Cause(ctx))
	}
}

// Recv returns the next packet the router wrote. Packets written before
// Close can still be received after it; once none are left, Recv fails
// with an error wrapping os.ErrClosed. It also fails when ctx ends.
func (k *Kernel) Recv(ctx context.Context) ([]byte, error) {
	select {
	case pkt := <-k.p.fromRouter:
		return pkt, nil
	default:
	}
	select {
	case pkt := <-k.p.fromRouter:
		return pkt, nil
	case <-k.p.closed:
		// Drain what was written before Close first.
		select {
		case pkt := <-k.p.fromRouter:
			return pkt, nil
		default:
			return nil, fmt.Errorf("receive from %s: %w", k.p.name, os.ErrClosed)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("receive from %s: %w", k.p.name, context.Cause(ctx))
	}
}

// FromRouter is the queue of packets the router wrote, for tests that
// select over several sources. It is never closed; select on Closed too.
func (k *Kernel) FromRouter() <-chan []byte { return k.p.fromRouter }

// ToRouter is the queue Read takes packets from, for tests that select.
// Packets sent on it are not copied, so do not modify them afterwards. It
// must not be closed; a send on it blocks after Close, so select on Closed
// too.
func (k *Kernel) ToRouter() chan<- []byte { return k.p.toRouter }

// Closed is closed once the router has closed the Device.
func (k *Kernel) Closed() <-chan struct{} { return k.p.closed }
