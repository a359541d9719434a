package lb

import (
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// OutlierOptions configure passive outlier detection: a backend whose new
// connections fail Failures times in a row is ejected — left out of
// picking — for BaseEjection, twice as long for each ejection in a row
// (up to MaxEjection), as Envoy's consecutive-failure detection does.
// Failures are what the data path sees of a connection's setup: in proxy
// mode and host relays a refused or timed-out dial; in nat mode a TCP
// flow whose SYN gets a RST or an ICMP unreachable from the backend's
// side, whose client retransmits its SYN after ConnectTimeout without a
// SYN-ACK, or that expires half-open without one. A connection that
// reaches the backend (a dial, a SYN-ACK) resets the backend's count and
// its ejection multiplier. The zero value of each field is its default.
type OutlierOptions struct {
	// Disabled turns ejection off; failures are still counted.
	Disabled bool
	// Failures is how many consecutive failures eject a backend.
	// Default DefaultOutlierFailures.
	Failures int
	// BaseEjection is the first ejection's length. Default
	// DefaultOutlierBaseEjection.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length. Default
	// DefaultOutlierMaxEjection.
	MaxEjection time.Duration
	// MaxEjectionPercent bounds the share of a Service port's backends
	// ejected at once (rounded down: with one backend none is ejected, with
	// two or three one at 50%). Default DefaultOutlierMaxEjectionPercent.
	MaxEjectionPercent int
	// ConnectTimeout is how long a nat mode SYN may go unanswered before
	// the client's retransmission counts as a failure. Default
	// DefaultOutlierConnectTimeout.
	ConnectTimeout time.Duration
}

// Default OutlierOptions.
const (
	DefaultOutlierFailures           = 3
	DefaultOutlierBaseEjection       = 5 * time.Second
	DefaultOutlierMaxEjection        = 5 * time.Minute
	DefaultOutlierMaxEjectionPercent = 50
	DefaultOutlierConnectTimeout     = time.Second
)

func (o *OutlierOptions) setDefaults() error {
	switch {
	case o.Failures < 0:
		return fmt.Errorf("outlier failures %d: want ≥ 1, or 0 for %d", o.Failures, DefaultOutlierFailures)
	case o.BaseEjection < 0, o.MaxEjection < 0, o.ConnectTimeout < 0:
		return fmt.Errorf("outlier durations %v, %v, %v: want positive durations, or 0 for the defaults", o.BaseEjection, o.MaxEjection, o.ConnectTimeout)
	case o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100:
		return fmt.Errorf("outlier max ejection percent %d: want 1..100, or 0 for %d", o.MaxEjectionPercent, DefaultOutlierMaxEjectionPercent)
	}
	if o.Failures == 0 {
		o.Failures = DefaultOutlierFailures
	}
	if o.BaseEjection == 0 {
		o.BaseEjection = DefaultOutlierBaseEjection
	}
	if o.MaxEjection == 0 {
		o.MaxEjection = DefaultOutlierMaxEjection
	}
	o.MaxEjection = max(o.MaxEjection, o.BaseEjection)
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = DefaultOutlierMaxEjectionPercent
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultOutlierConnectTimeout
	}
	return nil
}

// outlier is a Table's ejection policy and counters, shared by every
// backend it built. Ejection runs on no goroutine of its own: a failure
// report ejects; the first pick that meets an ejected backend after its
// time is up returns it (and logs so), and status readers compare the
// deadline with the clock.
type outlier struct {
	opts  OutlierOptions
	clock Clock
	log   *zap.Logger

	ejections, returns atomic.Uint64
	// failures counts every failure reported, ejecting or not.
	failures atomic.Uint64
}

// backendOutlier is one backend's ejection state, kept in its
// backendCounters so that it survives Table updates.
type backendOutlier struct {
	// until is the ejection's end in Unix nanoseconds; 0: not ejected.
	// The pickers load it once per candidate.
	until atomic.Int64
	// fails counts failures since the last success; ejected counts
	// ejections since then (the next one lasts BaseEjection·2^ejected).
	fails, ejected atomic.Int32
	// ejections counts every ejection of the backend.
	ejections atomic.Uint64
}

