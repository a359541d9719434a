// Command bench measures vrouter against the kernel it replaces — flannel
// host-gw routes plus kube-proxy's iptables chains — on the seed's
// cluster in network namespaces, side by side on the same machine, and
// prints the results as Markdown tables (ratios vrouter ÷ kernel) and,
// with --json, as JSON for tracking.
//
//	make bench         # go run ./integration/bench, about 7 minutes, as root
//	make bench-smoke   # --smoke: about 45 s; fails only if a measurement cannot be taken
//	go run ./integration/bench --modes kernel-wireguard-go,vrouter,vrouter-wireguard \
//	    --only tcp-1,tcp-4,udp-64,udp-1400,icmp,tcp-rr,http-close --rounds 1 --no-control-plane
//	                   # the encrypted rows alone (and their profile), about 2 minutes
//
// # Topology
//
// One copy of topology.Seed per data path, each in its own namespaces
// ("vrbench-<pid>-k-…", "-v-…", "-p-…", "-w-…", "-e-…", "-b-…"), all built before the first
// measurement and measured in turns:
//
//	underlay br0 192.168.31.0/24, MTU 1500
//	 ├─ hostgw-master eth0 .201   cni0 10.244.0.1/24
//	 │    ├─ nginx-th5pz   10.244.0.4   iperf3/ping/request-response client; HTTP backend
//	 │    ├─ coredns-xx6mc 10.244.0.2
//	 │    └─ coredns-8qxfv 10.244.0.3   ClusterIP load generator
//	 ├─ hostgw-node   eth0 .202   cni0 10.244.1.1/24
//	 │    ├─ nginx-4k7xw   10.244.1.2   iperf3 server, sockperf server; HTTP backend
//	 │    └─ nginx-j6zwk   10.244.1.3   HTTP backend
//	 └─ outside-client eth0 .100  not a node (no pods, router or pod routes): NodePort load generator
//
//	my-service 10.103.92.81:80 -> 10.244.0.4, 10.244.1.2, 10.244.1.3 (nginx on :80)
//	           type NodePort, nodePort 30080 (externalTrafficPolicy Cluster), not in vrouter-proxy
//	kube-dns   10.96.0.10 53/UDP, 53/TCP, 9153/TCP -> 10.244.0.2, 10.244.0.3 (programmed, not loaded)
//
//	kernel         topology.InstallKernelHostGW (10.244.1.0/24 via 192.168.31.202 dev eth0 …) and,
//	               on each node, kube-proxy's filter and nat rules for both Services
//	               (kubeproxy.go; KUBE-SERVICES from PREROUTING and OUTPUT, KUBE-SVC-<hash> with
//	               statistic mode random 0.3333333333 / 0.5000000000, KUBE-SEP-<hash> DNAT,
//	               KUBE-MARK-MASQ / KUBE-POSTROUTING masquerade; the node port: KUBE-SERVICES'
//	               last rule `-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`, KUBE-NODEPORTS
//	               --dport 30080 -> KUBE-EXT-<hash> -> KUBE-MARK-MASQ, KUBE-SVC-<hash>)
//	               through iptables-restore.
//	vrouter        one `vrouter run` per node (harness.WriteConfig with harness.SeedServices,
//	               nat mode); the node kernels hold only vr0's routes. The node port is
//	               served by the router's host listeners on the node's addresses, which
//	               relay each connection to an endpoint dialed from the node. When
//	               `vrouter validate` refuses type: NodePort (a --vrouter from before node
//	               ports), the NodePort rows are n/a for vrouter, with the reason.
//	vrouter-proxy  the same with my-service in proxy mode, when lb/proxy.go exists and
//	               `vrouter validate` accepts mode: proxy; otherwise reported as n/a.
//	kernel-wireguard-go
//	               the encrypted baseline (wireguard.go): on each node `wireguard-go -f
//	               wg<pid>m|n` (make wireguard-go builds it into .cache/bin), configured
//	               with `wg set … peer <the other node> allowed-ips <its pod CIDR>
//	               endpoint <its underlay address>:51820`, MTU 1420, the peer's pod CIDR
//	               routed into it, and kube-proxy's chains as on the kernel bed. Without
//	               wireguard-go or wg (wireguard-tools) its column is n/a, with the reason.
//	vrouter-wireguard
//	               vrouter with overlay.encryption wireguard (a key per node, each
//	               peer's public key in the config file), nat mode, no node ports or
//	               egress. The kernel's own WireGuard is tried (`ip link add … type
//	               wireguard` in a node namespace) and reported n/a where the kernel
//	               has no module; it is not measured.
//
//	vrouter-busypoll
//	               vrouter with router.busyPoll 10ms (the opt-in low-latency
//	               mode), nat mode, the seed's Services: round trips, one
//	               stream, small datagrams, and what the routers cost, busy
//	               and at rest.
//
// --modes builds and measures only some of these.
//
// Every node has net.bridge.bridge-nf-call-iptables=1 (Kubernetes needs
// it for same-node Service replies under kube-proxy), and the client pods
// and outside-client use ports 1024-65535; both modes get the same
// settings.
//
// # Endpoints
//
// The endpoints are the ones users run, each as cheap as it gets, so that
// the data path, not an endpoint sharing the two cores with it, runs out
// first: nginx (one process, no access log) serves HTTP in my-service's
// backends and as the egress server, answering its namespace's name and
// the client's address (X-Client-Addr) as topology's ServeHTTP does; wrk
// loads it (two threads, 64 connections: with fewer, the kernel baseline
// is bound by wrk on two cores); iperf3 sends the streams and
// datagrams; iputils' ping the sparse echoes. The endpoints table gives
// each endpoint's CPU (iperf3's own -J figures; wrk's rusage; the nginx
// processes' utime+stime), and the kernel bed's HTTP rows run a second
// time with two wrk threads and 64 connections: a rate that rises then
// says the baseline was bound by its generator.
//
// # Measurements
//
// Each round runs every measurement on every mode before the next
// measurement (kernel, vrouter, proxy; the order reverses every other
// round), so drift and load from elsewhere on the machine hit all modes
// alike. Tables show the median of the rounds; JSON has every sample.
//
//   - pod→pod TCP: iperf3 -P 1 and -P 4, nginx-th5pz → nginx-4k7xw; also
//     the average size of the packets hostgw-master's eth0 sent meanwhile
//     (GSO super-packets in the kernel, overlay datagrams with vrouter).
//   - UDP: iperf3 -u -b 10G with 64- and 1400-byte payloads: the offered
//     load is what iperf3's one sending thread manages on that path
//     (reported as offered = received + lost); received packets per
//     second and loss, as iperf3's receiver counts them. The paced rows
//     offer both data paths the same load, 50,000 datagrams a second
//     (iperf3 -b, in bursts of a millisecond's worth), and report what
//     arrived and the loss.
//   - latency: ICMP echo back-to-back (topology.Ping, one probe at a
//     time), ICMP echo one every 5 ms (iputils' ping -i 0.005: the
//     router idles between echoes, as under health checks and
//     interactive traffic) and 64-byte TCP request/response on one
//     connection (sockperf: pp from the client pod, sr in the server
//     pod, full round trips after its warm-up); p50 and p99.
//   - idle CPU: both routers' utime+stime over 3 s with no traffic, half
//     a second after the last measurement's (nat, wireguard, busy-poll).
//   - ClusterIP: wrk -t2 -c64 in coredns-8qxfv GETs my-service as fast
//     as answers come back, either each request on a new connection
//     ("Connection: close": new connections/s) or on kept-alive
//     connections (requests/s).
//   - NodePort: the same load from outside-client to my-service's node
//     port on hostgw-master's address, 192.168.31.201:30080 (kernel and
//     vrouter; the host relay is the same in proxy mode). Before the
//     first round each bed checks that the node port answers on both
//     nodes' addresses; if it does not, the NodePort measurements fail
//     with that error and the run fails. Target: vrouter ≥ 0.5× the
//     kernel's new connections/s.
//   - egress (egress.go): a server at 198.51.100.10 on outside-client,
//     which both nodes route via it; nginx-th5pz runs iperf3 to it (one
//     stream, up and down with -R) and coredns-8qxfv the new-connection
//     load. kernel: flannel's masquerade rules; vrouter:
//     egress.masquerade. Target: vrouter ≥ 0.5× the kernel. The
//     new-connection load runs again at once, 20 s more (smoke 2 s), for
//     the sustained rate, once every port toward the server has been
//     used; with it the SYNs retransmitted (client pod and node) and the
//     SYNs the server dropped in TIME_WAIT (TcpExtPAWSTimewait) per 100
//     connections the server opened (measureEgressClose).
//   - the userspace anchor (anchor.go, kernel bed only): the same iperf3
//     and load from a pod namespace whose only way out is slirp4netns
//     --configure --mtu=65520 (Podman's flags) on hostgw-master, in the
//     same rounds (its HTTP server a second nginx on outside-client at
//     198.51.100.11, clear of the kernel bed's TIME_WAIT at .10, with
//     the sustained run too); a table of its own gives vrouter ÷ slirp4netns
//     (target ≥ 3×). Optional: without slirp4netns installed (make
//     check-deps installs it as root) or when it does not come up, its
//     rows are n/a with the reason, and the run does not fail.
//   - CPU per GB: during the TCP runs. vrouter: the routers' utime+stime
//     from /proc/PID/stat (their system calls included, not the softirq
//     work the kernel does for their sockets). kernel: the machine's
//     system+irq+softirq time from /proc/stat, which includes both
//     iperf3 endpoints' TCP stacks and anything else the machine runs.
//     The machine-wide numbers are reported for both modes too.
//   - memory per idle ClusterIP connection (conn-mem; nat and proxy,
//     first round only, before any other load): 2,000 connections (smoke:
//     200) from coredns-8qxfv to my-service, one keep-alive HTTP exchange
//     each, then left open; the hostgw-master router's Go heap + stacks
//     (go_memstats_heap_alloc_bytes + go_memstats_stack_inuse_bytes from
//     its /metrics, which every router serves on 127.0.0.1:9285 of its
//     node) and VmRSS before and after, divided by the connections it
//     tracks (vrouter_nat_flows, vrouter_proxy_connections_active).
//     Each reading is taken just after a garbage collection, which UDP
//     bursts through the routers bring about (connmem.go). Targets: nat
//     ≤ 2 KiB, proxy ≤ 64 KiB per connection. `go test -bench
//     NATFlowMemory ./lb/` measures the nat flow alone, in memory.
//   - memory: each router's VmRSS (and VmHWM in JSON) after the rounds.
//   - encrypted overlay: the pod→pod, UDP, latency and ClusterIP rows
//     also run on kernel-wireguard-go and vrouter-wireguard, in the
//     same rounds; a table of their own gives vrouter-wireguard ÷
//     kernel-wireguard-go (target TCP ≥ 1.0×) and ÷ vrouter's plain
//     overlay (target TCP ≥ 0.6×). CPU per GB there counts the
//     wireguard-go processes against the vrouter processes.
//
// Then, in this process:
//
//   - control plane: lb.Table.Set of 10,000 Services × 10 endpoints from
//     empty, again unchanged, and 1,000 single-endpoint changes through
//     Upsert (p50/p99), and the heap the table holds; against
//     kube-proxy's iptables-restore of the same Services (320,000 rules)
//     in a scratch namespace, again (its full resync), and its partial
//     sync for an endpoint change (KUBE-SERVICES rewritten, one KUBE-SVC
//     chain, one KUBE-SEP chain deleted; --noflush).
//   - forwarding cost in memory: router.Router between tun/tuntest and
//     router/overlaytest with 2 and 1,000 peers (3 and 1,001 routes), 64 B
//     UDP packets; wall and CPU time, allocations, and the share of
//     gVisor's route lookup from a CPU profile.
//   - profile: the vrouter process on the nat cluster's hostgw-master is
//     replaced by the same wiring in this process (router.New, tun.Open,
//     router.ListenUDP from its config file, without the load balancer),
//     and iperf3 runs through it in both directions under the CPU
//     profiler; the same on the vrouter-wireguard bed with the
//     encrypted overlay (wireguard.Listen), whose samples add
//     ChaCha20-Poly1305 and router/wireguard's own code (sessions,
//     replay window, handshakes) to the categories. Each sample is put in one category (system calls by
//     device and direction, copies, allocation, GC, Go scheduler, gVisor,
//     vrouter) and divided by the packets the router moved. Profiles are
//     kept (--profile-dir) for `go tool pprof`.
//
// Timings never fail the run: it exits non-zero only when a measurement
// could not be taken at all (a mode that did not come up, a tool that
// failed every round). Namespaces are removed and every process it
// started is stopped on exit, also on SIGINT; a crashed run's
// namespaces, and the tmpfs its routers' flow files were on, are removed
// by the next run.
package main
