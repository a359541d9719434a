package main

// The file of `vrouter demo --topology FILE`: the user's own cluster
// (nodes, pod CIDRs, pods and ClusterIP Services) in place of the seed's.
// docs/demo-topology.md is its reference. Its Services are config-file
// Services (configs.ServiceSpec), checked by package configs as a config
// file's are; its problems are configs.FieldErrors located in the file,
// reported together as a *configs.FileError, as vrouter validate
// reports a config file's.

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// Limits of a demo topology: each node is a namespace and a router
// process, each pod a namespace with four servers, and the checks grow
// with nodes × Services.
const (
	demoMaxNodes        = 8
	demoMaxPods         = 32
	demoMaxServices     = 16
	demoMaxServicePorts = 16 // over all Services
)

// demoTopology is a demo topology file, checked.
type demoTopology struct {
	// Path is the file as the user named it.
	Path string
	// Spec is the cluster; Prefix is left to the demo.
	Spec topology.Spec
	// ClusterCIDR and ServiceCIDR are every node's config's.
	ClusterCIDR, ServiceCIDR netip.Prefix
	// Services are written into every node's config, each endpoint's
	// nodeName set to its pod's node.
	Services []configs.ServiceSpec
	// Backends holds each endpoint's pod, by address.
	Backends map[netip.Addr]string
}

// Defaults of a demo topology file's optional fields, the seed's.
var (
	demoDefaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	demoDefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
)

// demoServiceFields are the fields of a config file's Service that a
// demo's Service may set: it is a ClusterIP Service every backend of
// which must answer from every node, in the mode --mode gives.
var demoServiceFields = []string{"namespace", "name", "clusterIPs", "ports", "picker", "endpoints"}

// demoEndpointFields are likewise the endpoint fields a demo uses.
var demoEndpointFields = []string{"addresses", "nodeName", "ports"}

// loadDemoTopology reads and checks the topology file at path.
func loadDemoTopology(path string) (*demoTopology, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	return parseDemoTopology(path, data)
}

// parseDemoTopology checks the topology file data, read from path. Its
// error is a *configs.FileError with every problem, each located.
func parseDemoTopology(path string, data []byte) (*demoTopology, error) {
	p := &topoParser{at: map[string]topoPos{}, keys: map[string]topoPos{}, misspelt: map[string]bool{}}
	t := p.parse(data)
	if len(p.errs) == 0 {
		t.Path = path
		return t, nil
	}
	// In the order of the file, as vrouter validate prints them.
	slices.SortStableFunc(p.errs, func(a, b error) int {
		fa, _ := a.(*configs.FieldError)
		fb, _ := b.(*configs.FieldError)
		if fa == nil || fb == nil {
			return 0
		}
		if fa.Line != fb.Line {
			return fa.Line - fb.Line
		}
		return fa.Column - fb.Column
	})
	return nil, &configs.FileError{Path: path, Errs: p.errs}
}

type topoPos struct{ line, col int }

// topoParser walks a topology file's YAML nodes, keeping where each field
// is (as configs does for a config file) and the problems found.
type topoParser struct {
	// at locates each field path (nodes[1].pods[0].address): a scalar's
	// value, or a mapping's or list's key; keys each mapping entry's key.
	at, keys map[string]topoPos
	// misspelt are the paths of fields an unknown field was reported
	// as a misspelling of: not reported missing too.
	misspelt map[string]bool
	errs     []error
}

// addf records a problem of field at its value.
func (p *topoParser) addf(field, format string, args ...any) {
	p.errs = append(p.errs, p.located(&configs.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}, false))
}

// keyf records a problem of field's key (an unknown or unused field).
func (p *topoParser) keyf(field, format string, args ...any) {
	p.errs = append(p.errs, p.located(&configs.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}, true))
}

// located sets fe's position: its field's, or its nearest enclosing
// field's for one the file lacks.
func (p *topoParser) located(fe *configs.FieldError, atKey bool) *configs.FieldError {
	if at, ok := p.keys[fe.Field]; ok && atKey {
		fe.Line, fe.Column = at.line, at.col
		return fe
	}
	for f := fe.Field; ; f = configs.ParentPath(f) {
		if at, ok := p.at[f]; ok {
			fe.Line, fe.Column = at.line, at.col
			return fe
		}
		if f == "" {
			fe.Line, fe.Column = 1, 1
			return fe
		}
	}
}

