// Package integration holds vrouter's namespace tests: each test builds the
// seed's cluster (or a variant) in Linux network namespaces with package
// topology, runs one `vrouter run` per node with package harness, and
// checks what a user of the cluster would see.
//
//	underlay br0 192.168.31.0/24 (netns "underlay")
//	 ├─ hostgw-master eth0 .201 ── vrouter ── vr0 (10.244.0.0/16, 10.96.0.0/12, 169.254.244.1 dev vr0 proto 118)
//	 │    cni0 10.244.0.1/24 ─ nginx-th5pz 10.244.0.4, coredns-xx6mc 10.244.0.2, coredns-8qxfv 10.244.0.3
//	 ├─ hostgw-node   eth0 .202 ── vrouter ── vr0
//	 │    cni0 10.244.1.1/24 ─ nginx-4k7xw 10.244.1.2, nginx-j6zwk 10.244.1.3
//	 └─ hostgw-node2  eth0 .203 ── vrouter ── vr0            (ThreeNodes only)
//	      cni0 10.244.2.1/24 ─ busybox 10.244.2.2
//
// The tests need root (they create namespaces and TUN devices) and skip
// otherwise: go test -race ./integration/...
//
// This package itself holds only tests. What they are built from lives in
// packages under it, which are ordinary importable code with users outside
// the tests: lab (a cluster with a router per node, made for one test:
// the supported API for namespace tests written elsewhere, docs/lab.md),
// built on topology (the namespaces, servers and clients) and harness
// (vrouter processes on a topology), which also run `vrouter demo` and the
// benchmark; kube runs a real
// control plane for the tests against kube-apiserver; bench is the
// kernel-vs-vrouter benchmark command (make bench). Each one's doc.go says
// what it needs and what it promises.
package integration
