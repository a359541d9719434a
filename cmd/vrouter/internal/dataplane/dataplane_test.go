package dataplane

// The data path runs in memory: a fake TUN (tun/tuntest) whose kernel end
// the test plays, and an in-memory underlay (router/overlaytest). Proxy
// backends are loopback listeners of the test process, which the proxy
// dials as it dials pods from the node's kernel.
//
//	test as node kernel ⇄ vr0 ⇄ DataPlane hostgw-master ─ overlaytest ─ (hostgw-node, silent)
//	  pods 10.244.0.0/24, router 169.254.244.1, underlay 192.168.31.201:8285
//	  default/my-service   10.103.92.81:80/TCP       -> 10.244.0.4, 10.244.1.2, 10.244.1.3
//	  kube-system/kube-dns 10.96.0.10 53/UDP, 53/TCP, 9153/TCP -> 10.244.0.2, 10.244.0.3
//	  default/dns-udp      10.96.0.11 53/UDP         -> 10.244.0.2 (when a test adds it)

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun"
	"github.com/vrouter/vrouter/tun/tuntest"
)

var (
	myVIP      = seedtest.MyServiceVIP
	dnsVIP     = seedtest.KubeDNSVIP
	udpVIP     = netip.MustParseAddr("10.96.0.11")
	serviceNet = netip.MustParsePrefix("10.96.0.0/12")
	client     = netip.MustParseAddrPort("10.244.0.9:40000")
)

