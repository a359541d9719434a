package wireguard

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
)

// The WireGuard protocol (the paper "WireGuard: Next Generation Kernel
// Network Tunnel", section 5): a Noise IKpsk2 handshake over Curve25519,
// ChaCha20-Poly1305 and BLAKE2s, with its messages' fixed layouts.
const (
	construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	identifier   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	labelMAC1    = "mac1----"
	labelCookie  = "cookie--"
)

// Message types: the first byte of a message, then three zero bytes.
const (
	msgInitiation = 1
	msgResponse   = 2
	msgCookie     = 3
	msgTransport  = 4
)

// Message sizes and the offsets of their fields.
const (
	initiationSize = 148 // type, sender, ephemeral, static, timestamp, mac1, mac2
	responseSize   = 92  // type, sender, receiver, ephemeral, empty, mac1, mac2
	cookieSize     = 64  // type, receiver, nonce, cookie
	transportHead  = 16  // type, receiver, counter
	tagSize        = chacha20poly1305.Overhead

	// TransportOverhead is what a transport message adds to an inner
	// packet, padding aside: its header and the AEAD tag.
	TransportOverhead = transportHead + tagSize
)

// Protocol constants (the paper, section 6.1).
const (
	rekeyAfterMessages  = 1 << 60
	rejectAfterMessages = 1<<64 - 1<<13 - 1
	rekeyAfterTime      = 120 * time.Second
	rejectAfterTime     = 180 * time.Second
	rekeyAttemptTime    = 90 * time.Second
	rekeyTimeout        = 5 * time.Second
	keepaliveTimeout    = 10 * time.Second
	cookieLifetime      = 120 * time.Second
	// initiationInterval is the least time between two initiations from
	// one peer that a responder accepts (wireguard-go's 20 per second).
	initiationInterval = time.Second / 20
)

var (
	initialChainKey [blake2s.Size]byte
	initialHash     [blake2s.Size]byte
	zeroNonce       [chacha20poly1305.NonceSize]byte
)

func init() {
	initialChainKey = blake2s.Sum256([]byte(construction))
	initialHash = mixHash(initialChainKey, []byte(identifier))
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil) // only a key longer than 32 bytes fails
	return h
}

// mixHash is HASH(h || data).
func mixHash(h [blake2s.Size]byte, data []byte) [blake2s.Size]byte {
	d := newBlake2s()
	d.Write(h[:])
	d.Write(data)
	var out [blake2s.Size]byte
	d.Sum(out[:0])
	return out
}

func hmacBlake2s(key []byte, data ...[]byte) [blake2s.Size]byte {
	m := hmac.New(newBlake2s, key)
	for _, d := range data {
		m.Write(d)
	}
	var out [blake2s.Size]byte
	m.Sum(out[:0])
	return out
}

// kdf is the paper's KDF_n for n of 1 to 3: the first n of τ1, τ2, τ3.
func kdf(n int, key [blake2s.Size]byte, input []byte) (t [3][blake2s.Size]byte) {
	t0 := hmacBlake2s(key[:], input)
	t[0] = hmacBlake2s(t0[:], []byte{1})
	for i := 1; i < n; i++ {
		t[i] = hmacBlake2s(t0[:], t[i-1][:], []byte{byte(i + 1)})
	}
	return t
}

// mac is Keyed-BLAKE2s-128 of data under key: mac1 and mac2.
func mac(key []byte, data []byte) [16]byte {
	m, _ := blake2s.New128(key) // key is a 32-byte hash or cookie
	m.Write(data)
	var out [16]byte
	m.Sum(out[:0])
	return out
}

// dh is X25519; it fails for a point of low order, whose result is zero.
func dh(priv, pub Key) ([KeyLen]byte, error) {
	var out [KeyLen]byte
	r, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return out, err
	}
	copy(out[:], r)
	return out, nil
}

// seal and open are the handshake's AEAD with a zero nonce: each key
// serves one message.
func seal(dst []byte, key [KeyLen]byte, plain, ad []byte) []byte {
	a, _ := chacha20poly1305.New(key[:])
	return a.Seal(dst, zeroNonce[:], plain, ad)
}

func open(dst []byte, key [KeyLen]byte, sealed, ad []byte) ([]byte, error) {
	a, _ := chacha20poly1305.New(key[:])
	return a.Open(dst, zeroNonce[:], sealed, ad)
}

// tai64n is t as TAI64N, the initiation's timestamp, with the
// nanoseconds cut to 2^24 ns as wireguard-go does, so that the timestamp
// does not tell the precise time of the sender's clock.
func tai64n(t time.Time) [12]byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], 0x400000000000000a+uint64(t.Unix()))
	binary.BigEndian.PutUint32(b[8:], uint32(t.Nanosecond())&^(1<<24-1))
	return b
}

