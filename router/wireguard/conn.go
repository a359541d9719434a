package wireguard

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Peer is one peer router as the WireGuard overlay knows it.
type Peer struct {
	// Name is the peer's node name, for logs and status.
	Name string
	// PublicKey is the peer's public key; unique among peers.
	PublicKey Key
	// Endpoint is where the peer's overlay listens. The session follows
	// the peer if it roams (WireGuard's endpoint update).
	Endpoint netip.AddrPort
	// AllowedIPs are the inner addresses the peer may send from, and
	// that packets to are sent to it: its pod CIDRs and its node address.
	AllowedIPs []netip.Prefix
}

// Socket is the underlay: UDP datagrams in batches. router.Conn is one
// (router.ListenUDP: recvmmsg with UDP_GRO, sendmmsg with UDP_SEGMENT).
// ReadBatch is called from one goroutine, WriteBatch from many.
type Socket interface {
	ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error)
	WriteBatch(b []byte, segSize int, addr netip.AddrPort) error
	LocalAddr() netip.AddrPort
	Close() error
}

// Options configure a Conn.
type Options struct {
	// PrivateKey is this router's key. Required.
	PrivateKey Key
	// Port is the UDP port to listen on, on every local IPv4 address,
	// when Socket is nil.
	Port uint16
	// MTU is the largest inner packet: the tunnel MTU.
	MTU int
	// Keepalive is the interval of a keepalive to a peer when nothing
	// else is sent, which keeps a session up and its last handshake
	// recent; of each pair of routers, the one with the lower public key
	// sends them. Default 25 s, as wg-quick's users set; negative turns
	// it off.
	Keepalive time.Duration
	// Logger receives handshake failures and refusals (rate-limited).
	// Default: none.
	Logger *zap.Logger
	// Socket is the underlay socket, already open; the Conn owns it from
	// Listen on, and closes it. Default: a UDP socket on Port that moves
	// one datagram per system call. The router passes its overlay socket
	// (router.ListenUDP), which moves a run of datagrams per call.
	Socket Socket
}

// DefaultKeepalive is Options.Keepalive's default.
const DefaultKeepalive = 25 * time.Second

// SessionLifetime is how long a handshake's keys serve (WireGuard's
// Reject-After-Time): a peer whose last handshake is older has no
// session.
const SessionLifetime = rejectAfterTime

// Conn is the encrypted overlay: WireGuard between routers, its data path
// in the router's own goroutines. It is a router.Conn: WriteBatch seals
// the router's packets for the peer at the address the router names and
// sends them as one run of datagrams; ReadBatch reads a run, opens each
// message in place and hands the router the packets that authenticate,
// marked as from the configured endpoint of the peer that sent them.
// Handshakes, keepalives and rekeys follow the WireGuard paper and
// interoperate with wireguard-go and the kernel's module. Datagrams that
// fail WireGuard's checks never reach the router; they are counted
// (Stats).
type Conn struct {
	sock      Socket
	mtu       int
	local     netip.AddrPort
	keepalive time.Duration
	log       *zap.Logger
	debug     bool

	id atomic.Pointer[identity]

	mu    sync.Mutex // peers and the maps built from them
	peers map[Key]*peer
	// byAddr is the peers by configured endpoint (the router's next
	// hops), srcs by allowed IPs; both immutable, replaced whole.
	byAddr atomic.Pointer[map[netip.AddrPort]*peer]
	srcs   atomic.Pointer[sources]

	idxMu sync.RWMutex
	index map[uint32]indexEntry

	rd     reader
	sendBs sync.Pool // *[]byte: sealed runs

	refused       [numRefusals]atomic.Uint64
	refusedLogged [numRefusals]atomic.Int64
	hsTotal       struct{ initiationsSent, initiationsReceived, responsesSent, responsesReceived atomic.Uint64 }
	// hsCount counts each peer's completed handshakes by name, so that
	// a peer's counters go on across a change of its key or of ours.
	hsMu        sync.Mutex
	hsCount     map[string]*handshakes
	plainMu     sync.Mutex
	plainLogged map[netip.Addr]time.Time

	closed atomic.Bool
	done   chan struct{}
	wg     sync.WaitGroup

	// skew is added to the clock the protocol's timers read: zero but in
	// tests, which age sessions by it.
	skew atomic.Int64
}

