package kube

import (
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/lb"
	"github.com/vrouter/vrouter/router/wireguard"
)

// Sink takes the desired state a Source derives from the API server: the
// router's nodes and the load balancer's Services.
//
// Calls come from the goroutine running Source.Run only, one at a time,
// and none before every informer has synced. The first calls are one
// SetServices with the whole Service table, then SetNodes as soon as this
// node has a pod CIDR; after that each call carries one change, and a call
// that would change nothing is not made.
//
// The Source never modifies what it passes after the call; the Sink must
// not modify it either, but may keep it. A Sink method returns an error
// when it did not apply the state (for example lb.Table refused a
// Service): the Source logs it and passes the then-current desired state
// again after Options.RetryInterval. A Sink must not block for long: it
// delays every later change.
type Sink interface {
	// SetNodes sets this node and its peers: every other Node that has a
	// pod CIDR and an underlay address, sorted by name. It is not called
	// until this node has a pod CIDR. A deleted or unusable peer is
	// missing from the next call; a peer without a WireGuard key
	// (Node.PublicKey) is passed all the same, for the router to count
	// and leave unrouted over an encrypted overlay.
	SetNodes(self Node, peers []Node) error
	// SetServices replaces the whole Service table, sorted by namespace
	// and name. It is called once, first, after the informers synced; a
	// Service that was programmed before and is not listed is no longer
	// desired.
	SetServices(svcs []lb.Service) error
	// UpsertService adds svc or replaces the Service of the same
	// namespace and name.
	UpsertService(svc lb.Service) error
	// DeleteService removes the Service namespace/name.
	DeleteService(namespace, name string) error
}

// Node is a Kubernetes Node as the router needs it.
type Node struct {
	Name string
	// PodCIDRs are spec.podCIDRs (spec.podCIDR on clusters without
	// dual-stack), masked, in the API's order: at most one per family.
	PodCIDRs []netip.Prefix
	// Address is the node's underlay address, where its router's overlay
	// socket listens: flannel's public-ip-overwrite annotation, else its
	// public-ip annotation, else the first InternalIP, else the first
	// ExternalIP of status.addresses. It is invalid (the zero Addr) only
	// for this node, when the Node lists no address.
	Address netip.Addr
	// Zone is the topology.kubernetes.io/zone label.
	Zone string
	// PublicKey is the node's router's WireGuard public key, from the
	// AnnotationWireGuardKey annotation; zero if the Node has none or
	// one that is not a key. An encrypted overlay does not route to a
	// peer without one.
	PublicKey wireguard.Key
}

// Equal reports whether n and o are the same desired state.
func (n *Node) Equal(o *Node) bool {
	return n.Name == o.Name && n.Address == o.Address && n.Zone == o.Zone && n.PublicKey == o.PublicKey &&
		slices.Equal(n.PodCIDRs, o.PodCIDRs)
}

func nodesEqual(a, b []Node) bool {
	return slices.EqualFunc(a, b, func(x, y Node) bool { return x.Equal(&y) })
}
