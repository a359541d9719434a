// Command vrtest is the one program of the real-cluster test's workload
// pods, in the image vrouter.test/vrtest:1 that package image builds:
// servers that answer with the pod's name, a DNS server for Services, and
// the clients a test runs with `kubectl exec POD -- /vrtest CMD` in an
// image that has no shell.
//
//	client pod                    node: vrouter (Service VIP → backend)      backend pod: vrtest serve
//	vrtest get http://VIP/  ──────────────────────────────────────────────▶  :8080  "<hostname> <client ip:port>"
//	vrtest tcp VIP:9000 MSG ──────────────────────────────────────────────▶  :9000  "<hostname> <client> MSG" per line
//	vrtest udp VIP:9001 MSG ──────────────────────────────────────────────▶  :9001  "<hostname> <client> MSG"
//	vrtest hold VIP:9000    ── a line every 200 ms, one connection ───────▶  :9000
//	vrtest resolve NAME     ── 10.96.0.10:53 ─────────────────────────────▶  vrtest dns: :53 UDP+TCP,
//	                                                                          A/AAAA from GET /api/v1/services
//
// Commands:
//
//	serve                 HTTP on :8080 ($PORT), GET / and /healthz (503 while /tmp/unready exists),
//	                      TCP echo on :9000, UDP echo on :9001 (the image's default command)
//	dns                   DNS for <svc>.<ns>.svc.<domain> (--domain cluster.local) on :53,
//	                      ready on :8080/healthz once it has listed Services
//	get URL               print the body; fail on an error, a non-2xx status or --timeout
//	                      (--cacert FILE: verify https against those CAs)
//	ping ADDR             ICMP echo (-c 3) from an unprivileged ping socket, print each reply
//	tcp ADDR MSG          send MSG as a line to a TCP echo, print the reply
//	udp ADDR MSG          send MSG to a UDP echo (again each second), print the reply
//	udpburst ADDR         --count datagrams of --size bytes to a UDP echo in one write with
//	                      UDP_SEGMENT; fail unless each comes back intact
//	resolve NAME          print NAME's A (or --type AAAA) records from --server (resolv.conf's first), --tcp
//	hold ADDR             one connection to a TCP echo, a line every --interval for --duration;
//	                      fails at the first lost round trip, prints how many succeeded
//	unready | ready       create | remove /tmp/unready
//
// The servers stop cleanly on SIGTERM (as PID 1 of a container, nothing
// else would stop them). vrtest uses only the standard library and
// golang.org/x/net/dns/dnsmessage, not client-go, to stay small; it logs
// plain lines to stderr.
package main
