package tun

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readPacket reads one packet into p with a batch of one: its length and
// offload metadata.
func readOne(d Device, p []byte) (int, Offload, error) {
	sizes, offs := []int{0}, []Offload{{}}
	if _, err := d.Read([][]byte{p}, sizes, offs); err != nil {
		return 0, Offload{}, err
	}
	return sizes[0], offs[0], nil
}

// readComplete is readPacket for a reader that wants complete packets: a
// partial checksum is completed, as the kernel would.
func readComplete(d Device, p []byte) (int, error) {
	n, o, err := readOne(d, p)
	if err == nil {
		completeChecksum(p[:n], o)
	}
	return n, err
}

// writePacket writes p with metadata o, a batch of one, and returns its
// length.
func writePacket(d Device, p []byte, o Offload) (int, error) {
	if _, err := d.Write([][]byte{p}, []Offload{o}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writePlain writes p as a plain packet.
func writePlain(d Device, p []byte) (int, error) { return writePacket(d, p, Offload{}) }

func TestOptionsDefaultName(t *testing.T) {
	if got := (Options{}).name(); got != "vr0" {
		t.Errorf("Options{}.name() = %q, want %q", got, "vr0")
	}
	if got := (Options{Name: "tun%d"}).name(); got != "tun%d" {
		t.Errorf("Options{Name: tun%%d}.name() = %q, want %q", got, "tun%d")
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wantErr string // "" for valid
	}{
		{"vr0", ""},
		{"tun%d", ""},
		{"fifteen-chars-x", ""},
		{"", "empty"},
		{"sixteen-chars-xx", "at most 15"},
		{".", "not allowed"},
		{"..", "not allowed"},
		{"a/b", "'/'"},
		{"a:b", "'/'"},
		{"a b", "whitespace"},
	} {
		err := checkName(tc.name)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("checkName(%q) = %v, want nil", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("checkName(%q) = %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func makeLinkConfig(mod func(*LinkConfig)) LinkConfig {
	c := LinkConfig{
		Addresses: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/32")},
		MTU:       1472,
		Routes: []netip.Prefix{
			netip.MustParsePrefix("10.244.0.0/16"),
			netip.MustParsePrefix("10.96.0.0/12"),
		},
	}
	if mod != nil {
		mod(&c)
	}
	return c
}

func TestLinkConfigValidate(t *testing.T) {
	v6addr := netip.MustParsePrefix("fd00:10:244::1/128")
	for _, tc := range []struct {
		desc    string
		c       LinkConfig
		wantErr string
	}{
		{"seed topology", makeLinkConfig(nil), ""},
		{"zero value", LinkConfig{}, ""},
		{"MTU unchanged", makeLinkConfig(func(c *LinkConfig) { c.MTU = 0 }), ""},
		{"dual stack", makeLinkConfig(func(c *LinkConfig) { c.Addresses = append(c.Addresses, v6addr) }), ""},
		{"MTU too small", makeLinkConfig(func(c *LinkConfig) { c.MTU = 67 }), "LinkConfig.MTU 67: want 0 (unchanged) or 68..65535"},
		{"MTU too big", makeLinkConfig(func(c *LinkConfig) { c.MTU = 65536 }), "LinkConfig.MTU 65536"},
		{"MTU below IPv6 minimum", makeLinkConfig(func(c *LinkConfig) {
			c.MTU = 1200
			c.Addresses = append(c.Addresses, v6addr)
		}), "below 1280"},
		{"IPv6 route only, small MTU", makeLinkConfig(func(c *LinkConfig) {
			c.MTU = 1200
			c.Routes = append(c.Routes, netip.MustParsePrefix("fd00:10:96::/112"))
		}), "below 1280"},
		{"invalid address", makeLinkConfig(func(c *LinkConfig) { c.Addresses = []netip.Prefix{{}} }), "LinkConfig.Addresses[0] invalid Prefix: not a valid prefix"},
		{"route with host bits", makeLinkConfig(func(c *LinkConfig) {
			c.Routes = []netip.Prefix{netip.MustParsePrefix("10.244.1.5/16")}
		}), "LinkConfig.Routes[0] 10.244.1.5/16: host bits are set; want a network prefix such as 10.244.0.0/16"},
		{"4in6 route", makeLinkConfig(func(c *LinkConfig) {
			c.Routes = []netip.Prefix{netip.MustParsePrefix("::ffff:10.96.0.0/108")}
		}), "write it as IPv4 (10.96.0.0/12)"},
	} {
		err := tc.c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want nil", tc.desc, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: Validate() = %v, want an error containing %q", tc.desc, err, tc.wantErr)
		}
	}
}
