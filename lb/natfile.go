package lb

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The flow file keeps the NAT's translations outside the process, so that
// the next router on the same TUN — after a restart, an upgrade or a crash
// (kill -9) — translates the established connections as this one did. It
// is a file of fixed-size records, memory-mapped (MAP_SHARED): a record is
// written to the mapping when a flow starts, changes state or moves to
// another backend, and cleared when it ends. A write is a copy into memory
// under a mutex, never a system call; the kernel keeps the pages when the
// process dies, however it dies. On tmpfs (/run) nothing ever waits for a
// disk.
//
//	offset 0     header, one page:
//	               magic "VRFLOWS\0", version u32, record size u32,
//	               slots u32, generation u32, boot ID [16] (the kernel's
//	               random/boot_id), CRC-32C of the above
//	offset 4096  slot 0, slot 1, … slot slots-1: flowRecordSize bytes each
//	               0 CRC-32C u32 of bytes 4..96
//	               4 generation u32 (0: the slot is free)
//	               8 version u8, protocol u8, state u8, flags u8 (IPv6, SNAT)
//	              12 client addr [16], port u16; VIP port u16, addr [16]
//	              48 backend addr [16], port u16; SNAT port u16, addr [16]
//	              84 zero [12]
//
// The generation is drawn at random for each file. A record is trusted
// only whole: its checksum must match, its generation be the file's, its
// fields make sense, and its flow still hold against the Table and the
// node as they are now (NAT.Persist); everything else is skipped and
// counted. A crash in the middle of a record's write loses that one flow.
// A file written before the node last booted is refused whole: its
// connections died with the node (/run is tmpfs there anyway; this is for
// a --state-dir on disk).
//
// Pages are allocated ahead of the slots handed out (grow, with
// fallocate): a write to a page the kernel cannot allocate, on a full
// tmpfs or disk, would be SIGBUS; a flow that finds no allocated slot is
// only left unrecorded.
const (
	flowFileMagic   = "VRFLOWS\x00"
	flowFileVersion = 1
	flowFileHeader  = 4096
	flowRecordSize  = 96
	flowRecordVer   = 1
)

// Record flags.
const (
	recV6 uint8 = 1 << iota
	recSNAT
)

// persistedState are the flow state bits a record keeps.
const persistedState = stSynAck | stEstablished | stFinFwd | stFinRev | stRST

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// flowRecord is a flow as its record holds it.
type flowRecord struct {
	proto   Protocol
	state   uint32
	client  netip.AddrPort
	vip     netip.AddrPort
	backend netip.AddrPort
	snat    netip.AddrPort // zero unless translated
}

// encode writes r into b (flowRecordSize bytes) under generation gen.
func (r *flowRecord) encode(b []byte, gen uint32) {
	clear(b[:flowRecordSize])
	binary.LittleEndian.PutUint32(b[4:], gen)
	b[8] = flowRecordVer
	b[9] = uint8(r.proto)
	b[10] = uint8(r.state & persistedState)
	var fl uint8
	if r.client.Addr().Is6() {
		fl |= recV6
	}
	if r.snat.IsValid() {
		fl |= recSNAT
	}
	b[11] = fl
	putAddrPort(b[12:], b[28:], r.client)
	putAddrPort(b[32:], b[30:], r.vip)
	putAddrPort(b[48:], b[64:], r.backend)
	if r.snat.IsValid() {
		putAddrPort(b[68:], b[66:], r.snat)
	}
	binary.LittleEndian.PutUint32(b[0:], recordSum(b))
}

func putAddrPort(addr, port []byte, ap netip.AddrPort) {
	a := ap.Addr().As16()
	copy(addr[:16], a[:])
	binary.LittleEndian.PutUint16(port, ap.Port())
}

func getAddrPort(addr, port []byte, v6 bool) netip.AddrPort {
	a := netip.AddrFrom16([16]byte(addr[:16]))
	if !v6 {
		a = a.Unmap()
	}
	return netip.AddrPortFrom(a, binary.LittleEndian.Uint16(port))
}

