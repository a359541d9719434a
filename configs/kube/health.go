package kube

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// relogAfter is how often a list/watch that keeps failing for the same
// cause is logged again.
const relogAfter = time.Minute

// health tracks whether each informer's list/watch works. The informers'
// list/watch wrappers report every call's outcome and the reflectors'
// watch error handlers every error, from the informers' goroutines.
type health struct {
	log *zap.Logger

	// mu guards res.
	mu  sync.Mutex
	res map[string]*resourceHealth
}

// resourceHealth is the state of one informer's list/watch.
type resourceHealth struct {
	// since is the first failure of the current streak; zero while the
	// list/watch works.
	since   time.Time
	cause   string
	lastErr string
	logged  time.Time
}

func newHealth(log *zap.Logger, resources ...string) *health {
	h := &health{log: log, res: make(map[string]*resourceHealth, len(resources))}
	for _, r := range resources {
		h.res[r] = &resourceHealth{}
	}
	return h
}

// fail records a failed list or watch of resource and logs it: the first
// failure of a streak, a change of cause, and then once a minute.
func (h *health) fail(resource string, err error) {
	cause, benign := classify(resource, err)
	if benign {
		// The reflector re-lists or re-watches at once; not a failure.
		h.log.Debug("watch ended; resuming", zap.String("resource", resource), zap.Error(err))
		return
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.res[resource]
	r.lastErr = err.Error()
	switch {
	case r.since.IsZero():
		r.since, r.cause, r.logged = now, cause, now
		h.log.Error("list/watch failed: "+cause+"; keeping the last state applied and retrying",
			zap.String("resource", resource), zap.Error(err))
	case r.cause != cause:
		r.cause, r.logged = cause, now
		h.log.Error("list/watch failed: "+cause+"; keeping the last state applied and retrying",
			zap.String("resource", resource), zap.Duration("failingFor", now.Sub(r.since)), zap.Error(err))
	case now.Sub(r.logged) >= relogAfter:
		r.logged = now
		h.log.Warn("list/watch still failing: "+cause,
			zap.String("resource", resource), zap.Duration("failingFor", now.Sub(r.since).Round(time.Second)), zap.Error(err))
	}
}

// ok records a list or watch call of resource that succeeded.
func (h *health) ok(resource string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.res[resource]
	if r.since.IsZero() {
		return
	}
	h.log.Info("list/watch recovered", zap.String("resource", resource),
		zap.Duration("failedFor", time.Since(r.since).Round(time.Millisecond)))
	*r = resourceHealth{}
}

// failing reports the resources whose list/watch has failed for at least
// d without a success since, with the last error of each.
func (h *health) failing(d time.Duration) map[string]string {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[string]string
	for name, r := range h.res {
		if !r.since.IsZero() && now.Sub(r.since) >= d {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = r.lastErr
		}
	}
	return out
}

// classify names the cause of a list/watch error for the log, and reports
// whether it is part of normal operation (an expired resource version, a
// watch the server closed).
func classify(resource string, err error) (cause string, benign bool) {
	switch {
	case errors.Is(err, context.Canceled):
		return "", true
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || errors.Is(err, io.EOF):
		return "", true
	case apierrors.IsUnauthorized(err):
		return "the API server rejected the credentials (expired or invalid token or client certificate)", false
	case apierrors.IsForbidden(err):
		return "forbidden: these credentials may not list and watch " + resource +
			" (vrouter's ClusterRole needs list and watch on nodes, services and endpointslices; see configs/deploy/daemonset.yaml)", false
	case apierrors.IsTooManyRequests(err):
		return "the API server is throttling requests", false
	case utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, context.DeadlineExceeded) || isNetError(err):
		return "cannot reach the API server", false
	}
	return "unexpected error", false
}

func isNetError(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue)
}
