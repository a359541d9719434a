package wireguard

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length of a WireGuard key: a Curve25519 point or scalar.
const KeyLen = 32

// Key is a WireGuard private or public key. Its text form is the standard
// base64 that wg(8) reads and prints.
type Key [KeyLen]byte

// GenerateKey returns a new private key from the system's random source,
// clamped as Curve25519 wants (as `wg genkey` does).
func GenerateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate WireGuard key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public is the public key of private key k (`wg pubkey`).
func (k Key) Public() Key {
	var pub Key
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails, which a clamped scalar times
		// the base point never is; an unclamped all-zero key is refused
		// by ParseKey's callers before this.
		return Key{}
	}
	copy(pub[:], p)
	return pub
}

// IsZero reports whether k is all zeros: no key.
func (k Key) IsZero() bool { return k == Key{} }

// String is k in base64, as wg(8) prints keys.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParseKey reads a key in wg(8)'s base64 form: 44 characters ending in
// '='. Surrounding white space is ignored; an all-zero key is refused.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		return Key{}, fmt.Errorf("%q is not a WireGuard key (want 44 characters of base64, as `vrouter genkey` or `wg genkey` prints)", abbreviate(s))
	}
	var k Key
	copy(k[:], b)
	if k.IsZero() {
		return Key{}, errors.New("the all-zero WireGuard key is not a key")
	}
	return k, nil
}

func abbreviate(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// LoadOrCreateKey reads the private key in the file at path, or, if there
// is no such file, generates one and writes it there (mode 0600, its
// directory 0700 if it has to be made): a router keeps its identity across
// restarts, and its peers keep trusting it. created says which happened.
// A key file that others can read is refused: it would let them read and
// forge the overlay.
func LoadOrCreateKey(path string) (k Key, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		st, err := os.Stat(path)
		if err != nil {
			return Key{}, false, fmt.Errorf("WireGuard key file: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return Key{}, false, fmt.Errorf("WireGuard key file %s has mode %04o: others can read the private key (chmod 600 %s)", path, st.Mode().Perm(), path)
		}
		k, err := ParseKey(string(data))
		if err != nil {
			return Key{}, false, fmt.Errorf("WireGuard key file %s: %w", path, err)
		}
		return k, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return Key{}, false, fmt.Errorf("WireGuard key file: %w", err)
	}
	if k, err = GenerateKey(); err != nil {
		return Key{}, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, false, fmt.Errorf("WireGuard key file: %w", err)
	}
	// O_EXCL: two routers racing on one path agree on the first's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateKey(path)
	}
	if err != nil {
		return Key{}, false, fmt.Errorf("WireGuard key file: %w", err)
	}
	_, werr := f.WriteString(k.String() + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		_ = os.Remove(path)
		return Key{}, false, fmt.Errorf("write WireGuard key file %s: %w", path, err)
	}
	return k, true, nil
}
