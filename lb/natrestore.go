package lb

import (
	"fmt"

	"go.uber.org/zap"
)

// FlowRestore says what NAT.Persist found in the flow file.
type FlowRestore struct {
	// Restored flows translate as before the restart.
	Restored int
	// Dropped records were sound but their flow no longer holds: the
	// Service or its port is gone or left nat mode, the backend is no
	// longer a usable endpoint of it, the node's router address or pod
	// CIDRs changed under a translated flow, a cap refused it, or its
	// 5-tuple was taken. The connection's next segment is answered with
	// RST, as one no flow knows; a UDP client's next datagram picks anew.
	Dropped int
	// Corrupt records had a bad checksum or impossible fields (a write cut
	// short by a crash, damage); Foreign ones belonged to another flow
	// file. Neither is trusted.
	Corrupt, Foreign int
	// Refused, when not empty, says why the file as a whole was not read
	// (not a flow file, another format version, a damaged header); its
	// records were all ignored.
	Refused string
}

// Persist makes the NAT keep its flows in the flow file at path (see
// flowFile): it restores the flows the file records that still hold
// against the Table and SetLocal's state as they are now, replaces the
// file with one that holds just those, and from then on records every
// flow's start, state changes and end there. A file that is missing
// starts empty; one that cannot be trusted is replaced, and FlowRestore
// counts what was skipped and why.
//
// Call it once, after the Table and SetLocal have the node's state and
// before packets flow: a segment of a connection the file holds would be
// reset if it came first. On error (the new file cannot be made) the NAT
// runs without a file, as before the call. ClosePersist stops it.
func (n *NAT) Persist(path string) (FlowRestore, error) {
	var res FlowRestore
	if n.persisted.Swap(true) {
		return res, fmt.Errorf("flow file %s: Persist was already called", path)
	}
	recs, gen, refused, err := readFlowFile(path)
	if err != nil {
		return res, err
	}
	res.Refused = refused
	var flows []*flow
	for off := 0; off+flowRecordSize <= len(recs); off += flowRecordSize {
		r, st := decodeRecord(recs[off:off+flowRecordSize], gen)
		switch st {
		case recordFree:
			continue
		case recordCorrupt:
			res.Corrupt++
			continue
		case recordForeign:
			res.Foreign++
			continue
		}
		f := n.adopt(&r)
		if f == nil {
			res.Dropped++
			continue
		}
		flows = append(flows, f)
	}
	if rem := len(recs) % flowRecordSize; rem != 0 {
		res.Corrupt++ // the last record, cut short
	}
	out := make([]flowRecord, len(flows))
	for i, f := range flows {
		out[i] = recordOf(f)
	}
	res.Restored = len(flows)
	n.count(&res)
	ff, err := createFlowFile(path, n.fileSlots(), out)
	if err != nil {
		// Without a file the restored flows still translate; they are
		// just not recorded again.
		return res, err
	}
	for i, f := range flows {
		f.mu.Lock()
		f.slot = uint32(i) + 1
		f.mu.Unlock()
	}
	n.file.Store(ff)
	n.log.Info("flow file adopted", zap.String("path", path), zap.Int("restored", res.Restored),
		zap.Int("dropped", res.Dropped), zap.Int("corrupt", res.Corrupt), zap.Int("foreign", res.Foreign),
		zap.String("refused", res.Refused))
	return res, nil
}

// count adds what Persist found to the NAT's counters.
func (n *NAT) count(res *FlowRestore) {
	c := &n.stats
	c.fileRestored.Add(uint64(res.Restored))
	c.fileDropped.Add(uint64(res.Dropped))
	c.fileCorrupt.Add(uint64(res.Corrupt))
	c.fileForeign.Add(uint64(res.Foreign))
	if res.Refused != "" {
		c.fileRefused.Add(1)
	}
}

// ClosePersist stops recording flows and unmaps the flow file, which stays
// for the next router. Call it once packets have stopped (a flow change
// after it is no longer recorded); it is idempotent, and Persist cannot
// be called again.
func (n *NAT) ClosePersist() error {
	ff := n.file.Swap(nil)
	if ff == nil {
		return nil
	}
	return ff.close()
}

// fileSlots is the flow file's size in records: both caps, and a quarter
// more for closed flows that linger after giving back their cap slot.
func (n *NAT) fileSlots() uint32 {
	s := n.opts.MaxTCP + n.opts.MaxUDP
	s += s / 4
	return uint32(min(s, 1<<26))
}