// now is the time the protocol's timers go by.
func (c *Conn) now() time.Time {
	return time.Now().Add(time.Duration(c.skew.Load()))
}

// identity is this router's key and what follows from it.
type identity struct {
	priv, pub Key
	macs      macKeys
}

func newIdentity(k Key) *identity {
	pub := k.Public()
	return &identity{priv: k, pub: pub, macs: macKeysOf(pub)}
}

// handshakes count one peer's completed handshakes.
type handshakes struct{ total, rekeys uint64 }

// indexEntry is what a local index names: a session (kp) or our
// initiation in flight (hs), both a peer's.
type indexEntry struct {
	p  *peer
	kp *keypair
	hs *handshake
}

// peer is a Peer and its sessions.
type peer struct {
	key Key
	mac macKeys // keys of the messages sent to it
	// cfg is its name and configured endpoint, replaced whole.
	cfg atomic.Pointer[peerConfig]
	// endpoint is where it is sent to: the configured one until it is heard from
	// elsewhere (roaming).
	endpoint atomic.Pointer[netip.AddrPort]

	current atomic.Pointer[keypair]

	// Data-path times (UnixNano, 0 for none): the last message sent,
	// the first data sent with nothing received since
	// (sentWaiting), and the first data received with nothing sent since
	// (recvWaiting).
	lastSent                 atomic.Int64
	sentWaiting, recvWaiting atomic.Int64
	rx, tx                   atomic.Uint64

	mu        sync.Mutex // the rest
	ss        [KeyLen]byte
	keepalive time.Duration
	prev      *keypair
	next      *keypair // a responder's session, until the initiator's first message under it
	hs        *handshake
	hsStarted time.Time // the first attempt of the initiation in flight
	hsSent    time.Time
	hsJitter  time.Duration
	hsMAC1    [16]byte // of the last handshake message sent, which a cookie reply is bound to
	cookie    [16]byte
	cookieAt  time.Time
	lastTS    [12]byte // of the last initiation accepted
	lastInit  time.Time
	greetAt   time.Time
	staged    [][]byte
	removed   bool

	lastHandshake time.Time
}

// peerConfig is what the router calls a peer: its node's name and its
// configured endpoint, the address the router sends to and sees it at.
type peerConfig struct {
	name string
	conf netip.AddrPort
}

func (p *peer) addr() netip.AddrPort { return *p.endpoint.Load() }
func (p *peer) name() string         { return p.cfg.Load().name }
func (p *peer) conf() netip.AddrPort { return p.cfg.Load().conf }

// Listen starts the overlay with opts.PrivateKey and no peers (SetPeers
// adds them).
func Listen(opts Options) (*Conn, error) {
	if opts.PrivateKey.IsZero() {
		if opts.Socket != nil {
			opts.Socket.Close()
		}
		return nil, errors.New("wireguard: no private key")
	}
	if opts.MTU <= 0 {
		if opts.Socket != nil {
			opts.Socket.Close()
		}
		return nil, fmt.Errorf("wireguard: MTU %d, want > 0", opts.MTU)
	}
	sock := opts.Socket
	if sock == nil {
		s, err := listenStd(opts.Port)
		if err != nil {
			return nil, fmt.Errorf("wireguard: listen on udp port %d: %w", opts.Port, err)
		}
		sock = s
	}
	c := &Conn{
		sock:    sock,
		mtu:     opts.MTU,
		local:   sock.LocalAddr(),
		log:     opts.Logger,
		peers:   map[Key]*peer{},
		index:   map[uint32]indexEntry{},
		hsCount: map[string]*handshakes{},
		done:    make(chan struct{}),
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.debug = c.log.Core().Enabled(zap.DebugLevel)
	switch {
	case opts.Keepalive == 0:
		c.keepalive = DefaultKeepalive
	case opts.Keepalive > 0:
		c.keepalive = max(time.Second, opts.Keepalive)
	}
	c.id.Store(newIdentity(opts.PrivateKey))
	c.byAddr.Store(&map[netip.AddrPort]*peer{})
	c.srcs.Store(newSources(nil, nil))
	c.rd.init()
	c.wg.Add(1)
	go c.timers()
	return c, nil
}

// PublicKey is this router's public key.
func (c *Conn) PublicKey() Key { return c.id.Load().pub }

// LocalAddr implements router.Conn: the socket's address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Close stops the timers and closes the socket, which unblocks ReadBatch.
// It is idempotent.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		close(c.done)
		err := c.sock.Close()
		c.wg.Wait()
		return err
	}
	return nil
}

