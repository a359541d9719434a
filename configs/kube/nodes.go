package kube

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vrouter/vrouter/router/wireguard"
)

// Flannel's node annotations (default --kube-annotation-prefix). flannel
// writes public-ip itself; an operator sets public-ip-overwrite to choose
// another underlay address, and it wins.
const (
	AnnotationPublicIP          = "flannel.alpha.coreos.com/public-ip"
	AnnotationPublicIPOverwrite = "flannel.alpha.coreos.com/public-ip-overwrite"
)

// AnnotationWireGuardKey holds a router's WireGuard public key (base64,
// as `vrouter pubkey` prints it) on its own Node, as flannel's wireguard
// backend publishes its key in backend-data. Each router writes its own
// (KeyPublisher) and reads its peers' (Node.PublicKey).
const AnnotationWireGuardKey = "vrouter.io/wireguard-public-key"

// nodeFrom converts a Node. It reports, as plain sentences for the log,
// what it had to ignore; a Node without a pod CIDR has none in n.PodCIDRs
// and one without any address an invalid n.Address, for the caller to
// decide.
func nodeFrom(kn *corev1.Node) (n Node, problems []string) {
	n = Node{Name: kn.Name, Zone: kn.Labels[corev1.LabelTopologyZone]}
	cidrs, field := kn.Spec.PodCIDRs, "spec.podCIDRs"
	if len(cidrs) == 0 && kn.Spec.PodCIDR != "" {
		cidrs, field = []string{kn.Spec.PodCIDR}, "spec.podCIDR"
	}
	for i, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s[%d] %q is not a CIDR (want e.g. 10.244.1.0/24); ignoring it", field, i, s))
			continue
		}
		n.PodCIDRs = append(n.PodCIDRs, p.Masked())
	}
	if s, ok := kn.Annotations[AnnotationWireGuardKey]; ok {
		k, err := wireguard.ParseKey(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("annotation %s: %v; ignoring it (an encrypted overlay does not route to a node without a key)", AnnotationWireGuardKey, err))
		} else {
			n.PublicKey = k
		}
	}
	for _, key := range []string{AnnotationPublicIPOverwrite, AnnotationPublicIP} {
		s, ok := kn.Annotations[key]
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			problems = append(problems, fmt.Sprintf("annotation %s %q is not an IP address; ignoring it", key, s))
			continue
		}
		n.Address = a.Unmap()
		return n, problems
	}
	for _, typ := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, na := range kn.Status.Addresses {
			if na.Type != typ {
				continue
			}
			a, err := netip.ParseAddr(na.Address)
			if err != nil || a.Zone() != "" {
				problems = append(problems, fmt.Sprintf("status.addresses %s %q is not an IP address; ignoring it", typ, na.Address))
				continue
			}
			n.Address = a.Unmap()
			return n, problems
		}
	}
	return n, problems
}

// trimNode keeps what nodeFrom reads, so that the informer's cache does
// not hold every node's images, conditions and managed fields.
func trimNode(obj any) (any, error) {
	kn, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:            kn.Name,
			UID:             kn.UID,
			ResourceVersion: kn.ResourceVersion,
			Labels:          keep(kn.Labels, corev1.LabelTopologyZone),
			Annotations:     keep(kn.Annotations, AnnotationPublicIP, AnnotationPublicIPOverwrite, AnnotationWireGuardKey),
		},
		Spec: corev1.NodeSpec{PodCIDR: kn.Spec.PodCIDR, PodCIDRs: kn.Spec.PodCIDRs},
	}
	out.Status.Addresses = kn.Status.Addresses
	return out, nil
}

// keep returns the entries of m whose keys are listed, or nil if none.
func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}
