package kube_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/router/wireguard"
)

// publisherEnv is a KeyPublisher of the master's Node on a fake clientset
// that records every patch.
type publisherEnv struct {
	t       *testing.T
	client  *fake.Clientset
	p       *kube.KeyPublisher
	logs    *observer.ObservedLogs
	mu      sync.Mutex
	patches []string // bodies, in order
	fail    atomic.Int32
	// onPatch and onList, if set, run as a patch or a list of Nodes
	// arrives, before it is served.
	onPatch, onList atomic.Pointer[func()]
}

func newPublisherEnv(t *testing.T, master *corev1.Node) *publisherEnv {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	e := &publisherEnv{t: t, client: fake.NewClientset(master, makeNode(workerNode)), logs: logs}
	e.client.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchAction)
		if pa.GetPatchType() != types.MergePatchType {
			t.Errorf("patch type %s, want a JSON merge patch", pa.GetPatchType())
		}
		e.mu.Lock()
		e.patches = append(e.patches, pa.GetName()+" "+string(pa.GetPatch()))
		e.mu.Unlock()
		if f := e.onPatch.Load(); f != nil {
			(*f)()
		}
		if e.fail.Load() > 0 {
			e.fail.Add(-1)
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil // the tracker applies it
	})
	e.client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if f := e.onList.Load(); f != nil {
			(*f)()
		}
		return false, nil, nil
	})
	e.p = kube.NewKeyPublisher(e.client, masterNode, kube.PublisherOptions{Backoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: zap.New(core)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	return e
}

func (e *publisherEnv) patchList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.patches...)
}

// annotation returns the master Node's key annotation, and whether it
// has one.
func (e *publisherEnv) annotation() (string, bool) {
	n, err := e.client.CoreV1().Nodes().Get(context.Background(), masterNode, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	v, ok := n.Annotations[kube.AnnotationWireGuardKey]
	return v, ok
}

func (e *publisherEnv) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: timed out; patches %q", what, e.patchList())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestKeyPublisher: the key is published once both keys are known, again
// when it rotates and when something else removes it, not when the Node
// already carries it; and the worker's Node is never touched.
func TestKeyPublisher(t *testing.T) {
	e := newPublisherEnv(t, makeNode(masterNode, func(n *corev1.Node) {
		n.Labels = map[string]string{"keep": "me"}
		n.Annotations = map[string]string{"example.com/other": "x"}
	}))
	k1, k2 := testKey(1), testKey(2)
	e.p.Set(k1)
	time.Sleep(50 * time.Millisecond)
	if got := e.patchList(); len(got) != 0 {
		t.Fatalf("patches %q before the Node was observed, want none", got)
	}
	e.p.Observe(wireguard.Key{})
	e.eventually("the key published", func() bool { v, _ := e.annotation(); return v == k1.String() })

	// The Source sees the patched Node: nothing more to do.
	e.p.Observe(k1)
	time.Sleep(50 * time.Millisecond)
	if got := e.patchList(); len(got) != 1 {
		t.Errorf("patches %q, want exactly one", got)
	}
	// Rotated.
	e.p.Set(k2)
	e.eventually("the rotated key published", func() bool { v, _ := e.annotation(); return v == k2.String() })
	// Someone removes it (a re-registered Node): put back.
	n, _ := e.client.CoreV1().Nodes().Get(context.Background(), masterNode, metav1.GetOptions{})
	delete(n.Annotations, kube.AnnotationWireGuardKey)
	mustUpdate(t, e.client.CoreV1().Nodes().Update, n)
	e.p.Observe(wireguard.Key{})
	e.eventually("the removed key put back", func() bool { v, _ := e.annotation(); return v == k2.String() })

	n, _ = e.client.CoreV1().Nodes().Get(context.Background(), masterNode, metav1.GetOptions{})
	if n.Labels["keep"] != "me" || n.Annotations["example.com/other"] != "x" {
		t.Errorf("Node after the patches: labels %v, annotations %v; want the others untouched", n.Labels, n.Annotations)
	}
	for _, p := range e.patchList() {
		if want := masterNode + ` {"metadata":{"annotations":{"` + kube.AnnotationWireGuardKey + `":"`; len(p) < len(want) || p[:len(want)] != want {
			t.Errorf("patch %q, want one of %s's key annotation only", p, masterNode)
		}
	}
	if !logged(e.logs, "WireGuard public key published on this Node") {
		t.Errorf("no log line for the published key")
	}
}

// TestKeyPublisherStaleObservation: the Source's view of the Node from
// before a patch, delivered while the patch is on its way (a watch event
// late on a busy node), does not patch the same key again: the Node is
// read first. A removal made while the patch was on its way is acted on.
func TestKeyPublisherStaleObservation(t *testing.T) {
	e := newPublisherEnv(t, makeNode(masterNode))
	k1, k2 := testKey(1), testKey(2)
	e.p.Set(k1)
	e.p.Observe(wireguard.Key{})
	e.eventually("the key published", func() bool { v, _ := e.annotation(); return v == k1.String() })
	e.p.Observe(k1)
	stale := func() { e.p.Observe(k1) }
	e.onPatch.Store(&stale)
	e.p.Set(k2)
	e.eventually("the rotated key published", func() bool { v, _ := e.annotation(); return v == k2.String() })
	time.Sleep(100 * time.Millisecond)
	e.onPatch.Store(nil)
	if got := e.patchList(); len(got) != 2 {
		t.Fatalf("patches %q, want two: k1, then k2 once", got)
	}

	// A removal the observation during the patch reports, which the
	// Node shows when read: acted on, the key patched again.
	var lists atomic.Int32
	removeOnce := func() {
		if lists.Add(1) != 1 {
			return
		}
		o, err := e.client.Tracker().Get(corev1.SchemeGroupVersion.WithResource("nodes"), "", masterNode)
		if err != nil {
			t.Error(err)
			return
		}
		n := o.(*corev1.Node).DeepCopy()
		delete(n.Annotations, kube.AnnotationWireGuardKey)
		if err := e.client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("nodes"), n, ""); err != nil {
			t.Error(err)
		}
	}
	e.onList.Store(&removeOnce)
	removed := func() { e.p.Observe(wireguard.Key{}) }
	e.onPatch.Store(&removed)
	e.p.Set(k1)
	e.eventually("the key put back after its removal", func() bool {
		v, _ := e.annotation()
		return v == k1.String() && len(e.patchList()) == 4
	})
	if lists.Load() == 0 {
		t.Error("the Node was not read before patching again")
	}
}

