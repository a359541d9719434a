package wireguard

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
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

// Options configure a Conn.
type Options struct {
	// PrivateKey is this router's key. Required.
	PrivateKey Key
	// Port is the UDP port to listen on, on every local address.
	Port uint16
	// MTU is the largest inner packet: the tunnel MTU.
	MTU int
	// Keepalive is the interval of a keepalive to a peer when nothing
	// else is sent, which keeps a session up and its last handshake
	// recent; of each pair of routers, the one with the lower public key
	// sends them. Default 25 s, as wg-quick's users set; negative turns
	// it off.
	Keepalive time.Duration
	// Logger receives handshake failures and refusals (rate-limited) and
	// the device's errors. Default: none.
	Logger *zap.Logger
	// Bind is the underlay socket. Default conn.NewStdNetBind(): UDP on
	// every address, with GSO/GRO and batched system calls where the
	// kernel has them. The router passes router.NewWireGuardBind(), its
	// own sockets, which spare a copy and an allocation per datagram.
	Bind conn.Bind
}

// DefaultKeepalive is Options.Keepalive's default.
const DefaultKeepalive = 25 * time.Second

// SessionLifetime is how long a handshake's keys serve (WireGuard's
// Reject-After-Time): a peer whose last handshake is older has no
// session.
const SessionLifetime = 180 * time.Second

// Conn is the overlay transport of an encrypted overlay: a WireGuard
// device (wireguard-go) whose "TUN" is the router. It is a router.Conn:
// the router writes inner packets and the device encrypts them to the
// peer whose allowed IPs hold their destination; what the device receives
// and authenticates, the router reads, marked as from the configured
// endpoint of the peer that sent it. Datagrams that fail WireGuard's
// checks never reach the router; they are counted (Stats).
type Conn struct {
	dev       *device.Device
	pipe      *pipe
	bind      *bind
	local     netip.AddrPort
	keepalive int
	log       *zap.Logger
	debug     bool // log the device's verbose lines
	srcs      atomic.Pointer[sources]
	closed    atomic.Bool

	mu     sync.Mutex
	key    Key
	peers  map[Key]Peer
	names  map[string]string // Key.Short() → peer name, for the device's log lines
	shorts map[string]Key    // Key.Short() → key
	hs     map[string]*handshakes
	// shook holds the peers' keys a handshake completed with; greets the
	// timers of the handshakes this router starts itself (greet).
	shook   map[Key]bool
	greets  map[Key]*time.Timer
	refused [numRefusals]atomic.Uint64
	// refusedLogged is when each reason was last logged (UnixNano).
	refusedLogged [numRefusals]atomic.Int64
	hsTotal       struct{ initiationsSent, initiationsReceived, responsesSent, responsesReceived atomic.Uint64 }
}

// handshakes count one peer's completed handshakes.
type handshakes struct{ total, rekeys uint64 }

// Listen starts a WireGuard device on opts.Port with opts.PrivateKey and
// no peers (SetPeers adds them).
func Listen(opts Options) (*Conn, error) {
	if opts.PrivateKey.IsZero() {
		return nil, errors.New("wireguard: no private key")
	}
	if opts.MTU <= 0 {
		return nil, fmt.Errorf("wireguard: MTU %d, want > 0", opts.MTU)
	}
	c := &Conn{
		pipe:   newPipe(opts.MTU),
		log:    opts.Logger,
		key:    opts.PrivateKey,
		peers:  map[Key]Peer{},
		names:  map[string]string{},
		shorts: map[string]Key{},
		hs:     map[string]*handshakes{},
		shook:  map[Key]bool{},
		greets: map[Key]*time.Timer{},
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.debug = c.log.Core().Enabled(zap.DebugLevel)
	switch {
	case opts.Keepalive == 0:
		c.keepalive = int(DefaultKeepalive / time.Second)
	case opts.Keepalive > 0:
		c.keepalive = max(1, int(opts.Keepalive/time.Second))
	}
	inner := opts.Bind
	if inner == nil {
		inner = conn.NewStdNetBind()
	}
	c.bind = &bind{Bind: inner, c: c}
	c.srcs.Store(newSources(nil))
	c.dev = device.NewDevice(c.pipe, c.bind, &device.Logger{Verbosef: c.verbosef, Errorf: c.errorf})
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", opts.PrivateKey.hex(), opts.Port)
	if err := c.dev.IpcSet(cfg); err != nil {
		c.dev.Close()
		return nil, fmt.Errorf("wireguard: listen on udp port %d: %w", opts.Port, err)
	}
	if err := c.dev.Up(); err != nil {
		c.dev.Close()
		return nil, fmt.Errorf("wireguard: listen on udp port %d: %w", opts.Port, err)
	}
	port, ok := c.bind.port.Load().(uint16)
	if !ok {
		c.dev.Close()
		return nil, fmt.Errorf("wireguard: the device did not open its socket on udp port %d", opts.Port)
	}
	c.local = netip.AddrPortFrom(netip.IPv4Unspecified(), port)
	return c, nil
}

// PublicKey is this router's public key.
func (c *Conn) PublicKey() Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key.Public()
}

