package configs

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDefaultTUNAddress(t *testing.T) {
	for _, tc := range []struct{ pods, want string }{
		{"10.244.0.0/24", "10.244.0.0/32"},
		{"10.244.3.0/24", "10.244.3.0/32"},
		{"fd00:10:244::/64", "fd00:10:244:0:ffff:ffff:ffff:ffff/128"},
		{"fd00:10:244:1::/64", "fd00:10:244:1:ffff:ffff:ffff:ffff/128"},
		{"fd00:10:244:0:1::/80", "fd00:10:244:0:1:ffff:ffff:ffff/128"},
		{"fd00:10:244:100::/56", "fd00:10:244:1ff:ffff:ffff:ffff:ffff/128"},
	} {
		pods := netip.MustParsePrefix(tc.pods)
		got := DefaultTUNAddress(pods)
		if got.String() != tc.want {
			t.Errorf("DefaultTUNAddress(%s) = %s, want %s", pods, got, tc.want)
		}
		if !pods.Contains(got.Addr()) {
			t.Errorf("DefaultTUNAddress(%s) = %s, outside the pod CIDR", pods, got)
		}
		if s, ok := subnetRouterAnycast(got.Addr(), []netip.Prefix{pods}); ok {
			t.Errorf("DefaultTUNAddress(%s) = %s, the subnet-router anycast address of %s", pods, got, s)
		}
	}
}

// TestWarningsSubnetRouterAnycast: validate warns about an IPv6 TUN
// address the node kernel owns as a subnet-router anycast address, and
// about nothing in the defaults.
func TestWarningsSubnetRouterAnycast(t *testing.T) {
	dual := func(f *File) {
		f.Node.PodCIDRs = []string{"10.244.0.0/24", "fd00:10:244::/64"}
		f.ClusterCIDRs = []string{"10.244.0.0/16", "fd00:10:244::/56"}
		f.ServiceCIDRs = []string{"10.96.0.0/12", "fd00:10:96::/112"}
	}
	if w := mustParse(t, makeFile(dual)).Warnings(); len(w) != 0 {
		t.Errorf("Warnings() with the default tun.addresses = %q, want none", w)
	}
	for _, tc := range []struct {
		pods, addrs []string
		want        string // "" for no warning
	}{
		{[]string{"10.244.0.0/24", "fd00:10:244::/64"}, []string{"10.244.0.0/32", "fd00:10:244::/128"},
			"tun.addresses[1]: fd00:10:244::/128 is the subnet-router anycast address of fd00:10:244::/64"},
		{[]string{"fd00:10:244::/64"}, []string{"fd00:10:244::"},
			"tun.addresses[0]: fd00:10:244::/128 is the subnet-router anycast address of fd00:10:244::/64"},
		// A pod CIDR wider than the bridge's /64: each /64's network address.
		{[]string{"fd00:10:244::/56"}, []string{"fd00:10:244:7::/128"},
			"tun.addresses[0]: fd00:10:244:7::/128 is the subnet-router anycast address of fd00:10:244:7::/64"},
		{[]string{"fd00:10:244::/64"}, []string{"fd00:10:244::1/64"}, ""},
		{[]string{"fd00:10:244::/64"}, []string{"fd00:10:244:0:ffff:ffff:ffff:ffff"}, ""},
		{[]string{"10.244.0.0/24"}, []string{"10.244.0.0/32"}, ""},
		// Outside the pod CIDR: not the bridge's.
		{[]string{"fd00:10:244::/64"}, []string{"fd00:10:245::/128"}, ""},
	} {
		c := mustParse(t, makeFile(func(f *File) {
			dual(f)
			f.Node.PodCIDRs = tc.pods
			f.TUN.Addresses = tc.addrs
		}))
		w := c.Warnings()
		switch {
		case tc.want == "" && len(w) != 0:
			t.Errorf("Warnings() with pods %v, tun.addresses %v = %q, want none", tc.pods, tc.addrs, w)
		case tc.want != "" && (len(w) != 1 || !strings.HasPrefix(w[0], tc.want)):
			t.Errorf("Warnings() with pods %v, tun.addresses %v = %q, want one starting %q", tc.pods, tc.addrs, w, tc.want)
		}
	}
}