// errNoPeer is WriteBatch's error for an address that is no peer's.
type errNoPeer netip.AddrPort

func (e errNoPeer) Error() string {
	return fmt.Sprintf("wireguard: no peer at %s", netip.AddrPort(e))
}

// WriteBatch implements router.Conn: b's packets, segSize bytes each (the
// last may be shorter), sealed for the peer at addr (its configured
// endpoint) and sent as one run of datagrams. Without a session the
// packets wait for the handshake it starts (the last maxStaged).
func (c *Conn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	if segSize < 1 {
		return fmt.Errorf("send segments to %s: segment size %d, want at least 1", addr, segSize)
	}
	p := (*c.byAddr.Load())[addr]
	if p == nil {
		return errNoPeer(addr)
	}
	now := c.now()
	kp := p.current.Load()
	n := uint64((len(b) + segSize - 1) / segSize)
	if kp == nil || kp.expired(now) {
		c.stage(p, b, segSize)
		c.initiate(p, false, now)
		return nil
	}
	ctr := kp.sendNonce.Add(n) - n
	if ctr+n > rejectAfterMessages {
		c.stage(p, b, segSize)
		c.initiate(p, false, now)
		return nil
	}
	if err := c.sealRun(p, kp, b, segSize, ctr, now); err != nil {
		return err
	}
	if ctr+n >= rekeyAfterMessages || (kp.initiator && now.Sub(kp.created) >= rekeyAfterTime) {
		c.initiate(p, false, now)
	}
	return nil
}

// sealRun seals b's packets under kp from counter ctr on and sends them.
func (c *Conn) sealRun(p *peer, kp *keypair, b []byte, segSize int, ctr uint64, now time.Time) error {
	seg := min(segSize, len(b))
	outSeg := TransportOverhead + paddedLen(seg, c.mtu)
	n := (len(b) + segSize - 1) / segSize
	if len(b) == 0 {
		n, outSeg = 1, TransportOverhead // a keepalive
	}
	bp := c.sendBuf(n * outSeg)
	out := *bp
	w := 0
	if len(b) == 0 {
		w = kp.sealTransport(out, nil, 0, ctr)
	}
	for off := 0; off < len(b); off += segSize {
		pkt := b[off:min(off+segSize, len(b))]
		w += kp.sealTransport(out[w:], pkt, paddedLen(len(pkt), c.mtu), ctr)
		ctr++
	}
	err := c.sock.WriteBatch(out[:w], outSeg, p.addr())
	c.sendBs.Put(bp)
	if err != nil {
		return err
	}
	p.tx.Add(uint64(w))
	t := now.UnixNano()
	p.lastSent.Store(t)
	p.recvWaiting.Store(0)
	if len(b) > 0 && p.sentWaiting.Load() == 0 {
		p.sentWaiting.Store(t)
	}
	return nil
}

func (c *Conn) sendBuf(n int) *[]byte {
	if bp, ok := c.sendBs.Get().(*[]byte); ok && cap(*bp) >= n {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, max(n, 80<<10))
	return &b
}

// maxStaged is how many packets wait for a peer's handshake.
const maxStaged = 128

// stage keeps copies of b's packets until p has a session.
func (c *Conn) stage(p *peer, b []byte, segSize int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for off := 0; off < len(b); off += segSize {
		p.staged = append(p.staged, bytes.Clone(b[off:min(off+segSize, len(b))]))
	}
	if over := len(p.staged) - maxStaged; over > 0 {
		clear(p.staged[:over])
		p.staged = slices.Delete(p.staged, 0, over)
	}
}

// flush sends the packets staged for p under kp, or a keepalive if none
// are and keepalive says to (which confirms a new session to its
// responder).
func (c *Conn) flush(p *peer, kp *keypair, staged [][]byte, keepalive bool, now time.Time) {
	if len(staged) == 0 && keepalive {
		staged = [][]byte{nil}
	}
	for _, pkt := range staged {
		ctr := kp.sendNonce.Add(1) - 1
		if err := c.sealRun(p, kp, pkt, max(len(pkt), 1), ctr, now); err != nil {
			c.log.Debug("send to a WireGuard peer", zap.String("peer", p.name()), zap.Error(err))
			return
		}
	}
}