// usable reports whether c's backend is not ejected. A backend whose
// ejection has run out returns to use here. Its cost on a backend that is
// not ejected is one atomic load.
func (c *backendCounters) usable() bool {
	if c == nil {
		return true
	}
	u := c.out.until.Load()
	if u == 0 {
		return true
	}
	od := c.od
	if od == nil || od.clock.Now().UnixNano() < u {
		return false
	}
	if c.out.until.CompareAndSwap(u, 0) {
		od.returns.Add(1)
		od.log.Info("backend returns to use after its ejection",
			zap.Stringer("service", c.name), zap.Stringer("backend", c.addr))
	}
	return true
}

// ejectedAt reports whether c's backend is ejected at now, without
// returning it.
func (c *backendCounters) ejectedAt(now int64) bool {
	u := c.out.until.Load()
	return u != 0 && now < u
}

// connectFailed reports that a new connection to b failed to reach it, as
// picked from e. Enough failures in a row eject b, unless that would take
// more of e's backends out of use than the policy allows. Safe for
// concurrent use; not for the per-packet path (it runs once per failed
// connection).
func (e *Entry) connectFailed(b Backend) {
	c := b.c
	if c == nil || c.od == nil {
		return
	}
	od := c.od
	od.failures.Add(1)
	if c.out.fails.Add(1) < int32(od.opts.Failures) || od.opts.Disabled {
		return
	}
	now := od.clock.Now().UnixNano()
	if c.ejectedAt(now) {
		return
	}
	e.c.ejectMu.Lock()
	defer e.c.ejectMu.Unlock()
	if c.ejectedAt(now) {
		return
	}
	ejected := 0
	for _, o := range e.backends {
		if o.c != c && o.c.ejectedAt(now) {
			ejected++
		}
	}
	if (ejected+1)*100 > len(e.backends)*od.opts.MaxEjectionPercent {
		return
	}
	n := c.out.ejected.Add(1)
	d := od.opts.BaseEjection << min(n-1, 20)
	if d > od.opts.MaxEjection || d <= 0 {
		d = od.opts.MaxEjection
	}
	c.out.until.Store(now + int64(d))
	// One more failure after the return ejects again, for longer.
	c.out.fails.Store(int32(od.opts.Failures) - 1)
	c.out.ejections.Add(1)
	od.ejections.Add(1)
	od.log.Warn("backend ejected after consecutive connection failures",
		zap.Stringer("service", e.name), zap.Stringer("backend", b),
		zap.Int("failures", od.opts.Failures), zap.Duration("for", d), zap.Int32("ejection", n))
}

// connected reports that a new connection to b reached it: b's failure
// count and ejection multiplier restart.
func connected(b Backend) {
	c := b.c
	if c == nil {
		return
	}
	if c.out.fails.Load() != 0 {
		c.out.fails.Store(0)
	}
	if c.out.ejected.Load() != 0 {
		c.out.ejected.Store(0)
	}
}

// OutlierStats are the Table's outlier detection counters.
type OutlierStats struct {
	// Failures counts connection failures reported; Ejections the
	// ejections they caused; Returns the backends back in use after one.
	Failures, Ejections, Returns uint64
}

// OutlierStats returns the Table's outlier detection counters.
func (t *Table) OutlierStats() OutlierStats {
	od := t.outlier
	return OutlierStats{Failures: od.failures.Load(), Ejections: od.ejections.Load(), Returns: od.returns.Load()}
}

// connectFailed reports f, a TCP flow whose connection did not reach its
// backend, to outlier detection, once per flow.
func (n *NAT) connectFailed(f *flow) {
	if f.state.Or(stFailed)&stFailed != 0 {
		return
	}
	f.entry.connectFailed(f.backend)
}

// synAgain handles a client's SYN on TCP flow f, at now: a retransmission
// that comes ConnectTimeout or more after the flow started, with no
// SYN-ACK yet, counts as a failed connection.
func (n *NAT) synAgain(f *flow, now int64) {
	od := f.backend.c.od
	if od == nil || f.started == 0 || f.state.Load()&(stSynAck|stEstablished|stFailed) != 0 {
		return
	}
	if time.Duration(now-f.started) >= od.opts.ConnectTimeout {
		n.connectFailed(f)
	}
}
