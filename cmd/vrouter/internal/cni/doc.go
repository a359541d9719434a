// Package cni writes the node's CNI network config: the file the container
// runtime reads to give each new pod its interface and address. It is the
// last mile of the pod network, the part flannel does with
// /run/flannel/subnet.env and its CNI plugin; vrouter writes the finished
// conflist itself.
//
//	API server ── Node.spec.podCIDRs ──▶ vrouter ──Write──▶ /etc/cni/net.d/10-vrouter.conflist
//	                                                              │ read by containerd / CRI-O
//	                                                              ▼ for every new pod
//	pod eth0 ── veth ── cni0 (bridge, the pod CIDR's gateway) ── node kernel ── vr0 (TUN) ── vrouter
//	             host-local hands out addresses from the pod CIDRs
//
// The conflist runs the stock reference plugins: bridge with host-local
// IPAM (one range set per address family) and portmap for hostPort. The
// bridge is the pods' default gateway; the node kernel routes the cluster
// CIDR to vr0, so traffic to other nodes' pods goes through the router.
// The MTU is the router's TUN MTU: a pod must not send a packet larger
// than one overlay datagram carries.
//
// The package does not install plugin binaries (the node's CNI plugins
// package does: bridge, host-local, portmap, and loopback, which
// containerd runs itself for each pod's lo), does not choose the pod
// CIDRs (the API server or the config file does) and never deletes the
// file: a runtime that creates a pod while vrouter restarts still needs
// it, and the bridge it names stays valid.
package cni