// initiate sends p a handshake initiation, unless one went less than
// Rekey-Timeout ago; retry resends the one in flight's attempt.
func (c *Conn) initiate(p *peer, retry bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.initiateLocked(p, retry, now)
}

func (c *Conn) initiateLocked(p *peer, retry bool, now time.Time) {
	if p.removed || c.closed.Load() {
		return
	}
	if !retry && !p.hsSent.IsZero() && now.Sub(p.hsSent) < rekeyTimeout {
		return
	}
	id := c.id.Load()
	var msg [initiationSize]byte
	idx := c.newIndex()
	hs, err := createInitiation(msg[:], id.pub, p.key, p.ss, idx, time.Now())
	if err != nil {
		c.log.Warn("WireGuard handshake initiation", zap.String("peer", p.name()), zap.Error(err))
		return
	}
	if p.hs != nil {
		c.unregister(p.hs.localIndex)
	}
	c.register(idx, indexEntry{p: p, hs: hs})
	var cookie *[16]byte
	if !p.cookieAt.IsZero() && now.Sub(p.cookieAt) < cookieLifetime {
		cookie = &p.cookie
	}
	p.hsMAC1 = addMACs(msg[:], p.mac, cookie)
	p.hs = hs
	if !retry || p.hsStarted.IsZero() {
		p.hsStarted = now
	}
	p.hsSent = now
	p.hsJitter = jitter()
	c.hsTotal.initiationsSent.Add(1)
	if err := c.sock.WriteBatch(msg[:], len(msg), p.addr()); err != nil {
		c.log.Debug("send a WireGuard handshake initiation", zap.String("peer", p.name()), zap.Error(err))
		return
	}
	p.tx.Add(uint64(len(msg)))
	p.lastSent.Store(now.UnixNano())
	if c.debug {
		c.log.Debug("WireGuard handshake initiation sent", zap.String("peer", p.name()), zap.Bool("retry", retry))
	}
}

// jitter is the random delay up to a third of a second that WireGuard
// adds to a handshake's retry, so that two peers do not keep colliding.
func jitter() time.Duration {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(time.Second/3)))
	if err != nil {
		return 0
	}
	return time.Duration(n.Int64())
}

// newIndex picks a free random local index.
func (c *Conn) newIndex() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		i := binary.LittleEndian.Uint32(b[:])
		c.idxMu.RLock()
		_, used := c.index[i]
		c.idxMu.RUnlock()
		if !used {
			return i
		}
	}
}

func (c *Conn) register(i uint32, e indexEntry) {
	c.idxMu.Lock()
	c.index[i] = e
	c.idxMu.Unlock()
}

func (c *Conn) unregister(i uint32) {
	c.idxMu.Lock()
	delete(c.index, i)
	c.idxMu.Unlock()
}

func (c *Conn) lookup(i uint32) indexEntry {
	c.idxMu.RLock()
	e := c.index[i]
	c.idxMu.RUnlock()
	return e
}

// dropSessionsLocked forgets p's sessions and handshake in flight.
func (c *Conn) dropSessionsLocked(p *peer) {
	for _, kp := range []*keypair{p.prev, p.current.Load(), p.next} {
		if kp != nil {
			c.unregister(kp.localIndex)
		}
	}
	if p.hs != nil {
		c.unregister(p.hs.localIndex)
	}
	p.prev, p.next, p.hs = nil, nil, nil
	p.current.Store(nil)
	p.hsSent, p.hsStarted = time.Time{}, time.Time{}
}

// completedLocked counts a completed handshake with p.
func (c *Conn) completedLocked(p *peer, now time.Time) {
	p.lastHandshake = now
	name := p.name()
	c.hsMu.Lock()
	h := c.hsCount[name]
	if h == nil {
		h = &handshakes{}
		c.hsCount[name] = h
	}
	if h.total > 0 {
		h.rekeys++
	}
	h.total++
	total := h.total
	c.hsMu.Unlock()
	if c.debug {
		c.log.Debug("WireGuard handshake completed", zap.String("peer", name), zap.Uint64("handshakes", total))
	}
}

