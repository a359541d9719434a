package wireguard

import (
	"crypto/cipher"
	"encoding/binary"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// keypair is one session's transport keys: what a completed handshake
// gives each side, named by the index each side chose.
type keypair struct {
	send, recv cipher.AEAD
	// sendNonce is the next counter to send under; senders reserve a
	// run of them at once.
	sendNonce   atomic.Uint64
	replay      replayFilter // the receiving goroutine's only
	localIndex  uint32
	remoteIndex uint32
	created     time.Time
	initiator   bool
}

func newKeypair(hs *handshake, now time.Time) *keypair {
	sk, rk := hs.sessionKeys()
	s, _ := chacha20poly1305.New(sk[:])
	r, _ := chacha20poly1305.New(rk[:])
	return &keypair{
		send:        s,
		recv:        r,
		localIndex:  hs.localIndex,
		remoteIndex: hs.remoteIndex,
		created:     now,
		initiator:   hs.initiator,
	}
}

// expired reports whether the session may no longer send or receive: it
// is older than Reject-After-Time (or has sent too many messages).
func (kp *keypair) expired(now time.Time) bool {
	return now.Sub(kp.created) >= rejectAfterTime || kp.sendNonce.Load() >= rejectAfterMessages
}

// paddedLen is how long an inner packet of n bytes is sealed: a multiple
// of 16, but not past the MTU (the paper, section 5.4.6, as wg does).
func paddedLen(n, mtu int) int {
	last := n
	if mtu > 0 && last > mtu {
		last %= mtu
	}
	p := (last + 15) &^ 15
	if mtu > 0 && p > mtu {
		p = mtu
	}
	return n + p - last
}

// sealTransport writes the transport message of packet p under counter
// ctr into dst, which has room for TransportOverhead+padded bytes, and
// returns its length. p may not overlap dst.
func (kp *keypair) sealTransport(dst, p []byte, padded int, ctr uint64) int {
	binary.LittleEndian.PutUint32(dst[0:4], msgTransport)
	// The nonce (four zero bytes, then the counter) is built in the
	// header's last 12 bytes, where the counter goes anyway: a nonce of
	// its own would escape to the heap through the AEAD's interface.
	binary.LittleEndian.PutUint32(dst[4:8], 0)
	binary.LittleEndian.PutUint64(dst[8:16], ctr)
	body := dst[transportHead : transportHead+padded]
	copy(body, p)
	clear(body[len(p):])
	kp.send.Seal(body[:0], dst[4:transportHead], body, nil)
	binary.LittleEndian.PutUint32(dst[4:8], kp.remoteIndex)
	return transportHead + padded + tagSize
}

// openTransport authenticates and decrypts transport message msg in
// place and returns the padded inner packet (empty for a keepalive). A
// message that does not authenticate, or whose counter the session has
// seen or is past its window, returns false. It overwrites msg's
// receiver index, which names kp, with the nonce's zero bytes.
func (kp *keypair) openTransport(msg []byte) ([]byte, bool) {
	ctr := binary.LittleEndian.Uint64(msg[8:16])
	if ctr >= rejectAfterMessages {
		return nil, false
	}
	binary.LittleEndian.PutUint32(msg[4:8], 0) // the nonce: msg[4:16]
	p, err := kp.recv.Open(msg[transportHead:transportHead], msg[4:transportHead], msg[transportHead:], nil)
	if err != nil {
		return nil, false
	}
	// Only an authenticated counter moves the window.
	if !kp.replay.accept(ctr) {
		return nil, false
	}
	return p, true
}

// replayFilter is a sliding window over the counters a session
// received: a counter is accepted once, and not if it is more than
// replayWindow below the highest accepted (RFC 6479's bitmap, as the
// paper asks).
type replayFilter struct {
	last uint64
	seen bool
	ring [replayWords]uint64
}

const (
	replayWords  = 32                     // 2,048 bits
	replayWindow = (replayWords - 1) * 64 // the ring less one word, which the next block clears into
)

func (f *replayFilter) accept(ctr uint64) bool {
	block := ctr / 64
	switch {
	case !f.seen || ctr > f.last:
		cur := f.last / 64
		if !f.seen {
			clear(f.ring[:])
		} else {
			for i := uint64(1); i <= min(block-cur, replayWords); i++ {
				f.ring[(cur+i)%replayWords] = 0
			}
		}
		f.last, f.seen = ctr, true
	case f.last-ctr > replayWindow:
		return false
	}
	bit := uint64(1) << (ctr % 64)
	w := &f.ring[block%replayWords]
	if *w&bit != 0 {
		return false
	}
	*w |= bit
	return true
}
