package health

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadinessFlips(t *testing.T) {
	var s State
	now := time.Date(2025, 11, 25, 17, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	h := s.Handler()

	type want struct {
		readyCode int
		ready     Readiness
		health    Health
	}
	check := func(step string, w want) {
		t.Helper()
		code, body := get(t, h, "GET", "/readyz")
		var r Readiness
		if err := json.Unmarshal([]byte(body), &r); err != nil || code != w.readyCode || r != w.ready {
			t.Errorf("%s: GET /readyz = %d %s, want %d %+v", step, code, body, w.readyCode, w.ready)
		}
		code, body = get(t, h, "GET", "/healthz")
		var hz Health
		if err := json.Unmarshal([]byte(body), &hz); err != nil || code != http.StatusOK {
			t.Fatalf("%s: GET /healthz = %d %s (%v), want 200 with JSON", step, code, body, err)
		}
		if hz.Status != w.health.Status || hz.Phase != w.health.Phase || hz.Ready != w.health.Ready ||
			!hz.CurrentTime.Equal(w.health.CurrentTime) || (hz.LastSync == nil) != (w.health.LastSync == nil) ||
			(hz.LastSync != nil && !hz.LastSync.Equal(*w.health.LastSync)) {
			t.Errorf("%s: GET /healthz = %s, want %+v", step, body, w.health)
		}
	}

	check("before the first sync", want{503, Readiness{"not ready", "starting"},
		Health{Status: "ok", Phase: "starting", CurrentTime: now}})

	synced := now.Add(-time.Second)
	s.Synced(synced)
	s.SetReady()
	check("programmed", want{200, Readiness{Status: "ready"},
		Health{Status: "ok", Phase: "ready", Ready: true, LastSync: &synced, CurrentTime: now}})

	s.SetStopping()
	s.SetReady() // too late: stopping is final
	check("after SIGTERM", want{503, Readiness{"not ready", "shutting down"},
		Health{Status: "ok", Phase: "shutting down", LastSync: &synced, CurrentTime: now}})
}

func TestHandlerMethodsAndPaths(t *testing.T) {
	var s State
	s.SetReady()
	h := s.Handler()
	if code, _ := get(t, h, "HEAD", "/readyz"); code != 200 {
		t.Errorf("HEAD /readyz = %d, want 200", code)
	}
	if code, _ := get(t, h, "POST", "/readyz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", code)
	}
	if code, _ := get(t, h, "GET", "/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the health handler = %d, want 404", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /healthz Content-Type = %q, want application/json", ct)
	}
}

func TestReadyzFollowsTheSource(t *testing.T) {
	var s State
	s.SetReady()
	up := true
	s.SetSource(func() bool { return up })
	h := s.Handler()
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get(); code != 200 {
		t.Fatalf("/readyz with a healthy source = %d, want 200", code)
	}
	up = false
	if code, body := get(); code != 503 || !strings.Contains(body, "source unavailable") {
		t.Errorf("/readyz with the source down = %d %s, want 503 source unavailable", code, body)
	}
	up = true
	if code, _ := get(); code != 200 {
		t.Errorf("/readyz after the source recovered = %d, want 200", code)
	}
}
