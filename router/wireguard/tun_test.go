package wireguard

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
)

// TestPipeReadPacksRuns checks how read hands the device's packets to the
// router: consecutive packets of one peer and one size as one message,
// a shorter packet ending its run, another peer or a full buffer starting
// a new message.
func TestPipeReadPacksRuns(t *testing.T) {
	epA := netip.MustParseAddrPort("192.0.2.1:8285")
	epB := netip.MustParseAddrPort("192.0.2.2:8285")
	srcs := newSources([]Peer{
		{Name: "a", Endpoint: epA, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
		{Name: "b", Endpoint: epB, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("192.0.2.2/32")}},
	})
	pkt := func(src string, n int) []byte { return ipv4(src, "10.244.0.5", make([]byte, n-20)) }
	const off = 16 // the device's offset: its header room
	var in [][]byte
	for _, p := range [][]byte{
		pkt("10.244.1.7", 100), pkt("10.244.1.7", 100), pkt("10.244.1.8", 100), pkt("10.244.1.7", 40),
		pkt("10.244.2.9", 100), pkt("192.0.2.2", 100),
		pkt("10.9.9.9", 60), // no peer's
	} {
		in = append(in, append(make([]byte, off), p...))
	}

	p := newPipe(1420)
	done := make(chan error, 1)
	go func() { _, err := p.Write(in, off); done <- err }()

	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 250) // two 100-byte packets and a bit
	}
	sizes, segs, from := make([]int, 8), make([]int, 8), make([]netip.AddrPort, 8)
	n, err := p.read(bufs, sizes, segs, from, srcs)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		size, seg int
		from      netip.AddrPort
	}{
		{200, 100, epA},            // a full buffer ends the run
		{140, 100, epA},            // 100 + the shorter 40 ends it
		{200, 100, epB},            // one peer, two of its sources
		{60, 60, netip.AddrPort{}}, // no peer: the router counts it
	}
	if n != len(want) {
		t.Fatalf("read %d messages, want %d", n, len(want))
	}
	var got, sent []byte
	for i, w := range want {
		if sizes[i] != w.size || segs[i] != w.seg || from[i] != w.from {
			t.Errorf("message %d: %d bytes of %d from %v, want %d of %d from %v", i, sizes[i], segs[i], from[i], w.size, w.seg, w.from)
		}
		got = append(got, bufs[i][:sizes[i]]...)
	}
	for _, b := range in {
		sent = append(sent, b[off:]...)
	}
	if !bytes.Equal(got, sent) {
		t.Error("the messages' bytes are not the packets written, in order")
	}
	if err := <-done; err != nil {
		t.Fatalf("Write: %v", err)
	}
	p.Close()
	if _, err := p.read(bufs, sizes, segs, from, srcs); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

// TestPipeWriteSegments checks the other way: one WriteBatch of segments
// comes out of Read as one packet per segment, across reads when the
// device's batch is smaller.
func TestPipeWriteSegments(t *testing.T) {
	p := newPipe(1420)
	b := bytes.Repeat([]byte{1, 2, 3, 4, 5}, 50) // 250 bytes: segments 100, 100, 50
	done := make(chan error, 1)
	go func() { done <- p.write(b, 100) }()
	const off = 16
	bufs := [][]byte{make([]byte, off+1500), make([]byte, off+1500)}
	sizes := make([]int, 2)
	var got []int
	var out []byte
	for len(got) < 3 {
		n, err := p.Read(bufs, sizes, off)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, sizes[i])
			out = append(out, bufs[i][off:off+sizes[i]]...)
		}
	}
	if want := []int{100, 100, 50}; !slices.Equal(got, want) || !bytes.Equal(out, b) {
		t.Fatalf("segments %v, want %v with the same bytes", got, want)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	p.Close()
	if err := p.write(b, 100); err == nil {
		t.Fatal("write after Close succeeded")
	}
}
