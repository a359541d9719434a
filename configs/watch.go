package configs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultDebounce is WatchOptions.Debounce when left zero.
const DefaultDebounce = 100 * time.Millisecond

// maxDelayFactor sets WatchOptions.MaxDelay when left zero: so many
// debounce periods.
const maxDelayFactor = 10

// WatchOptions configure a Watcher. The zero value is ready to use.
type WatchOptions struct {
	// Debounce is how long the file's directory must stay quiet after a
	// change before the file is read again, so that a burst of writes is
	// read once. Zero means DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds the debounce: the file is read at most MaxDelay
	// after the first change of a burst even if the directory never
	// stays quiet for Debounce (another file there written every few
	// milliseconds), so that a busy directory cannot hold a change back
	// forever. Zero means 10 × Debounce (1 s by default); it is never
	// below Debounce.
	MaxDelay time.Duration
	// Initial is the config the caller has already applied, usually from
	// Load at startup (and Override). Run then applies the file only once
	// it differs from Initial. If Initial is nil, Run loads the file first, applies
	// it, and returns the error if it is unreadable or invalid.
	Initial *Config
	// Refused, if not nil, is called with the error each time a reload
	// is refused because the file cannot be read or is invalid: once per
	// failure logged, that is once per new content of the file (or new
	// read error) and once per Reload that fails. It is called from Run's
	// goroutine, like apply. A config apply refuses is the caller's to
	// count.
	Refused func(error)
	// Override, if not nil, is called with every config read from the
	// file, before it is compared with the config last applied: it sets
	// the fields that command-line flags override (an adopted TUN's file
	// descriptor, node-port addresses), so that a file read again differs
	// from the running config only where the file changed. It is called
	// from Run's goroutine and must not keep the config.
	Override func(*Config)
}

// Watcher delivers validated configs from a file as it changes: on writes
// to the file, on an editor's rename-replace and on the symlink swap of a
// Kubernetes ConfigMap volume, and on Reload (SIGHUP).
//
// It watches the file's directory, not the file: rename-replace and
// symlink swaps leave a watch on the old inode blind. Any event there
// (re)starts the debounce timer, but never past WatchOptions.MaxDelay after
// the first event since the last read; when it fires, the file is read
// and, only if
// its bytes changed, parsed. A file that fails to parse is logged once and
// the running config stays: apply is not called. A config Equal to the one
// last applied is skipped. The router computes its own diffs; apply gets
// whole validated configs.
type Watcher struct {
	path  string
	log   *zap.Logger
	apply func(*Config)
	opts  WatchOptions

	reload  chan struct{} // capacity 1: Reload requests coalesce
	started atomic.Bool

	// Owned by the Run goroutine.
	last      *Config // the config last applied
	lastData  []byte  // the bytes last read, valid or not
	lastErr   string  // the last failure logged, to log it once
	targetDir string  // directory of the symlink target, if watched
}

// NewWatcher returns a Watcher for the config file at path. apply receives
// each new config; it is called from Run's goroutine, one call at a time,
// and must not keep Run waiting long (changes meanwhile coalesce). A nil
// log discards logs. NewWatcher starts nothing.
func NewWatcher(path string, log *zap.Logger, apply func(*Config), opts WatchOptions) *Watcher {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = maxDelayFactor * opts.Debounce
	}
	opts.MaxDelay = max(opts.MaxDelay, opts.Debounce)
	return &Watcher{
		path:   path,
		log:    log.Named("configs").With(zap.String("path", path)),
		apply:  apply,
		opts:   opts,
		reload: make(chan struct{}, 1),
	}
}

// Watch runs a Watcher with default options until ctx is done: it loads
// and applies the file, then applies each valid change. See Watcher.
func Watch(ctx context.Context, path string, log *zap.Logger, apply func(*Config)) error {
	return NewWatcher(path, log, apply, WatchOptions{}).Run(ctx)
}

// Reload asks Run to read the file now, even if its bytes did not change,
// and to log the error again if it is still invalid. Call it on SIGHUP. It
// never blocks and may be called from any goroutine, before or during
// Run; requests made while one is pending coalesce.
func (w *Watcher) Reload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

