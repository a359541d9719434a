// Package cluster runs a real Kubernetes cluster on one Linux machine, for
// tests that put vrouter where users put it: as the only pod network and
// Service proxy of real kubelets.
//
// It is a library for tests (root only), like integration/topology, on
// which it builds. Start makes, per run:
//
//	netns "underlay"   br0  192.168.31.0/24 (topology's underlay)
//	  │
//	  ├─ netns "hostgw-master"  eth0 192.168.31.201
//	  │    control plane: etcd 127.0.0.1:2379, kube-apiserver 192.168.31.201:6443,
//	  │    kube-controller-manager (node IPAM from 10.244.0.0/16, /24 per node;
//	  │    the EndpointSlice controller), kube-scheduler
//	  │    node: containerd + kubelet "hostgw-master"
//	  │
//	  └─ netns "hostgw-node"    eth0 192.168.31.202
//	       node: containerd + kubelet "hostgw-node"
//
// the seed's two nodes (the control plane on the master, as kubeadm puts
// it), with Service CIDR 10.96.0.0/12 and cluster CIDR 10.244.0.0/16. No
// route, no bridge and no iptables rule is added for the pods: their
// network is whatever the test deploys (vrouter's DaemonSet, which writes
// the CNI config; until then the kubelets report NetworkReady=false and
// only host-network pods run).
//
// Each node's containerd and kubelet share one private mount namespace
// (`unshare -m --propagation slave`), entered into the node's network
// namespace with nsenter. Inside it, per-node directories are bind-mounted
// over the host paths the kubelet, containerd and CNI hard-code or a
// node keeps for itself (/var/lib/kubelet/device-plugins,
// /var/log/containers, /var/lib/cni, /run/containerd, /etc/cni/net.d,
// /run/vrouter): two nodes on one kernel then keep apart what separate
// machines would, hostPath volumes included. Each kubelet has its own
// cgroup root, its own root, certificate and log directories.
//
// What the host needs: containerd, ctr and runc (Debian's containerd 1.6
// and runc 1.1 are known to work), the CNI plugins in /usr/lib/cni
// (containernetworking-plugins), etcd, and kube-apiserver, kubelet,
// kube-controller-manager, kube-scheduler and kubectl v1.37 (make
// kube-tools builds them into .cache/bin). Start skips the test when one
// is missing, or fails it with VROUTER_REQUIRE_KUBE=1.
//
// Facts of these machines the cluster works around: the host has no
// CAP_SYS_RESOURCE, so containerd clamps the OOM score it is asked for
// (restrict_oom_score_adj) and the kubelet sets none (oomScoreAdj 0); the
// host is on cgroup v1 (failCgroupV1 false); the kubelet rewrites global
// sysctls (kernel.panic, kernel.panic_on_oops, vm.overcommit_memory, ...),
// which Close restores; kube-apiserver stops before etcd.
//
// Close stops everything Start began (kubelets, every process of the
// nodes' cgroups, containerd shims, containerd, the control plane), and
// removes the cgroups, mount points it created, namespaces and files. The
// host's iptables are never touched.
package cluster