// walk records the positions of n's fields under path, and reports keys
// given twice.
func (p *topoParser) walk(n *yaml3.Node, path string) {
	switch n.Kind {
	case yaml3.MappingNode:
		first := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := joinField(path, k.Value)
			if line, dup := first[k.Value]; dup {
				p.errs = append(p.errs, &configs.FieldError{Field: sub, Line: k.Line, Column: k.Column,
					Msg: fmt.Sprintf("given twice (first on line %d; want each field once)", line)})
				continue
			}
			first[k.Value] = k.Line
			p.keys[sub] = topoPos{k.Line, k.Column}
			if v.Kind == yaml3.ScalarNode {
				p.at[sub] = topoPos{v.Line, v.Column}
			} else {
				p.at[sub] = topoPos{k.Line, k.Column}
			}
			p.walk(v, sub)
		}
	case yaml3.SequenceNode:
		for i, e := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			p.at[sub] = topoPos{e.Line, e.Column}
			p.walk(e, sub)
		}
	}
}

func joinField(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlErrLine matches the position prefix of go.yaml.in/yaml's messages.
var yamlErrLine = regexp.MustCompile(`^(?:yaml: )?(?:line (\d+): )?`)

// The file's fields, by mapping.
var (
	topoFileFields = []string{"underlay", "clusterCIDR", "serviceCIDR", "nodes", "services"}
	topoNodeFields = []string{"name", "underlayAddress", "podCIDR", "pods"}
	topoPodFields  = []string{"name", "address"}
)

func (p *topoParser) parse(data []byte) *demoTopology {
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil {
		se := &configs.SyntaxError{Msg: strings.TrimSpace(err.Error())}
		if m := yamlErrLine.FindStringSubmatch(se.Msg); m != nil {
			se.Line, _ = strconv.Atoi(m[1])
			se.Msg = se.Msg[len(m[0]):]
		}
		p.errs = append(p.errs, se)
		return nil
	}
	p.at[""] = topoPos{1, 1}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml3.MappingNode {
		p.addf("(file)", "not a mapping (want a topology with the fields %s; docs/demo-topology.md)", strings.Join(topoFileFields, ", "))
		return nil
	}
	root := doc.Content[0]
	p.walk(root, "")
	t := &demoTopology{ClusterCIDR: demoDefaultClusterCIDR, ServiceCIDR: demoDefaultServiceCIDR, Backends: map[netip.Addr]string{}}
	fields := p.fields(root, "", topoFileFields)

	if n, ok := fields["underlay"]; ok {
		t.Spec.Underlay = p.prefix(n, "underlay", "192.168.31.0/24")
	} else {
		p.addf("underlay", "missing (want the nodes' IPv4 network, e.g. 192.168.31.0/24)")
	}
	if n, ok := fields["clusterCIDR"]; ok {
		t.ClusterCIDR = p.prefix(n, "clusterCIDR", demoDefaultClusterCIDR.String())
	}
	if n, ok := fields["serviceCIDR"]; ok {
		t.ServiceCIDR = p.prefix(n, "serviceCIDR", demoDefaultServiceCIDR.String())
	}
	p.nodes(t, fields["nodes"])
	p.services(t, fields["services"])
	if len(p.errs) > 0 {
		return nil
	}
	// What package topology checks beyond the fields (an address used
	// twice, pod CIDRs that overlap): a file that passed the checks above
	// rarely fails here, and then the message names the Spec's fields.
	if err := t.Spec.Validate(); err != nil {
		p.addf("nodes", "%v", err)
		return nil
	}
	return t
}

// fields returns the entries of mapping n (at path) by key, reporting the
// keys not in known.
func (p *topoParser) fields(n *yaml3.Node, path string, known []string) map[string]*yaml3.Node {
	out := map[string]*yaml3.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if slices.Contains(known, k) {
			if _, dup := out[k]; !dup {
				out[k] = n.Content[i+1]
			}
			continue
		}
		name, hint := configs.SuggestField(k, known)
		p.keyf(joinField(path, k), "unknown field (%s)", hint)
		if name != "" {
			p.misspelt[joinField(path, name)] = true
		}
	}
	return out
}

