package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeAPI is an API server that serves GET /api/v1/services to the
// bearer of token.
type fakeAPI struct {
	mu       sync.Mutex
	token    string
	services []fakeService
	lists    int // successful lists
}

type fakeService struct{ namespace, name, clusterIP string }

func (f *fakeAPI) set(token string, svcs ...fakeService) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token, f.services = token, svcs
}

func (f *fakeAPI) listCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/services" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		return
	}
	f.lists++
	type item struct {
		Metadata map[string]string `json:"metadata"`
		Spec     map[string]any    `json:"spec"`
	}
	list := struct {
		Kind  string `json:"kind"`
		Items []item `json:"items"`
	}{Kind: "ServiceList", Items: []item{}}
	for _, s := range f.services {
		spec := map[string]any{"type": "ClusterIP", "clusterIP": s.clusterIP}
		if ips := strings.Split(s.clusterIP, ","); len(ips) > 1 {
			spec["clusterIP"], spec["clusterIPs"] = ips[0], ips
		}
		list.Items = append(list.Items, item{Metadata: map[string]string{"namespace": s.namespace, "name": s.name}, Spec: spec})
	}
	json.NewEncoder(w).Encode(list)
}

// dnsEnv is a running DNS server of vrtest and what it lists Services
// from.
type dnsEnv struct {
	api              *fakeAPI
	srv              *dnsServer
	udp, tcp, health string
}

// startDNS runs vrtest's DNS server for cluster.local against a fake
// HTTPS API server, with a ServiceAccount directory holding the token
// "sa-token" and the fake's CA, and refresh long enough that only misses
// list Services after the first list.
func startDNS(t *testing.T) *dnsEnv {
	t.Helper()
	api := &fakeAPI{token: "another-token"}
	ts := httptest.NewTLSServer(api)
	t.Cleanup(ts.Close)
	saDir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := errors.Join(
		os.WriteFile(filepath.Join(saDir, "ca.crt"), ca, 0o644),
		os.WriteFile(filepath.Join(saDir, "token"), []byte("sa-token\n"), 0o600),
	); err != nil {
		t.Fatal(err)
	}
	client, err := newAPIClient(ts.URL, saDir)
	if err != nil {
		t.Fatalf("newAPIClient(%s, %s): %v", ts.URL, saDir, err)
	}
	t.Cleanup(client.close)

	tcp, udp, health := listenLoopback(t)
	var log syncBuffer
	s := newDNSServer("cluster.local", client.services, time.Hour, &log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, udp, tcp, health) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dnsServer.run after cancel = %v, want nil", err)
		}
		t.Logf("DNS server log:\n%s", log.String())
	})
	return &dnsEnv{api: api, srv: s, udp: udp.LocalAddr().String(), tcp: tcp.Addr().String(), health: health.Addr().String()}
}