// recordSum is the checksum of record b: its generation and fields.
func recordSum(b []byte) uint32 {
	return crc32.Checksum(b[4:flowRecordSize], castagnoli)
}

// Why decodeRecord refuses a record.
const (
	recordFree = iota
	recordOK
	recordCorrupt
	recordForeign
)

// decodeRecord reads the record in b, written under generation gen. It
// reports recordFree for a free slot, recordForeign for a record of
// another generation and recordCorrupt for one whose checksum or fields
// are wrong.
func decodeRecord(b []byte, gen uint32) (flowRecord, int) {
	var r flowRecord
	sum, g := binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:])
	switch {
	case sum == 0 && g == 0:
		return r, recordFree
	case recordSum(b) != sum:
		return r, recordCorrupt
	case g != gen:
		return r, recordForeign
	case b[8] != flowRecordVer:
		return r, recordCorrupt
	}
	r.proto = Protocol(b[9])
	r.state = uint32(b[10])
	fl := b[11]
	v6 := fl&recV6 != 0
	r.client = getAddrPort(b[12:], b[28:], v6)
	r.vip = getAddrPort(b[32:], b[30:], v6)
	r.backend = getAddrPort(b[48:], b[64:], v6)
	if fl&recSNAT != 0 {
		r.snat = getAddrPort(b[68:], b[66:], v6)
	}
	ok := (r.proto == TCP || r.proto == UDP) &&
		r.state&^persistedState == 0 && fl&^(recV6|recSNAT) == 0 &&
		v6 == !r.client.Addr().Is4() && v6 == !r.vip.Addr().Is4() && v6 == !r.backend.Addr().Is4() &&
		(!r.snat.IsValid() || v6 == !r.snat.Addr().Is4()) &&
		r.client.Port() != 0 && r.vip.Port() != 0 && r.backend.Port() != 0 &&
		!r.client.Addr().IsUnspecified() && !r.vip.Addr().IsUnspecified() && !r.backend.Addr().IsUnspecified()
	if !ok {
		return flowRecord{}, recordCorrupt
	}
	return r, recordOK
}

// flowFile is a mapped flow file that a NAT writes its flows into.
type flowFile struct {
	path  string
	f     *os.File
	gen   uint32
	slots uint32

	// mu guards mem, next, free and closed. The packet path takes it
	// once per flow change, in a flow's mu (never the other way round).
	mu     sync.Mutex
	mem    []byte
	next   uint32   // slots below next have been handed out
	ready  uint32   // slots below ready have their pages allocated
	free   []uint32 // slots given back, reused first
	closed bool

	unrecorded atomic.Uint64 // flows that found no free slot
}