// SetPrivateKey replaces this router's key: sessions end and peers
// handshake again with the new one (once they know its public key).
func (c *Conn) SetPrivateKey(k Key) error {
	if k.IsZero() {
		return errors.New("wireguard: no private key")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k == c.id.Load().priv {
		return nil
	}
	id := newIdentity(k)
	secrets := make(map[Key][KeyLen]byte, len(c.peers))
	for key := range c.peers {
		ss, err := dh(k, key)
		if err != nil {
			return fmt.Errorf("wireguard: peer %s: public key %s: %w", c.peers[key].name(), key, errLowOrder)
		}
		secrets[key] = ss
	}
	c.id.Store(id)
	now := c.now()
	for key, p := range c.peers {
		p.mu.Lock()
		p.ss = secrets[key]
		c.dropSessionsLocked(p)
		p.lastHandshake = time.Time{}
		c.orderLocked(p, id, now)
		p.mu.Unlock()
	}
	c.log.Info("WireGuard private key replaced", zap.Stringer("publicKey", id.pub))
	return nil
}

// orderLocked sets who keeps the session with p up, by the keys' order:
// the lower key sends keepalives and starts a handshake at once; the
// higher greets a second later unless one has completed by then.
func (c *Conn) orderLocked(p *peer, id *identity, now time.Time) {
	p.keepalive, p.greetAt = 0, time.Time{}
	if bytes.Compare(id.pub[:], p.key[:]) < 0 {
		p.keepalive = c.keepalive
		if c.keepalive > 0 {
			c.initiateLocked(p, false, now)
			return
		}
	}
	p.greetAt = now.Add(greetDelay)
}

// SetPeers makes peers the overlay's peers: it adds the new ones, updates
// those whose endpoint or allowed IPs changed (a session survives that)
// and removes the rest. A peer's key that changed is a new peer to
// WireGuard: it handshakes anew. Peers need distinct, non-zero keys, and
// not this router's own.
func (c *Conn) SetPeers(peers []Peer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.id.Load()
	next := make(map[Key]Peer, len(peers))
	for _, p := range peers {
		switch _, dup := next[p.PublicKey]; {
		case p.PublicKey.IsZero():
			return fmt.Errorf("wireguard: peer %s has no public key", p.Name)
		case p.PublicKey == id.pub:
			return fmt.Errorf("wireguard: peer %s has this router's own public key %s", p.Name, id.pub)
		case dup:
			return fmt.Errorf("wireguard: peers %s and %s have the same public key %s", next[p.PublicKey].Name, p.Name, p.PublicKey)
		}
		if _, ok := c.peers[p.PublicKey]; !ok {
			if _, err := dh(id.priv, p.PublicKey); err != nil {
				return fmt.Errorf("wireguard: peer %s: public key %s: %w", p.Name, p.PublicKey, errLowOrder)
			}
		}
		next[p.PublicKey] = p
	}
	now := c.now()
	for k, p := range c.peers {
		if _, ok := next[k]; !ok {
			p.mu.Lock()
			c.dropSessionsLocked(p)
			p.removed, p.staged = true, nil
			p.mu.Unlock()
			delete(c.peers, k)
		}
	}
	byAddr := make(map[netip.AddrPort]*peer, len(next))
	var added []*peer
	for _, k := range slices.SortedFunc(maps.Keys(next), func(a, b Key) int { return bytes.Compare(a[:], b[:]) }) {
		cfg := next[k]
		p := c.peers[k]
		if p == nil {
			ss, _ := dh(id.priv, k) // checked above
			p = &peer{key: k, mac: macKeysOf(k), ss: ss}
			c.peers[k] = p
			added = append(added, p)
		}
		if old := p.cfg.Load(); old == nil || old.conf != cfg.Endpoint {
			ep := cfg.Endpoint
			p.endpoint.Store(&ep)
		}
		p.cfg.Store(&peerConfig{name: cfg.Name, conf: cfg.Endpoint})
		byAddr[cfg.Endpoint] = p
	}
	c.byAddr.Store(&byAddr)
	c.srcs.Store(newSources(peers, c.peers))
	for _, p := range added {
		p.mu.Lock()
		c.orderLocked(p, id, now)
		p.mu.Unlock()
	}
	return nil
}

// greetDelay is how long the higher key of a pair waits for the lower
// key's handshake before it starts one itself. The lower key starts one
// at once, which reaches a router that does not know it yet in vain, and
// WireGuard retries only 5 s later; and a router that restarted has no
// session while its peer still sends under the old one, which it cannot
// read, until the peer gives up on it (15 s). Started a second apart,
// the two handshakes do not cross.
const greetDelay = time.Second

// tick is how often the timers look at every peer.
const tick = 250 * time.Millisecond

// timers runs WireGuard's timers for every peer until Close: handshake
// retries, keepalives, rekeys, and forgetting old keys. Owned by the Conn.
func (c *Conn) timers() {
	defer c.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			now := c.now()
			c.mu.Lock()
			ps := slices.Collect(maps.Values(c.peers))
			c.mu.Unlock()
			for _, p := range ps {
				c.timersOf(p, now)
			}
		}
	}
}