// seedConfig is hostgw-master's config built in code, as a source that
// reads no file builds it: the LB tuning left zero is lb's defaults.
func seedConfig(mods ...func(*configs.Config)) *configs.Config {
	c := &configs.Config{
		Node:            configs.Node{Name: "hostgw-master", PodCIDRs: []netip.Prefix{seedtest.MasterPods}, Underlay: seedtest.MasterUnderlay.Addr()},
		TUN:             configs.TUN{Name: configs.DefaultTUNName, MTU: 1472},
		Overlay:         configs.Overlay{Port: configs.DefaultOverlayPort, Listen: seedtest.MasterUnderlay, UnderlayMTU: 1500, MTU: 1472},
		RouterAddresses: []netip.Addr{seedtest.RouterAddr},
		ClusterCIDRs:    []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		ServiceCIDRs:    []netip.Prefix{serviceNet},
		Peers: []configs.Peer{{
			Name: "hostgw-node", Underlay: seedtest.NodeUnderlay, PodCIDRs: []netip.Prefix{seedtest.NodePods},
		}},
		Services: seedtest.Services(),
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// withMode sets the mode of the Services named (all if none).
func withMode(m lb.Mode, names ...string) func(*configs.Config) {
	return func(c *configs.Config) {
		for i := range c.Services {
			if len(names) == 0 || slices.Contains(names, c.Services[i].Name) {
				c.Services[i].Mode = m
			}
		}
	}
}

// withUDPOnly adds default/dns-udp: one UDP port, no TCP.
func withUDPOnly(m lb.Mode) func(*configs.Config) {
	return func(c *configs.Config) {
		c.Services = append(c.Services, lb.Service{
			Namespace: "default", Name: "dns-udp", Mode: m,
			ClusterIPs: []netip.Addr{udpVIP},
			Ports:      []lb.ServicePort{{Name: "dns", Port: 53, Proto: lb.UDP}},
			Endpoints:  []lb.Endpoint{{Addr: netip.MustParseAddr("10.244.0.2"), NodeName: "hostgw-master", Ready: true, Serving: true}},
		})
	}
}

type harness struct {
	t      *testing.T
	dp     *DataPlane
	kernel *tuntest.Kernel
}

func newHarness(t *testing.T, cfg *configs.Config, opts Options) *harness {
	t.Helper()
	dev, kernel := tuntest.NewPair(tuntest.Options{})
	conn, err := overlaytest.NewNetwork().Listen(cfg.Overlay.Listen)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := New(dev, conn, cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { dp.Close() })
	return &harness{t: t, dp: dp, kernel: kernel}
}

// run runs the data path until the test ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.dp.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
}

func (h *harness) apply(d Desired) {
	h.t.Helper()
	if err := h.dp.Apply(d); err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
}

// serviceAddrs are the addresses in the service CIDR that the stack holds:
// the VIPs it terminates.
func serviceAddrs(dp *DataPlane) []netip.Addr {
	var out []netip.Addr
	for _, pa := range dp.Router().Stack().AllAddresses()[router.TUNNIC] {
		if a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice()); ok && serviceNet.Contains(a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// TestFromConfig: the example file's Services reach the Table as the file
// says, in both modes.
func TestFromConfig(t *testing.T) {
	cfg, err := configs.Load("../../../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, cfg, Options{})
	h.apply(FromConfig(cfg))
	for _, tc := range []struct {
		key      lb.ServiceKey
		backends int
	}{
		{lb.ServiceKey{VIP: myVIP, Port: 80, Proto: lb.TCP}, 3},
		{lb.ServiceKey{VIP: dnsVIP, Port: 53, Proto: lb.UDP}, 2},
		{lb.ServiceKey{VIP: dnsVIP, Port: 53, Proto: lb.TCP}, 2},
		{lb.ServiceKey{VIP: dnsVIP, Port: 9153, Proto: lb.TCP}, 2},
	} {
		e := h.dp.Table().Lookup(tc.key)
		if e == nil {
			t.Errorf("Lookup(%s) = nil, want an entry", tc.key)
			continue
		}
		if n := len(e.Backends()); n != tc.backends {
			t.Errorf("Lookup(%s) has %d backends, want %d", tc.key, n, tc.backends)
		}
	}
	if got := h.dp.Router().Config().Peers; len(got) != 1 || got[0].Name != "hostgw-node" || got[0].Endpoint != seedtest.NodeUnderlay {
		t.Errorf("router peers = %+v, want hostgw-node at %v", got, seedtest.NodeUnderlay)
	}
	// The router takes from the TUN the node's own sources: its underlay
	// address; the default TUN address 10.244.0.0 lies in its pod CIDR.
	if got, want := h.dp.Router().Config().NodeAddresses, []netip.Addr{seedtest.MasterUnderlay.Addr()}; !slices.Equal(got, want) {
		t.Errorf("router node addresses = %v, want %v", got, want)
	}
	withTUN := *cfg
	withTUN.TUN.Addresses = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/32"), netip.MustParsePrefix("172.31.0.1/30")}
	if got, want := FromConfig(&withTUN).TUNAddresses, addrs("10.244.0.0", "172.31.0.1"); !slices.Equal(got, want) {
		t.Errorf("FromConfig(tun.addresses %v).TUNAddresses = %v, want %v", withTUN.TUN.Addresses, got, want)
	}
	h.apply(FromConfig(&withTUN))
	if got, want := h.dp.Router().Config().NodeAddresses, addrs(seedtest.MasterUnderlay.Addr().String(), "172.31.0.1"); !slices.Equal(got, want) {
		t.Errorf("with tun.addresses %v: router node addresses = %v, want %v", withTUN.TUN.Addresses, got, want)
	}

	next := *cfg
	next.Services = slices.Clone(cfg.Services)
	next.Services[0].Mode, next.Services[0].ProxyProtocol = lb.ModeProxy, true
	h.apply(FromConfig(&next))
	my := h.dp.Table().Lookup(lb.ServiceKey{VIP: myVIP, Port: 80, Proto: lb.TCP})
	dns := h.dp.Table().Lookup(lb.ServiceKey{VIP: dnsVIP, Port: 53, Proto: lb.TCP})
	if my.Mode() != lb.ModeProxy || !my.ProxyProtocol() || dns.Mode() != lb.ModeNAT {
		t.Errorf("after my-service went proxy: my-service mode %v, proxyProtocol %v, kube-dns mode %v; want proxy, true, nat", my.Mode(), my.ProxyProtocol(), dns.Mode())
	}
	if got, want := serviceAddrs(h.dp), addrs(myVIP.String()); !slices.Equal(got, want) {
		t.Errorf("stack's Service addresses = %v, want %v", got, want)
	}
}

// TestProxyVIPs: the stack terminates the ClusterIPs of proxy-mode Services
// with a TCP port, and only those, whichever way the mode is set.
func TestProxyVIPs(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  *configs.Config
		opts Options
		want []netip.Addr
	}{
		{"nat mode", seedConfig(withUDPOnly(lb.ModeNAT)), Options{}, nil},
		{"every Service in proxy mode", seedConfig(withMode(lb.ModeProxy), withUDPOnly(lb.ModeProxy)), Options{}, addrs("10.103.92.81", "10.96.0.10")},
		{"one Service in proxy mode", seedConfig(withMode(lb.ModeProxy, "kube-dns")), Options{}, addrs("10.96.0.10")},
		{"proxy as the default mode", seedConfig(withUDPOnly(lb.ModeDefault), func(c *configs.Config) { c.LB.Mode = lb.ModeProxy }), Options{}, addrs("10.103.92.81", "10.96.0.10")},
		{"nat as the default mode", seedConfig(withMode(lb.ModeDefault)), Options{}, nil},
		{"proxy only (sidecar)", seedConfig(withUDPOnly(lb.ModeNAT)), Options{ProxyOnly: true}, addrs("10.103.92.81", "10.96.0.10")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg, tc.opts)
			h.apply(FromConfig(tc.cfg))
			if got := serviceAddrs(h.dp); !slices.Equal(got, tc.want) {
				t.Errorf("stack's Service addresses = %v, want %v (never the UDP-only %s)", got, tc.want, udpVIP)
			}
		})
	}
}

// TestProxyOnly: a sidecar serves every Service in proxy mode, its TCP
// ports only, and a Service without a TCP port not at all, from whichever
// update it comes.
func TestProxyOnly(t *testing.T) {
	cfg := seedConfig(withUDPOnly(lb.ModeNAT))
	h := newHarness(t, cfg, Options{ProxyOnly: true})
	h.apply(FromConfig(cfg))
	check := func(when string) {
		t.Helper()
		tb := h.dp.Table()
		for _, k := range []lb.ServiceKey{{VIP: myVIP, Port: 80, Proto: lb.TCP}, {VIP: dnsVIP, Port: 53, Proto: lb.TCP}} {
			if e := tb.Lookup(k); e == nil || e.Mode() != lb.ModeProxy {
				t.Errorf("%s: Lookup(%s) = %v, want a proxy-mode entry", when, k, e)
			}
		}
		for _, k := range []lb.ServiceKey{{VIP: dnsVIP, Port: 53, Proto: lb.UDP}, {VIP: udpVIP, Port: 53, Proto: lb.UDP}} {
			if e := tb.Lookup(k); e != nil {
				t.Errorf("%s: Lookup(%s) = %v, want nil: a sidecar serves no UDP", when, k, e.Name())
			}
		}
	}
	check("Apply")
	udp := cfg.Services[2]
	if err := h.dp.UpsertService(udp); err != nil {
		t.Fatalf("UpsertService(%s): %v", udp.Key(), err)
	}
	if err := h.dp.UpsertService(cfg.Services[1]); err != nil {
		t.Fatalf("UpsertService(%s): %v", cfg.Services[1].Key(), err)
	}
	check("UpsertService")
	if cfg.Services[1].Mode != lb.ModeDefault || len(cfg.Services[1].Ports) != 3 {
		t.Errorf("UpsertService changed its argument: %+v", cfg.Services[1])
	}
}

// TestUpdateOrder holds every step of every kind of update to the rule
// that keeps connections from being refused halfway: whenever the Table
// calls a TCP port proxy mode, the stack holds its VIP. Between updates,
// the stack holds exactly the VIPs wanted.
func TestUpdateOrder(t *testing.T) {
	cfg := seedConfig()
	h := newHarness(t, cfg, Options{})
	var steps []string
	h.dp.afterStep = func(step string) {
		steps = append(steps, step)
		held := serviceAddrs(h.dp)
		for _, e := range h.dp.Table().Entries() {
			if k := e.Key(); e.Mode() == lb.ModeProxy && k.Proto == lb.TCP && !slices.Contains(held, k.VIP) {
				t.Errorf("after step %q: the Table calls %s proxy mode but the stack holds only %v: its SYNs would be forwarded, not answered", step, k, held)
			}
		}
	}
	base := FromConfig(cfg)
	proxied := func(names ...string) Desired {
		d := base
		d.Services = FromConfig(seedConfig(withMode(lb.ModeProxy, names...))).Services
		return d
	}
	my, dns := cfg.Services[0], cfg.Services[1]
	myProxy := my
	myProxy.Mode = lb.ModeProxy
	dnsProxy := dns
	dnsProxy.Mode = lb.ModeProxy

	for _, u := range []struct {
		name   string
		update func() error
		want   []netip.Addr
	}{
		{"Apply nat", func() error { return h.dp.Apply(base) }, nil},
		{"Apply my-service proxy", func() error { return h.dp.Apply(proxied("my-service")) }, addrs("10.103.92.81")},
		{"Apply kube-dns proxy instead", func() error { return h.dp.Apply(proxied("kube-dns")) }, addrs("10.96.0.10")},
		{"UpsertService my-service proxy", func() error { return h.dp.UpsertService(myProxy) }, addrs("10.103.92.81", "10.96.0.10")},
		{"UpsertService kube-dns nat", func() error { return h.dp.UpsertService(dns) }, addrs("10.103.92.81")},
		{"DeleteService my-service", func() error { return h.dp.DeleteService("default", "my-service") }, nil},
		{"UpsertService kube-dns proxy", func() error { return h.dp.UpsertService(dnsProxy) }, addrs("10.96.0.10")},
		{"SetServices both proxy", func() error { return h.dp.SetServices([]lb.Service{myProxy, dnsProxy}) }, addrs("10.103.92.81", "10.96.0.10")},
		{"SetPeers none", func() error { return h.dp.SetPeers(nil) }, addrs("10.103.92.81", "10.96.0.10")},
		{"Apply nat again", func() error { return h.dp.Apply(base) }, nil},
	} {
		steps = nil
		if err := u.update(); err != nil {
			t.Fatalf("%s: %v", u.name, err)
		}
		if got := serviceAddrs(h.dp); !slices.Equal(got, u.want) {
			t.Errorf("after %s: stack's Service addresses = %v, want %v", u.name, got, u.want)
		}
		if len(steps) == 0 {
			t.Errorf("%s: no step observed", u.name)
		}
	}
	if got := h.dp.Router().Config().Peers; len(got) != 1 {
		t.Errorf("after Apply, router peers = %+v, want hostgw-node back", got)
	}
}

// TestRefusedUpdateChangesNothing: an update the Table refuses leaves the
// stack's addresses, the NAT's node and the Table as they were.
func TestRefusedUpdateChangesNothing(t *testing.T) {
	cfg := seedConfig()
	h := newHarness(t, cfg, Options{})
	h.apply(FromConfig(cfg))

	bad := FromConfig(seedConfig(withMode(lb.ModeProxy)))
	bad.Services = append(bad.Services, lb.Service{Namespace: "default", Name: "broken", ClusterIPs: []netip.Addr{udpVIP}, Ports: []lb.ServicePort{{Port: 0, Proto: lb.TCP}}})
	err := h.dp.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), "default/broken") {
		t.Fatalf("Apply(a Service with port 0) = %v, want an error naming default/broken", err)
	}
	if got := serviceAddrs(h.dp); len(got) != 0 {
		t.Errorf("after the refused Apply: stack's Service addresses = %v, want none", got)
	}
	if e := h.dp.Table().Lookup(lb.ServiceKey{VIP: myVIP, Port: 80, Proto: lb.TCP}); e == nil || e.Mode() != lb.ModeNAT {
		t.Errorf("after the refused Apply: my-service entry %v, want it in nat mode as before", e)
	}

	broken := cfg.Services[0]
	broken.Mode, broken.ClusterIPs = lb.ModeProxy, []netip.Addr{myVIP, myVIP}
	if err := h.dp.UpsertService(broken); err == nil {
		t.Fatalf("UpsertService(a ClusterIP twice) = nil, want an error")
	}
	if got := serviceAddrs(h.dp); len(got) != 0 {
		t.Errorf("after the refused UpsertService: stack's Service addresses = %v, want none", got)
	}
}

