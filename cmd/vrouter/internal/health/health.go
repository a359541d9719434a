package health

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// Phase is where the router is in its life.
type Phase int32

const (
	// Starting: the data path has not been programmed yet.
	Starting Phase = iota
	// Ready: the data path is programmed from the config.
	Ready
	// Stopping: shutdown has begun.
	Stopping
)

func (p Phase) String() string {
	switch p {
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Stopping:
		return "shutting down"
	}
	return "unknown"
}

// State is the router's health. Its methods are safe for concurrent use;
// the zero State is Starting with no sync yet.
type State struct {
	phase    atomic.Int32
	lastSync atomic.Int64 // unix nanoseconds, 0: never

	// source, if set, reports whether the source of desired state (the
	// API server) is healthy; while it is not, /readyz fails although the
	// last programmed data path keeps forwarding.
	source atomic.Pointer[func() bool]

	// now tells time; nil means time.Now.
	now func() time.Time
}

// SetSource makes readiness also depend on ok, the health of the source
// of desired state.
func (s *State) SetSource(ok func() bool) { s.source.Store(&ok) }

func (s *State) sourceOK() bool {
	if f := s.source.Load(); f != nil {
		return (*f)()
	}
	return true
}

// SetReady moves Starting to Ready. It does nothing once Stopping.
func (s *State) SetReady() { s.phase.CompareAndSwap(int32(Starting), int32(Ready)) }

// SetStopping moves to Stopping, for good.
func (s *State) SetStopping() { s.phase.Store(int32(Stopping)) }

// Phase returns the current phase.
func (s *State) Phase() Phase { return Phase(s.phase.Load()) }

// Synced records a successful programming of the data path at t.
func (s *State) Synced(t time.Time) { s.lastSync.Store(t.UnixNano()) }

// LastSync is when the data path was last programmed successfully (the
// zero Time: never).
func (s *State) LastSync() time.Time {
	if n := s.lastSync.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (s *State) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// Health is the /healthz answer.
type Health struct {
	Status string `json:"status"`
	Phase  string `json:"phase"`
	Ready  bool   `json:"ready"`
	// LastSync is when the data path was last programmed successfully;
	// absent before the first time.
	LastSync    *time.Time `json:"lastSync,omitempty"`
	CurrentTime time.Time  `json:"currentTime"`
}

// Readiness is the /readyz answer.
type Readiness struct {
	Status string `json:"status"`
	// Reason says why not ready: "starting", "shutting down", or
	// "source unavailable" (the API server cannot be listed or watched;
	// the last programmed data path keeps forwarding).
	Reason string `json:"reason,omitempty"`
}

// Handler serves /healthz and /readyz (GET and HEAD) from s.
func (s *State) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	return mux
}

func (s *State) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	p := s.Phase()
	h := Health{Status: "ok", Phase: p.String(), Ready: p == Ready, CurrentTime: s.clock().UTC()}
	if t := s.LastSync(); !t.IsZero() {
		t = t.UTC()
		h.LastSync = &t
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *State) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	r := s.Readiness()
	code := http.StatusOK
	if r.Reason != "" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, r)
}

// Readiness is what /readyz answers now.
func (s *State) Readiness() Readiness {
	if p := s.Phase(); p != Ready {
		return Readiness{Status: "not ready", Reason: p.String()}
	}
	if !s.sourceOK() {
		return Readiness{Status: "not ready", Reason: "source unavailable"}
	}
	return Readiness{Status: "ready"}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n')) //nolint:errcheck // the client went away
}