// readFlowFile reads the flow file at path, if there is one, and returns
// the bytes of its records that hold data, whole records in file order,
// and its generation; refused says why the file as a whole cannot be read
// (its records are then not looked at). A missing file is no error and
// no refusal.
//
// It reads only the file's data (SEEK_DATA, SEEK_HOLE), with pread: a
// sparse file of the default size is 60 MiB, nearly all holes, and
// touching a hole through a shared mapping of a tmpfs file would allocate
// it — or, on a full tmpfs, fault.
func readFlowFile(path string) (recs []byte, gen uint32, refused string, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, "", nil
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("open flow file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, "", fmt.Errorf("stat flow file %s: %w", path, err)
	}
	size := st.Size()
	if size < flowFileHeader {
		return nil, 0, fmt.Sprintf("%d bytes, shorter than its %d-byte header", size, flowFileHeader), nil
	}
	h := make([]byte, flowFileHeader)
	if _, err := f.ReadAt(h, 0); err != nil {
		return nil, 0, "", fmt.Errorf("read flow file %s: %w", path, err)
	}
	switch {
	case string(h[:8]) != flowFileMagic:
		return nil, 0, "not a vrouter flow file (bad magic)", nil
	case crc32.Checksum(h[:40], castagnoli) != binary.LittleEndian.Uint32(h[40:]):
		return nil, 0, "header checksum mismatch", nil
	case binary.LittleEndian.Uint32(h[8:]) != flowFileVersion:
		return nil, 0, fmt.Sprintf("version %d, this vrouter reads version %d", binary.LittleEndian.Uint32(h[8:]), flowFileVersion), nil
	case binary.LittleEndian.Uint32(h[12:]) != flowRecordSize:
		return nil, 0, fmt.Sprintf("record size %d, want %d", binary.LittleEndian.Uint32(h[12:]), flowRecordSize), nil
	case !sameBoot([16]byte(h[24:40]), bootID()):
		return nil, 0, "written before the node last booted", nil
	}
	slots := int64(binary.LittleEndian.Uint32(h[16:]))
	gen = binary.LittleEndian.Uint32(h[20:])
	end := min(size, slotOffset(0)+slots*flowRecordSize)
	// Whole records around each run of data, each record read once.
	next := slotOffset(0)
	for next < end {
		from, to := dataRun(f, next, end)
		if from >= to {
			break
		}
		from = slotOffset(0) + (from-slotOffset(0))/flowRecordSize*flowRecordSize
		to = min(end, slotOffset(0)+(to-slotOffset(0)+flowRecordSize-1)/flowRecordSize*flowRecordSize)
		from = max(from, next)
		n := len(recs)
		recs = append(recs, make([]byte, to-from)...)
		if _, err := f.ReadAt(recs[n:], from); err != nil {
			return nil, 0, "", fmt.Errorf("read flow file %s: %w", path, err)
		}
		next = to
	}
	return recs, gen, "", nil
}

// dataRun is the first run of data in f at or after off, up to end, as
// SEEK_DATA and SEEK_HOLE find it; [off, end) where the file system
// cannot say, and an empty run where there is no data.
func dataRun(f *os.File, off, end int64) (from, to int64) {
	fd := int(f.Fd())
	from, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return end, end // no data after off
	case err != nil:
		return off, end
	}
	to, err = unix.Seek(fd, from, unix.SEEK_HOLE)
	if err != nil {
		to = end
	}
	return min(from, end), min(to, end)
}

// createFlowFile makes a new flow file of slots records at path, with
// recs in its first slots: it writes path.new and renames it over path,
// so that a crash leaves either the old file or the new one whole.
func createFlowFile(path string, slots uint32, recs []flowRecord) (*flowFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create flow file %s: %w", path, err)
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create flow file %s: %w", tmp, err)
	}
	ff, err := mapFlowFile(f, path, slots, recs)
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("create flow file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ff.close()
		os.Remove(tmp)
		return nil, fmt.Errorf("create flow file %s: %w", path, err)
	}
	return ff, nil
}

func mapFlowFile(f *os.File, path string, slots uint32, recs []flowRecord) (*flowFile, error) {
	if uint64(len(recs)) > uint64(slots) {
		return nil, fmt.Errorf("%d flows for %d slots", len(recs), slots)
	}
	size := int64(flowFileHeader) + int64(slots)*flowRecordSize
	if err := f.Truncate(size); err != nil {
		return nil, err
	}
	ready := min(slots, uint32(len(recs))+growSlots)
	if err := allocate(f, 0, slotOffset(ready)); err != nil {
		return nil, fmt.Errorf("allocate: %w", err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map: %w", err)
	}
	var g [4]byte
	gen := uint32(0)
	for gen == 0 {
		if _, err := rand.Read(g[:]); err != nil {
			unix.Munmap(mem)
			return nil, err
		}
		gen = binary.LittleEndian.Uint32(g[:])
	}
	h := mem[:flowFileHeader]
	copy(h, flowFileMagic)
	binary.LittleEndian.PutUint32(h[8:], flowFileVersion)
	binary.LittleEndian.PutUint32(h[12:], flowRecordSize)
	binary.LittleEndian.PutUint32(h[16:], slots)
	binary.LittleEndian.PutUint32(h[20:], gen)
	boot := bootID()
	copy(h[24:40], boot[:])
	binary.LittleEndian.PutUint32(h[40:], crc32.Checksum(h[:40], castagnoli))
	ff := &flowFile{path: path, f: f, gen: gen, slots: slots, mem: mem, ready: ready}
	for i := range recs {
		recs[i].encode(ff.slotBytes(uint32(i)+1), gen)
	}
	ff.next = uint32(len(recs))
	return ff, nil
}

// bootID is the kernel's boot ID (/proc/sys/kernel/random/boot_id), or
// zero where it cannot be read.
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id
	}
	h, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err != nil || len(h) != len(id) {
		return id
	}
	return [16]byte(h)
}