// adopt makes the flow r records and inserts it, if it still holds:
// its Service key is served in nat mode, its backend is one of the key's
// usable backends, its source translation is the one start would make
// now, and a cap admits it. It returns nil otherwise.
func (n *NAT) adopt(r *flowRecord) *flow {
	e := n.table.Lookup(ServiceKey{VIP: r.vip.Addr(), Port: r.vip.Port(), Proto: r.proto})
	if e == nil || (e.Mode() == ModeProxy && r.proto == TCP) {
		return nil
	}
	var bk Backend
	for _, b := range e.Backends() {
		if b.AddrPort() == r.backend {
			bk = b
			break
		}
	}
	if !bk.IsValid() {
		return nil
	}
	hp := n.hairpinAddr(bk.Addr)
	switch {
	case hp.IsValid() && (!r.snat.IsValid() || r.snat.Addr() != hp):
		return nil // a local backend reached without the router address
	case !hp.IsValid() && r.snat.IsValid() && r.snat.Addr() != r.client.Addr():
		return nil // translated to a router address for a remote backend
	}
	limit := n.udpLimit
	if r.proto == TCP {
		limit = n.tcpLimit
	}
	f := &flow{
		fwd:     flowKey{src: r.client, dst: r.vip, proto: r.proto},
		vip:     r.vip,
		client:  r.client,
		snat:    r.snat,
		limit:   limit,
		backend: bk,
		entry:   e,
	}
	replyDst := r.client
	if r.snat.IsValid() {
		replyDst = r.snat
	}
	f.rev = flowKey{src: bk.AddrPort(), dst: replyDst, proto: r.proto}
	st := r.state
	if r.proto != TCP {
		st &= stSynAck | stEstablished // a UDP flow keeps whether it was answered and confirmed
	}
	live := !(r.proto == TCP && closed(st))
	if live && !limit.Acquire(r.client.Addr()) {
		return nil
	}
	if !live {
		st |= stReleased
	}
	f.state.Store(st)
	f.lastSeen.Store(n.clock.Now().UnixNano())
	if !n.insert(f) {
		if live {
			limit.Release(r.client.Addr())
		}
		return nil
	}
	if live {
		bk.Acquire()
		n.unconfirmed(f).push(f)
	}
	n.stats.flows.Add(1)
	return f
}

// recordOf is f's record. It reads f's backend: f.mu held or f not yet
// published.
func recordOf(f *flow) flowRecord {
	return flowRecord{
		proto:   f.fwd.proto,
		state:   f.state.Load() & persistedState,
		client:  f.client,
		vip:     f.vip,
		backend: f.backend.AddrPort(),
		snat:    f.snat,
	}
}

// saveLocked records f's current state in the flow file, if the NAT has
// one and f a slot, unless f has ended. f.mu is held: writers of one
// record are serialized, and the last one reads the latest state.
func (n *NAT) saveLocked(f *flow) {
	if f.slot == 0 || f.state.Load()&stEnded != 0 {
		return
	}
	ff := n.file.Load()
	if ff == nil {
		return
	}
	r := recordOf(f)
	ff.write(f.slot, &r)
}

// save is saveLocked taking f.mu.
func (n *NAT) save(f *flow) {
	if n.file.Load() == nil {
		return
	}
	f.mu.Lock()
	n.saveLocked(f)
	f.mu.Unlock()
}

// allocSlot gives a new flow its record slot, or 0 without a flow file.
func (n *NAT) allocSlot() uint32 {
	ff := n.file.Load()
	if ff == nil {
		return 0
	}
	return ff.alloc()
}

// freeSlotLocked clears f's record and gives its slot back; f has ended (or was
// never published) and f.mu is held.
func (n *NAT) freeSlotLocked(f *flow) {
	if f.slot == 0 {
		return
	}
	if ff := n.file.Load(); ff != nil {
		ff.release(f.slot)
	}
	f.slot = 0
}

// growFile allocates more of the flow file ahead of the flows (see
// flowFile.grow), logging a failure once until it succeeds again. Run
// calls it once a second.
func (n *NAT) growFile() {
	ff := n.file.Load()
	if ff == nil {
		return
	}
	err := ff.grow()
	switch {
	case err != nil && !n.growFailed:
		n.log.Warn("the flow file cannot grow: new flows beyond it will not survive a restart", zap.Error(err))
		n.growFailed = true
	case err == nil && n.growFailed:
		n.log.Info("the flow file grows again")
		n.growFailed = false
	}
}

// unrecorded counts flows that found the flow file full.
func (n *NAT) unrecorded() uint64 {
	if ff := n.file.Load(); ff != nil {
		return ff.unrecorded.Load()
	}
	return 0
}