type fakeLink struct {
	calls [][]netip.Prefix
	err   error
}

func (l *fakeLink) SetRoutes(routes []netip.Prefix) error {
	l.calls = append(l.calls, slices.Clone(routes))
	return l.err
}

// TestKernelRoutes: the kernel's routes into the TUN follow the cluster
// and Service CIDRs and the router addresses, are handed over only when
// they change, and again after a failure.
func TestKernelRoutes(t *testing.T) {
	cfg := seedConfig()
	link := &fakeLink{}
	h := newHarness(t, cfg, Options{Link: link})
	d := FromConfig(cfg)
	h.apply(d)
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), serviceNet, netip.MustParsePrefix("169.254.244.1/32")}
	if len(link.calls) != 1 || !slices.Equal(link.calls[0], want) {
		t.Fatalf("SetRoutes calls after the first Apply = %v, want one with %v", link.calls, want)
	}
	h.apply(d)
	if err := h.dp.UpsertService(cfg.Services[0]); err != nil {
		t.Fatal(err)
	}
	if len(link.calls) != 1 {
		t.Errorf("SetRoutes calls after updates that change no route = %v, want still one", link.calls)
	}

	d.ServiceCIDRs = append(slices.Clone(d.ServiceCIDRs), netip.MustParsePrefix("10.112.0.0/12"))
	link.err = errors.New("netlink: operation not permitted")
	if err := h.dp.Apply(d); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Errorf("Apply with a failing link = %v, want its error", err)
	}
	link.err = nil
	h.apply(d)
	if n := len(link.calls); n != 3 || !slices.Contains(link.calls[2], netip.MustParsePrefix("10.112.0.0/12")) {
		t.Errorf("SetRoutes calls = %v, want the new Service CIDR handed over again after the failure", link.calls)
	}
}

