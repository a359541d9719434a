// Package kubetest holds test helpers for package kube: Recorder, a Sink
// that keeps what it is given, for unit tests with a fake clientset and
// for integration tests against a real API server.
package kubetest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
)

// Recorder is a kube.Sink that applies each call to an in-memory copy of
// the desired state and logs the call. It is safe for concurrent use.
type Recorder struct {
	// Fail, if set, is asked before each call is applied, with the
	// call's log line; a non-nil error is returned and nothing applied.
	// Set it before the Source runs.
	Fail func(call string) error

	// mu guards the fields below.
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every call
	self     kube.Node
	peers    []kube.Node
	nodesSet bool
	services map[lb.ServiceName]lb.Service
	calls    []string
}

var _ kube.Sink = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{changed: make(chan struct{}), services: map[lb.ServiceName]lb.Service{}}
}

func (r *Recorder) call(line string, apply func()) error {
	if r.Fail != nil {
		if err := r.Fail(line); err != nil {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, line+" (failed)")
			r.notifyLocked()
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	apply()
	r.calls = append(r.calls, line)
	r.notifyLocked()
	return nil
}

func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// SetNodes implements kube.Sink.
func (r *Recorder) SetNodes(self kube.Node, peers []kube.Node) error {
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.Name
	}
	return r.call(fmt.Sprintf("SetNodes %s peers=[%s]", self.Name, strings.Join(names, " ")), func() {
		r.self, r.peers, r.nodesSet = self, slices.Clone(peers), true
	})
}

// SetServices implements kube.Sink.
func (r *Recorder) SetServices(svcs []lb.Service) error {
	return r.call(fmt.Sprintf("SetServices %d", len(svcs)), func() {
		clear(r.services)
		for _, s := range svcs {
			r.services[s.Key()] = s
		}
	})
}

// UpsertService implements kube.Sink.
func (r *Recorder) UpsertService(svc lb.Service) error {
	return r.call("UpsertService "+svc.Key().String(), func() { r.services[svc.Key()] = svc })
}

// DeleteService implements kube.Sink.
func (r *Recorder) DeleteService(namespace, name string) error {
	n := lb.ServiceName{Namespace: namespace, Name: name}
	return r.call("DeleteService "+n.String(), func() { delete(r.services, n) })
}

// Services returns the current Services, sorted by namespace and name.
func (r *Recorder) Services() []lb.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]lb.Service, 0, len(r.services))
	for _, s := range r.services {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b lb.Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

// Service returns the current Service namespace/name.
func (r *Recorder) Service(namespace, name string) (lb.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.services[lb.ServiceName{Namespace: namespace, Name: name}]
	return s, ok
}

// Nodes returns the last SetNodes arguments, and false if there was none.
func (r *Recorder) Nodes() (self kube.Node, peers []kube.Node, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.self, slices.Clone(r.peers), r.nodesSet
}

// Calls returns the log of calls so far, one line each: "SetNodes self
// peers=[a b]", "SetServices 2", "UpsertService ns/name", "DeleteService
// ns/name", with " (failed)" appended to those Fail refused.
func (r *Recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Wait blocks until cond returns true, checking it after every call, and
// returns ctx's error if ctx is done first.
func (r *Recorder) Wait(ctx context.Context, cond func() bool) error {
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}
