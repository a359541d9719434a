package lb

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/router/packet"
)

// BenchmarkNATPacket translates one packet of an established UDP flow per
// op, client to VIP and the backend's answer back, alternately: the
// per-packet cost of the NAT path, without building packets.
//
//	go test -run '^$' -bench NATPacket$ ./lb/
func BenchmarkNATPacket(b *testing.B) {
	clk := newFakeClock()
	table := newTable(b, Options{NodeName: masterNode, Picker: PickRoundRobin, Clock: clk})
	mustSet(b, table, makeKubeDNS(func(s *Service) { s.Endpoints = []Endpoint{makeEndpoint("10.244.1.7")} }))
	n, err := NewNAT(table, nil, NATOptions{Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
	backend := netip.MustParseAddrPort("10.244.1.7:53")
	query := udp4(clientA, dnsVIP, strings.Repeat("q", 64))
	answer := udp4(backend, clientA, strings.Repeat("a", 512))
	pkt := make([]byte, len(answer))
	var p packet.Parsed
	b.ResetTimer()
	for i := range b.N {
		src, fromTUN := query, true
		if i%2 == 1 {
			src, fromTUN = answer, false
		}
		pkt = append(pkt[:0], src...)
		p.Decode(pkt)
		if pass, _ := n.Ingress(fromTUN, &p, pkt); !pass {
			b.Fatalf("packet dropped; stats %+v", n.Stats())
		}
	}
}

// BenchmarkNATFragments translates a 3,000-byte UDP request cut into
// three fragments per op (its flow established): the first by its flow,
// the later ones by the fragment table.
//
//	go test -run '^$' -bench NATFragments$ ./lb/
func BenchmarkNATFragments(b *testing.B) {
	clk := newFakeClock()
	table := newTable(b, Options{NodeName: masterNode, Picker: PickRoundRobin, Clock: clk})
	mustSet(b, table, makeKubeDNS(func(s *Service) { s.Endpoints = []Endpoint{makeEndpoint("10.244.1.7")} }))
	n, err := NewNAT(table, nil, NATOptions{Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
	var frags [][][]byte
	for id := range 1024 {
		frags = append(frags, fragment4(udp4(clientA, dnsVIP, strings.Repeat("q", 3000)), 1480, uint16(id)))
	}
	pkt := make([]byte, 1500)
	var p packet.Parsed
	b.ResetTimer()
	for i := range b.N {
		for _, f := range frags[i%len(frags)] {
			pkt = append(pkt[:0], f...)
			p.Decode(pkt)
			if pass, _ := n.Ingress(true, &p, pkt); !pass {
				b.Fatalf("fragment dropped; stats %+v", n.Stats())
			}
		}
	}
}

// BenchmarkNATNewFlow starts one UDP flow per op, each from a client
// address and port no flow has: the new-flow path (limiter, pick, both
// map entries). below_cap: the flows expire every 65,536 ops, so the
// table never fills. at_cap: the table is full of flows no backend
// answered, so every new flow meets the cap (refused, or admitted in
// place of the oldest of those: early drop); admitted/op says which.
//
//	go test -run '^$' -bench NATNewFlow$ -benchmem ./lb/
func BenchmarkNATNewFlow(b *testing.B) {
	const capacity = 1 << 16
	for _, full := range []bool{false, true} {
		name := "below_cap"
		if full {
			name = "at_cap"
		}
		b.Run(name, func(b *testing.B) {
			clk := newFakeClock()
			table := newTable(b, Options{NodeName: masterNode, Picker: PickRoundRobin, Clock: clk})
			mustSet(b, table, makeKubeDNS(func(s *Service) { s.Endpoints = []Endpoint{makeEndpoint("10.244.1.7")} }))
			n, err := NewNAT(table, nil, NATOptions{Clock: clk, MaxUDP: capacity, MaxPerClient: capacity})
			if err != nil {
				b.Fatal(err)
			}
			n.SetLocal([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, []netip.Addr{routerAddr})
			query := udp4(clientA, dnsVIP, strings.Repeat("q", 64))
			pkt := make([]byte, len(query))
			var p packet.Parsed
			// seq numbers the flows: client 10.244.0.x, port 1024 + seq%60000.
			seq := 0
			next := func() bool {
				pkt = append(pkt[:0], query...)
				ip := header.IPv4(pkt)
				ip.SetSourceAddressWithChecksumUpdate(tcpip.AddrFrom4([4]byte{10, 244, 0, byte(1 + seq/60000%250)}))
				header.UDP(ip.Payload()).SetSourcePort(uint16(1024 + seq%60000))
				seq++
				p.Decode(pkt)
				pass, _ := n.Ingress(true, &p, pkt)
				return pass
			}
			if full {
				for range capacity {
					if !next() {
						b.Fatalf("filling: flow %d refused; stats %+v", seq, n.Stats())
					}
				}
			}
			admitted := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if !full && i%capacity == capacity-1 {
					b.StopTimer()
					clk.Advance(time.Minute)
					n.Reap()
					b.StartTimer()
				}
				if next() {
					admitted++
				}
			}
			b.ReportMetric(float64(admitted)/float64(b.N), "admitted/op")
		})
	}
}
