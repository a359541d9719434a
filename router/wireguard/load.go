package wireguard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"net/netip"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// The load defence (the paper, section 5.3): an initiation or response
// costs its receiver Curve25519 computations, so while a router receives
// more handshake messages than a cluster's rekeys explain, it answers
// those without a valid mac2 with a cookie reply instead, which costs it
// a MAC and proves the sender can receive at its address; those with one
// are still limited per source address. The state is the reading
// goroutine's own.
type loadDefence struct {
	// window counts handshake messages since windowStart; under is when
	// the router stops being under load.
	windowStart time.Time
	window      int
	under       time.Time
	// secret keys the cookies; renewed every cookieLifetime.
	secret   [32]byte
	secretAt time.Time
	buckets  map[netip.Addr]*bucket
}

// Load thresholds: more than loadMessages handshake messages in
// loadWindow is load, and the router stays under load for loadHold after.
// A rekey every two minutes per peer is 0.02 messages a second a peer.
const (
	loadWindow   = 250 * time.Millisecond
	loadMessages = 64
	loadHold     = time.Second
	// perSourceRate and perSourceBurst limit handshakes with a valid
	// mac2 under load, per source address (wireguard-go's 20 a second,
	// burst 5).
	perSourceRate  = 20
	perSourceBurst = 5
	maxBuckets     = 4096
)

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     time.Time
}

// underLoad counts a handshake message and reports whether the router is
// under load.
func (l *loadDefence) underLoad(now time.Time) bool {
	if now.Sub(l.windowStart) >= loadWindow {
		l.windowStart, l.window = now, 0
	}
	l.window++
	if l.window > loadMessages {
		l.under = now.Add(loadHold)
	}
	return now.Before(l.under)
}

// cookie is the cookie of a sender at src: a MAC of its address under a
// secret that changes every two minutes.
func (l *loadDefence) cookie(src netip.AddrPort, now time.Time) [16]byte {
	if l.secretAt.IsZero() || now.Sub(l.secretAt) >= cookieLifetime {
		_, _ = rand.Read(l.secret[:])
		l.secretAt = now
	}
	a := src.Addr().As16()
	var b [18]byte
	copy(b[:], a[:])
	binary.BigEndian.PutUint16(b[16:], src.Port())
	return mac(l.secret[:], b[:])
}

// validMAC2 reports whether msg carries the mac2 of src's cookie.
func (l *loadDefence) validMAC2(msg []byte, src netip.AddrPort, now time.Time) bool {
	c := l.cookie(src, now)
	n := len(msg)
	m2 := mac(c[:], msg[:n-16])
	return subtle.ConstantTimeCompare(m2[:], msg[n-16:]) == 1
}

// allow takes a token from src's bucket.
func (l *loadDefence) allow(src netip.Addr, now time.Time) bool {
	if l.buckets == nil || len(l.buckets) > maxBuckets {
		l.buckets = map[netip.Addr]*bucket{}
	}
	b := l.buckets[src]
	if b == nil {
		b = &bucket{tokens: perSourceBurst, at: now}
		l.buckets[src] = b
	}
	b.tokens = min(perSourceBurst, b.tokens+now.Sub(b.at).Seconds()*perSourceRate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// admitHandshake decides whether the reader computes on handshake
// message msg (an initiation or a response, mac1 checked) from src: yes
// when not under load; under load, only with a valid mac2 and within its
// source's rate, and else a cookie reply goes back (counted).
func (c *Conn) admitHandshake(msg []byte, sender uint32, src netip.AddrPort, now time.Time) bool {
	l := &c.rd.load
	if !l.underLoad(now) {
		return true
	}
	if l.validMAC2(msg, src, now) {
		if l.allow(src.Addr(), now) {
			return true
		}
		c.refuse(RefusedUnderLoad, "", src)
		return false
	}
	// The cookie reply: the cookie sealed under this router's cookie key
	// with a random nonce, bound to msg's mac1, to the sender's index.
	var reply [cookieSize]byte
	binary.LittleEndian.PutUint32(reply[0:4], msgCookie)
	binary.LittleEndian.PutUint32(reply[4:8], sender)
	if _, err := rand.Read(reply[8:32]); err != nil {
		return false
	}
	ck := l.cookie(src, now)
	key := c.id.Load().macs.cookie
	a, _ := chacha20poly1305.NewX(key[:])
	n := len(msg)
	a.Seal(reply[32:32], reply[8:32], ck[:], msg[n-32:n-16])
	_ = c.sock.WriteBatch(reply[:], len(reply), src)
	c.refuse(RefusedUnderLoad, "handshakes arrive faster than a cluster's rekeys explain: answering those without a cookie with a cookie reply", src)
	return false
}
