package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Client talks to a Server over its unix socket. Its methods are safe for
// concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a Client for the admin socket at path. It connects
// on each request.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// do sends one request and returns the response of a 2xx answer; other
// answers become errors carrying the server's message.
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	// The host is a placeholder: the transport dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://vrouter"+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var ae apiError
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
			ae.Error = fmt.Sprintf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return nil, errors.New(ae.Error)
	}
	return resp, nil
}

// dialError explains the usual reasons a status command cannot reach the
// router.
func (c *Client) dialError(err error) error {
	var hint string
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		hint = " (is `vrouter run` running? --socket picks another router's socket)"
		if others := otherSockets(c.socket); len(others) > 0 {
			hint = fmt.Sprintf(" (is `vrouter run` running in this network namespace? %s holds %s: --socket picks one)",
				filepath.Dir(c.socket), strings.Join(others, ", "))
		}
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = " (the router that made it is gone)"
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		hint = " (the socket is root's: run as root)"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("admin socket %s: %w%s", c.socket, err, hint)
}

// otherSockets lists the other sockets in the directory of path: the
// routers of other network namespaces or TUN devices, when path is a
// default one.
func otherSockets(path string) []string {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 && e.Name() != filepath.Base(path) {
			out = append(out, e.Name())
		}
	}
	return out
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: decode answer: %w", path, err)
	}
	return nil
}

// Routes returns the router's table.
func (c *Client) Routes(ctx context.Context) ([]Route, error) {
	var out []Route
	return out, c.getJSON(ctx, "/v1/routes", &out)
}

// Peers returns the peer routers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	return out, c.getJSON(ctx, "/v1/peers", &out)
}

// Services returns the Services.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var out []Service
	return out, c.getJSON(ctx, "/v1/services", &out)
}

// Conns returns the connections and flows the load balancer carries, the
// first DefaultConnsLimit of them (QueryConns selects and says how many
// there are).
func (c *Client) Conns(ctx context.Context) ([]Conn, error) {
	var out []Conn
	return out, c.getJSON(ctx, "/v1/conns", &out)
}

// LogLevel returns the router's log level.
func (c *Client) LogLevel(ctx context.Context) (string, error) {
	var out LogLevel
	return out.Level, c.getJSON(ctx, "/v1/log-level", &out)
}

// SetLogLevel sets the router's log level and returns it.
func (c *Client) SetLogLevel(ctx context.Context, level string) (string, error) {
	resp, err := c.do(ctx, http.MethodPut, "/v1/log-level", LogLevel{Level: level})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out LogLevel
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("PUT /v1/log-level: decode answer: %w", err)
	}
	return out.Level, nil
}

// CaptureStream is a running capture: a pcap file as the router writes it.
// Close it to stop the capture (the router removes its tap).
type CaptureStream struct {
	resp *http.Response
}

// Read reads the pcap file.
func (s *CaptureStream) Read(b []byte) (int, error) { return s.resp.Body.Read(b) }

// Close stops the capture.
func (s *CaptureStream) Close() error { return s.resp.Body.Close() }

// Dropped is the number of packets the router left out of the capture
// because the reader fell behind, once the stream has been read to its
// end; -1 before, or if the router did not say.
func (s *CaptureStream) Dropped() int64 {
	v := s.resp.Trailer.Get(CaptureDroppedTrailer)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// CaptureRequest says what to capture.
type CaptureRequest struct {
	// NIC is "tun" (or the TUN's own name, "vr0") or "overlay".
	NIC string
	// Count ends the capture after that many packets (0: when ctx ends
	// or the stream is closed); SnapLen keeps at most that many bytes of
	// each (0: whole packets).
	Count, SnapLen int
	// Host, Port and Proto ("tcp", "udp", "icmp", or an IP protocol
	// number) select packets in the router, before they are copied;
	// zero values select all.
	Host  netip.Addr
	Port  uint16
	Proto string
}

// Capture starts the capture req asks for.
func (c *Client) Capture(ctx context.Context, req CaptureRequest) (*CaptureStream, error) {
	q := url.Values{"nic": {req.NIC}}
	if req.Count > 0 {
		q.Set("count", strconv.Itoa(req.Count))
	}
	if req.SnapLen > 0 {
		q.Set("snaplen", strconv.Itoa(req.SnapLen))
	}
	if req.Host.IsValid() {
		q.Set("host", req.Host.String())
	}
	if req.Port != 0 {
		q.Set("port", strconv.Itoa(int(req.Port)))
	}
	if req.Proto != "" {
		q.Set("proto", req.Proto)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/capture?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	return &CaptureStream{resp: resp}, nil
}

// Status returns the router at a glance.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.getJSON(ctx, "/v1/status", &out)
}

// QueryConns returns the connections q selects (at most its limit) and
// how many matched in all.
func (c *Client) QueryConns(ctx context.Context, q ConnQuery) ([]Conn, int, error) {
	path := "/v1/conns"
	if v := q.values(); len(v) > 0 {
		path += "?" + v.Encode()
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	var out []Conn
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, 0, fmt.Errorf("GET %s: decode answer: %w", path, err)
	}
	matched, err := strconv.Atoi(resp.Header.Get(ConnsMatchedHeader))
	if err != nil {
		matched = len(out) // a router that does not say
	}
	return out, matched, nil
}

// DeleteConns removes the nat flows q selects and resets the proxied
// connections it selects. q must select something.
func (c *Client) DeleteConns(ctx context.Context, q ConnQuery) (ConnsDeleted, error) {
	path := "/v1/conns?" + q.values().Encode()
	resp, err := c.do(ctx, http.MethodDelete, path, nil)
	if err != nil {
		return ConnsDeleted{}, err
	}
	defer resp.Body.Close()
	var out ConnsDeleted
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("DELETE /v1/conns: decode answer: %w", err)
	}
	return out, nil
}

// Ping probes a peer through the overlay; ctx should allow q.Duration().
func (c *Client) Ping(ctx context.Context, q PingRequest) (PingReport, error) {
	var out PingReport
	return out, c.getJSON(ctx, "/v1/ping?"+q.values().Encode(), &out)
}
