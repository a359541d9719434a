package seedtest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/overlaytest"
	"github.com/vrouter/vrouter/tun/tuntest"
)

// Addresses of the seed cluster.
var (
	MasterUnderlay = netip.MustParseAddrPort("192.168.31.201:8285")
	NodeUnderlay   = netip.MustParseAddrPort("192.168.31.202:8285")
	MasterPods     = netip.MustParsePrefix("10.244.0.0/24")
	NodePods       = netip.MustParsePrefix("10.244.1.0/24")
	RouterAddr     = netip.MustParseAddr("169.254.244.1")
	MyServiceVIP   = netip.MustParseAddr("10.103.92.81")
	KubeDNSVIP     = netip.MustParseAddr("10.96.0.10")
)

// Cluster is the two nodes.
type Cluster struct {
	Net          *overlaytest.Network
	Master, Node *Node
}

// Node is one node's router with its Service table and NAT.
type Node struct {
	Name   string
	Router *router.Router
	Kernel *tuntest.Kernel
	Table  *lb.Table
	NAT    *lb.NAT

	t      testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Options vary the cluster. Zero values are the seed's.
type Options struct {
	// NodeMTU is hostgw-node's tunnel MTU. Default router.DefaultMTU,
	// as hostgw-master's.
	NodeMTU int
}

// Start runs the cluster until the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith runs the cluster with opts until the test ends.
func StartWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	nw := overlaytest.NewNetwork()
	c := &Cluster{Net: nw}
	c.Master = startNode(t, nw, "hostgw-master", MasterUnderlay, MasterPods, 0,
		router.Peer{Name: "hostgw-node", Endpoint: NodeUnderlay, PodCIDRs: []netip.Prefix{NodePods}})
	c.Node = startNode(t, nw, "hostgw-node", NodeUnderlay, NodePods, opts.NodeMTU,
		router.Peer{Name: "hostgw-master", Endpoint: MasterUnderlay, PodCIDRs: []netip.Prefix{MasterPods}})
	return c
}

func startNode(t testing.TB, nw *overlaytest.Network, name string, underlay netip.AddrPort, pods netip.Prefix, mtu int, peer router.Peer) *Node {
	t.Helper()
	dev, kernel := tuntest.NewPair(tuntest.Options{})
	conn, err := nw.Listen(underlay)
	if err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Options{TUN: dev, Overlay: conn, MTU: mtu})
	if err != nil {
		t.Fatalf("router.New(%s): %v", name, err)
	}
	if err := r.Set(router.Config{
		PodCIDRs:  []netip.Prefix{pods},
		Addresses: []netip.Addr{RouterAddr},
		Peers:     []router.Peer{peer},
	}); err != nil {
		t.Fatalf("Set(%s): %v", name, err)
	}
	table, err := lb.NewTable(nil, lb.Options{NodeName: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Set(Services()); err != nil {
		t.Fatalf("table.Set(%s): %v", name, err)
	}
	nat, err := lb.NewNAT(table, nil, lb.NATOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nat.SetLocal([]netip.Prefix{pods}, []netip.Addr{RouterAddr})
	r.SetHook(nat)
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Name: name, Router: r, Kernel: kernel, Table: table, NAT: nat, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-n.done; err != nil {
			t.Errorf("router %s: Run: %v", name, err)
		}
	})
	return n
}

// Services are the seed's Services, my-service with the round-robin picker.
func Services() []lb.Service {
	ep := func(a, node string) lb.Endpoint {
		return lb.Endpoint{Addr: netip.MustParseAddr(a), NodeName: node, Ready: true, Serving: true}
	}
	return []lb.Service{
		{
			Namespace: "default", Name: "my-service",
			ClusterIPs: []netip.Addr{MyServiceVIP},
			Ports:      []lb.ServicePort{{Port: 80, Proto: lb.TCP}},
			Picker:     lb.PickRoundRobin,
			Endpoints:  []lb.Endpoint{ep("10.244.0.4", "hostgw-master"), ep("10.244.1.2", "hostgw-node"), ep("10.244.1.3", "hostgw-node")},
		},
		{
			Namespace: "kube-system", Name: "kube-dns",
			ClusterIPs: []netip.Addr{KubeDNSVIP},
			Ports: []lb.ServicePort{
				{Name: "dns", Port: 53, Proto: lb.UDP},
				{Name: "dns-tcp", Port: 53, Proto: lb.TCP},
				{Name: "metrics", Port: 9153, Proto: lb.TCP},
			},
			Endpoints: []lb.Endpoint{ep("10.244.0.2", "hostgw-master"), ep("10.244.0.3", "hostgw-master")},
		},
	}
}

// Send plays the node kernel routing pkt into vr0.
func (n *Node) Send(pkt []byte) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Kernel.Send(ctx, pkt); err != nil {
		n.t.Fatalf("%s kernel: send: %v", n.Name, err)
	}
}

// Recv waits for the router to hand a packet to the node kernel.
func (n *Node) Recv() []byte {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := n.Kernel.Recv(ctx)
	if err != nil {
		n.t.Fatalf("%s kernel: no packet from the router: %v", n.Name, err)
	}
	return b
}

// Ping sends one ICMP echo request from src (a pod of c.Master) to dst (a
// pod of c.Node) through both routers, has the node's kernel answer it,
// and waits for the reply at the master's kernel.
func (c *Cluster) Ping(src, dst netip.Addr, seq uint16) {
	c.Master.t.Helper()
	c.Master.Send(ICMPEcho(src, dst, 1, seq, false))
	req := header.IPv4(c.Node.Recv())
	if header.ICMPv4(req.Payload()).Type() != header.ICMPv4Echo {
		c.Master.t.Fatalf("hostgw-node kernel got %x, want the echo request", []byte(req))
	}
	c.Node.Send(ICMPEcho(dst, src, 1, seq, true))
	rep := header.IPv4(c.Master.Recv())
	if header.ICMPv4(rep.Payload()).Type() != header.ICMPv4EchoReply {
		c.Master.t.Fatalf("hostgw-master kernel got %x, want the echo reply", []byte(rep))
	}
}

// PingLen is the IP length of the packets Ping sends.
const PingLen = header.IPv4MinimumSize + header.ICMPv4MinimumSize + 8

// ICMPEcho builds an IPv4 ICMP echo request (or reply) with 8 bytes of
// data.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, reply bool) []byte {
	b := make([]byte, PingLen)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: addr(src), DstAddr: addr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Echo)
	if reply {
		icmp.SetType(header.ICMPv4EchoReply)
	}
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), "vrouter!")
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return b
}

// TCPSyn builds the first packet of a TCP connection from src to dst.
func TCPSyn(src, dst netip.AddrPort) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: addr(src.Addr()), DstAddr: addr(dst.Addr()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1000,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(src.Addr()), addr(dst.Addr()), uint16(len(tcp)))
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }
