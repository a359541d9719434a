package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/vrouter/vrouter/router/wireguard"
)

// Defaults of PublisherOptions.
const (
	DefaultPublishBackoff    = time.Second
	DefaultPublishMaxBackoff = 2 * time.Minute
	// publishTimeout bounds one patch.
	publishTimeout = 30 * time.Second
)

// FieldManager is the field manager vrouter's writes are recorded under
// (metadata.managedFields).
const FieldManager = "vrouter"

// PublisherOptions configure a KeyPublisher. Zero values are the
// documented defaults.
type PublisherOptions struct {
	// Backoff is the wait before the first retry of a failed patch;
	// each further failure doubles it, up to MaxBackoff. Default
	// DefaultPublishBackoff.
	Backoff time.Duration
	// MaxBackoff caps the wait between retries. Default
	// DefaultPublishMaxBackoff.
	MaxBackoff time.Duration
	// Logger receives one line per patch made or failed. Default: none.
	Logger *zap.Logger
}

// KeyPublisher keeps this router's WireGuard public key in the
// AnnotationWireGuardKey annotation of its own Node, where its peers'
// Sources read it, and keeps that annotation off the Node when the
// overlay is not encrypted.
//
// It holds two keys: the one the Node should carry (Set; the zero Key
// means none: the annotation removed) and the one it carries as the
// Source last saw it (Observe). Whenever they differ Run patches the
// Node's metadata.annotations, and nothing else, with a JSON merge patch:
// when the overlay starts listening, after the key is rotated, and when
// something else removed or changed the annotation (a Node deleted and
// registered again by its kubelet comes back without it). Until both are
// known it does nothing, so a router that runs without encryption and
// never published a key writes nothing at all.
//
// A failed patch (the API server unreachable, the request refused) is
// logged and retried with exponential backoff; the data path never waits
// for it. That the router may patch only this annotation of only its own
// Node is the API server's to enforce (configs/deploy/rbac.yaml's
// ValidatingAdmissionPolicy), not this type's.
//
// Set and Observe may be called from any goroutine; Run's goroutine makes
// every API call.
type KeyPublisher struct {
	client kubernetes.Interface
	node   string
	opts   PublisherOptions
	log    *zap.Logger
	kick   chan struct{} // cap 1: Set and Observe poke Run's goroutine

	// mu guards want, seen, haveWant, haveSeen and observed, which
	// counts the calls of Observe.
	mu       sync.Mutex
	want     wireguard.Key
	seen     wireguard.Key
	haveWant bool
	haveSeen bool
	observed uint64
}

// NewKeyPublisher returns a KeyPublisher of the Node named node. It starts
// nothing; call Run.
func NewKeyPublisher(client kubernetes.Interface, node string, opts PublisherOptions) *KeyPublisher {
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultPublishBackoff
	}
	if opts.MaxBackoff < opts.Backoff {
		opts.MaxBackoff = max(DefaultPublishMaxBackoff, opts.Backoff)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &KeyPublisher{client: client, node: node, opts: opts, log: log, kick: make(chan struct{}, 1)}
}

// Set sets the public key the Node should carry; the zero Key: none.
func (p *KeyPublisher) Set(k wireguard.Key) {
	p.mu.Lock()
	p.want, p.haveWant = k, true
	p.mu.Unlock()
	p.poke()
}

// Observe records the key the Node carries now (Node.PublicKey as the
// Source read it; zero for none or one that is not a key).
func (p *KeyPublisher) Observe(k wireguard.Key) {
	p.mu.Lock()
	p.seen, p.haveSeen = k, true
	p.observed++
	p.mu.Unlock()
	p.poke()
}

func (p *KeyPublisher) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// pending returns the key to publish, if the Node's differs from it, and
// the count of observations it was decided on.
func (p *KeyPublisher) pending() (wireguard.Key, uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.want, p.observed, p.haveWant && p.haveSeen && p.want != p.seen
}

