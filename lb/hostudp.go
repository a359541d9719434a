package lb

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// udpRelay serves one bound host UDP socket for an External UDP key (a
// node port on one address, or an external or load-balancer IP that is
// local): the UDP half of what kube-proxy's NodePort DNAT and conntrack
// do, with sockets.
//
//	client ─▶ conn (bound ip:port) ─ run: per client address a flow ─▶ bc (connected, from the node kernel) ─▶ backend
//	client ◀─ conn.WriteTo(client) ◀──────── replies (one goroutine per flow) ◀── bc ◀───────────────────── backend
//
// A flow is made by the first datagram from a client address: Lookup,
// the Limiter (all flows and per client), Entry.Pick, and a UDP socket
// connected to the backend. Replies go back from conn, so the client sees
// them come from the address and port it sent to. A flow ends after
// timeout without a datagram either way (conntrack's UDP timeout), when
// its backend leaves the Service (at the next sync: kube-proxy deletes
// the conntrack entries of removed UDP endpoints, so the client's next
// datagram picks a live backend), when its socket fails (an ICMP error
// from the backend, say), and when the relay closes.
//
// A datagram that no flow can take is dropped and counted: the key has
// no Entry or no endpoints (kube-proxy REJECTs with ICMP port
// unreachable, which a UDP socket cannot send), has no local endpoints
// under externalTrafficPolicy Local (kube-proxy DROPs), or a cap is
// reached. Those counters count datagrams, not flows.
//
// Goroutines: run, started by the owner (HostPorts), reads conn until it
// is closed, then closes every flow and waits for their reply goroutines,
// which it alone starts.
type udpRelay struct {
	key     ServiceKey
	conn    *net.UDPConn
	local   netip.AddrPort
	table   *Table
	limit   *Limiter
	log     *zap.Logger
	timeout time.Duration
	cnt     *hostCounters
	// idleClosed counts flows ended by timeout, in this relay and in
	// all (HostPorts').
	idleClosed, idleTotal *atomic.Uint64

	wg sync.WaitGroup // reply goroutines; Add only in run

	// mu guards flows, peak, entry and closed.
	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow
	peak  mapPeak
	// entry is the Entry every flow's backend was last checked against
	// (nil: check them all at the next sync).
	entry  *Entry
	closed bool
}

// udpFlow is one client address's flow to one backend.
type udpFlow struct {
	client  netip.AddrPort
	backend Backend
	bc      *net.UDPConn
	last    atomic.Int64 // unix nanoseconds of the last datagram either way
}

func (f *udpFlow) touch() { f.last.Store(time.Now().UnixNano()) }

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// run reads datagrams from clients until conn is closed, then closes
// every flow and returns once their goroutines have exited.
func (r *udpRelay) run() {
	defer func() {
		r.mu.Lock()
		r.closed = true
		flows := make([]*udpFlow, 0, len(r.flows))
		for _, f := range r.flows {
			flows = append(flows, f)
		}
		r.mu.Unlock()
		for _, f := range flows {
			r.closeFlow(f)
		}
		r.wg.Wait()
	}()
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Not a closed socket: a transient error of one
			// datagram. The socket is unconnected, so no ICMP error
			// is reported here.
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		r.forward(client, buf[:n])
	}
}

// forward sends one datagram from client to its flow's backend, making
// the flow if there is none. A flow that a sync or sweep ended while this
// datagram was on its way is made again, once.
func (r *udpRelay) forward(client netip.AddrPort, b []byte) {
	for range 2 {
		r.mu.Lock()
		f := r.flows[client]
		r.mu.Unlock()
		if f == nil {
			if f = r.open(client); f == nil {
				return
			}
		}
		f.touch()
		_, err := f.bc.Write(b)
		if err == nil {
			return
		}
		if r.closeFlow(f) {
			// The connected socket reports an earlier ICMP error
			// (the backend's port is closed, say): the flow ends,
			// and the client's next datagram picks again.
			r.log.Debug("udp flow failed", zap.Stringer("client", client), zap.Stringer("backend", f.backend), zap.Error(err))
			return
		}
	}
}