func (c *Conn) timersOf(p *peer, now time.Time) {
	p.mu.Lock()
	if p.hs != nil && now.Sub(p.hsSent) >= rekeyTimeout+p.hsJitter {
		if now.Sub(p.hsStarted) >= rekeyAttemptTime {
			c.unregister(p.hs.localIndex)
			p.hs, p.staged = nil, nil
			p.hsStarted = time.Time{}
			c.log.Debug("WireGuard handshake gave up", zap.String("peer", p.name()))
		} else {
			c.initiateLocked(p, true, now)
		}
	}
	if !p.greetAt.IsZero() && !now.Before(p.greetAt) {
		p.greetAt = time.Time{}
		if p.lastHandshake.IsZero() && p.hs == nil {
			c.initiateLocked(p, false, now)
		}
	}
	if !p.lastHandshake.IsZero() && now.Sub(p.lastHandshake) >= 3*rejectAfterTime {
		c.dropSessionsLocked(p)
	}
	kp := p.current.Load()
	if kp != nil && kp.initiator && p.hs == nil && now.Sub(kp.created) >= rejectAfterTime-keepaliveTimeout-rekeyTimeout {
		c.initiateLocked(p, false, now)
	}
	keepalive := p.keepalive
	p.mu.Unlock()

	t := now.UnixNano()
	if w := p.sentWaiting.Load(); w != 0 && t-w >= int64(keepaliveTimeout+rekeyTimeout) {
		// Data went out and nothing came back: the session may be gone
		// at the other end (a restart).
		p.sentWaiting.Store(0)
		c.initiate(p, false, now)
	}
	if w := p.recvWaiting.Load(); w != 0 && t-w >= int64(keepaliveTimeout) {
		c.keepaliveTo(p, now) // data came in and nothing went back
	} else if keepalive > 0 && t-p.lastSent.Load() >= int64(keepalive) {
		c.keepaliveTo(p, now)
	}
}

// keepaliveTo sends p an empty transport message, or starts a handshake
// without a session.
func (c *Conn) keepaliveTo(p *peer, now time.Time) {
	kp := p.current.Load()
	if kp == nil || kp.expired(now) {
		c.initiate(p, false, now)
		return
	}
	c.flush(p, kp, nil, true, now)
}

// PeerStatus is one peer's session (`wg show`).
type PeerStatus struct {
	Name      string
	PublicKey Key
	// Endpoint is where the peer was last heard from, or its configured
	// endpoint before then.
	Endpoint netip.AddrPort
	// LastHandshake is the last completed handshake; zero for none.
	LastHandshake time.Time
	// RxBytes and TxBytes count WireGuard's messages received (that
	// authenticate) and sent.
	RxBytes, TxBytes uint64
	// Handshakes counts completed handshakes; Rekeys those after the
	// first, which renew a session's keys.
	Handshakes, Rekeys uint64
}

// Up reports whether the peer has a session at now: a handshake within
// SessionLifetime.
func (s PeerStatus) Up(now time.Time) bool {
	return !s.LastHandshake.IsZero() && now.Sub(s.LastHandshake) < SessionLifetime
}

// Peers reports every peer's session, by name.
func (c *Conn) Peers() ([]PeerStatus, error) {
	c.mu.Lock()
	ps := slices.Collect(maps.Values(c.peers))
	c.mu.Unlock()
	out := make([]PeerStatus, 0, len(ps))
	for _, p := range ps {
		p.mu.Lock()
		s := PeerStatus{
			Name:          p.name(),
			PublicKey:     p.key,
			Endpoint:      p.addr(),
			LastHandshake: p.lastHandshake,
			RxBytes:       p.rx.Load(),
			TxBytes:       p.tx.Load(),
		}
		p.mu.Unlock()
		c.hsMu.Lock()
		if h := c.hsCount[s.Name]; h != nil {
			s.Handshakes, s.Rekeys = h.total, h.rekeys
		}
		c.hsMu.Unlock()
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