func TestDNS(t *testing.T) {
	env := startDNS(t)
	resolve := func(args ...string) (string, string, int) {
		return vrtest(context.Background(), nil, append([]string{"resolve", "--server", env.udp, "--timeout", "3s"}, args...)...)
	}
	healthz := "http://" + env.health + "/healthz"

	// The fake refuses the ServiceAccount's token: nothing is listed, so
	// every name in the domain is a server failure and the server is not
	// ready.
	if _, errOut, code := resolve("my-service.default.svc.cluster.local"); code != 1 || !strings.Contains(errOut, "SERVFAIL") {
		t.Errorf("resolve before any list: exit %d, stderr %q; want SERVFAIL", code, errOut)
	}
	if out, errOut, code := vrtest(context.Background(), nil, "get", healthz); code != 1 || !strings.Contains(errOut, "503") || !strings.Contains(out, "401 Unauthorized") {
		t.Errorf("get %s before any list: exit %d, stdout %q, stderr %q; want 503 naming the API's 401", healthz, code, out, errOut)
	}

	env.api.set("sa-token",
		fakeService{"default", "my-service", "10.103.92.81"},
		fakeService{"kube-system", "kube-dns", "10.96.0.10"},
		fakeService{"default", "dual", "10.96.0.20,fd00:10:96::20"},
		fakeService{"default", "headless", "None"},
	)
	for _, tc := range []struct {
		args    []string
		want    string
		errPart string
	}{
		// A miss lists Services again: the first query finds my-service.
		{args: []string{"my-service.default.svc.cluster.local"}, want: "10.103.92.81\n"},
		{args: []string{"My-Service.Default.SVC.cluster.local."}, want: "10.103.92.81\n"},
		{args: []string{"kube-dns.kube-system.svc.cluster.local", "--tcp", "--server", env.tcp}, want: "10.96.0.10\n"},
		{args: []string{"dual.default.svc.cluster.local"}, want: "10.96.0.20\n"},
		{args: []string{"dual.default.svc.cluster.local", "--type", "AAAA"}, want: "fd00:10:96::20\n"},
		{args: []string{"my-service.default.svc.cluster.local", "--type", "AAAA"}, errPart: "no records"},
		{args: []string{"headless.default.svc.cluster.local"}, errPart: "NXDOMAIN"},
		{args: []string{"nope.default.svc.cluster.local"}, errPart: "NXDOMAIN"},
		{args: []string{"my-service.default.svc.cluster.local.default.svc.cluster.local"}, errPart: "NXDOMAIN"},
		{args: []string{"example.com"}, errPart: "REFUSED"},
		{args: []string{"cluster.local.example.com", "--tcp", "--server", env.tcp}, errPart: "REFUSED"},
	} {
		out, errOut, code := resolve(tc.args...)
		if tc.errPart != "" {
			if code != 1 || !strings.Contains(errOut, tc.errPart) {
				t.Errorf("vrtest resolve %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(tc.args, " "), code, out, errOut, tc.errPart)
			}
			continue
		}
		if code != 0 || out != tc.want {
			t.Errorf("vrtest resolve %s: exit %d, stdout %q, stderr %q; want %q", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	if out := mustVrtest(t, "get", healthz); out != "ok\n" {
		t.Errorf("get %s after a list = %q, want ok", healthz, out)
	}

	// A Service created after the last list is found by the first query:
	// its miss lists once more.
	before := env.api.listCount()
	env.api.set("sa-token", fakeService{"team-a", "new", "10.96.5.5"})
	if out := mustVrtest(t, "resolve", "--server", env.udp, "new.team-a.svc.cluster.local"); out != "10.96.5.5\n" {
		t.Errorf("resolve of a new Service = %q, want 10.96.5.5", out)
	}
	if got := env.api.listCount() - before; got != 1 {
		t.Errorf("lists for one miss = %d, want 1", got)
	}
	if out := mustVrtest(t, "resolve", "--server", env.udp, "new.team-a.svc.cluster.local"); out != "10.96.5.5\n" {
		t.Errorf("resolve of a known Service = %q, want 10.96.5.5", out)
	}
	if got := env.api.listCount() - before; got != 1 {
		t.Errorf("lists after a hit = %d, want still 1", got)
	}
}

// TestDNSUpstream: with an upstream, names outside the domain get the
// upstream's answer, names inside it are still the server's own, and an
// upstream that does not answer is a server failure.
func TestDNSUpstream(t *testing.T) {
	env := startDNS(t)
	env.api.set("sa-token", fakeService{"default", "my-service", "10.103.92.81"})
	up, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		buf := make([]byte, 512)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			h.Response, h.Authoritative = true, true
			up.WriteTo(build(h, &q, []netip.Addr{netip.MustParseAddr("198.51.100.10")}), from)
		}
	}()
	defer func() { up.Close(); <-upDone }()
	addr := up.LocalAddr().String()
	env.srv.upstream.Store(&addr)
	if out := mustVrtest(t, "resolve", "--server", env.udp, "outside.example"); out != "198.51.100.10\n" {
		t.Errorf("resolve outside.example through the upstream = %q, want 198.51.100.10", out)
	}
	if out := mustVrtest(t, "resolve", "--server", env.udp, "my-service.default.svc.cluster.local"); out != "10.103.92.81\n" {
		t.Errorf("resolve of a Service with an upstream = %q, want 10.103.92.81", out)
	}
	dead := "127.0.0.1:9" // discard: nothing answers
	env.srv.upstream.Store(&dead)
	if _, errOut, code := vrtest(context.Background(), nil, "resolve", "--server", env.udp, "--timeout", "5s", "outside.example"); code != 1 || !strings.Contains(errOut, "SERVFAIL") {
		t.Errorf("resolve with a dead upstream: exit %d, stderr %q; want SERVFAIL", code, errOut)
	}
}

// TestDNSGoResolver holds the server to what Go's own resolver (the one in
// a static binary such as `vrtest get http://svc.ns.svc.cluster.local/`)
// accepts: an authoritative answer, NODATA for AAAA, NXDOMAIN otherwise.
func TestDNSGoResolver(t *testing.T) {
	env := startDNS(t)
	env.api.set("sa-token", fakeService{"default", "my-service", "10.103.92.81"})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		if strings.HasPrefix(network, "tcp") {
			return d.DialContext(ctx, network, env.tcp)
		}
		return d.DialContext(ctx, network, env.udp)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "my-service.default.svc.cluster.local.")
	if err != nil || !slices.Equal(addrs, []string{"10.103.92.81"}) {
		t.Errorf("LookupHost(my-service.default.svc.cluster.local.) = %v, %v; want [10.103.92.81]", addrs, err)
	}
	_, err = r.LookupHost(ctx, "nope.default.svc.cluster.local.")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("LookupHost(nope.default.svc.cluster.local.) error = %v, want not found", err)
	}
}

func TestNewAPIClientErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := newAPIClient("https://10.96.0.1:443", dir); err == nil || !strings.Contains(err.Error(), "ca.crt") {
		t.Errorf("newAPIClient without ca.crt = %v, want an error naming ca.crt", err)
	}
	os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("not PEM"), 0o644)
	if _, err := newAPIClient("https://10.96.0.1:443", dir); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("newAPIClient with a broken ca.crt = %v, want \"no PEM certificate\"", err)
	}
	if _, err := inClusterAPI(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "--api") {
		t.Errorf("inClusterAPI outside a Pod = %v, want an error suggesting --api", err)
	}
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
	if got, err := inClusterAPI(func(k string) string { return env[k] }); got != "https://[fd00:10:96::1]:443" || err != nil {
		t.Errorf("inClusterAPI(%v) = %q, %v; want https://[fd00:10:96::1]:443", env, got, err)
	}
}