// ReadBatch implements router.Conn: the packets the device received and
// authenticated, runs of one peer's packets of one size per message.
func (c *Conn) ReadBatch(bufs [][]byte, sizes, segSizes []int, from []netip.AddrPort) (int, error) {
	return c.pipe.read(bufs, sizes, segSizes, from, c.srcs.Load())
}

// WriteBatch implements router.Conn: b's packets, segSize bytes each, go
// to the device, which sends each to the peer whose allowed IPs hold its
// destination (for the router's routes: the peer at addr). It returns
// when the device has taken them.
func (c *Conn) WriteBatch(b []byte, segSize int, addr netip.AddrPort) error {
	if segSize < 1 {
		return fmt.Errorf("send segments to %s: segment size %d, want at least 1", addr, segSize)
	}
	return c.pipe.write(b, segSize)
}

// LocalAddr implements router.Conn: every address, on the listen port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Close stops the device and its socket, and unblocks ReadBatch and
// WriteBatch. It is idempotent.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.mu.Lock()
		for k, t := range c.greets {
			t.Stop()
			delete(c.greets, k)
		}
		c.mu.Unlock()
		c.pipe.Close()
		c.dev.Close()
	}
	return nil
}

// SetPrivateKey replaces this router's key: sessions end and peers
// handshake again with the new one (once they know its public key).
func (c *Conn) SetPrivateKey(k Key) error {
	if k.IsZero() {
		return errors.New("wireguard: no private key")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if k == c.key {
		return nil
	}
	// Which side of each pair keeps the session up, and which greets,
	// follows the keys' order, which the new key may change.
	own := k.Public()
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\n", k.hex())
	var greet []Key
	for pk := range c.peers {
		interval := 0
		if c.keepalive > 0 && bytes.Compare(own[:], pk[:]) < 0 {
			interval = c.keepalive
		} else if bytes.Compare(own[:], pk[:]) > 0 {
			greet = append(greet, pk)
		}
		fmt.Fprintf(&b, "public_key=%s\npersistent_keepalive_interval=%d\n", pk.hex(), interval)
	}
	if err := c.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("wireguard: set private key: %w", err)
	}
	clear(c.shook)
	for _, pk := range greet {
		c.greetLocked(pk)
	}
	c.key = k
	c.log.Info("WireGuard private key replaced", zap.Stringer("publicKey", k.Public()))
	return nil
}

