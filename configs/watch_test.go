package configs

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/lb"
)

// waitFor bounds every wait in these tests. Nothing is timed: a healthy
// run takes milliseconds, and the bound only turns a hang into a failure.
const waitFor = 10 * time.Second

const (
	msgFailed    = "config reload failed, keeping the running config"
	msgUnchanged = "config unchanged, skipping reload"
	msgReloaded  = "config reloaded"
)

type watchHarness struct {
	t       *testing.T
	path    string
	w       *Watcher
	applied chan *Config
	logs    *observer.ObservedLogs
	cancel  context.CancelFunc
	done    chan error
}

// startWatch runs a Watcher on path until the test ends.
func startWatch(t *testing.T, path string, opts WatchOptions) *watchHarness {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &watchHarness{t: t, path: path, applied: make(chan *Config, 100), logs: logs, done: make(chan error, 1)}
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	h.w = NewWatcher(path, zap.New(core), func(c *Config) { h.applied <- c }, opts)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run() = %v after cancel, want nil", err)
			}
		case <-time.After(waitFor):
			t.Errorf("Run() did not return within %v of cancel", waitFor)
		}
	})
	return h
}

// waitApply returns the next config passed to apply.
func (h *watchHarness) waitApply() *Config {
	h.t.Helper()
	select {
	case c := <-h.applied:
		return c
	case err := <-h.done:
		h.t.Fatalf("Run() returned %v while waiting for apply", err)
	case <-time.After(waitFor):
		h.t.Fatalf("apply not called within %v; logs: %v", waitFor, h.messages())
	}
	return nil
}

// waitApplyWhere returns the first applied config for which ok holds;
// in-place writes may let apply see an intermediate valid state first.
func (h *watchHarness) waitApplyWhere(ok func(*Config) bool) *Config {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case c := <-h.applied:
			if ok(c) {
				return c
			}
		case <-deadline:
			h.t.Fatalf("no matching config applied within %v; logs: %v", waitFor, h.messages())
			return nil
		}
	}
}

// waitLogs waits until at least n entries with message msg were logged
// and returns them.
func (h *watchHarness) waitLogs(msg string, n int) []observer.LoggedEntry {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if got := h.logs.FilterMessage(msg).AllUntimed(); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("waited %v for %d log entries %q; logs: %v", waitFor, n, msg, h.messages())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *watchHarness) noApply() {
	h.t.Helper()
	select {
	case c := <-h.applied:
		h.t.Errorf("apply(%+v) called, want no call", c)
	default:
	}
}

func (h *watchHarness) messages() []string {
	var out []string
	for _, e := range h.logs.AllUntimed() {
		out = append(out, e.Message+" "+toString(e.ContextMap()["error"]))
	}
	return out
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

func marshal(t *testing.T, f *File) []byte {
	t.Helper()
	data, err := yaml.Marshal(f)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	return data
}

// atomicWrite writes data the way careful editors and config tools do:
// to a temporary file in the same directory, renamed over path.
func atomicWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func hasEndpoint(addr string) func(*Config) bool {
	return func(c *Config) bool {
		for _, s := range c.Services {
			for _, e := range s.Endpoints {
				if e.Addr.String() == addr {
					return true
				}
			}
		}
		return false
	}
}

func TestWatchAppliesChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile(withServices(makeService("default", "my-service"))))
	h := startWatch(t, path, WatchOptions{})

	if c := h.waitApply(); c.Node.Name != "hostgw-master" || len(c.Services) != 1 {
		t.Fatalf("first apply = %+v, want the file as written", c)
	}

	// An in-place write: the second endpoint appears.
	writeFile(t, path, makeFile(withPeers(hostgwNode()), withServices(makeService("default", "my-service", func(s *ServiceSpec) {
		s.Endpoints = append(s.Endpoints, makeEndpoint("10.244.1.2", "hostgw-node"))
	}))))
	c := h.waitApplyWhere(hasEndpoint("10.244.1.2"))
	if len(c.Peers) != 1 || len(c.Services[0].Endpoints) != 2 {
		t.Errorf("applied %+v, want 1 peer and 2 endpoints", c)
	}
	entries := h.waitLogs(msgReloaded, 1)
	if e := entries[len(entries)-1]; e.LoggerName != "configs" || e.ContextMap()["path"] != path {
		t.Errorf("log %q: logger %q, fields %v; want logger configs and path %s", e.Message, e.LoggerName, e.ContextMap(), path)
	}
}

func TestWatchBrokenFileKeepsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile(withPeers(hostgwNode())))
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	atomicWrite(t, path, marshal(t, makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.PodCIDRs = []string{"10.244.1.0/33"} })))))
	e := h.waitLogs(msgFailed, 1)[0]
	if e.Level != zapcore.ErrorLevel || !strings.Contains(toString(e.ContextMap()["error"]), `peers[0].podCIDRs[0]: "10.244.1.0/33"`) || e.ContextMap()["path"] != path {
		t.Errorf("log = %v %q %v, want an error naming path and peers[0].podCIDRs[0]", e.Level, e.Message, e.ContextMap())
	}
	h.noApply()

	// Fixed: the new config is applied.
	atomicWrite(t, path, marshal(t, makeFile(withPeers(hostgwNode(func(p *PeerSpec) { p.Zone = "zone-b" })))))
	if c := h.waitApply(); c.Peers[0].Zone != "zone-b" {
		t.Errorf("apply after fix = %+v, want peer zone zone-b", c.Peers[0])
	}
	if n := len(h.logs.FilterMessage(msgFailed).All()); n != 1 {
		t.Errorf("%d %q log lines, want 1", n, msgFailed)
	}
}

func TestWatchRemovedFileKeepsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	e := h.waitLogs(msgFailed, 1)[0]
	if !strings.Contains(toString(e.ContextMap()["error"]), "no such file") {
		t.Errorf("log %q error = %v, want it to say the file is missing", e.Message, e.ContextMap()["error"])
	}
	h.noApply()
	writeFile(t, path, makeFile(func(f *File) { f.Node.Zone = "back" }))
	if c := h.waitApplyWhere(func(c *Config) bool { return c.Node.Zone == "back" }); c == nil {
		t.Error("no apply after the file came back")
	}
}

func TestWatchRenameReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	for i, zone := range []string{"one", "two", "three"} { // the watch survives each replace
		atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.Node.Zone = zone })))
		if c := h.waitApply(); c.Node.Zone != zone {
			t.Fatalf("apply after replace %d = zone %q, want %q", i, c.Node.Zone, zone)
		}
	}
}

// TestWatchConfigMapSwap replays what the kubelet does to a ConfigMap
// volume: the file is a symlink through ..data to a timestamped directory,
// and an update swaps ..data atomically.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(version string, f *File) {
		if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, version, "vrouter.yaml"), f)
		if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..2026_01_01_00_00_00.1", makeFile())
	path := filepath.Join(dir, "vrouter.yaml")
	if err := os.Symlink("..data/vrouter.yaml", path); err != nil {
		t.Fatal(err)
	}
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	writeVersion("..2026_01_01_00_01_00.2", makeFile(withPeers(hostgwNode())))
	if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
		t.Fatal(err)
	}
	if c := h.waitApply(); len(c.Peers) != 1 || c.Peers[0].Name != "hostgw-node" {
		t.Errorf("apply after ConfigMap update = peers %+v, want hostgw-node", c.Peers)
	}
}

// TestWatchSymlinkTarget edits the target of a symlink in another
// directory: the watcher follows the link to the target's directory.
func TestWatchSymlinkTarget(t *testing.T) {
	target := filepath.Join(t.TempDir(), "real.yaml")
	writeFile(t, target, makeFile())
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	atomicWrite(t, target, marshal(t, makeFile(func(f *File) { f.LB.Picker = "maglev" })))
	if c := h.waitApply(); c.LB.Picker != lb.PickMaglev {
		t.Errorf("apply after editing the symlink target = picker %q, want maglev", c.LB.Picker)
	}
}

func TestWatchSkipsEqualConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	// Other bytes, same config: a comment and the defaults spelt out.
	atomicWrite(t, path, append([]byte("# comment\n"), marshal(t, makeFile(func(f *File) {
		f.TUN.Name, f.Overlay.Port, f.LB.Mode = "vr0", 8285, "nat"
	}))...))
	h.waitLogs(msgUnchanged, 1)
	h.noApply()
}

func TestWatchInitial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	initial, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	h := startWatch(t, path, WatchOptions{Initial: initial})
	h.waitLogs(msgUnchanged, 1) // the start-up check found the file as loaded
	h.noApply()

	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.Node.Zone = "z" })))
	if c := h.waitApply(); c.Node.Zone != "z" {
		t.Errorf("apply = zone %q, want z", c.Node.Zone)
	}
}

// TestWatchOverride: a flag copied into the running config (vrouter run
// --tun-fd 3) is copied into every config read again, so the file as
// loaded is not a change, and a real change keeps the flag.
func TestWatchOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	override := func(c *Config) { c.TUN.FD = 3 }
	initial, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	override(initial)
	h := startWatch(t, path, WatchOptions{Initial: initial, Override: override})
	h.waitLogs(msgUnchanged, 1) // the start-up check: the file as loaded, with the flag
	h.noApply()

	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.Node.Zone = "z" })))
	if c := h.waitApply(); c.Node.Zone != "z" || c.TUN.FD != 3 {
		t.Errorf("apply = zone %q, TUN.FD %d; want z and 3", c.Node.Zone, c.TUN.FD)
	}
}

func TestWatchReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	h := startWatch(t, path, WatchOptions{})
	h.waitApply()

	// Reload of an unchanged file reads it again and skips it.
	h.w.Reload()
	h.waitLogs(msgUnchanged, 1)

	// A broken file is logged on change, and again on each Reload.
	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.LB.Mode = "ipvs" })))
	h.waitLogs(msgFailed, 1)
	h.w.Reload()
	entries := h.waitLogs(msgFailed, 2)
	if err := toString(entries[1].ContextMap()["error"]); !strings.Contains(err, `lb.mode: "ipvs"`) {
		t.Errorf("log after Reload: error = %q, want it to name lb.mode and \"ipvs\"", err)
	}
	h.noApply()
}

func TestWatchInvalidAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile(func(f *File) { f.Node.UnderlayAddress = "" }))
	err := Watch(context.Background(), path, nil, func(c *Config) { t.Errorf("apply(%+v) called for an invalid file", c) })
	if err == nil || !strings.Contains(err.Error(), path) || !hasFieldError(err, "node.underlayAddress", "missing") {
		t.Errorf("Watch(invalid file) = %v, want an error naming the path and node.underlayAddress", err)
	}
	err = Watch(context.Background(), filepath.Join(t.TempDir(), "no", "such.yaml"), nil, func(*Config) {})
	if err == nil || !strings.Contains(err.Error(), "watch config directory") {
		t.Errorf("Watch(missing directory) = %v, want a watch config directory error", err)
	}
}

func TestWatchCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	ctx, cancel := context.WithCancel(context.Background())
	applied := make(chan struct{}, 1)
	w := NewWatcher(path, zap.NewNop(), func(*Config) { applied <- struct{}{} }, WatchOptions{})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-applied:
	case <-time.After(waitFor):
		t.Fatal("apply not called at start")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v after cancel, want nil", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("Run() did not return within %v of cancel", waitFor)
	}
	if err := w.Run(context.Background()); err == nil {
		t.Error("second Run() = nil, want an error")
	}
	w.Reload() // after Run: must not block
}

