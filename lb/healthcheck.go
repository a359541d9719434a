package lb

import (
	"encoding/json"
	"errors"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// healthState is what a Service's health-check node port answers: this
// node's count of local ready endpoints. The reconciler stores it on
// every change of the Service; the HTTP handlers read it without a lock.
type healthState struct {
	name  ServiceName
	local atomic.Int64
}

// localEndpoints returns the number of distinct addresses of s's ready
// endpoints on node (none when node is empty): kube-proxy's count for
// health checks.
func localEndpoints(s *Service, node string) int {
	if node == "" {
		return 0
	}
	var seen []netip.Addr
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		a := e.Addr.Unmap()
		if !e.Ready || e.NodeName != node || !a.IsValid() {
			continue
		}
		dup := false
		for _, b := range seen {
			if b == a {
				dup = true
				break
			}
		}
		if !dup {
			seen = append(seen, a)
		}
	}
	return len(seen)
}

// healthHandler answers a health-check node port's requests as
// kube-proxy does (pkg/proxy/healthcheck): any method and path get
//
//	{"service":{"namespace":"ns","name":"n"},"localEndpoints":N,"serviceProxyHealthy":true}
//
// with Content-Type application/json, X-Content-Type-Options nosniff and
// X-Load-Balancing-Endpoint-Weight N, and status 200 while N > 0, 503
// otherwise. A cloud load balancer thus sends a Service's traffic only to
// nodes with a local endpoint (externalTrafficPolicy Local). The proxy
// is healthy whenever it answers: it has no separate health of its own
// to report.
type healthHandler struct {
	state *healthState
	cnt   *hostCounters // requests, in conns
}

type healthBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int64 `json:"localEndpoints"`
	ServiceProxyHealthy bool  `json:"serviceProxyHealthy"`
}

func (h healthHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h.cnt.count(hcConns)
	n := h.state.local.Load()
	var body healthBody
	body.Service.Namespace, body.Service.Name = h.state.name.Namespace, h.state.name.Name
	body.LocalEndpoints, body.ServiceProxyHealthy = n, true
	b, _ := json.Marshal(&body) // cannot fail
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Load-Balancing-Endpoint-Weight", strconv.FormatInt(n, 10))
	if n > 0 {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(b)
}

func hcConns(c *hostCounters) *atomic.Uint64 { return &c.conns }

// healthServer serves one health-check node port on one listening socket.
type healthServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed when serve has returned
	// conns counts the server's connections, so that serve returns only
	// after their goroutines are done with them.
	conns sync.WaitGroup
}

// Limits of a health-check server: a health checker sends a small request
// and reads a small answer.
const (
	healthReadTimeout = 10 * time.Second
	healthIdleTimeout = 30 * time.Second
	healthMaxHeader   = 4 << 10
)

// newHealthServer returns a server of h on ln; errLog takes net/http's
// own error lines.
func newHealthServer(ln net.Listener, h healthHandler, errLog *log.Logger) *healthServer {
	s := &healthServer{ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: healthReadTimeout,
		ReadTimeout:       healthReadTimeout,
		WriteTimeout:      healthReadTimeout,
		IdleTimeout:       healthIdleTimeout,
		MaxHeaderBytes:    healthMaxHeader,
		ErrorLog:          errLog,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Done()
			}
		},
	}
	return s
}

// serve serves until close; it returns after every connection it served
// is closed. StateNew is reported from Serve's own goroutine, so no Add
// follows the Wait.
func (s *healthServer) serve() {
	defer close(s.done)
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		// The listener failed: close the connections it left.
		s.srv.Close()
	}
	s.conns.Wait()
}

// close closes the listener and every connection; serve returns soon
// after (done).
func (s *healthServer) close() { s.srv.Close() }
