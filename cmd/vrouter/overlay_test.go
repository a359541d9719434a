package main

import (
	"go.uber.org/zap"

	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/vrouter/vrouter/configs"
)

// TestListenOverlayNamesTheFix: an overlay address this namespace does
// not hold (198.51.100.1, TEST-NET-2, as a rootless router's node address is
// absent from its own namespace) fails with the field that chose it and
// overlay.listenAddress as the fix.
func TestListenOverlayNamesTheFix(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	absent := netip.MustParseAddr("198.51.100.1")
	for _, tc := range []struct {
		name     string
		listen   netip.Addr
		wantText []string
	}{
		{"underlay", absent, []string{"198.51.100.1 (node.underlayAddress, which the overlay binds unless overlay.listenAddress is set) is not an address of this network namespace", "set overlay.listenAddress to one it has, such as 0.0.0.0", "unshare -Urn"}},
		{"listenAddress", netip.MustParseAddr("203.0.113.1"), []string{"overlay.listenAddress 203.0.113.1 is not an address of this network namespace; set it to one it has"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.Node.Underlay = absent
			c.Overlay.Listen = netip.AddrPortFrom(tc.listen, 0)
			conn, err := listenOverlay(&c, zap.NewNop())
			if err == nil {
				conn.Close()
				t.Skipf("bind to %v succeeded: this host holds the address, or net.ipv4.ip_nonlocal_bind is on", tc.listen)
			}
			if !errors.Is(err, syscall.EADDRNOTAVAIL) {
				t.Fatalf("listenOverlay(%v) = %v, want EADDRNOTAVAIL", c.Overlay.Listen, err)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("listenOverlay(%v) = %q\nwant it to say %q", c.Overlay.Listen, err, want)
				}
			}
		})
	}

	// A bindable address is not touched.
	c := *cfg
	c.Overlay.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	conn, err := listenOverlay(&c, zap.NewNop())
	if err != nil {
		t.Fatalf("listenOverlay(127.0.0.1:0) = %v", err)
	}
	conn.Close()
}