// TestProxyConnectionDrains runs the data path and connects to a
// proxy-mode VIP as a pod would: the stack answers the SYN once the proxy
// reached the backend, and the VIP stays a stack address while the
// connection is open, even after its Service is gone; the connection ends
// after lb.proxy.drainTimeout.
func TestProxyConnectionDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	backend := netip.MustParseAddrPort(ln.Addr().String())
	cfg := seedConfig(func(c *configs.Config) {
		c.LB.Proxy.DrainTimeout = 200 * time.Millisecond
		c.Services = []lb.Service{{
			Namespace: "default", Name: "my-service", Mode: lb.ModeProxy,
			ClusterIPs: []netip.Addr{myVIP},
			Ports:      []lb.ServicePort{{Port: 80, Proto: lb.TCP, TargetPort: backend.Port()}},
			Endpoints:  []lb.Endpoint{{Addr: backend.Addr(), Ready: true, Serving: true}},
		}}
	})
	h := newHarness(t, cfg, Options{})
	h.apply(FromConfig(cfg))
	h.run()

	vip := netip.AddrPortFrom(myVIP, 80)
	// Until Proxy.Run has started, the stack resets SYNs to the VIP: try
	// again from the next port then.
	from := client
	var synack header.TCP
	for deadline := time.Now().Add(5 * time.Second); ; {
		h.send(seedtest.TCPSyn(from, vip))
		synack = h.recvTCP(vip)
		if f := synack.Flags(); f == header.TCPFlagSyn|header.TCPFlagAck {
			break
		} else if f&header.TCPFlagRst == 0 || time.Now().After(deadline) {
			t.Fatalf("answer to the SYN from %s to %s has flags %v, want SYN|ACK", from, vip, f)
		}
		from = netip.AddrPortFrom(from.Addr(), from.Port()+1)
		time.Sleep(10 * time.Millisecond)
	}
	var bc net.Conn
	select {
	case bc = <-accepted:
		defer bc.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the backend was not dialled")
	}
	h.send(tcpSegment(from, vip, 1001, synack.SequenceNumber()+1, header.TCPFlagAck))
	waitFor(t, "the proxied connection to be open", func() bool { return h.dp.Proxy().Stats().Active == 1 })

	if err := h.dp.DeleteService("default", "my-service"); err != nil {
		t.Fatal(err)
	}
	if got := serviceAddrs(h.dp); !slices.Equal(got, []netip.Addr{myVIP}) {
		t.Errorf("after DeleteService with a connection open: stack's Service addresses = %v, want %v while it drains", got, myVIP)
	}

	waitFor(t, "the proxied connection to be reset after the drain timeout", func() bool { return h.dp.Proxy().Stats().Active == 0 })
	if err := h.dp.Apply(FromConfig(seedConfig(func(c *configs.Config) { c.Services = nil }))); err != nil {
		t.Fatal(err)
	}
	if got := serviceAddrs(h.dp); len(got) != 0 {
		t.Errorf("after the connection ended: stack's Service addresses = %v, want none", got)
	}
}

