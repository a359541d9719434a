package lb

import (
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// getHealth GETs url and returns the status, the body and the headers.
func getHealth(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// checkHealth GETs url and checks the answer for a Service with n local
// endpoints, as kube-proxy gives it.
func checkHealth(t *testing.T, url, ns, name string, n int) {
	t.Helper()
	status, body, hdr := getHealth(t, url)
	wantStatus := http.StatusServiceUnavailable
	if n > 0 {
		wantStatus = http.StatusOK
	}
	wantBody := `{"service":{"namespace":"` + ns + `","name":"` + name + `"},"localEndpoints":` + itoa(n) + `,"serviceProxyHealthy":true}`
	if status != wantStatus || body != wantBody {
		t.Errorf("GET %s = %d %s, want %d %s", url, status, body, wantStatus, wantBody)
	}
	for k, want := range map[string]string{
		"Content-Type":                     "application/json",
		"X-Content-Type-Options":           "nosniff",
		"X-Load-Balancing-Endpoint-Weight": itoa(n),
	} {
		if got := hdr.Get(k); got != want {
			t.Errorf("GET %s: header %s = %q, want %q", url, k, got, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestHealthServer(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := &healthState{name: ServiceName{"default", "web"}}
	cnt := new(hostCounters)
	s := newHealthServer(ln, healthHandler{state: st, cnt: cnt}, log.New(io.Discard, "", 0))
	go s.serve()
	defer func() {
		s.close()
		<-s.done
	}()
	url := "http://" + ln.Addr().String()

	checkHealth(t, url+"/", "default", "web", 0)
	st.local.Store(2)
	checkHealth(t, url+"/healthz", "default", "web", 2)
	st.local.Store(0)
	checkHealth(t, url+"/any/path", "default", "web", 0)
	if got := cnt.conns.Load(); got != 3 {
		t.Errorf("requests counted = %d, want 3", got)
	}
}

func TestLocalEndpoints(t *testing.T) {
	ep := func(addr, node string, mutate ...func(*Endpoint)) Endpoint {
		return makeEndpoint(addr, append([]func(*Endpoint){func(e *Endpoint) { e.NodeName = node }}, mutate...)...)
	}
	s := makeService("default", "web", func(s *Service) {
		s.Endpoints = []Endpoint{
			ep("10.244.0.4", "here"),
			ep("10.244.0.4", "here"), // the same address again (another slice)
			ep("10.244.0.5", "here"),
			ep("10.244.0.6", "here", notReady),
			ep("10.244.0.7", "here", servingTerminating),
			ep("10.244.1.2", "there"),
		}
	})
	for _, tc := range []struct {
		node string
		want int
	}{{"here", 2}, {"there", 1}, {"", 0}, {"nowhere", 0}} {
		if got := localEndpoints(&s, tc.node); got != tc.want {
			t.Errorf("localEndpoints(node %q) = %d, want %d", tc.node, got, tc.want)
		}
	}
}
