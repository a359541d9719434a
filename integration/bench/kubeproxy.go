//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/configs"
)

// The kernel baseline's Service data path is what kube-proxy's iptables
// mode programs on a node (pkg/proxy/iptables/proxier.go), reduced to the
// chains the seed article lists: KUBE-SERVICES hooked into PREROUTING and
// OUTPUT, one KUBE-SVC-<hash> per Service port choosing an endpoint with
// `-m statistic --mode random --probability 1/(n-i)`, one KUBE-SEP-<hash>
// per endpoint doing the DNAT, and KUBE-MARK-MASQ / KUBE-POSTROUTING
// masquerading hairpin traffic (a backend that reaches itself through the
// ClusterIP) and traffic from outside the cluster CIDR. A port with a node
// port also gets kube-proxy's NodePort path (externalTrafficPolicy
// Cluster): KUBE-SERVICES' last rule jumps to KUBE-NODEPORTS for
// destinations of `-m addrtype --dst-type LOCAL`, where the node port
// jumps to KUBE-EXT-<hash>, which marks the packet for masquerade and
// goes on to the port's KUBE-SVC chain. Chain names are kube-proxy's own
// hashes, so the seed's KUBE-SVC-JD5MR3NA4I4DYORP for
// kube-system/kube-dns:metrics comes out the same.

// kpPort is one Service port as kube-proxy programs it.
type kpPort struct {
	name      string // "default/my-service" or "kube-system/kube-dns:metrics"
	vip       netip.Addr
	port      uint16
	proto     string // "tcp" or "udp"
	nodePort  uint16 // 0: none
	endpoints []netip.AddrPort
}

// kubeHash is kube-proxy's portProtoHash: the first 16 characters of the
// base32 SHA-256 of its input.
func kubeHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}

func (p kpPort) svcChain() string { return "KUBE-SVC-" + kubeHash(p.name+p.proto) }

// extChain is the port's external-traffic chain, with the same hash as
// its KUBE-SVC chain.
func (p kpPort) extChain() string { return "KUBE-EXT-" + kubeHash(p.name+p.proto) }

func (p kpPort) sepChain(ep netip.AddrPort) string {
	return "KUBE-SEP-" + kubeHash(p.name+p.proto+ep.String())
}

