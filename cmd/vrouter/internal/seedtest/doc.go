// Package seedtest runs the seed's two-node cluster in memory, for tests of
// the operability endpoints: two routers joined by an in-memory underlay
// (router/overlaytest), each with a fake TUN (tun/tuntest) whose kernel
// end the test plays, and each with the seed's Services in nat mode.
//
//	hostgw-master  underlay 192.168.31.201:8285  pods 10.244.0.0/24   Kernel ⇄ vr0 ⇄ router ─┐
//	hostgw-node    underlay 192.168.31.202:8285  pods 10.244.1.0/24   Kernel ⇄ vr0 ⇄ router ─┤ overlaytest
//
//	default/my-service   10.103.92.81:80/TCP round-robin -> 10.244.0.4 (master), 10.244.1.2, 10.244.1.3 (node)
//	kube-system/kube-dns 10.96.0.10 53/UDP dns, 53/TCP dns-tcp, 9153/TCP metrics -> 10.244.0.2, 10.244.0.3 (master)
//
// my-service picks round-robin over its backends sorted by address, so a
// test knows which backend each new connection gets.
package seedtest