// sameBoot reports whether boot IDs a and b may be the same boot: equal,
// or one unknown.
func sameBoot(a, b [16]byte) bool {
	return a == b || a == [16]byte{} || b == [16]byte{}
}

// slotBytes is slot's record (slots count from 1); mu held or not yet
// shared.
func (ff *flowFile) slotBytes(slot uint32) []byte {
	off := slotOffset(slot - 1)
	return ff.mem[off : off+flowRecordSize]
}

// slotOffset is where the record of the slot after the first n starts,
// and so the size of the header and n records.
func slotOffset(n uint32) int64 {
	return flowFileHeader + int64(n)*flowRecordSize
}

// growSlots is the fewest slots grow keeps allocated beyond those handed
// out (384 KiB).
const growSlots = 4096

// grow allocates the pages of more slots when fewer than growSlots, or a
// quarter of those handed out, are left: alloc hands out only allocated
// slots. It makes a system call: the NAT's reaper calls it, once a
// second, never the packet path. An error (ENOSPC: the file system is
// full) leaves the file as it was.
func (ff *flowFile) grow() error {
	ff.mu.Lock()
	from := ff.ready
	want := min(ff.slots, ff.next+max(growSlots, ff.next/4))
	closed := ff.closed
	ff.mu.Unlock()
	if closed || want <= from {
		return nil
	}
	// Without mu: the packet path keeps writing below ready meanwhile.
	if err := allocate(ff.f, slotOffset(from), slotOffset(want)-slotOffset(from)); err != nil {
		return fmt.Errorf("allocate flow file %s to %d records: %w", ff.path, want, err)
	}
	ff.mu.Lock()
	ff.ready = max(ff.ready, want)
	ff.mu.Unlock()
	return nil
}

// alloc hands out a free slot (from 1), or 0 when every allocated slot is
// taken or the file is closed.
func (ff *flowFile) alloc() uint32 {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	switch {
	case ff.closed:
		return 0
	case len(ff.free) > 0:
		s := ff.free[len(ff.free)-1]
		ff.free = ff.free[:len(ff.free)-1]
		return s
	case ff.next < ff.ready:
		ff.next++
		return ff.next
	}
	ff.unrecorded.Add(1)
	return 0
}

// write stores r in slot. It encodes r in place: a buffer would escape
// to the heap through the checksum's assembly.
func (ff *flowFile) write(slot uint32, r *flowRecord) {
	ff.mu.Lock()
	if !ff.closed {
		r.encode(ff.slotBytes(slot), ff.gen)
	}
	ff.mu.Unlock()
}

// release clears slot and gives it back.
func (ff *flowFile) release(slot uint32) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.closed {
		return
	}
	clear(ff.slotBytes(slot)[:8])
	ff.free = append(ff.free, slot)
}

// close unmaps the file and closes it; the file stays for the next
// router. Writes after close do nothing.
func (ff *flowFile) close() error {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if ff.closed {
		return nil
	}
	ff.closed = true
	err := unix.Munmap(ff.mem)
	ff.mem = nil
	return errors.Join(err, ff.f.Close())
}