// TestNATTranslates: in nat mode the VIP is no stack address, a SYN to it
// leaves towards a backend, translated, and lb.nat's caps hold (a
// half-open flow gives way to a new one; lb's tests show a confirmed one
// does not).
func TestNATTranslates(t *testing.T) {
	cfg := seedConfig(func(c *configs.Config) {
		c.Services = c.Services[:1]
		c.LB.NAT = lb.NATOptions{MaxTCP: 1, MaxUDP: 1, MaxPerClient: 1}
	})
	cfg.Services[0].Endpoints = cfg.Services[0].Endpoints[:1] // 10.244.0.4, on this node
	h := newHarness(t, cfg, Options{})
	h.apply(FromConfig(cfg))
	h.run()
	if got := serviceAddrs(h.dp); len(got) != 0 {
		t.Errorf("stack's Service addresses = %v, want none in nat mode", got)
	}
	vip := netip.AddrPortFrom(myVIP, 80)
	h.send(seedtest.TCPSyn(client, vip))
	ip := h.recv()
	if dst := netip.AddrFrom4(ip.DestinationAddress().As4()); dst != netip.MustParseAddr("10.244.0.4") {
		t.Errorf("SYN to %s left for %s, want the backend 10.244.0.4", vip, dst)
	}
	// A second flow while the first is still half-open: the cap of 1
	// holds by ending the first (early drop), as the kernel's conntrack
	// does, and the second leaves for the backend.
	second := netip.AddrPortFrom(client.Addr(), client.Port()+1)
	h.send(seedtest.TCPSyn(second, vip))
	ip = h.recv()
	if dst := netip.AddrFrom4(ip.DestinationAddress().As4()); dst != netip.MustParseAddr("10.244.0.4") {
		t.Errorf("second SYN to %s left for %s, want the backend 10.244.0.4", vip, dst)
	}
	waitFor(t, "the NAT to end the first, half-open flow for the second (lb.nat caps flows at 1)", func() bool {
		st := h.dp.NAT().Stats()
		return st.EvictedCap+st.EvictedPerClient == 1 && st.Flows == 1 && st.RefusedCap == 0
	})
}

