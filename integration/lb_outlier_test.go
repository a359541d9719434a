package integration

// Passive outlier ejection on the seed's cluster: one of my-service's
// three endpoints dies, and clients on the other node keep connecting to
// the ClusterIP.
//
//	underlay br0 192.168.31.0/24
//	 ├─ hostgw-master eth0 .201   coredns-xx6mc 10.244.0.2 (the client)
//	 │    nginx-th5pz 10.244.0.4 (backend)
//	 └─ hostgw-node   eth0 .202
//	      nginx-4k7xw 10.244.1.2 (backend)
//	      nginx-j6zwk 10.244.1.3 (backend that dies: its server stops, so its
//	                  port refuses; or its eth0 goes down, so SYNs to it go
//	                  unanswered and its node sends ICMP host unreachable)
//
//	default/my-service  10.103.92.81:80/TCP (nat or proxy) -> the three
//
// Without ejection, nat mode sends a third of new connections to the dead
// endpoint (kube-proxy does the same until the endpoint leaves its
// EndpointSlice), and proxy mode retries each one elsewhere, paying the
// dial timeout (1 s) every time the dead endpoint is picked and it does not
// answer. With it, the endpoint is left out after three failures in a row.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/topology"
)

func TestLBOutlierEjection(t *testing.T) {
	dead := lbNginxJ6zwk
	client := lbCorednsXx6mc.name
	deadAddr := netip.AddrPortFrom(dead.addr, 80)
	for _, mode := range []string{configs.ModeNAT, configs.ModeProxy} {
		for _, how := range []string{"refused", "unreachable"} {
			t.Run(mode+"/"+how, func(t *testing.T) {
				e := startLB(t, "outl"+mode[:1]+how[:1], []configs.ServiceSpec{
					myService(func(s *configs.ServiceSpec) { s.Mode = mode }),
				})
				e.serveOn(e.c.ServeTCPEcho, 80, lbNginxTh5pz, lbNginx4k7xw)
				srv, err := e.c.ServeTCPEcho(dead.name, deadAddr.String())
				if err != nil {
					t.Fatalf("serve on %s: %v", dead.name, err)
				}
				// Every endpoint answers first.
				for i := range 6 {
					if _, err := e.exchange(client, netip.AddrPortFrom(myServiceVIP, 80), fmt.Sprintf("warm %d", i)); err != nil {
						t.Fatalf("connection %d before %s dies: %v", i, dead.name, err)
					}
				}

				switch how {
				case "refused":
					srv.Close()
				case "unreachable":
					e.podLink(dead, "down")
				}

				const n, workers = 60, 4
				var slow atomic.Int64
				var reachedDead atomic.Int64
				start := time.Now()
				failed, errs := lbParallel(workers, n, func(i int) error {
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					t0 := time.Now()
					payload := fmt.Sprintf("conn %d", i)
					rep, err := e.c.TCPExchange(ctx, client, netip.AddrPortFrom(myServiceVIP, 80), []byte(payload))
					if time.Since(t0) >= time.Second {
						slow.Add(1)
					}
					if err != nil {
						return err
					}
					if rep.Server == dead.name {
						reachedDead.Add(1)
					}
					if string(rep.Payload) != payload {
						return fmt.Errorf("echo %q, want %q", rep.Payload, payload)
					}
					return nil
				})
				took := time.Since(start)
				ep := e.endpointStatus(lbMaster, deadAddr)
				t.Logf("%s mode, %s endpoint %s: %d of %d connections failed, %d took 1 s or more, in %v; endpoint ejected %d times (ejected now: %v)",
					mode, how, dead.addr, failed, n, slow.Load(), took.Round(time.Millisecond), ep.Ejections, ep.Ejected)
				if ep.Ejections < 1 {
					t.Errorf("vrouter services on %s: endpoint %v ejections = %d, want ≥ 1", lbMaster, deadAddr, ep.Ejections)
				}
				// Without ejection a third would fail (nat) or pay
				// the dial timeout (proxy). Three failures eject; a
				// return after 5 s (on a slow run) costs one more.
				// Unanswered SYNs are seen as failures only after a
				// second, by which time each worker may have picked the
				// dead endpoint once: up to workers (at least three)
				// before the ejection.
				const most = workers + 2
				switch mode {
				case configs.ModeNAT:
					if failed > most {
						t.Errorf("%d of %d connections failed, want at most %d (those before the ejection, then one per return), e.g. %v", failed, n, most, errs)
					}
				case configs.ModeProxy:
					if failed > 0 {
						t.Errorf("%d of %d connections failed, want none (proxy mode retries), e.g. %v", failed, n, errs)
					}
					if s := slow.Load(); s > most {
						t.Errorf("%d of %d connections took 1 s or more, want at most %d (the dial timeouts before the ejection)", s, n, most)
					}
				}

				// The endpoint comes back: after its ejection it takes
				// connections again.
				switch how {
				case "refused":
					if _, err := e.c.ServeTCPEcho(dead.name, deadAddr.String()); err != nil {
						t.Fatalf("serve on %s again: %v", dead.name, err)
					}
				case "unreachable":
					e.podLink(dead, "up")
				}
				back := time.Now()
				deadline := back.Add(90 * time.Second)
				for i := 0; ; i++ {
					rep, err := e.exchange(client, netip.AddrPortFrom(myServiceVIP, 80), fmt.Sprintf("back %d", i))
					if err == nil && rep.Server == dead.name {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s not back in use 90 s after it came back (last: %v, %v)", dead.name, rep.Server, err)
					}
					time.Sleep(200 * time.Millisecond)
				}
				t.Logf("%s back in use %v after it came back", dead.name, time.Since(back).Round(time.Millisecond))
				e.requireRouters()
			})
		}
	}
}

