package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// echo is an IPv4 ICMP echo request 10.244.0.4 -> 10.244.1.2, id 1, seq 1,
// with valid checksums.
func echo(t *testing.T) []byte {
	t.Helper()
	b := []byte{
		0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00,
		10, 244, 0, 4, 10, 244, 1, 2,
		0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
	}
	binary.BigEndian.PutUint16(b[10:], ^sum(b[:20]))
	binary.BigEndian.PutUint16(b[22:], ^sum(b[20:]))
	return b
}

func sum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestWriteThenRead(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 11, 25, 17, 0, 0, 123456789, time.UTC)
	pkt := echo(t)
	if err := w.WritePacket(t0, pkt, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(t0.Add(time.Second), pkt[:20], len(pkt)); err != nil {
		t.Fatal(err)
	}

	raw := buf.Bytes()
	// The file header as tcpdump expects it, byte by byte.
	wantHeader := []byte{
		0xd4, 0xc3, 0xb2, 0xa1, // magic, little-endian, microseconds
		2, 0, 4, 0, // version 2.4
		0, 0, 0, 0, 0, 0, 0, 0, // thiszone, sigfigs
		0xff, 0xff, 0, 0, // snaplen 65535
		101, 0, 0, 0, // LINKTYPE_RAW
	}
	if !bytes.Equal(raw[:24], wantHeader) {
		t.Errorf("file header = % x, want % x", raw[:24], wantHeader)
	}
	if want := 24 + 16 + len(pkt) + 16 + 20; len(raw) != want {
		t.Errorf("file is %d bytes, want %d (header, two records)", len(raw), want)
	}

	r, err := NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	if h := r.Header(); h.LinkType != LinkTypeRaw || h.SnapLen != DefaultSnapLen || h.VersionMajor != 2 || h.VersionMinor != 4 || h.Nanos {
		t.Errorf("Header() = %+v, want version 2.4, snaplen 65535, link type 101, microseconds", h)
	}
	for i, want := range []Record{
		{Time: t0.Truncate(time.Microsecond), Data: pkt, OrigLen: len(pkt)},
		{Time: t0.Add(time.Second).Truncate(time.Microsecond), Data: pkt[:20], OrigLen: len(pkt)},
	} {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("Next() #%d: %v", i, err)
		}
		if !got.Time.Equal(want.Time) || !bytes.Equal(got.Data, want.Data) || got.OrigLen != want.OrigLen {
			t.Errorf("Next() #%d = {%v % x %d}, want {%v % x %d}", i, got.Time, got.Data, got.OrigLen, want.Time, want.Data, want.OrigLen)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next() at the end = %v, want io.EOF", err)
	}

	// A record cut short is an error, not a clean end.
	r, _ = NewReader(bytes.NewReader(raw[:len(raw)-3]))
	r.Next()
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Next() on a cut record = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestWriterCutsToSnapLen(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, 10)
	w.WritePacket(time.Unix(1, 0), echo(t), 0)
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Next()
	if err != nil || len(rec.Data) != 10 || rec.OrigLen != 28 || r.Header().SnapLen != 10 {
		t.Errorf("snaplen 10: record of %d bytes, orig %d, header snaplen %d, err %v; want 10, 28, 10, nil",
			len(rec.Data), rec.OrigLen, r.Header().SnapLen, err)
	}
}

func TestReaderOtherByteOrderAndNanos(t *testing.T) {
	var b []byte
	be := binary.BigEndian
	b = be.AppendUint32(b, magicNanos)
	b = be.AppendUint16(b, 2)
	b = be.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = be.AppendUint32(b, 65535)
	b = be.AppendUint32(b, LinkTypeRaw)
	b = be.AppendUint32(b, 7)
	b = be.AppendUint32(b, 5)
	b = be.AppendUint32(b, 2)
	b = be.AppendUint32(b, 2)
	b = append(b, 0x45, 0)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Next()
	if err != nil || !rec.Time.Equal(time.Unix(7, 5)) || !bytes.Equal(rec.Data, []byte{0x45, 0}) || !r.Header().Nanos {
		t.Errorf("big-endian nanosecond file: %+v, %v; want time 7.000000005, data 45 00", rec, err)
	}
	if _, err := NewReader(strings.NewReader(strings.Repeat("x", 24))); !errors.Is(err, ErrNotPcap) {
		t.Errorf("NewReader(junk) = %v, want ErrNotPcap", err)
	}
}

// TestTcpdumpReadsIt feeds a written file to tcpdump, when it is
// installed: what users open the files with.
func TestTcpdumpReadsIt(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skip("tcpdump not installed")
	}
	path := filepath.Join(t.TempDir(), "echo.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := NewWriter(f, 0)
	w.WritePacket(time.Now(), echo(t), 0)
	f.Close()
	out, err := exec.Command(tcpdump, "-n", "-r", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "IP 10.244.0.4 > 10.244.1.2: ICMP echo request, id 1, seq 1") {
		t.Errorf("tcpdump -n -r = %q, want the echo request 10.244.0.4 > 10.244.1.2", out)
	}
	if !strings.Contains(string(out), "link-type RAW") {
		t.Errorf("tcpdump -n -r = %q, want link-type RAW", out)
	}
}