// handshake is one handshake in progress with a peer, initiator or
// responder side: the Noise state between its two messages.
type handshake struct {
	chainKey, hash [blake2s.Size]byte
	ephemeral      Key // ours, private
	remoteEph      Key // theirs, public (responder side)
	localIndex     uint32
	remoteIndex    uint32
	initiator      bool
}

// macKeys are the keys of mac1 and of the cookie of messages to the
// holder of a public key.
type macKeys struct {
	mac1, cookie [blake2s.Size]byte
}

func macKeysOf(pub Key) macKeys {
	return macKeys{
		mac1:   hashOf(labelMAC1, pub),
		cookie: hashOf(labelCookie, pub),
	}
}

// hashOf is HASH(label || pub), one BLAKE2s over both.
func hashOf(label string, pub Key) [blake2s.Size]byte {
	d := newBlake2s()
	d.Write([]byte(label))
	d.Write(pub[:])
	var out [blake2s.Size]byte
	d.Sum(out[:0])
	return out
}

// addMACs fills the last 32 bytes of msg: mac1 keyed to the receiver's
// public key, mac2 with the cookie the receiver gave, if any, else zero.
// It returns mac1, which a cookie reply to msg is bound to.
func addMACs(msg []byte, to macKeys, cookie *[16]byte) [16]byte {
	n := len(msg)
	m1 := mac(to.mac1[:], msg[:n-32])
	copy(msg[n-32:], m1[:])
	if cookie != nil {
		m2 := mac(cookie[:], msg[:n-16])
		copy(msg[n-16:], m2[:])
	} else {
		clear(msg[n-16:])
	}
	return m1
}

// checkMAC1 reports whether msg's mac1 is keyed to the public key whose
// keys own are.
func checkMAC1(msg []byte, own macKeys) bool {
	n := len(msg)
	m1 := mac(own.mac1[:], msg[:n-32])
	return subtle.ConstantTimeCompare(m1[:], msg[n-32:n-16]) == 1
}

var (
	errHandshake = errors.New("handshake message does not authenticate")
	errLowOrder  = errors.New("public key of low order")
)

// newEphemeral is a fresh private key for one handshake.
func newEphemeral() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// createInitiation writes the first message of a handshake from the
// holder of priv (public key pub, static-static secret ss with the peer)
// to the peer with public key remote into msg (initiationSize bytes),
// and returns the handshake's state. MACs are left to the caller.
func createInitiation(msg []byte, pub, remote Key, ss [KeyLen]byte, index uint32, now time.Time) (*handshake, error) {
	hs := &handshake{localIndex: index, initiator: true}
	eph, err := newEphemeral()
	if err != nil {
		return nil, err
	}
	hs.ephemeral = eph
	epub := eph.Public()
	ck := initialChainKey
	h := mixHash(initialHash, remote[:])
	ck = kdf(1, ck, epub[:])[0]
	h = mixHash(h, epub[:])
	es, err := dh(eph, remote)
	if err != nil {
		return nil, errLowOrder
	}
	t := kdf(2, ck, es[:])
	ck = t[0]
	binary.LittleEndian.PutUint32(msg[0:4], msgInitiation)
	binary.LittleEndian.PutUint32(msg[4:8], index)
	copy(msg[8:40], epub[:])
	seal(msg[40:40], t[1], pub[:], h[:])
	h = mixHash(h, msg[40:88])
	t = kdf(2, ck, ss[:])
	ck = t[0]
	ts := tai64n(now)
	seal(msg[88:88], t[1], ts[:], h[:])
	h = mixHash(h, msg[88:116])
	hs.chainKey, hs.hash = ck, h
	return hs, nil
}

// initiation is a consumed first message: who sent it, when, and the
// state to respond from.
type initiation struct {
	static    Key
	timestamp [12]byte
	hs        *handshake
}

// consumeInitiation authenticates an initiation to the holder of priv
// (public key pub). staticSecret gives the static-static secret with
// the sender's public key, or false for a key that is no peer's. The
// caller checks mac1 first and the timestamp after.
func consumeInitiation(msg []byte, priv, pub Key, staticSecret func(Key) ([KeyLen]byte, bool)) (*initiation, error) {
	if len(msg) != initiationSize {
		return nil, errHandshake
	}
	var epub Key
	copy(epub[:], msg[8:40])
	ck := initialChainKey
	h := mixHash(initialHash, pub[:])
	ck = kdf(1, ck, epub[:])[0]
	h = mixHash(h, epub[:])
	es, err := dh(priv, epub)
	if err != nil {
		return nil, errLowOrder
	}
	t := kdf(2, ck, es[:])
	ck = t[0]
	var static [KeyLen]byte
	if _, err := open(static[:0], t[1], msg[40:88], h[:]); err != nil {
		return nil, errHandshake
	}
	h = mixHash(h, msg[40:88])
	ss, ok := staticSecret(static)
	if !ok {
		return nil, errUnknownPeer
	}
	t = kdf(2, ck, ss[:])
	ck = t[0]
	var ts [12]byte
	if _, err := open(ts[:0], t[1], msg[88:116], h[:]); err != nil {
		return nil, errHandshake
	}
	h = mixHash(h, msg[88:116])
	return &initiation{
		static:    static,
		timestamp: ts,
		hs: &handshake{
			chainKey:    ck,
			hash:        h,
			remoteEph:   epub,
			remoteIndex: binary.LittleEndian.Uint32(msg[4:8]),
		},
	}, nil
}