// required reports each of names missing from fields of the mapping at
// path, unless an unknown field was reported as its misspelling.
func (p *topoParser) required(fields map[string]*yaml3.Node, path string, names ...string) {
	for _, n := range names {
		if f := joinField(path, n); fields[n] == nil && !p.misspelt[f] {
			p.addf(f, "missing")
		}
	}
}

// scalar returns n's value if n is a scalar, else reports it.
func (p *topoParser) scalar(n *yaml3.Node, field, want string) (string, bool) {
	if n.Kind != yaml3.ScalarNode || n.Tag == "!!null" {
		p.addf(field, "%s (want %s)", describeNode(n), want)
		return "", false
	}
	return n.Value, true
}

func describeNode(n *yaml3.Node) string {
	switch {
	case n.Kind == yaml3.MappingNode:
		return "a mapping"
	case n.Kind == yaml3.SequenceNode:
		return "a list"
	case n.Tag == "!!null":
		return "empty"
	}
	return strconv.Quote(n.Value)
}

// prefix parses n as an IPv4 CIDR prefix with its host bits zero.
func (p *topoParser) prefix(n *yaml3.Node, field, example string) netip.Prefix {
	s, ok := p.scalar(n, field, "an IPv4 CIDR prefix such as "+example)
	if !ok {
		return netip.Prefix{}
	}
	pr, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			p.addf(field, "%q is an address, not a CIDR prefix (want e.g. %s)", s, example)
		} else {
			p.addf(field, "%q is not a CIDR prefix (want e.g. %s)", s, example)
		}
	case !pr.Addr().Is4():
		p.addf(field, "%q is not IPv4 (a demo topology is IPv4 only; want e.g. %s)", s, example)
	case pr.Masked() != pr:
		p.addf(field, "%q has host bits set (want %s)", s, pr.Masked())
	default:
		return pr
	}
	return netip.Prefix{}
}

// addr parses n as an IPv4 address.
func (p *topoParser) addr(n *yaml3.Node, field, example string) netip.Addr {
	s, ok := p.scalar(n, field, "an IPv4 address such as "+example)
	if !ok {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		if _, perr := netip.ParsePrefix(s); perr == nil {
			p.addf(field, "%q is a CIDR prefix (want a single address, e.g. %s)", s, example)
		} else {
			p.addf(field, "%q is not an IP address (want e.g. %s)", s, example)
		}
	case !a.Is4():
		p.addf(field, "%q is not IPv4 (a demo topology is IPv4 only; want e.g. %s)", s, example)
	default:
		return a
	}
	return netip.Addr{}
}

// name checks n as a node's or pod's name: its namespace's name too.
func (p *topoParser) name(n *yaml3.Node, field string, used map[string]string) string {
	s, ok := p.scalar(n, field, "a name such as hostgw-node")
	if !ok {
		return ""
	}
	if len(s) == 0 || len(s) > 40 {
		p.addf(field, "%q is %d bytes long (want 1 to 40)", s, len(s))
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			p.addf(field, "%q has %q (want lower-case letters, digits and '-', as a Kubernetes name)", s, r)
			return ""
		}
	}
	if s == topology.UnderlayNS {
		p.addf(field, "%q names the demo's underlay namespace (want another name)", s)
		return ""
	}
	if other, dup := used[s]; dup {
		p.addf(field, "%q is already the name of %s (want names unique across nodes and pods)", s, other)
		return ""
	}
	used[s] = field
	return s
}

// host reports a that is no usable host address of pr.
func (p *topoParser) host(field string, a netip.Addr, pr netip.Prefix, what string) bool {
	if !a.IsValid() || !pr.IsValid() {
		return false
	}
	last := pr.Addr().As4()
	for i := pr.Bits(); i < 32; i++ {
		last[i/8] |= 0x80 >> (i % 8)
	}
	switch {
	case !pr.Contains(a):
		p.addf(field, "%s is not inside %s %s", a, what, pr)
	case a == pr.Addr():
		p.addf(field, "%s is the network address of %s %s (want a host address)", a, what, pr)
	case a == netip.AddrFrom4(last) && pr.Bits() < 31:
		p.addf(field, "%s is the broadcast address of %s %s (want a host address)", a, what, pr)
	default:
		return true
	}
	return false
}

