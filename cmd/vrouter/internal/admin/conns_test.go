package admin

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cmd/vrouter/internal/seedtest"
	"github.com/vrouter/vrouter/router/packet"
)

// TestConnsQuery: the filters select on the router's side, the limit
// keeps the first connections in order and the answer says how many
// matched.
func TestConnsQuery(t *testing.T) {
	s := serve(t)
	s.traffic(t) // 10.244.0.2:40000..40002 to my-service: one flow per backend
	mustFilter := func(str string) AddrFilter {
		f, err := ParseAddrFilter(str)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		q           ConnQuery
		wantClients []uint16
		wantMatched int
	}{
		{ConnQuery{}, []uint16{40000, 40001, 40002}, 3},
		{ConnQuery{Service: "default/my-service"}, []uint16{40000, 40001, 40002}, 3},
		{ConnQuery{Service: "kube-system/kube-dns"}, nil, 0},
		{ConnQuery{Service: "default/my"}, nil, 0},
		{ConnQuery{Backend: mustFilter("10.244.1.2")}, []uint16{40001}, 1},
		{ConnQuery{Backend: mustFilter("10.244.1.2:8080")}, nil, 0},
		{ConnQuery{Client: mustFilter("10.244.0.2:40002")}, []uint16{40002}, 1},
		{ConnQuery{Client: mustFilter("10.244.0.2"), Backend: mustFilter("10.244.1.3:80")}, []uint16{40002}, 1},
		{ConnQuery{Limit: 1}, []uint16{40000}, 3},
		{ConnQuery{Limit: 2}, []uint16{40000, 40001}, 3},
	} {
		got, matched, err := s.client.QueryConns(ctx(t), tc.q)
		if err != nil {
			t.Fatalf("QueryConns(%+v): %v", tc.q, err)
		}
		var clients []uint16
		for _, c := range got {
			clients = append(clients, c.Client.Port())
		}
		if !slices.Equal(clients, tc.wantClients) || matched != tc.wantMatched {
			t.Errorf("QueryConns(%+v) = clients %v, %d matched; want %v, %d", tc.q, clients, matched, tc.wantClients, tc.wantMatched)
		}
	}

	got, matched, _ := s.client.QueryConns(ctx(t), ConnQuery{Limit: 2})
	var out bytes.Buffer
	WriteConns(&out, got, matched, time.Now())
	if want := "... and 1 more (--limit N lists more, 0 all; --service, --backend and --client select)\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("vrouter conns --limit 2 printed\n%s\nwant it to end with\n%s", out.String(), want)
	}

	for _, q := range []string{"service=nope", "backend=10.244.1", "client=x:y", "limit=-5"} {
		resp, err := s.client.do(ctx(t), "GET", "/v1/conns?"+q, nil)
		if err == nil {
			resp.Body.Close()
			t.Errorf("GET /v1/conns?%s succeeded, want an error naming the parameter", q)
		} else if name, _, _ := strings.Cut(q, "="); !strings.Contains(err.Error(), name) {
			t.Errorf("GET /v1/conns?%s = %v, want an error naming %s", q, err, name)
		}
	}
}

// TestConnsDelete: a deletion removes the selected nat flows from the
// table and counts them; one selecting nothing in particular is refused.
func TestConnsDelete(t *testing.T) {
	s := serve(t)
	s.traffic(t)
	if _, err := s.client.DeleteConns(ctx(t), ConnQuery{}); err == nil || !strings.Contains(err.Error(), "refusing to delete every connection") {
		t.Errorf("DeleteConns(no filter) = %v, want a refusal", err)
	}
	d, err := s.client.DeleteConns(ctx(t), ConnQuery{Backend: AddrFilter{Addr: netip.MustParseAddr("10.244.1.2")}})
	if err != nil || d != (ConnsDeleted{NAT: 1}) {
		t.Fatalf("DeleteConns(backend 10.244.1.2) = %+v, %v; want 1 nat flow", d, err)
	}
	conns, err := s.client.Conns(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if c.Backend.Addr() == netip.MustParseAddr("10.244.1.2") {
			t.Errorf("conn %+v still listed after its deletion", c)
		}
	}
	if len(conns) != 2 {
		t.Errorf("Conns() = %d connections after deleting 1 of 3, want 2", len(conns))
	}
	var out bytes.Buffer
	WriteDeleted(&out, d)
	if want := "deleted 1 nat flow, reset 0 proxied connections\n"; out.String() != want {
		t.Errorf("vrouter conns --delete printed %q, want %q", out.String(), want)
	}
	if n := s.logs.FilterMessage("connections deleted").Len(); n != 1 {
		t.Errorf("%d 'connections deleted' lines, want 1", n)
	}
	d, err = s.client.DeleteConns(ctx(t), ConnQuery{Service: "default/my-service"})
	if err != nil || d != (ConnsDeleted{NAT: 2}) {
		t.Errorf("DeleteConns(service default/my-service) = %+v, %v; want the 2 left", d, err)
	}
}

// TestConnsLimitLargeTable: of 5,000 flows the router sends the first
// limit, in order, and counts the rest; by default 1,000.
func TestConnsLimitLargeTable(t *testing.T) {
	s := serve(t)
	const n = 5000
	var p packet.Parsed
	for i := range n {
		// Clients in reverse order, so that order is the router's doing.
		client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + (n-1-i)/1000)}), uint16(20000+(n-1-i)%1000))
		syn := seedtest.TCPSyn(client, netip.AddrPortFrom(seedtest.MyServiceVIP, 80))
		p.Decode(syn)
		if pass, _ := s.c.Master.NAT.Ingress(true, &p, syn); !pass {
			t.Fatalf("SYN %d refused: %+v", i, s.c.Master.NAT.Stats())
		}
	}
	got, matched, err := s.client.QueryConns(ctx(t), ConnQuery{Limit: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || matched != n {
		t.Fatalf("QueryConns(limit 7) = %d conns, %d matched; want 7 of %d", len(got), matched, n)
	}
	for i, c := range got {
		if want := netip.MustParseAddrPort("10.244.0.10:" + itoa(20000+i)); c.Client != want {
			t.Errorf("conn %d from %v, want %v (the first in order)", i, c.Client, want)
		}
	}
	got, matched, err = s.client.QueryConns(ctx(t), ConnQuery{})
	if err != nil || len(got) != DefaultConnsLimit || matched != n {
		t.Errorf("QueryConns(default) = %d conns, %d matched, %v; want %d of %d", len(got), matched, err, DefaultConnsLimit, n)
	}
}

// TestWriteConnsProxy: a proxied connection shows its bytes each way, no
// packets (a stream), and when it drains, when it is reset.
func TestWriteConnsProxy(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	conns := []Conn{{
		Mode: "proxy", Protocol: "TCP", Service: "default/my-service",
		Client: netip.MustParseAddrPort("10.244.0.2:40000"), VIP: netip.MustParseAddrPort("10.103.92.81:80"),
		Backend: netip.MustParseAddrPort("10.244.1.2:80"), State: "ESTABLISHED",
		Started: now.Add(-time.Minute), LastSeen: now.Add(-2 * time.Second), DrainAt: now.Add(3 * time.Second),
		Orig: &FlowCount{Bytes: 5}, Reply: &FlowCount{Bytes: 120},
	}}
	var out bytes.Buffer
	WriteConns(&out, conns, 1, now)
	want := "MODE    PROTO   CLIENT             SERVICE              VIP               BACKEND         SNAT   STATE                                AGE    IDLE   PACKETS   BYTES\n" +
		"proxy   TCP     10.244.0.2:40000   default/my-service   10.103.92.81:80   10.244.1.2:80   -      ESTABLISHED, draining: reset in 3s   1m0s   2s     -         5/120\n"
	if out.String() != want {
		t.Errorf("vrouter conns printed\n%s\nwant\n%s", out.String(), want)
	}
}