func (h *harness) send(pkt []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.kernel.Send(ctx, pkt); err != nil {
		h.t.Fatalf("kernel: send: %v", err)
	}
}

func (h *harness) recv() header.IPv4 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := h.kernel.Recv(ctx)
	if err != nil {
		h.t.Fatalf("kernel: no packet from the router: %v", err)
	}
	return header.IPv4(b)
}

// recvTCP returns the next TCP segment from src to the client.
func (h *harness) recvTCP(src netip.AddrPort) header.TCP {
	h.t.Helper()
	for {
		ip := h.recv()
		if ip.TransportProtocol() != header.TCPProtocolNumber {
			h.t.Fatalf("kernel got protocol %d, want TCP from %s", ip.TransportProtocol(), src)
		}
		tcp := header.TCP(ip.Payload())
		if netip.AddrFrom4(ip.SourceAddress().As4()) == src.Addr() && tcp.SourcePort() == src.Port() {
			return tcp
		}
	}
}

// tcpSegment builds a TCP segment without payload from src to dst.
func tcpSegment(src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	s, d := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack, DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, uint16(len(tcp)))
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRouterConfigEqualSeesEveryField: the DataPlane skips router.Set when
// routerConfigEqual says nothing changed, so a field of router.Config it
// did not compare would never reach the router.
func TestRouterConfigEqualSeesEveryField(t *testing.T) {
	base := router.Config{}
	typ := reflect.TypeFor[router.Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		c := base
		v := reflect.ValueOf(&c).Elem().Field(i)
		if v.Kind() != reflect.Slice {
			t.Fatalf("router.Config.%s is a %s: teach this test to change it", f.Name, v.Kind())
		}
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		if routerConfigEqual(base, c) {
			t.Errorf("routerConfigEqual ignores router.Config.%s", f.Name)
		}
	}
}

// TestHostNetworkEndpoints: the kubernetes Service's endpoint is the API
// server on hostgw-master's own address, and another Service's is a
// host-network pod on hostgw-node's. The router routes both to the node
// kernel (one host route each, no more than the Services need), and a
// client pod here reaching the local one is translated to the router
// address (hairpin), the remote one keeps its address.
func TestHostNetworkEndpoints(t *testing.T) {
	master, worker := seedtest.MasterUnderlay.Addr(), seedtest.NodeUnderlay.Addr()
	hostSvc := func(name, vip string, ep netip.Addr) lb.Service {
		return lb.Service{
			Namespace: "default", Name: name,
			ClusterIPs: []netip.Addr{netip.MustParseAddr(vip)},
			Ports:      []lb.ServicePort{{Name: "https", Port: 443, Proto: lb.TCP, TargetPort: 6443}},
			Endpoints:  []lb.Endpoint{{Addr: ep, Ready: true, Serving: true}},
		}
	}
	cfg := seedConfig()
	h := newHarness(t, cfg, Options{})
	h.run()
	d := FromConfig(cfg)
	h.apply(d)
	kernelRoutes := func() []netip.Prefix { return h.dp.Router().Config().KernelRoutes }
	if got := kernelRoutes(); len(got) != 0 {
		t.Fatalf("KernelRoutes with pod endpoints only = %v, want none", got)
	}

	if err := h.dp.UpsertService(hostSvc("kubernetes", "10.96.0.1", master)); err != nil {
		t.Fatal(err)
	}
	if err := h.dp.UpsertService(hostSvc("on-worker", "10.96.0.2", worker)); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.PrefixFrom(master, 32), netip.PrefixFrom(worker, 32)}
	if got := kernelRoutes(); !slices.Equal(got, want) {
		t.Errorf("KernelRoutes = %v, want %v", got, want)
	}

	for _, tc := range []struct {
		vip     string
		backend netip.Addr
		src     netip.Addr
	}{
		{"10.96.0.1", master, seedtest.RouterAddr}, // hairpin: the node kernel answers it
		{"10.96.0.2", worker, client.Addr()},
	} {
		vip := netip.AddrPortFrom(netip.MustParseAddr(tc.vip), 443)
		h.send(seedtest.TCPSyn(client, vip))
		ip := h.recv()
		src, dst := netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		if dst != tc.backend || src != tc.src {
			t.Errorf("SYN to %s reached the kernel as %s -> %s, want %s -> %s", vip, src, dst, tc.src, tc.backend)
		}
	}

	// Routes follow the Services: deleting one removes its route only;
	// Apply with the Services of the file removes the other.
	if err := h.dp.DeleteService("default", "on-worker"); err != nil {
		t.Fatal(err)
	}
	if got, want := kernelRoutes(), want[:1]; !slices.Equal(got, want) {
		t.Errorf("after deleting on-worker: KernelRoutes = %v, want %v", got, want)
	}
	h.apply(d)
	if got := kernelRoutes(); len(got) != 0 {
		t.Errorf("after Apply without them: KernelRoutes = %v, want none", got)
	}
}