func (p *topoParser) nodes(t *demoTopology, n *yaml3.Node) {
	if n == nil {
		p.addf("nodes", "missing (want a list of at least 2 nodes, each with name, underlayAddress, podCIDR and pods)")
		return
	}
	if n.Kind != yaml3.SequenceNode {
		p.addf("nodes", "%s (want a list of nodes)", describeNode(n))
		return
	}
	switch {
	case len(n.Content) < 2:
		p.addf("nodes", "%d node(s) (want at least 2: the demo checks traffic between nodes)", len(n.Content))
	case len(n.Content) > demoMaxNodes:
		p.addf("nodes", "%d nodes (want at most %d: each is a namespace and a router)", len(n.Content), demoMaxNodes)
		return
	}
	names := map[string]string{}
	addrs := map[netip.Addr]string{}
	use := func(field string, a netip.Addr) {
		if other, dup := addrs[a]; dup {
			p.addf(field, "%s is already the address of %s", a, other)
			return
		}
		addrs[a] = field
	}
	pods := 0
	var cidrs []netip.Prefix
	var cidrField []string
	for i, nn := range n.Content {
		nf := fmt.Sprintf("nodes[%d]", i)
		if nn.Kind != yaml3.MappingNode {
			p.addf(nf, "%s (want a node: a mapping with %s)", describeNode(nn), strings.Join(topoNodeFields, ", "))
			continue
		}
		f := p.fields(nn, nf, topoNodeFields)
		var node topology.NodeSpec
		p.required(f, nf, "name", "underlayAddress", "podCIDR")
		if f["name"] != nil {
			node.Name = p.name(f["name"], nf+".name", names)
		}
		if f["underlayAddress"] != nil {
			node.Underlay = p.addr(f["underlayAddress"], nf+".underlayAddress", "192.168.31.202")
			if p.host(nf+".underlayAddress", node.Underlay, t.Spec.Underlay, "underlay") {
				use(nf+".underlayAddress", node.Underlay)
			}
		}
		if f["podCIDR"] != nil {
			field := nf + ".podCIDR"
			node.PodCIDR = p.prefix(f["podCIDR"], field, "10.244.1.0/24")
			switch {
			case !node.PodCIDR.IsValid():
			case node.PodCIDR.Bits() > 30:
				p.addf(field, "%s is too small (want /30 or shorter: cni0 takes the first address)", node.PodCIDR)
			case t.ClusterCIDR.IsValid() && !(t.ClusterCIDR.Contains(node.PodCIDR.Addr()) && node.PodCIDR.Bits() >= t.ClusterCIDR.Bits()):
				p.addf(field, "%s is not inside clusterCIDR %s", node.PodCIDR, t.ClusterCIDR)
			case t.Spec.Underlay.IsValid() && t.Spec.Underlay.Overlaps(node.PodCIDR):
				p.addf(field, "%s overlaps underlay %s", node.PodCIDR, t.Spec.Underlay)
			default:
				for j, c := range cidrs {
					if c.Overlaps(node.PodCIDR) {
						p.addf(field, "%s overlaps %s %s", node.PodCIDR, cidrField[j], c)
					}
				}
				cidrs = append(cidrs, node.PodCIDR)
				cidrField = append(cidrField, field)
			}
		}
		if pn := f["pods"]; pn != nil {
			if pn.Kind != yaml3.SequenceNode {
				p.addf(nf+".pods", "%s (want a list of pods, each with name and address)", describeNode(pn))
			} else {
				for j, pp := range pn.Content {
					pf := fmt.Sprintf("%s.pods[%d]", nf, j)
					if pods++; pods == demoMaxPods+1 {
						p.addf(pf, "pod %d (want at most %d pods in all: each is a namespace with its servers)", pods, demoMaxPods)
					}
					if pp.Kind != yaml3.MappingNode {
						p.addf(pf, "%s (want a pod: a mapping with name and address)", describeNode(pp))
						continue
					}
					pfs := p.fields(pp, pf, topoPodFields)
					var pod topology.PodSpec
					p.required(pfs, pf, topoPodFields...)
					if pfs["name"] != nil {
						pod.Name = p.name(pfs["name"], pf+".name", names)
					}
					if pfs["address"] != nil {
						pod.Addr = p.addr(pfs["address"], pf+".address", "10.244.1.2")
						if p.host(pf+".address", pod.Addr, node.PodCIDR, nf+".podCIDR") {
							if pod.Addr == node.Gateway() {
								p.addf(pf+".address", "%s is cni0's, the first address of %s (want another)", pod.Addr, node.PodCIDR)
							} else {
								use(pf+".address", pod.Addr)
							}
						}
					}
					node.Pods = append(node.Pods, pod)
				}
			}
		}
		t.Spec.Nodes = append(t.Spec.Nodes, node)
	}
}

