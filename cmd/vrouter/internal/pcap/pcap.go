package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// LinkTypeRaw is LINKTYPE_RAW: packets begin with an IPv4 or IPv6 header.
const LinkTypeRaw = 101

// DefaultSnapLen is the snapshot length of files written with snapLen 0:
// the largest IP packet.
const DefaultSnapLen = 65535

const (
	magicMicros = 0xa1b2c3d4
	magicNanos  = 0xa1b23c4d

	fileHeaderLen   = 24
	recordHeaderLen = 16
)

// Writer writes a capture file. It does not buffer: each WritePacket is
// one Write of the record, so a reader of a pipe or stream sees whole
// records as they come. Not safe for concurrent use.
type Writer struct {
	w       io.Writer
	snapLen int
	buf     []byte
}

// NewWriter writes the file header to w and returns a Writer for the
// records. snapLen 0 means DefaultSnapLen.
func NewWriter(w io.Writer, snapLen int) (*Writer, error) {
	if snapLen <= 0 {
		snapLen = DefaultSnapLen
	}
	h := make([]byte, fileHeaderLen)
	le := binary.LittleEndian
	le.PutUint32(h[0:], magicMicros)
	le.PutUint16(h[4:], 2) // version 2.4
	le.PutUint16(h[6:], 4)
	// thiszone and sigfigs stay 0.
	le.PutUint32(h[16:], uint32(snapLen))
	le.PutUint32(h[20:], LinkTypeRaw)
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &Writer{w: w, snapLen: snapLen}, nil
}

// WritePacket writes one record: data, cut to the snapshot length, taken
// at t from a packet origLen bytes long (origLen < len(data) means
// len(data)).
func (w *Writer) WritePacket(t time.Time, data []byte, origLen int) error {
	origLen = max(origLen, len(data))
	if len(data) > w.snapLen {
		data = data[:w.snapLen]
	}
	w.buf = w.buf[:0]
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(t.Unix()))
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(t.Nanosecond()/1000))
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(data)))
	w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(origLen))
	w.buf = append(w.buf, data...)
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	return nil
}

// Header is a capture file's global header.
type Header struct {
	// Version is "major.minor", 2.4 for every file in use.
	VersionMajor, VersionMinor uint16
	SnapLen                    uint32
	LinkType                   uint32
	// Nanos reports nanosecond timestamps.
	Nanos bool
	// ByteOrder is the file's byte order.
	ByteOrder binary.ByteOrder
}

// Record is one packet of a capture file.
type Record struct {
	Time time.Time
	// Data is the captured part of the packet; OrigLen its whole length.
	Data    []byte
	OrigLen int
}

// Reader reads a capture file.
type Reader struct {
	r      io.Reader
	header Header
}

// ErrNotPcap is returned by NewReader for input without a pcap magic
// number.
var ErrNotPcap = errors.New("not a pcap file")

// NewReader reads the file header from r.
func NewReader(r io.Reader) (*Reader, error) {
	h := make([]byte, fileHeaderLen)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, fmt.Errorf("read pcap header: %w", err)
	}
	var hdr Header
	switch {
	case binary.LittleEndian.Uint32(h) == magicMicros:
		hdr.ByteOrder = binary.LittleEndian
	case binary.LittleEndian.Uint32(h) == magicNanos:
		hdr.ByteOrder, hdr.Nanos = binary.LittleEndian, true
	case binary.BigEndian.Uint32(h) == magicMicros:
		hdr.ByteOrder = binary.BigEndian
	case binary.BigEndian.Uint32(h) == magicNanos:
		hdr.ByteOrder, hdr.Nanos = binary.BigEndian, true
	default:
		return nil, fmt.Errorf("read pcap header: magic %#x: %w", h[:4], ErrNotPcap)
	}
	bo := hdr.ByteOrder
	hdr.VersionMajor, hdr.VersionMinor = bo.Uint16(h[4:]), bo.Uint16(h[6:])
	hdr.SnapLen, hdr.LinkType = bo.Uint32(h[16:]), bo.Uint32(h[20:])
	return &Reader{r: r, header: hdr}, nil
}

// Header returns the file's header.
func (r *Reader) Header() Header { return r.header }

// Next reads the next record. It returns io.EOF at a clean end of the
// file, and io.ErrUnexpectedEOF for a record cut short.
func (r *Reader) Next() (Record, error) {
	h := make([]byte, recordHeaderLen)
	if _, err := io.ReadFull(r.r, h); err != nil {
		return Record{}, err
	}
	bo := r.header.ByteOrder
	sec, frac := int64(bo.Uint32(h[0:])), int64(bo.Uint32(h[4:]))
	incl, orig := bo.Uint32(h[8:]), bo.Uint32(h[12:])
	if limit := max(r.header.SnapLen, DefaultSnapLen); incl > limit {
		return Record{}, fmt.Errorf("pcap record of %d bytes exceeds the snapshot length %d", incl, limit)
	}
	if !r.header.Nanos {
		frac *= 1000
	}
	rec := Record{Time: time.Unix(sec, frac), Data: make([]byte, incl), OrigLen: int(orig)}
	if _, err := io.ReadFull(r.r, rec.Data); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, err
	}
	return rec, nil
}
