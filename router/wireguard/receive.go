package wireguard

import (
	"encoding/binary"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// reader is ReadBatch's state, the one reading goroutine's: the run of
// datagrams last read, opened in place, and the packets from it not yet
// handed to the router.
type reader struct {
	bufs     [][]byte
	sizes    []int
	segSizes []int
	from     []netip.AddrPort
	pkts     []inner
	next     int
	load     loadDefence

	// Within one fill, what the last transport message found: its
	// session by index, its inner source's peer, and the bytes its peer
	// sent so far, counted at once (a run's packets share all three).
	idx     uint32
	entry   indexEntry
	src     netip.Addr
	srcPeer *peer
	rxPeer  *peer
	rxBytes uint64
}

// forget drops what the last transport message found: after a
// handshake message or a session's rotation, which change the index.
func (r *reader) forget() { r.entry, r.srcPeer = indexEntry{}, nil }

// countRx counts n bytes from p, flushing the count of the peer before.
func (r *reader) countRx(p *peer, n int) {
	if p != r.rxPeer {
		r.flushRx()
		r.rxPeer = p
	}
	r.rxBytes += uint64(n)
}

func (r *reader) flushRx() {
	if r.rxPeer != nil {
		r.rxPeer.rx.Add(r.rxBytes)
	}
	r.rxPeer, r.rxBytes = nil, 0
}

// inner is an authenticated inner packet and the peer it came from.
type inner struct {
	p *peer
	b []byte
}

// readBatch is how many runs one read of the socket takes.
const readBatch = 8

func (r *reader) init() {
	r.bufs = make([][]byte, readBatch)
	for i := range r.bufs {
		r.bufs[i] = make([]byte, 65535)
	}
	r.sizes = make([]int, readBatch)
	r.segSizes = make([]int, readBatch)
	r.from = make([]netip.AddrPort, readBatch)
}

// ReadBatch implements router.Conn: the packets that authenticated, as
// runs of one peer's packets of one size per message (the last of a run
// may be shorter), the way UDP GRO hands over a run of datagrams, so that
// the router coalesces a TCP stream's into one super-packet. It is called
// from one goroutine.
func (c *Conn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	r := &c.rd
	for r.next >= len(r.pkts) {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(bufs) && r.next < len(r.pkts) {
		first := r.pkts[r.next]
		buf := bufs[n]
		seg, size := len(first.b), 0
		for r.next < len(r.pkts) {
			pk := r.pkts[r.next]
			if size > 0 && (pk.p != first.p || len(pk.b) > seg || size+len(pk.b) > len(buf)) {
				break
			}
			size += copy(buf[size:], pk.b)
			r.next++
			if len(pk.b) < seg {
				break // a shorter packet ends a run
			}
		}
		sizes[n], segSizes[n], from[n] = size, seg, first.p.conf()
		n++
	}
	return n, nil
}

// fill reads a batch from the socket and opens it: r.pkts are the inner
// packets it held, handshakes and keepalives handled on the way.
func (c *Conn) fill() error {
	r := &c.rd
	clear(r.pkts)
	r.pkts, r.next = r.pkts[:0], 0
	n, err := c.sock.ReadBatch(r.bufs, r.sizes, r.segSizes, r.from)
	if err != nil {
		return err
	}
	now := c.now()
	srcs := c.srcs.Load()
	r.forget()
	for i := range n {
		b, seg := r.bufs[i][:r.sizes[i]], max(r.segSizes[i], 1)
		for off := 0; off < len(b); off += seg {
			c.receive(b[off:min(off+seg, len(b))], r.from[i], srcs, now)
		}
	}
	r.flushRx()
	return nil
}

// receive handles one datagram.
func (c *Conn) receive(msg []byte, from netip.AddrPort, srcs *sources, now time.Time) {
	if !IsMessage(msg) {
		c.refusePlain(from)
		return
	}
	t := binary.LittleEndian.Uint32(msg)
	if t == msgTransport {
		c.receiveTransport(msg, from, srcs, now)
		return
	}
	c.rd.forget()
	switch t {
	case msgInitiation:
		c.receiveInitiation(msg, from, now)
	case msgResponse:
		c.receiveResponse(msg, from, now)
	case msgCookie:
		c.receiveCookie(msg, from, now)
	}
}

func (c *Conn) receiveTransport(msg []byte, from netip.AddrPort, srcs *sources, now time.Time) {
	if len(msg) < TransportOverhead {
		c.refuse(RefusedUnauthenticated, "", from)
		return
	}
	r := &c.rd
	idx := binary.LittleEndian.Uint32(msg[4:8])
	if r.entry.p == nil || r.idx != idx {
		r.idx, r.entry = idx, c.lookup(idx)
	}
	kp, p := r.entry.kp, r.entry.p
	if kp == nil || kp.expired(now) {
		c.refuse(RefusedUnauthenticated, "", from)
		return
	}
	pt, ok := kp.openTransport(msg)
	if !ok {
		c.refuse(RefusedUnauthenticated, "", from)
		return
	}
	r.countRx(p, len(msg))
	if from != p.addr() {
		ep := from // the peer roamed
		p.endpoint.Store(&ep)
	}
	if kp != p.current.Load() {
		c.confirm(p, kp, now)
		r.forget()
	}
	t := now.UnixNano()
	if p.sentWaiting.Load() != 0 {
		p.sentWaiting.Store(0)
	}
	if len(pt) == 0 {
		return // a keepalive
	}
	if p.recvWaiting.Load() == 0 {
		p.recvWaiting.Store(t)
	}
	pkt, ok := ipPacket(pt)
	if !ok {
		c.refuse(RefusedUnauthenticated, "", from)
		return
	}
	if src := sourceOf(pkt); r.srcPeer == nil || src != r.src {
		r.src, r.srcPeer = src, srcs.lookup(pkt)
	}
	if r.srcPeer != p {
		c.refuse(RefusedDisallowedSource, "", from)
		return
	}
	r.pkts = append(r.pkts, inner{p: p, b: pkt})
}

// ipPacket is the IP packet at the start of padded plaintext b, by its
// header's length.
func ipPacket(b []byte) ([]byte, bool) {
	var n int
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		n = int(binary.BigEndian.Uint16(b[2:4]))
		if n < 20 {
			return nil, false
		}
	case len(b) >= 40 && b[0]>>4 == 6:
		n = 40 + int(binary.BigEndian.Uint16(b[4:6]))
	default:
		return nil, false
	}
	if n > len(b) {
		return nil, false
	}
	return b[:n], true
}

// confirm makes kp, a session p's initiator has now sent under, p's
// current one, and sends what waited for it.
func (c *Conn) confirm(p *peer, kp *keypair, now time.Time) {
	p.mu.Lock()
	if p.next != kp {
		p.mu.Unlock()
		return // the previous session: still good to receive on
	}
	if p.prev != nil {
		c.unregister(p.prev.localIndex)
	}
	p.prev = p.current.Load()
	p.current.Store(kp)
	p.next = nil
	if p.hs != nil {
		// The session is up: an initiation of ours in flight (one that
		// crossed the peer's) is no longer wanted.
		c.unregister(p.hs.localIndex)
		p.hs, p.hsStarted = nil, time.Time{}
	}
	staged := p.staged
	p.staged = nil
	p.mu.Unlock()
	c.flush(p, kp, staged, false, now)
}

// handshakeIdentity checks what every initiation and response must pass
// before the reader computes on it — its size, its mac1 for this router's
// key, the load defence — and returns the key it is checked against, or
// nil for a message refused (and counted).
func (c *Conn) handshakeIdentity(msg []byte, size int, from netip.AddrPort, now time.Time) *identity {
	id := c.id.Load()
	if len(msg) != size {
		c.refuse(RefusedNotWireGuard, "", from)
		return nil
	}
	if !checkMAC1(msg, id.macs) {
		c.refuse(RefusedBadMAC, "a handshake message's MAC is not for this router's public key: its sender has another key for this router", from)
		return nil
	}
	if !c.admitHandshake(msg, binary.LittleEndian.Uint32(msg[4:8]), from, now) {
		return nil
	}
	return id
}

func (c *Conn) receiveInitiation(msg []byte, from netip.AddrPort, now time.Time) {
	id := c.handshakeIdentity(msg, initiationSize, from, now)
	if id == nil {
		return
	}
	var p *peer
	ini, err := consumeInitiation(msg, id.priv, id.pub, func(k Key) ([KeyLen]byte, bool) {
		c.mu.Lock()
		p = c.peers[k]
		c.mu.Unlock()
		if p == nil {
			return [KeyLen]byte{}, false
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.ss, true
	})
	if err != nil {
		c.refuse(RefusedUnknownKey, "a handshake initiation does not authenticate as any peer: its sender's public key is not a configured peer's", from)
		return
	}
	p.mu.Lock()
	if p.removed || c.id.Load() != id {
		p.mu.Unlock()
		return
	}
	if !newerTimestamp(ini.timestamp, p.lastTS) || (!p.lastInit.IsZero() && now.Sub(p.lastInit) < initiationInterval) {
		p.mu.Unlock()
		c.refuse(RefusedReplay, "", from)
		return
	}
	c.hsTotal.initiationsReceived.Add(1)
	p.lastTS, p.lastInit = ini.timestamp, now
	var resp [responseSize]byte
	idx := c.newIndex()
	if err := createResponse(resp[:], ini.hs, p.key, idx); err != nil {
		p.mu.Unlock()
		c.log.Warn("WireGuard handshake response", zap.String("peer", p.name()), zap.Error(err))
		return
	}
	var cookie *[16]byte
	if !p.cookieAt.IsZero() && now.Sub(p.cookieAt) < cookieLifetime {
		cookie = &p.cookie
	}
	p.hsMAC1 = addMACs(resp[:], p.mac, cookie)
	kp := newKeypair(ini.hs, now)
	c.register(idx, indexEntry{p: p, kp: kp})
	if p.next != nil {
		c.unregister(p.next.localIndex)
	}
	p.next = kp
	ep := from
	p.endpoint.Store(&ep)
	// Counted as sent before it goes, as the handshake is counted
	// complete: the status never shows a session whose response is
	// not counted.
	c.hsTotal.responsesSent.Add(1)
	c.completedLocked(p, now)
	p.mu.Unlock()
	if err := c.sock.WriteBatch(resp[:], len(resp), from); err != nil {
		c.log.Debug("send a WireGuard handshake response", zap.String("peer", p.name()), zap.Error(err))
		return
	}
	p.tx.Add(uint64(len(resp)))
	p.lastSent.Store(now.UnixNano())
}

func (c *Conn) receiveResponse(msg []byte, from netip.AddrPort, now time.Time) {
	id := c.handshakeIdentity(msg, responseSize, from, now)
	if id == nil {
		return
	}
	e := c.lookup(binary.LittleEndian.Uint32(msg[8:12]))
	p, hs := e.p, e.hs
	if hs == nil {
		c.refuse(RefusedStaleResponse, "", from)
		return
	}
	p.mu.Lock()
	if p.hs != hs || c.id.Load() != id || consumeResponse(msg, hs, id.priv) != nil {
		p.mu.Unlock()
		c.refuse(RefusedStaleResponse, "", from)
		return
	}
	c.hsTotal.responsesReceived.Add(1)
	kp := newKeypair(hs, now)
	c.register(hs.localIndex, indexEntry{p: p, kp: kp})
	if p.prev != nil {
		c.unregister(p.prev.localIndex)
	}
	if p.next != nil {
		p.prev, p.next = p.next, nil
	} else {
		p.prev = p.current.Load()
	}
	p.current.Store(kp)
	p.hs, p.hsStarted = nil, time.Time{}
	ep := from
	p.endpoint.Store(&ep)
	c.completedLocked(p, now)
	staged := p.staged
	p.staged = nil
	p.mu.Unlock()
	p.rx.Add(uint64(len(msg)))
	p.sentWaiting.Store(0)
	// The first message under the session confirms it to the responder.
	c.flush(p, kp, staged, true, now)
}

func (c *Conn) receiveCookie(msg []byte, from netip.AddrPort, now time.Time) {
	if len(msg) != cookieSize {
		c.refuse(RefusedNotWireGuard, "", from)
		return
	}
	// A reply to our last handshake message to the peer the index
	// names: an initiation, or a response (to the index of its session).
	e := c.lookup(binary.LittleEndian.Uint32(msg[4:8]))
	if e.p == nil {
		c.refuse(RefusedStaleResponse, "", from)
		return
	}
	p := e.p
	p.mu.Lock()
	defer p.mu.Unlock()
	cookie, err := openCookie(msg, p.mac.cookie, p.hsMAC1)
	if err != nil {
		c.refuse(RefusedBadMAC, "", from)
		return
	}
	// The peer is under load: our next handshake message to it (a retry,
	// or the response to its retry) carries mac2 with this cookie.
	p.cookie, p.cookieAt = cookie, now
}