// open makes client's flow, or counts why it cannot and returns nil.
func (r *udpRelay) open(client netip.AddrPort) *udpFlow {
	e := r.table.Lookup(r.key)
	switch {
	case e != nil && e.NoEndpoints() && e.Status() == StatusNoLocalEndpoints:
		r.cnt.count(hcNoLocalEP)
		return nil
	case e == nil || e.NoEndpoints():
		r.cnt.count(hcNoEP)
		return nil
	}
	if !r.limit.Acquire(client.Addr()) {
		r.cnt.count(hcCap)
		return nil
	}
	b, ok := e.Pick(Flow{Src: client, Dst: r.local, Proto: UDP})
	if !ok {
		r.limit.Release(client.Addr())
		r.cnt.count(hcNoEP)
		return nil
	}
	bc, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.AddrPort()))
	if err != nil {
		r.limit.Release(client.Addr())
		r.cnt.count(hcUnreachable)
		r.log.Debug("udp dial failed", zap.Stringer("backend", b), zap.Error(err))
		return nil
	}
	f := &udpFlow{client: client, backend: b, bc: bc}
	f.touch()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		bc.Close()
		r.limit.Release(client.Addr())
		return nil
	}
	r.flows[client] = f
	r.peak.grew(len(r.flows))
	if e != r.entry {
		// Picked from an Entry the flows were not checked against:
		// the next sync checks them all.
		r.entry = nil
	}
	r.mu.Unlock()
	b.Acquire()
	r.cnt.open()
	r.log.Debug("udp flow", zap.Stringer("client", client), zap.Stringer("to", r.local), zap.Stringer("backend", b))
	r.wg.Go(func() { r.replies(f) })
	return f
}

// replies sends f's backend's datagrams to its client until f's socket
// is closed or fails; then it ends the flow.
func (r *udpRelay) replies(f *udpFlow) {
	defer r.closeFlow(f)
	rd := newDatagramReader(f.bc)
	defer rd.close()
	for {
		b, err := rd.read()
		if err != nil {
			return
		}
		f.touch()
		r.conn.WriteToUDPAddrPort(b, f.client)
	}
}

// closeFlow ends f once: it leaves the table, its socket closes (which
// ends its reply goroutine) and its counts are released.
func (r *udpRelay) closeFlow(f *udpFlow) bool {
	r.mu.Lock()
	if r.flows[f.client] != f {
		r.mu.Unlock()
		return false
	}
	delete(r.flows, f.client)
	if r.peak.shrink(len(r.flows)) {
		r.flows = rebuilt(r.flows) // after a flood: see shrink.go
	}
	r.mu.Unlock()
	f.bc.Close()
	f.backend.Release()
	r.limit.Release(f.client.Addr())
	r.cnt.closed()
	return true
}

// sweep ends the flows idle for the timeout.
func (r *udpRelay) sweep(now int64) {
	var idle []*udpFlow
	r.mu.Lock()
	for _, f := range r.flows {
		if now-f.last.Load() >= int64(r.timeout) {
			idle = append(idle, f)
		}
	}
	r.mu.Unlock()
	for _, f := range idle {
		if r.closeFlow(f) {
			r.idleClosed.Add(1)
			r.idleTotal.Add(1)
		}
	}
}

// sync ends the flows whose backend is no longer one of the key's
// Entry's. Its cost is one Lookup when the Entry did not change.
func (r *udpRelay) sync() {
	cur := r.table.Lookup(r.key)
	var gone []*udpFlow
	r.mu.Lock()
	if r.entry == cur && cur != nil {
		r.mu.Unlock()
		return
	}
	r.entry = cur
	for _, f := range r.flows {
		if cur == nil {
			gone = append(gone, f)
			continue
		}
		if _, ok := cur.index(f.backend.AddrPort()); !ok {
			gone = append(gone, f)
		}
	}
	r.mu.Unlock()
	for _, f := range gone {
		if r.closeFlow(f) {
			r.log.Debug("udp flow ended: its backend left the Service",
				zap.Stringer("client", f.client), zap.Stringer("backend", f.backend))
		}
	}
}

// activeFlows returns the number of open flows.
func (r *udpRelay) activeFlows() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.flows)
}