// TestExternalAddresses: a Service's external and load-balancer IPs get a
// kernel route into the TUN while a Service has them (but for the node's
// own address and those a Service CIDR covers), the stack terminates them
// with the ClusterIPs in proxy mode, and the NAT translates them in nat
// mode as it does a ClusterIP.
func TestExternalAddresses(t *testing.T) {
	ext, lbIP := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	inSvcNet := netip.MustParseAddr("10.96.0.99")
	cfg := seedConfig(func(c *configs.Config) {
		s := &c.Services[0]
		s.Type = lb.TypeLoadBalancer
		s.ExternalIPs = []netip.Addr{ext, c.Node.Underlay, inSvcNet}
		s.LoadBalancerIPs = []netip.Addr{lbIP}
	})
	link := &fakeLink{}
	h := newHarness(t, cfg, Options{Link: link})
	h.apply(FromConfig(cfg))
	base := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), serviceNet, netip.MustParsePrefix("169.254.244.1/32")}
	want := append(slices.Clone(base), netip.PrefixFrom(ext, 32), netip.PrefixFrom(lbIP, 32))
	if got := link.calls[len(link.calls)-1]; !slices.Equal(got, want) {
		t.Fatalf("kernel routes = %v, want %v", got, want)
	}
	svc := cfg.Services[0]
	h.run()
	backends := make(map[netip.Addr]bool)
	for _, ep := range svc.Endpoints {
		backends[ep.Addr] = true
	}
	for i, vip := range []netip.Addr{ext, lbIP} {
		to := netip.AddrPortFrom(vip, svc.Ports[0].Port)
		h.send(seedtest.TCPSyn(netip.AddrPortFrom(client.Addr(), client.Port()+uint16(i)), to))
		ip := h.recv()
		if dst := netip.AddrFrom4(ip.DestinationAddress().As4()); !backends[dst] {
			t.Errorf("nat mode: SYN to %s left for %s, want one of the Service's endpoints", to, dst)
		}
	}

	// Proxy mode: the stack holds the external addresses too.
	svc.Mode = lb.ModeProxy
	if err := h.dp.UpsertService(svc); err != nil {
		t.Fatal(err)
	}
	held := func(a netip.Addr) bool {
		for _, pa := range h.dp.Router().Stack().AllAddresses()[router.TUNNIC] {
			if b, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice()); ok && b == a {
				return true
			}
		}
		return false
	}
	for _, a := range []netip.Addr{ext, lbIP} {
		if !held(a) {
			t.Errorf("proxy mode: stack does not hold external address %v", a)
		}
	}

	// The Service loses them: the routes and the addresses go.
	svc.ExternalIPs, svc.LoadBalancerIPs, svc.Type = nil, nil, lb.TypeClusterIP
	if err := h.dp.UpsertService(svc); err != nil {
		t.Fatal(err)
	}
	if got := link.calls[len(link.calls)-1]; !slices.Equal(got, base) {
		t.Errorf("kernel routes after the Service dropped its external IPs = %v, want %v", got, base)
	}
	for _, a := range []netip.Addr{ext, lbIP} {
		if held(a) {
			t.Errorf("stack still holds %v after its Service dropped it", a)
		}
	}
}