// kpPorts converts the config file's Services (what vrouter is given) to
// the ports kube-proxy would program, so both data paths serve exactly
// the same Services and endpoints.
func kpPorts(svcs []configs.ServiceSpec) ([]kpPort, error) {
	var out []kpPort
	for _, s := range svcs {
		ns := s.Namespace
		if ns == "" {
			ns = configs.DefaultNamespace
		}
		for _, sp := range s.Ports {
			name := ns + "/" + s.Name
			if sp.Name != "" {
				name += ":" + sp.Name
			}
			target := sp.Port
			if sp.TargetPort != "" {
				n, err := strconv.Atoi(sp.TargetPort)
				if err != nil {
					return nil, fmt.Errorf("service %s port %d: targetPort %q: named target ports are not supported by the kernel baseline", name, sp.Port, sp.TargetPort)
				}
				target = n
			}
			proto := strings.ToLower(sp.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			for _, ip := range s.ClusterIPs {
				vip, err := netip.ParseAddr(ip)
				if err != nil {
					return nil, fmt.Errorf("service %s clusterIP %q: %w", name, ip, err)
				}
				p := kpPort{name: name, vip: vip, port: uint16(sp.Port), proto: proto, nodePort: uint16(sp.NodePort)}
				for _, e := range s.Endpoints {
					for _, a := range e.Addresses {
						ep, err := netip.ParseAddr(a)
						if err != nil {
							return nil, fmt.Errorf("service %s endpoint %q: %w", name, a, err)
						}
						if ep.Is4() == vip.Is4() {
							p.endpoints = append(p.endpoints, netip.AddrPortFrom(ep, uint16(target)))
						}
					}
				}
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// kubeProxyRules returns iptables-restore input with kube-proxy's filter
// and nat tables for ports on a node of a cluster with pod CIDR
// clusterCIDR, and flannel's rules as the seed lists them.
func kubeProxyRules(clusterCIDR netip.Prefix, ports []kpPort) string {
	var b strings.Builder
	cc := clusterCIDR.String()
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	w("*filter")
	w(":INPUT ACCEPT [0:0]")
	w(":FORWARD ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	for _, c := range []string{"KUBE-FIREWALL", "KUBE-FORWARD", "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"} {
		w(":%s - [0:0]", c)
	}
	w(`-A INPUT -j KUBE-FIREWALL`)
	w(`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`)
	w(`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`)
	w(`-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A FORWARD -s %s -m comment --comment "flanneld forward" -j ACCEPT`, cc)
	w(`-A FORWARD -d %s -m comment --comment "flanneld forward" -j ACCEPT`, cc)
	w(`-A OUTPUT -j KUBE-FIREWALL`)
	w(`-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP`)
	w(`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`)
	w(`-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT`)
	w(`-A KUBE-FORWARD -s %s -m comment --comment "kubernetes forwarding conntrack pod source rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`, cc)
	w(`-A KUBE-FORWARD -d %s -m comment --comment "kubernetes forwarding conntrack pod destination rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`, cc)
	w("COMMIT")

	w("*nat")
	w(":PREROUTING ACCEPT [0:0]")
	w(":INPUT ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	w(":POSTROUTING ACCEPT [0:0]")
	for _, c := range []string{"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-MARK-DROP"} {
		w(":%s - [0:0]", c)
	}
	writeServiceChains(&b, ports, true)
	w(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	w(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`)
	w(`-A POSTROUTING -s %s -d %s -m comment --comment "flanneld masq" -j RETURN`, cc, cc)
	w(`-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000`)
	w(`-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000`)
	w(`-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN`)
	w(`-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0`)
	w(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE`)
	writeServicesChain(&b, clusterCIDR, ports)
	writeNodePorts(&b, ports)
	writeServiceRules(&b, ports)
	w("COMMIT")
	return b.String()
}

// writeServiceChains declares every KUBE-SVC, KUBE-EXT and KUBE-SEP chain
// of ports.
func writeServiceChains(b *strings.Builder, ports []kpPort, withSEP bool) {
	for _, p := range ports {
		fmt.Fprintf(b, ":%s - [0:0]\n", p.svcChain())
		if p.hasNodePort() {
			fmt.Fprintf(b, ":%s - [0:0]\n", p.extChain())
		}
		if withSEP {
			for _, ep := range p.endpoints {
				fmt.Fprintf(b, ":%s - [0:0]\n", p.sepChain(ep))
			}
		}
	}
}

// writeServicesChain writes the KUBE-SERVICES rules: per Service port, the
// masquerade mark for sources outside the cluster CIDR and the jump to its
// KUBE-SVC chain; last the NodePort jump kube-proxy always appends.
func writeServicesChain(b *strings.Builder, clusterCIDR netip.Prefix, ports []kpPort) {
	for _, p := range ports {
		if len(p.endpoints) == 0 {
			continue // kube-proxy REJECTs these in the filter table
		}
		fmt.Fprintf(b, "-A KUBE-SERVICES ! -s %s -d %s/32 -p %s -m comment --comment \"%s cluster IP\" -m %s --dport %d -j KUBE-MARK-MASQ\n",
			clusterCIDR, p.vip, p.proto, p.name, p.proto, p.port)
		fmt.Fprintf(b, "-A KUBE-SERVICES -d %s/32 -p %s -m comment --comment \"%s cluster IP\" -m %s --dport %d -j %s\n",
			p.vip, p.proto, p.name, p.proto, p.port, p.svcChain())
	}
	b.WriteString(`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS` + "\n")
}

// hasNodePort reports whether kube-proxy serves a node port for p: it
// has one, and endpoints (without, kube-proxy REJECTs in the filter
// table instead).
func (p kpPort) hasNodePort() bool { return p.nodePort != 0 && len(p.endpoints) > 0 }

// writeNodePorts writes the KUBE-NODEPORTS rules and each node port's
// KUBE-EXT chain, for externalTrafficPolicy Cluster: every packet to a
// node port is marked for masquerade (its endpoint may be on another
// node, whose reply must come back through this one) and goes on to the
// port's KUBE-SVC chain.
func writeNodePorts(b *strings.Builder, ports []kpPort) {
	for _, p := range ports {
		if !p.hasNodePort() {
			continue
		}
		fmt.Fprintf(b, "-A KUBE-NODEPORTS -p %s -m comment --comment \"%s\" -m %s --dport %d -j %s\n",
			p.proto, p.name, p.proto, p.nodePort, p.extChain())
		fmt.Fprintf(b, "-A %s -m comment --comment \"masquerade traffic for %s external destinations\" -j KUBE-MARK-MASQ\n", p.extChain(), p.name)
		fmt.Fprintf(b, "-A %s -j %s\n", p.extChain(), p.svcChain())
	}
}

// writeServiceRules writes each port's KUBE-SVC chain (random choice with
// kube-proxy's probabilities) and its endpoints' KUBE-SEP chains.
func writeServiceRules(b *strings.Builder, ports []kpPort) {
	for _, p := range ports {
		writeSVC(b, p)
		for _, ep := range p.endpoints {
			writeSEP(b, p, ep)
		}
	}
}

func writeSVC(b *strings.Builder, p kpPort) {
	n := len(p.endpoints)
	for i, ep := range p.endpoints {
		fmt.Fprintf(b, "-A %s -m comment --comment \"%s -> %s\"", p.svcChain(), p.name, ep)
		if i < n-1 {
			fmt.Fprintf(b, " -m statistic --mode random --probability %0.10f", 1/float64(n-i))
		}
		fmt.Fprintf(b, " -j %s\n", p.sepChain(ep))
	}
}

func writeSEP(b *strings.Builder, p kpPort, ep netip.AddrPort) {
	sep := p.sepChain(ep)
	fmt.Fprintf(b, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", sep, ep.Addr(), p.name)
	fmt.Fprintf(b, "-A %s -p %s -m comment --comment \"%s\" -m %s -j DNAT --to-destination %s\n", sep, p.proto, p.name, p.proto, ep)
}

// kubeProxyPartialSync is what kube-proxy (1.28+, MinimizeIPTablesRestore)
// restores with --noflush after one endpoint of changed left: the whole
// KUBE-SERVICES chain (always rewritten), the changed KUBE-SVC chain, and
// the deletion of the departed endpoint's KUBE-SEP chain.
func kubeProxyPartialSync(clusterCIDR netip.Prefix, ports []kpPort, changed kpPort, gone netip.AddrPort) string {
	var b strings.Builder
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", changed.svcChain())
	fmt.Fprintf(&b, ":%s - [0:0]\n", changed.sepChain(gone))
	writeServicesChain(&b, clusterCIDR, ports)
	writeSVC(&b, changed)
	fmt.Fprintf(&b, "-X %s\n", changed.sepChain(gone))
	b.WriteString("COMMIT\n")
	return b.String()
}