// Run watches the file until ctx is done, then returns nil after every
// goroutine it started has exited. It returns an error early only if the
// directory cannot be watched or, without WatchOptions.Initial, if the
// file cannot be loaded at start. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if w.started.Swap(true) {
		return errors.New("configs: Watcher.Run called twice")
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config %s: %w", w.path, err)
	}
	defer fsw.Close() // waits for fsnotify's reader goroutine
	dir := filepath.Dir(w.path)
	if err := fsw.Add(dir); err != nil {
		return fmt.Errorf("watch config directory %s: %w", dir, err)
	}
	w.watchTarget(fsw, dir)

	if w.last = w.opts.Initial; w.last == nil {
		data, err := os.ReadFile(w.path)
		if err != nil {
			return fmt.Errorf("load config: %w", err)
		}
		c, err := ParseFile(w.path, data)
		if err != nil {
			return err
		}
		w.override(c)
		w.last, w.lastData = c, data
		w.apply(c)
	} else {
		w.check(false) // the file may have changed since the caller loaded it
	}

	debounce := time.NewTimer(w.opts.Debounce)
	debounce.Stop()
	defer debounce.Stop()
	// first is when the first event since the last read came; zero when
	// no read is pending. The timer fires Debounce after the last event,
	// or at first+MaxDelay, whichever is earlier.
	var first time.Time
	arm := func() {
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		debounce.Reset(min(w.opts.Debounce, first.Add(w.opts.MaxDelay).Sub(now)))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-fsw.Events:
			if !ok {
				return errors.New("watch config: fsnotify closed its event channel")
			}
			arm()
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("watch config: fsnotify closed its error channel")
			}
			// An overflow loses events: read the file to be sure.
			w.log.Warn("config watch error", zap.Error(err))
			arm()
		case <-debounce.C:
			first = time.Time{}
			w.check(false)
			w.watchTarget(fsw, dir)
		case <-w.reload:
			w.check(true)
			w.watchTarget(fsw, dir)
		}
	}
}

// check reads and parses the file and applies it if it is valid and new.
// Unless force is set, it skips files whose bytes have not changed and
// does not repeat the last failure's log line.
func (w *Watcher) check(force bool) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		w.lastData = nil
		w.fail(force, fmt.Errorf("read: %w", err))
		return
	}
	if !force && w.lastData != nil && bytes.Equal(data, w.lastData) {
		return
	}
	w.lastData = data
	c, err := ParseFile(w.path, data)
	if err != nil {
		w.fail(force, err)
		return
	}
	w.lastErr = ""
	w.override(c)
	if c.Equal(w.last) {
		w.log.Debug("config unchanged, skipping reload")
		return
	}
	w.last = c
	w.log.Info("config reloaded", zap.Int("peers", len(c.Peers)), zap.Int("services", len(c.Services)))
	w.apply(c)
}

// override applies WatchOptions.Override to c.
func (w *Watcher) override(c *Config) {
	if w.opts.Override != nil {
		w.opts.Override(c)
	}
}

func (w *Watcher) fail(force bool, err error) {
	if msg := err.Error(); force || msg != w.lastErr {
		w.lastErr = msg
		w.log.Error("config reload failed, keeping the running config", zap.Error(err))
		if w.opts.Refused != nil {
			w.opts.Refused(err)
		}
	}
}

// watchTarget also watches the directory of the file's symlink target
// when it is elsewhere, so that edits to the target are seen. It follows
// the target when the symlink moves.
func (w *Watcher) watchTarget(fsw *fsnotify.Watcher, dir string) {
	real, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		return // missing for now: the directory watch sees it come back
	}
	td, err := filepath.Abs(filepath.Dir(real))
	if err != nil {
		return
	}
	if abs, err := filepath.Abs(dir); err == nil && td == abs {
		td = "" // the directory watch covers it
	}
	if td == w.targetDir {
		return
	}
	if w.targetDir != "" {
		_ = fsw.Remove(w.targetDir) // may be gone already, as ConfigMap data dirs are
	}
	w.targetDir = ""
	if td == "" {
		return
	}
	if err := fsw.Add(td); err != nil {
		w.log.Warn("cannot watch the config's symlink target directory", zap.String("dir", td), zap.Error(err))
		return
	}
	w.targetDir = td
}