// TestNodePortAddresses: node ports are served on the node's primary
// address and 127.0.0.1 by default, on the interface addresses that
// lb.nodePortAddresses select otherwise, and on the publish addresses
// alone when a helper publishes them; a sidecar serves none.
func TestNodePortAddresses(t *testing.T) {
	ifaddrs := addrs("10.0.0.1", "192.168.31.201", "192.168.31.250", "127.0.0.1", "fe80::1")
	withNodePort := func(c *configs.Config) {
		c.Services = c.Services[:1]
		c.Services[0].Type = lb.TypeNodePort
		c.Services[0].Ports[0].NodePort = 30080
		c.LB.LocalhostNodePorts = true
	}
	bound := func(dp *DataPlane) []netip.Addr {
		var out []netip.Addr
		for _, b := range dp.HostPorts().Bindings() {
			if b.Addr.Port() != 30080 || b.Proto != lb.HostTCP {
				t.Errorf("binding %+v, want only 30080/TCP", b)
			}
			out = append(out, b.Addr.Addr())
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	for _, tc := range []struct {
		name string
		mod  func(*configs.Config)
		opts Options
		want []netip.Addr
	}{
		{"primary", func(*configs.Config) {}, Options{}, addrs("127.0.0.1", "192.168.31.201")},
		{"no localhost", func(c *configs.Config) { c.LB.LocalhostNodePorts = false }, Options{}, addrs("192.168.31.201")},
		{"cidrs", func(c *configs.Config) {
			c.LB.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("192.168.31.0/24"), netip.MustParsePrefix("fe80::/10")}
		}, Options{}, addrs("127.0.0.1", "192.168.31.201", "192.168.31.250")},
		{"published", func(*configs.Config) {}, Options{PublishAddresses: addrs("127.0.0.1", "::1")}, addrs("127.0.0.1", "::1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := seedConfig(withNodePort, tc.mod)
			tc.opts.InterfaceAddrs = func() ([]netip.Addr, error) { return ifaddrs, nil }
			h := newHarness(t, cfg, tc.opts)
			h.apply(FromConfig(cfg))
			// 30080 exists for IPv4 only (an IPv4 ClusterIP): ::1 gets none.
			want := slices.DeleteFunc(slices.Clone(tc.want), func(a netip.Addr) bool { return a.Is6() })
			if got := bound(h.dp); !slices.Equal(got, want) {
				t.Errorf("node port 30080 served on %v, want %v", got, want)
			}
		})
	}
	t.Run("sidecar", func(t *testing.T) {
		cfg := seedConfig(withNodePort)
		h := newHarness(t, cfg, Options{ProxyOnly: true})
		h.apply(FromConfig(cfg))
		if h.dp.HostPorts() != nil {
			t.Errorf("a sidecar's data path has host ports")
		}
	})
}

// egressLink is a fakeLink that records the egress rules it is given.
type egressLink struct {
	fakeLink
	egress []tun.EgressRules
}

func (l *egressLink) SetEgress(r tun.EgressRules) error {
	l.egress = append(l.egress, r)
	return nil
}

// TestEgressRules: with egress.masquerade the kernel gets rules for this
// node's pod CIDRs and the non-masquerade CIDRs (default: the cluster
// and Service CIDRs), again only when they change, and none once Run
// returns; without it, the first update removes an earlier run's.
func TestEgressRules(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		cfg := seedConfig(func(c *configs.Config) { c.Egress.Masquerade = true })
		link := &egressLink{}
		h := newHarness(t, cfg, Options{Link: link})
		if h.dp.Egress() == nil {
			t.Fatal("Egress() = nil with egress.masquerade")
		}
		d := FromConfig(cfg)
		h.apply(d)
		h.apply(d)
		want := tun.EgressRules{PodCIDRs: cfg.Node.PodCIDRs, NonMasquerade: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), serviceNet}}
		if len(link.egress) != 1 || !slices.Equal(link.egress[0].PodCIDRs, want.PodCIDRs) || !slices.Equal(link.egress[0].NonMasquerade, want.NonMasquerade) {
			t.Fatalf("SetEgress calls after two equal Applies = %+v, want one with %+v", link.egress, want)
		}
		d.NonMasqueradeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		h.apply(d)
		if n := len(link.egress); n != 2 || !slices.Equal(link.egress[1].NonMasquerade, d.NonMasqueradeCIDRs) {
			t.Fatalf("SetEgress calls after nonMasqueradeCIDRs changed = %+v, want a second with %v", link.egress, d.NonMasqueradeCIDRs)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.dp.Run(ctx) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if last := link.egress[len(link.egress)-1]; len(link.egress) != 3 || len(last.PodCIDRs) != 0 {
			t.Errorf("SetEgress calls after Run returned = %+v, want the rules removed last", link.egress)
		}
	})
	t.Run("off", func(t *testing.T) {
		cfg := seedConfig()
		link := &egressLink{}
		h := newHarness(t, cfg, Options{Link: link})
		if h.dp.Egress() != nil {
			t.Fatal("Egress() != nil without egress.masquerade")
		}
		h.apply(FromConfig(cfg))
		h.apply(FromConfig(cfg))
		if len(link.egress) != 1 || len(link.egress[0].PodCIDRs) != 0 {
			t.Errorf("SetEgress calls = %+v, want one removing every rule", link.egress)
		}
	})
}