// Run patches the Node whenever its key differs from the wanted one,
// until ctx is done. It returns nil then: a patch that never succeeded
// was logged at each attempt.
func (p *KeyPublisher) Run(ctx context.Context) error {
	backoff := p.opts.Backoff
	failures := 0
	retry := time.NewTimer(0)
	<-retry.C
	waiting := false // a retry is scheduled: pokes wait for it
	// verify: an observation came while the last patch was on its way.
	// It may be older than the patch (a watch event delivered late) or
	// newer (someone removed the key again); the Node itself says which
	// before another patch goes.
	verify := false
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return nil
		case <-p.kick:
			if waiting {
				continue
			}
		case <-retry.C:
			waiting = false
		}
		want, observed, ok := p.pending()
		if !ok {
			backoff, failures, verify = p.opts.Backoff, 0, false
			continue
		}
		if verify {
			got, err := p.current(ctx)
			if err == nil && got == want {
				p.mu.Lock()
				verify = p.observed != observed
				if !verify {
					p.seen = got
				}
				p.mu.Unlock()
				continue
			}
			verify = false
		}
		got, err := p.patch(ctx, want)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil && got != want {
			// Something (a mutating webhook) undid it: patching
			// again at once would loop.
			err = fmt.Errorf("the patched Node %s carries key %q in %s, not %q", p.node, got, AnnotationWireGuardKey, want)
		}
		if err != nil {
			failures++
			p.log.Warn("publish this router's WireGuard key on its Node failed; retrying (peers do not route to this node until they read its key)",
				zap.String("node", p.node), zap.String("annotation", AnnotationWireGuardKey),
				zap.Int("failures", failures), zap.Duration("retryIn", backoff), zap.Error(err))
			retry.Reset(backoff)
			waiting = true
			backoff = min(2*backoff, p.opts.MaxBackoff)
			continue
		}
		backoff, failures = p.opts.Backoff, 0
		p.mu.Lock()
		if p.observed == observed {
			// Until the Source sees the patched Node.
			p.seen = got
		} else {
			verify = true
		}
		p.mu.Unlock()
		if want.IsZero() {
			p.log.Info("WireGuard key annotation removed from this Node (the overlay is not encrypted)",
				zap.String("node", p.node), zap.String("annotation", AnnotationWireGuardKey))
		} else {
			p.log.Info("WireGuard public key published on this Node",
				zap.String("node", p.node), zap.String("annotation", AnnotationWireGuardKey), zap.Stringer("publicKey", want))
		}
		p.poke() // Set may have changed want meanwhile
	}
}

// current reads the key the Node carries now. It lists the one Node by
// name, which the router's role allows (it lists and watches Nodes; it
// has no get).
func (p *KeyPublisher) current(ctx context.Context) (wireguard.Key, error) {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	l, err := p.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + p.node})
	if err != nil {
		return wireguard.Key{}, fmt.Errorf("read Node %s: %w", p.node, err)
	}
	for _, n := range l.Items {
		if n.Name == p.node {
			k, _ := wireguard.ParseKey(n.Annotations[AnnotationWireGuardKey])
			return k, nil
		}
	}
	return wireguard.Key{}, fmt.Errorf("read Node %s: not found", p.node)
}

// patch sets the annotation to k, or removes it for the zero Key, and
// returns the key the patched Node carries.
func (p *KeyPublisher) patch(ctx context.Context, k wireguard.Key) (wireguard.Key, error) {
	var v any // JSON null: a merge patch removes the key
	if !k.IsZero() {
		v = k.String()
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationWireGuardKey: v}}})
	if err != nil {
		return wireguard.Key{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	n, err := p.client.CoreV1().Nodes().Patch(ctx, p.node, types.MergePatchType, body, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		return wireguard.Key{}, fmt.Errorf("patch Node %s annotation %s: %w", p.node, AnnotationWireGuardKey, err)
	}
	got, _ := wireguard.ParseKey(n.Annotations[AnnotationWireGuardKey])
	return got, nil
}