// TestKeyPublisherRemoves: with no key wanted (encryption off), a key on
// the Node is removed with one patch, and a Node without one is not
// patched at all.
func TestKeyPublisherRemoves(t *testing.T) {
	e := newPublisherEnv(t, makeNode(masterNode, func(n *corev1.Node) {
		n.Annotations = map[string]string{kube.AnnotationWireGuardKey: testKey(1).String()}
	}))
	e.p.Observe(testKey(1))
	e.p.Set(wireguard.Key{})
	e.eventually("the stale key removed", func() bool { _, ok := e.annotation(); return !ok })
	e.p.Observe(wireguard.Key{})
	time.Sleep(50 * time.Millisecond)
	want := masterNode + ` {"metadata":{"annotations":{"` + kube.AnnotationWireGuardKey + `":null}}}`
	if got := e.patchList(); len(got) != 1 || got[0] != want {
		t.Errorf("patches %q, want exactly [%q]", got, want)
	}

	e2 := newPublisherEnv(t, makeNode(masterNode))
	e2.p.Set(wireguard.Key{})
	e2.p.Observe(wireguard.Key{})
	time.Sleep(50 * time.Millisecond)
	if got := e2.patchList(); len(got) != 0 {
		t.Errorf("patches %q of a Node without the annotation, want none", got)
	}
}

// TestKeyPublisherRetries: failed patches are logged and retried with
// backoff until one succeeds.
func TestKeyPublisherRetries(t *testing.T) {
	e := newPublisherEnv(t, makeNode(masterNode))
	e.fail.Store(3)
	e.p.Observe(wireguard.Key{})
	e.p.Set(testKey(1))
	e.eventually("the key published after three failures", func() bool { v, _ := e.annotation(); return v == testKey(1).String() })
	if got := len(e.patchList()); got != 4 {
		t.Errorf("%d patches, want 4 (three failed, one applied)", got)
	}
	if n := e.logs.FilterMessageSnippet("failed; retrying").Len(); n != 3 {
		t.Errorf("%d log lines of a failed patch, want 3", n)
	}
}

func logged(logs *observer.ObservedLogs, msg string) bool {
	return logs.FilterMessageSnippet(msg).Len() > 0
}