// services checks the Services as a config file's (configs.Parse, in a
// config of the topology's first node) and then for what a demo can
// check: ClusterIP Services whose endpoints are the topology's pods.
func (p *topoParser) services(t *demoTopology, n *yaml3.Node) {
	if n == nil {
		return
	}
	if n.Kind != yaml3.SequenceNode {
		p.addf("services", "%s (want a list of Services, as in a config file)", describeNode(n))
		return
	}
	if len(n.Content) > demoMaxServices {
		p.addf("services", "%d Services (want at most %d)", len(n.Content), demoMaxServices)
		return
	}
	// Fields a demo has no use for.
	for i, sn := range n.Content {
		sf := fmt.Sprintf("services[%d]", i)
		for j := 0; sn.Kind == yaml3.MappingNode && j+1 < len(sn.Content); j += 2 {
			k, v := sn.Content[j].Value, sn.Content[j+1]
			switch {
			case k == "mode":
				p.keyf(joinField(sf, k), "set for every Service by vrouter demo --mode (leave it out)")
			case k == "type":
				if v.Value != configs.ServiceTypeClusterIP {
					p.addf(joinField(sf, k), "%s: a demo's Services are ClusterIP Services (want ClusterIP or none)", describeNode(v))
				}
			case k == "endpoints" && v.Kind == yaml3.SequenceNode:
				for e, en := range v.Content {
					for m := 0; en.Kind == yaml3.MappingNode && m+1 < len(en.Content); m += 2 {
						if ek := en.Content[m].Value; !slices.Contains(demoEndpointFields, ek) && slices.Contains(configEndpointFields, ek) {
							p.keyf(fmt.Sprintf("%s.endpoints[%d].%s", sf, e, ek), "not used by vrouter demo, whose endpoints are its pods, ready (want only %s)", strings.Join(demoEndpointFields, ", "))
						}
					}
				}
			case !slices.Contains(demoServiceFields, k) && slices.Contains(configServiceFields, k):
				p.keyf(joinField(sf, k), "not used by vrouter demo, whose Services are ClusterIP Services (want only %s)", strings.Join(demoServiceFields, ", "))
			}
		}
	}
	if len(p.errs) > 0 {
		return // the nodes are needed below, and the fields above spoil the config's checks
	}

	var generic any
	if err := n.Decode(&generic); err != nil {
		p.addf("services", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	file := map[string]any{
		"apiVersion":   configs.APIVersion,
		"kind":         configs.Kind,
		"clusterCIDRs": []string{t.ClusterCIDR.String()},
		"serviceCIDRs": []string{t.ServiceCIDR.String()},
		"overlay":      map[string]any{"port": harness.OverlayPort},
		"services":     generic,
	}
	for i, node := range t.Spec.Nodes {
		nm := map[string]any{"name": node.Name, "underlayAddress": node.Underlay.String(), "podCIDRs": []string{node.PodCIDR.String()}}
		if i == 0 {
			file["node"] = nm
		} else {
			peers, _ := file["peers"].([]any)
			file["peers"] = append(peers, nm)
		}
	}
	data, err := yaml.Marshal(file)
	if err != nil {
		p.addf("services", "%v", err)
		return
	}
	// Every problem configs finds, in the file's own terms.
	_, err = configs.Parse(data)
	reported := map[string]bool{}
	for _, e := range unjoinErr(err) {
		var fe *configs.FieldError
		if !errors.As(e, &fe) {
			p.addf("services", "%v", e)
			continue
		}
		field, msg := topoField(fe.Field), topoRefs.ReplaceAllStringFunc(fe.Msg, topoField)
		reported[field] = true
		p.errs = append(p.errs, p.located(&configs.FieldError{Field: field, Msg: msg}, strings.HasPrefix(msg, "unknown field")))
	}
	// The Services as they decode, with what decodes of those that had
	// problems of form (reported above), for the demo's own checks.
	b, err := yaml.Marshal(generic)
	if err != nil || yaml.Unmarshal(b, &t.Services) != nil {
		return
	}
	ports := 0
	for i := range t.Services {
		s := &t.Services[i]
		sf := fmt.Sprintf("services[%d]", i)
		if ports += len(s.Ports); ports > demoMaxServicePorts {
			p.addf(sf+".ports", "%d Service ports in all (want at most %d)", ports, demoMaxServicePorts)
		}
		if len(s.Endpoints) == 0 {
			p.addf(sf+".endpoints", "missing (want the pods that serve the Service, by address: addresses: [10.244.1.2])")
		}
		for j := range s.Endpoints {
			e := &s.Endpoints[j]
			for k, as := range e.Addresses {
				field := fmt.Sprintf("%s.endpoints[%d].addresses[%d]", sf, j, k)
				a, _ := netip.ParseAddr(as)
				pod, node, ok := podByAddr(t.Spec, a)
				switch {
				case reported[field]:
				case !ok:
					p.addf(field, "%q is no pod's address (want the address of a pod under nodes[].pods)", as)
				default:
					if e.NodeName == "" {
						e.NodeName = node.Name // configs checked one that is given
					}
					t.Backends[a] = pod.Name
				}
			}
		}
	}
}

// topoRefs matches the fields of the config file that
// parseDemoTopology's Services are checked in, which are the topology's.
var topoRefs = regexp.MustCompile(`\bnode\.[A-Za-z]+(?:\[\d+\])?|\bpeers\[\d+\](?:\.[A-Za-z]+(?:\[\d+\])?)?|\b(?:clusterCIDRs|serviceCIDRs)(?:\[0\])?`)

// topoField is the topology file's field for a field of the config file
// its Services are checked in: node.podCIDRs[0] → nodes[0].podCIDR,
// peers[1].name → nodes[2].name, clusterCIDRs[0] → clusterCIDR.
func topoField(f string) string {
	switch {
	case strings.HasPrefix(f, "clusterCIDRs"):
		return "clusterCIDR"
	case strings.HasPrefix(f, "serviceCIDRs"):
		return "serviceCIDR"
	case strings.HasPrefix(f, "node."), f == "node":
		f = "nodes[0]" + strings.TrimPrefix(f, "node")
	case strings.HasPrefix(f, "peers["):
		i, rest, _ := strings.Cut(strings.TrimPrefix(f, "peers["), "]")
		n, _ := strconv.Atoi(i)
		f = fmt.Sprintf("nodes[%d]%s", n+1, rest)
	default:
		return f
	}
	return strings.Replace(f, ".podCIDRs[0]", ".podCIDR", 1)
}

// unjoinErr returns the errors joined in err, err alone, or none.
func unjoinErr(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

// The fields of a config file's Service and endpoint, from the schema.
var (
	configServiceFields  = jsonFields(reflect.TypeFor[configs.ServiceSpec]())
	configEndpointFields = jsonFields(reflect.TypeFor[configs.EndpointSpec]())
)

// jsonFields lists the field names of struct type t as a file spells them.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// podByAddr finds the pod with address a.
func podByAddr(spec topology.Spec, a netip.Addr) (topology.PodSpec, topology.NodeSpec, bool) {
	for _, n := range spec.Nodes {
		for _, p := range n.Pods {
			if p.Addr == a {
				return p, n, true
			}
		}
	}
	return topology.PodSpec{}, topology.NodeSpec{}, false
}

// demoPort is a port a pod serves: TCP (HTTP, or an echo server on 7)
// or UDP (an echo server).
type demoPort struct {
	port uint16
	udp  bool
}

// targets returns the port each backend pod serves port pt of Service s
// on, by pod name: targetPort's number, the port of that name listed by
// the endpoint, or else pt's own port.
func (t *demoTopology) targets(s configs.ServiceSpec, pt configs.ServicePortSpec) map[string]demoPort {
	udp := pt.Protocol == "UDP"
	out := map[string]demoPort{}
	for _, e := range s.Endpoints {
		port := pt.Port
		if n, err := strconv.Atoi(pt.TargetPort); err == nil {
			port = n
		} else if pt.TargetPort != "" {
			for _, ep := range e.Ports {
				if ep.Name == pt.TargetPort && (ep.Protocol == "UDP") == udp {
					port = ep.Port
				}
			}
		}
		for _, as := range e.Addresses {
			if a, err := netip.ParseAddr(as); err == nil && t.Backends[a] != "" {
				out[t.Backends[a]] = demoPort{uint16(port), udp}
			}
		}
	}
	return out
}

// demoAlwaysServed are the ports every pod of a demo serves: TCP and UDP
// echo on 7, HTTP on 80, UDP echo on 53.
var demoAlwaysServed = []demoPort{{7, false}, {7, true}, {80, false}, {53, true}}

// servicePorts lists the ports pod must serve for the Services it backs
// beyond demoAlwaysServed. A nil t (the seed's cluster) has none.
func (t *demoTopology) servicePorts(pod string) []demoPort {
	if t == nil {
		return nil
	}
	var out []demoPort
	for _, s := range t.Services {
		for _, pt := range s.Ports {
			if dp, ok := t.targets(s, pt)[pod]; ok && !slices.Contains(demoAlwaysServed, dp) && !slices.Contains(out, dp) {
				out = append(out, dp)
			}
		}
	}
	return out
}

// httpService returns the URL of the first Service port served over HTTP
// (TCP, no backend on the echo port 7) and the Service's name.
func (t *demoTopology) httpService() (url, name string, ok bool) {
	for _, s := range t.Services {
		for _, pt := range s.Ports {
			tg := t.targets(s, pt)
			if pt.Protocol == "UDP" || len(s.ClusterIPs) == 0 || slices.Contains(slices.Collect(maps.Values(tg)), demoPort{7, false}) {
				continue
			}
			return httpURL(netip.AddrPortFrom(netip.MustParseAddr(s.ClusterIPs[0]), uint16(pt.Port))), s.Name, true
		}
	}
	return "", "", false
}

// demoMaxPairs bounds the pairs of nodes whose pods the demo checks
// between: beyond it, each node and the next (a ring) stand for all.
const demoMaxPairs = 10

// firstPod is n's first pod, if it has one.
func firstPod(n topology.NodeSpec) (topology.PodSpec, bool) {
	if len(n.Pods) == 0 {
		return topology.PodSpec{}, false
	}
	return n.Pods[0], true
}

// clientOf is the namespace that acts as a client on n: its first pod,
// or the node itself if it has none.
func clientOf(n topology.NodeSpec) string {
	if p, ok := firstPod(n); ok {
		return p.Name
	}
	return n.Name
}

// nodePairs returns the pairs of nodes 0..n-1 to check between: every
// pair, or when they are more than demoMaxPairs each node and the next.
func nodePairs(n int) (pairs [][2]int, all int) {
	all = n * (n - 1) / 2
	if all <= demoMaxPairs {
		for i := range n {
			for j := i + 1; j < n; j++ {
				pairs = append(pairs, [2]int{i, j})
			}
		}
		return pairs, all
	}
	for i := range n {
		pairs = append(pairs, [2]int{i, (i + 1) % n})
	}
	return pairs, all
}

// unroutedAddr is an address of the cluster CIDR outside every node's
// pod CIDR: the router answers a packet to it with an ICMP unreachable.
func unroutedAddr(cluster netip.Prefix, spec topology.Spec) (netip.Addr, bool) {
	last := cluster.Masked().Addr().As4()
	for i := cluster.Bits(); i < 32; i++ {
		last[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom4(last).Prev() // not the broadcast address
	for range 256 {
		if !cluster.Contains(a) {
			break
		}
		owned := slices.ContainsFunc(spec.Nodes, func(n topology.NodeSpec) bool { return n.PodCIDR.Contains(a) })
		if !owned {
			return a, true
		}
		for range 256 { // the /24 below
			a = a.Prev()
		}
	}
	return netip.Addr{}, false
}

// httpURL is the URL of an HTTP server at ap.
func httpURL(ap netip.AddrPort) string {
	if ap.Port() == 80 {
		return "http://" + ap.Addr().String() + "/"
	}
	return "http://" + ap.String() + "/"
}