var errUnknownPeer = errors.New("handshake from a public key that is no peer's")

// createResponse writes the second message, answering the initiation
// whose state is hs, from a responder whose peer has public key remote,
// into msg (responseSize bytes), and completes hs: its chain key is the
// session's. MACs are left to the caller.
func createResponse(msg []byte, hs *handshake, remote Key, index uint32) error {
	eph, err := newEphemeral()
	if err != nil {
		return err
	}
	epub := eph.Public()
	hs.localIndex = index
	ck, h := hs.chainKey, hs.hash
	binary.LittleEndian.PutUint32(msg[0:4], msgResponse)
	binary.LittleEndian.PutUint32(msg[4:8], index)
	binary.LittleEndian.PutUint32(msg[8:12], hs.remoteIndex)
	copy(msg[12:44], epub[:])
	ck = kdf(1, ck, epub[:])[0]
	h = mixHash(h, epub[:])
	ee, err := dh(eph, hs.remoteEph)
	if err != nil {
		return errLowOrder
	}
	ck = kdf(1, ck, ee[:])[0]
	se, err := dh(eph, remote)
	if err != nil {
		return errLowOrder
	}
	ck = kdf(1, ck, se[:])[0]
	var psk [KeyLen]byte // no preshared key
	t := kdf(3, ck, psk[:])
	ck = t[0]
	h = mixHash(h, t[1][:])
	seal(msg[44:44], t[2], nil, h[:])
	h = mixHash(h, msg[44:60])
	hs.chainKey, hs.hash = ck, h
	return nil
}

// consumeResponse authenticates a response to the initiation whose state
// is hs, by the holder of priv, and completes hs.
func consumeResponse(msg []byte, hs *handshake, priv Key) error {
	if len(msg) != responseSize {
		return errHandshake
	}
	var epub Key
	copy(epub[:], msg[12:44])
	ck, h := hs.chainKey, hs.hash
	ck = kdf(1, ck, epub[:])[0]
	h = mixHash(h, epub[:])
	ee, err := dh(hs.ephemeral, epub)
	if err != nil {
		return errLowOrder
	}
	ck = kdf(1, ck, ee[:])[0]
	se, err := dh(priv, epub)
	if err != nil {
		return errLowOrder
	}
	ck = kdf(1, ck, se[:])[0]
	var psk [KeyLen]byte
	t := kdf(3, ck, psk[:])
	ck = t[0]
	h = mixHash(h, t[1][:])
	if _, err := open(nil, t[2], msg[44:60], h[:]); err != nil {
		return errHandshake
	}
	hs.chainKey = ck
	hs.remoteIndex = binary.LittleEndian.Uint32(msg[4:8])
	hs.ephemeral = Key{}
	return nil
}

// sessionKeys are a completed handshake's transport keys: the
// initiator's (send, receive) are KDF2(chain key, ε), the responder's
// the same two swapped.
func (hs *handshake) sessionKeys() (send, recv [KeyLen]byte) {
	t := kdf(2, hs.chainKey, nil)
	if hs.initiator {
		return t[0], t[1]
	}
	return t[1], t[0]
}

// openCookie decrypts a cookie reply's cookie: sealed with
// XChaCha20-Poly1305 under the key of the replier's public key, bound to
// the mac1 of the message it answers.
func openCookie(msg []byte, key [blake2s.Size]byte, mac1 [16]byte) ([16]byte, error) {
	var cookie [16]byte
	if len(msg) != cookieSize {
		return cookie, errHandshake
	}
	a, _ := chacha20poly1305.NewX(key[:])
	if _, err := a.Open(cookie[:0], msg[8:32], msg[32:64], mac1[:]); err != nil {
		return cookie, errHandshake
	}
	return cookie, nil
}

// newerTimestamp reports whether a is later than b.
func newerTimestamp(a, b [12]byte) bool { return bytes.Compare(a[:], b[:]) > 0 }