// SetPeers makes peers the device's peers: it adds the new ones, updates
// those whose endpoint or allowed IPs changed (a session survives that)
// and removes the rest. A peer's key that changed is a new peer to
// WireGuard: it handshakes anew. Peers need distinct, non-zero keys, and
// not this router's own.
func (c *Conn) SetPeers(peers []Peer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[Key]Peer, len(peers))
	own := c.key.Public()
	for _, p := range peers {
		switch _, dup := next[p.PublicKey]; {
		case p.PublicKey.IsZero():
			return fmt.Errorf("wireguard: peer %s has no public key", p.Name)
		case p.PublicKey == own:
			return fmt.Errorf("wireguard: peer %s has this router's own public key %s", p.Name, own)
		case dup:
			return fmt.Errorf("wireguard: peers %s and %s have the same public key %s", next[p.PublicKey].Name, p.Name, p.PublicKey)
		}
		next[p.PublicKey] = p
	}
	var b strings.Builder
	var greet []Key
	for k := range c.peers {
		if _, ok := next[k]; !ok {
			fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.hex())
			if t := c.greets[k]; t != nil {
				t.Stop()
				delete(c.greets, k)
			}
			delete(c.shook, k)
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(next), func(a, b Key) int { return strings.Compare(a.String(), b.String()) }) {
		p, old := next[k], c.peers[k]
		if old.Endpoint == p.Endpoint && slices.Equal(old.AllowedIPs, p.AllowedIPs) && old.Name != "" {
			continue
		}
		fmt.Fprintf(&b, "public_key=%s\n", k.hex())
		if old.Name == "" || old.Endpoint != p.Endpoint {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
		}
		b.WriteString("replace_allowed_ips=true\n")
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a.Masked())
		}
		if old.Name == "" && c.keepalive > 0 && bytes.Compare(own[:], k[:]) < 0 {
			// One side of each pair keeps the session up: the one with
			// the lower public key. Its first keepalive starts the
			// handshake; were both to start one at once, each would
			// answer the other's and neither session would complete
			// until a retry 5 s later (WireGuard's Rekey-Timeout).
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", c.keepalive)
		}
		if old.Name == "" && bytes.Compare(own[:], k[:]) > 0 {
			greet = append(greet, k)
		}
	}
	if b.Len() > 0 {
		if err := c.dev.IpcSet(b.String()); err != nil {
			return fmt.Errorf("wireguard: set peers: %w", err)
		}
	}
	c.peers = next
	c.names = make(map[string]string, len(next))
	c.shorts = make(map[string]Key, len(next))
	for k, p := range next {
		c.names[k.Short()] = p.Name
		c.shorts[k.Short()] = k
	}
	for _, k := range greet {
		c.greetLocked(k)
	}
	c.srcs.Store(newSources(peers))
	return nil
}

// greetDelay is how long the higher key of a pair waits for the lower
// key's handshake before it starts one itself.
const greetDelay = time.Second

// greetLocked starts a handshake with peer k greetDelay from now unless
// one has completed by then. The lower key of the pair starts one at
// once (its first keepalive), which reaches a router that does not know
// it yet in vain, and WireGuard retries only 5 s later; and a router that
// restarted has no session while its peer still sends under the old one,
// which it cannot read, until the peer gives up on it (15 s). Started a
// second apart, the two handshakes never cross.
func (c *Conn) greetLocked(k Key) {
	if t := c.greets[k]; t != nil {
		t.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(greetDelay, func() {
		c.mu.Lock()
		p, still := c.peers[k]
		shook := c.shook[k]
		if c.greets[k] == t {
			delete(c.greets, k)
		}
		c.mu.Unlock()
		if !still || shook || c.closed.Load() {
			return
		}
		if dp := c.dev.LookupPeer(device.NoisePublicKey(k)); dp != nil {
			if err := dp.SendHandshakeInitiation(false); err != nil {
				c.log.Debug("start a WireGuard handshake", zap.String("peer", p.Name), zap.Error(err))
			}
		}
	})
	c.greets[k] = t
}

// PeerStatus is one peer's session as the device reports it (`wg show`).
type PeerStatus struct {
	Name      string
	PublicKey Key
	// Endpoint is where the peer was last heard from, or its configured
	// endpoint before then.
	Endpoint netip.AddrPort
	// LastHandshake is the last completed handshake; zero for none.
	LastHandshake time.Time
	// RxBytes and TxBytes count WireGuard's authenticated traffic.
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
	text, err := c.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wireguard: read device state: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []PeerStatus
	var cur *PeerStatus
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.LastHandshake = time.Unix(sec, nsec)
			}
			out = append(out, *cur)
		}
		cur, sec, nsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			var key Key
			if b, err := hex.DecodeString(v); err != nil || len(b) != KeyLen {
				continue
			} else {
				copy(key[:], b)
			}
			p := c.peers[key]
			cur = &PeerStatus{Name: p.Name, PublicKey: key, Endpoint: p.Endpoint}
			if h := c.hs[p.Name]; h != nil {
				cur.Handshakes, cur.Rekeys = h.total, h.rekeys
			}
			continue
		}
		if cur == nil {
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "endpoint":
			if ep, err := netip.ParseAddrPort(v); err == nil {
				cur.Endpoint = ep
			}
		case "last_handshake_time_sec":
			sec = int64(n)
		case "last_handshake_time_nsec":
			nsec = int64(n)
		case "rx_bytes":
			cur.RxBytes = n
		case "tx_bytes":
			cur.TxBytes = n
		}
	}
	flush()
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