// podLink sets pod's eth0 up or down; up restores its default route,
// which the kernel removed with the link.
func (e *lbEnv) podLink(pod lbPod, state string) {
	e.t.Helper()
	if out, err := e.c.Command(pod.name, "ip", "link", "set", topology.PodLink, state).CombinedOutput(); err != nil {
		e.t.Fatalf("ip link set %s %s in %s: %v: %s", topology.PodLink, state, pod.name, err, out)
	}
	if state != "up" {
		return
	}
	gw := e.spec.Nodes[0].Gateway()
	for _, n := range e.spec.Nodes {
		if n.Name == pod.node {
			gw = n.Gateway()
		}
	}
	out, err := e.c.Command(pod.name, "ip", "route", "replace", "default", "via", gw.String(), "dev", topology.PodLink).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ip route replace default via %v in %s: %v: %s", gw, pod.name, err, out)
	}
}

// outlierEndpoint is what vrouter services -o json says of an endpoint.
type outlierEndpoint struct {
	Address   netip.AddrPort `json:"address"`
	InUse     bool           `json:"inUse"`
	Ejected   bool           `json:"ejected"`
	Ejections uint64         `json:"ejections"`
}

// endpointStatus returns node's router's view of endpoint addr of
// default/my-service, and logs `vrouter services`.
func (e *lbEnv) endpointStatus(node string, addr netip.AddrPort) outlierEndpoint {
	e.t.Helper()
	if out, err := e.c.Command(node, vrouterBin, "services").CombinedOutput(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, addr.String()) {
				e.t.Logf("vrouter services on %s: %s", node, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	out, err := e.c.Command(node, vrouterBin, "services", "-o", "json").Output()
	if err != nil {
		e.t.Fatalf("vrouter services -o json on %s: %v", node, err)
	}
	var svcs []struct {
		Namespace, Name string
		Ports           []struct {
			Endpoints []outlierEndpoint `json:"endpoints"`
		} `json:"ports"`
	}
	if err := json.Unmarshal(out, &svcs); err != nil {
		e.t.Fatalf("vrouter services -o json on %s: %v\n%s", node, err, out)
	}
	for _, s := range svcs {
		if s.Namespace != "default" || s.Name != "my-service" {
			continue
		}
		for _, p := range s.Ports {
			for _, ep := range p.Endpoints {
				if ep.Address == addr {
					return ep
				}
			}
		}
	}
	e.t.Fatalf("vrouter services on %s lists no endpoint %v of default/my-service:\n%s", node, addr, out)
	return outlierEndpoint{}
}
