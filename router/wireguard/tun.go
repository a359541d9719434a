package wireguard

import (
	"net"
	"net/netip"
	"os"
	"sync"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// pipe is the tun.Device wireguard-go's device runs on: its "TUN" is the
// router. Packets cross it by hand-off, not by queue: a writer waits until
// the other side has copied its packets, so nothing is copied twice and a
// slow side slows the other, as a full socket buffer would.
//
//	router ── Conn.WriteBatch ──▶ out ──▶ Read   (device encrypts, sends)
//	router ◀── Conn.ReadBatch ◀── in  ◀── Write  (device received, decrypted)
type pipe struct {
	mtu    int
	out    chan *outReq
	in     chan *inReq
	events chan wgtun.Event
	closed chan struct{}
	once   sync.Once

	// Read's state: the device's one TUN reader goroutine.
	cur    *outReq
	curOff int

	// ReadBatch's state: the router's one overlay reader goroutine.
	pend    *inReq
	pendIdx int
}

// outReq is one Conn.WriteBatch: b, in segments of seg bytes.
type outReq struct {
	b    []byte
	seg  int
	done chan struct{}
}

// inReq is one Write: the device's decrypted packets, each bufs[i][off:].
type inReq struct {
	bufs [][]byte
	off  int
	done chan struct{}
}

var outReqs = sync.Pool{New: func() any { return &outReq{done: make(chan struct{}, 1)} }}

func newPipe(mtu int) *pipe {
	p := &pipe{
		mtu:    mtu,
		out:    make(chan *outReq),
		in:     make(chan *inReq),
		events: make(chan wgtun.Event, 1),
		closed: make(chan struct{}),
	}
	p.events <- wgtun.EventUp
	return p
}

var _ wgtun.Device = (*pipe)(nil)

func (p *pipe) File() *os.File             { return nil }
func (p *pipe) MTU() (int, error)          { return p.mtu, nil }
func (p *pipe) Name() (string, error)      { return "vrouter", nil }
func (p *pipe) Events() <-chan wgtun.Event { return p.events }

// BatchSize is how many packets the device reads at a time: as many as a
// TCP super-packet of 64 KiB splits into, and then some.
func (p *pipe) BatchSize() int { return 128 }

// Close unblocks every waiting side and closes the events channel, which
// ends the device's event reader. The device calls it as it closes.
func (p *pipe) Close() error {
	p.once.Do(func() {
		close(p.closed)
		close(p.events)
	})
	return nil
}

// Read gives the device the packets the router wrote: segments of the
// request at hand, then of any others already waiting, up to len(bufs).
// It blocks for the first.
func (p *pipe) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if p.cur == nil {
		select {
		case p.cur = <-p.out:
		case <-p.closed:
			return 0, os.ErrClosed
		}
	}
	n := 0
	for n < len(bufs) {
		if p.cur == nil {
			select {
			case p.cur = <-p.out:
			default:
				return n, nil
			}
		}
		r := p.cur
		for p.curOff < len(r.b) && n < len(bufs) {
			end := min(p.curOff+r.seg, len(r.b))
			sizes[n] = copy(bufs[n][offset:], r.b[p.curOff:end])
			n++
			p.curOff = end
		}
		if p.curOff >= len(r.b) {
			p.cur, p.curOff = nil, 0
			r.done <- struct{}{}
		}
	}
	return n, nil
}

// Write hands the device's decrypted packets to the router's ReadBatch and
// returns once it has taken them all. The device calls it from one
// goroutine per peer.
func (p *pipe) Write(bufs [][]byte, offset int) (int, error) {
	r := &inReq{bufs: bufs, off: offset, done: make(chan struct{}, 1)}
	select {
	case p.in <- r:
	case <-p.closed:
		return 0, os.ErrClosed
	}
	select {
	case <-r.done:
		return len(bufs), nil
	case <-p.closed:
		return 0, os.ErrClosed
	}
}

// write is Conn.WriteBatch: it waits until the device has read b.
func (p *pipe) write(b []byte, seg int) error {
	r := outReqs.Get().(*outReq)
	r.b, r.seg = b, max(seg, 1)
	select {
	case p.out <- r:
	case <-p.closed:
		return net.ErrClosed
	}
	select {
	case <-r.done:
		r.b = nil
		outReqs.Put(r)
		return nil
	case <-p.closed:
		// The device may still hold r: leave it to the collector.
		return net.ErrClosed
	}
}

// read is Conn.ReadBatch: it packs the packets the device wrote into
// bufs, consecutive packets from one peer of one size (the last of a run
// may be shorter) as one message, the way UDP GRO hands over a run of
// datagrams, so that the router coalesces them into one super-packet. A
// packet's sender is the peer whose allowed IPs hold its source (the
// device checked that they do); srcs says which that is.
func (p *pipe) read(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort, srcs *sources) (int, error) {
	if p.pend == nil {
		select {
		case p.pend = <-p.in:
		case <-p.closed:
			return 0, net.ErrClosed
		}
	}
	n := 0
	for n < len(bufs) {
		if p.pend == nil {
			select {
			case p.pend = <-p.in:
			default:
				return n, nil
			}
		}
		r := p.pend
		buf := bufs[n]
		first := r.bufs[p.pendIdx][r.off:]
		ep := srcs.lookup(first)
		seg := len(first)
		size := 0
		for p.pendIdx < len(r.bufs) {
			pkt := r.bufs[p.pendIdx][r.off:]
			if size > 0 && (len(pkt) > seg || size+len(pkt) > len(buf) || srcs.lookup(pkt) != ep) {
				break
			}
			size += copy(buf[size:], pkt)
			p.pendIdx++
			if len(pkt) < seg {
				break // a shorter packet ends a run
			}
		}
		sizes[n], segSizes[n], from[n] = size, seg, ep
		n++
		if p.pendIdx >= len(r.bufs) {
			p.pend, p.pendIdx = nil, 0
			r.done <- struct{}{}
		}
	}
	return n, nil
}