// TestWatchBusyDirectory: another file in the config's directory is
// written every few milliseconds, for ever, so the directory is never
// quiet for a whole debounce period. A change of the config must still be
// applied: MaxDelay bounds the debounce. The writer stops only once the
// change is applied, so without the bound the test fails (at waitFor).
func TestWatchBusyDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vrouter.yaml")
	writeFile(t, path, makeFile())
	h := startWatch(t, path, WatchOptions{Debounce: 200 * time.Millisecond, MaxDelay: 400 * time.Millisecond})
	h.waitApply()

	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		other := filepath.Join(dir, "busy.log")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := os.WriteFile(other, []byte(strconv.Itoa(i)), 0o644); err != nil {
				t.Errorf("churn: %v", err)
				return
			}
		}
	}()
	defer func() { close(stop); <-stopped }()

	time.Sleep(50 * time.Millisecond) // the churn runs
	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.Node.Zone = "busy" })))
	if c := h.waitApply(); c.Node.Zone != "busy" {
		t.Errorf("apply under directory churn = zone %q, want busy", c.Node.Zone)
	}
}

func TestWatchMaxDelayDefault(t *testing.T) {
	for _, tc := range []struct {
		in, want WatchOptions
	}{
		{WatchOptions{}, WatchOptions{Debounce: DefaultDebounce, MaxDelay: 10 * DefaultDebounce}},
		{WatchOptions{Debounce: time.Second}, WatchOptions{Debounce: time.Second, MaxDelay: 10 * time.Second}},
		{WatchOptions{Debounce: time.Second, MaxDelay: time.Millisecond}, WatchOptions{Debounce: time.Second, MaxDelay: time.Second}},
		{WatchOptions{MaxDelay: 2 * time.Second}, WatchOptions{Debounce: DefaultDebounce, MaxDelay: 2 * time.Second}},
	} {
		w := NewWatcher("x.yaml", nil, func(*Config) {}, tc.in)
		if w.opts.Debounce != tc.want.Debounce || w.opts.MaxDelay != tc.want.MaxDelay {
			t.Errorf("NewWatcher(%+v): Debounce %v, MaxDelay %v; want %v, %v", tc.in, w.opts.Debounce, w.opts.MaxDelay, tc.want.Debounce, tc.want.MaxDelay)
		}
	}
}

// TestWatchRefused: each refusal the watcher logs is also reported to
// WatchOptions.Refused, so that it can be counted; a file that is not
// read again (unchanged bytes) is not refused again.
func TestWatchRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vrouter.yaml")
	writeFile(t, path, makeFile())
	refused := make(chan error, 10)
	h := startWatch(t, path, WatchOptions{Refused: func(err error) { refused <- err }})
	h.waitApply()
	wantRefused := func(why, field string) {
		t.Helper()
		select {
		case err := <-refused:
			if !strings.Contains(err.Error(), field) {
				t.Errorf("Refused(%v) after %s, want an error naming %s", err, why, field)
			}
		case <-time.After(waitFor):
			t.Fatalf("Refused not called within %v after %s; logs: %v", waitFor, why, h.messages())
		}
	}

	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.LB.Mode = "ipvs" })))
	wantRefused("an invalid file", "lb.mode")
	h.w.Reload()
	wantRefused("Reload of the invalid file", "lb.mode")
	// Another file in the directory: the config is read again, its bytes
	// have not changed, nothing is refused again.
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "other"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * 20 * time.Millisecond) // five debounce periods: the re-read happens before the fix
	atomicWrite(t, path, marshal(t, makeFile(func(f *File) { f.Node.Zone = "fixed" })))
	if c := h.waitApply(); c.Node.Zone != "fixed" {
		t.Errorf("apply after the fix = zone %q, want fixed", c.Node.Zone)
	}
	select {
	case err := <-refused:
		t.Errorf("Refused(%v) called again, want the two refusals only", err)
	default:
	}
	if n := h.logs.FilterMessage(msgFailed).Len(); n != 2 {
		t.Errorf("%d %q log lines, want 2 (one per refusal)", n, msgFailed)
	}
}
