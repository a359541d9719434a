package main

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/dataplane"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// TestKubeSinkTellsRefusals: a change from the API server that the data
// path refuses reaches vrouter status's last reload; one it applies does
// not count as refused.
func TestKubeSinkTellsRefusals(t *testing.T) {
	cfg, err := configs.Load("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := tuntest.NewPair(tuntest.Options{})
	conn, err := overlaytest.NewNetwork().Listen(cfg.Overlay.Listen)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := dataplane.New(dev, conn, cfg, dataplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if err := dp.Apply(dataplane.FromConfig(cfg)); err != nil {
		t.Fatal(err)
	}
	var refused []error
	s := &kubeSink{log: zap.NewNop(), first: make(chan struct{}), refused: func(err error) { refused = append(refused, err) }, dp: dp}

	vip := netip.MustParseAddr("10.96.0.99")
	good := lb.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{vip}, Ports: []lb.ServicePort{{Port: 80, Proto: lb.TCP}}}
	if err := s.UpsertService(good); err != nil || len(refused) != 0 {
		t.Fatalf("UpsertService(valid) = %v, refusals %v; want it applied, none told", err, refused)
	}
	bad := good
	bad.ClusterIPs = []netip.Addr{vip, vip}
	err = s.UpsertService(bad)
	if err == nil || len(refused) != 1 || refused[0] != err || !strings.Contains(err.Error(), "default/web") {
		t.Errorf("UpsertService(a ClusterIP twice) = %v, refusals %v; want the error, told once", err, refused)
	}
}
