package configs

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vrouter/vrouter/router/wireguard"
)

// Load reads the config file at path and returns it parsed, defaulted and
// validated. A file that cannot be read gives the read error; an invalid
// one a *FileError with every problem located in the file (see Parse).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return ParseFile(path, data)
}

// ParseFile is Parse for the contents of the file at path: its error is a
// *FileError naming path, one line per problem, in the order of the file.
func ParseFile(path string, data []byte) (*Config, error) {
	c, err := Parse(data)
	if err != nil {
		return nil, fileError(path, err)
	}
	return c, nil
}

// Parse decodes a config file, applies the defaults documented in the
// schema and validates the result. Every problem is reported, together:
// the error joins (errors.Join) one *FieldError per problem, each naming
// the field path, the value and what was expected, with its line and
// column in data — unknown fields, values of the wrong type and fields
// given twice among them, which do not stop the checks of the other
// fields. Only a YAML syntax error (a *SyntaxError), a document that is
// not a mapping, or another apiVersion or kind stop it early.
func Parse(data []byte) (*Config, error) {
	d := decode(data)
	if d.file == nil {
		return nil, d.err()
	}
	c, err := d.file.Config()
	d.add(err)
	if err := d.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Decode decodes a config file into its schema without validating the
// values: YAML syntax, apiVersion and kind, unknown fields (with a
// did-you-mean), values of the wrong type and fields given twice are
// reported as Parse reports them. Config or ForNode validates the result.
func Decode(data []byte) (*File, error) {
	d := decode(data)
	if err := d.err(); err != nil {
		return nil, err
	}
	return d.file, nil
}

// decoded is a file decoded into its schema, and the problems found so
// far.
type decoded struct {
	// file holds every field that decoded, the others left zero, so
	// that validation can go on past the problems; nil if nothing more
	// can be checked.
	file *File
	// top are the document's keys.
	top map[string]any
	pos *positions
	// errs are the problems found, located.
	errs []error
	// shadowed are field paths whose validation problems follow from
	// one in errs (a value of the wrong type is validated as missing),
	// so they are not reported a second time.
	shadowed []string
}

// err joins d's problems, or returns nil.
func (d *decoded) err() error { return errors.Join(d.errs...) }

// add adds the problems joined in err that are not shadowed, located.
func (d *decoded) add(err error) {
	if err == nil {
		return
	}
	var keep []error
	for _, e := range unjoin(err) {
		if fe, ok := e.(*FieldError); ok && d.isShadowed(fe.Field) {
			continue
		}
		keep = append(keep, e)
	}
	d.pos.locate(keep)
	d.errs = append(d.errs, keep...)
}

// addForm adds problems of the file's form, located.
func (d *decoded) addForm(errs []error) {
	d.pos.locate(errs)
	d.errs = append(d.errs, errs...)
}

func (d *decoded) isShadowed(field string) bool {
	for _, s := range d.shadowed {
		if field == s || strings.HasPrefix(field, s+".") || strings.HasPrefix(field, s+"[") {
			return true
		}
	}
	return false
}

// decode decodes data as Decode does, keeping what decoded.
func decode(data []byte) *decoded {
	d := &decoded{}
	pos, errs := parseYAML(data)
	if pos == nil { // a syntax error
		d.errs = errs
		return d
	}
	d.pos = pos
	var ck checker
	ck.errs = errs // fields given twice
	var generic any
	if err := yaml.Unmarshal(data, &generic); err != nil {
		d.errs = append(d.errs, syntaxError(err))
		return d
	}
	if generic == nil {
		generic = map[string]any{} // an empty file
	}
	m, ok := generic.(map[string]any)
	if !ok {
		ck.addf("(file)", "%s is not a mapping (want a %s document with fields %s)", describe(generic), Kind, strings.Join(jsonNames(reflect.TypeFor[File]()), ", "))
		d.addForm(ck.errs)
		return d
	}
	d.top = m
	// The version decides the schema, so a file of another version or
	// kind is checked no further: it has other fields. A file without
	// them is checked against this version's schema.
	other := false
	switch v := m["apiVersion"]; v {
	case APIVersion:
	case nil, "":
		ck.addf("apiVersion", "missing (want %s)", supportedVersionsString)
	default:
		ck.addf("apiVersion", "%s is not supported by this build (supported: %s)", describe(v), supportedVersionsString)
		other = true
	}
	switch k := m["kind"]; k {
	case Kind:
	case nil, "":
		ck.addf("kind", "missing (want %q)", Kind)
	default:
		ck.addf("kind", "%s is not supported (want %q)", describe(k), Kind)
		other = true
	}
	if other {
		d.addForm(ck.errs)
		return d
	}

	before := len(ck.errs)
	checkFields(&ck, generic, reflect.TypeFor[File](), "")
	clean := len(ck.errs) == before
	d.addForm(ck.errs)
	d.shadowed = ck.shadowed
	// A file without problems of form decodes as written; one with them
	// decodes from what checkFields kept (JSON is YAML).
	src := data
	if !clean {
		b, err := json.Marshal(generic)
		if err != nil {
			d.errs = append(d.errs, fmt.Errorf("re-encode the fields that decoded: %w", err))
			return d
		}
		src = b
	}
	var f File
	if err := yaml.Unmarshal(src, &f); err != nil {
		// checkFields let through a value the decoder refuses: say what
		// without the decoder's internals.
		d.errs = append(d.errs, &FieldError{Field: "(file)", Line: 1, Column: 1, Msg: syntaxError(err).Msg})
		return d
	}
	d.file = &f
	return d
}

// Config validates f and returns it as a Config with every default
// applied. The error joins one *FieldError per problem, as Parse's.
func (f *File) Config() (*Config, error) {
	return f.config(f.Node)
}

// ForNode is Config for node n: n takes the place of f's node section,
// for a source that knows the node (the API server's Node object) while
// the file tunes the rest. n is checked as that section would be, and a
// problem is reported under its field path (node.podCIDRs[0]).
func (f *File) ForNode(n Node) (*Config, error) {
	spec := NodeSpec{Name: n.Name, Zone: n.Zone}
	if n.Underlay.IsValid() {
		spec.UnderlayAddress = n.Underlay.String()
	}
	for _, p := range n.PodCIDRs {
		spec.PodCIDRs = append(spec.PodCIDRs, p.String())
	}
	return f.config(spec)
}

// config validates f with node in place of f.Node and returns it as a
// Config with defaults applied.
func (f *File) config(node NodeSpec) (*Config, error) {
	ck := &checker{}
	c := &Config{}

	// Node and pod CIDRs.
	if c.Node.Name = node.Name; c.Node.Name == "" {
		ck.addf("node.name", "missing (want the node's name, e.g. hostgw-master)")
	}
	c.Node.Zone = node.Zone
	c.Node.Underlay = ck.addr("node.underlayAddress", node.UnderlayAddress, exUnderlay)
	var pods []podCIDR
	c.Node.PodCIDRs, pods = ck.podCIDRs("node.podCIDRs", node.PodCIDRs, c.Node.Name, pods)

	c.ClusterCIDRs = ck.prefixes("clusterCIDRs", f.ClusterCIDRs, exCluster, true)
	c.ServiceCIDRs = ck.prefixes("serviceCIDRs", f.ServiceCIDRs, exService, len(f.Services) > 0)
	for i, s := range c.ServiceCIDRs {
		for j, cl := range c.ClusterCIDRs {
			if s.IsValid() && cl.IsValid() && s.Overlaps(cl) {
				ck.addf(fmt.Sprintf("serviceCIDRs[%d]", i), "%s overlaps clusterCIDRs[%d] %s (want disjoint pod and service ranges)", s, j, cl)
			}
		}
	}

	// Overlay.
	o := &c.Overlay
	o.Port = cmp.Or(f.Overlay.Port, DefaultOverlayPort)
	overlayPortOK := ck.portNumber("overlay.port", o.Port)
	listen := c.Node.Underlay
	if f.Overlay.ListenAddress != "" {
		listen = ck.addr("overlay.listenAddress", f.Overlay.ListenAddress, exUnderlay)
		if listen.IsValid() && c.Node.Underlay.IsValid() && !listen.IsUnspecified() && listen.Is4() != c.Node.Underlay.Is4() {
			ck.addf("overlay.listenAddress", "%s is %s but node.underlayAddress %s is %s (want the same family)", listen, family(listen), c.Node.Underlay, family(c.Node.Underlay))
		}
	}
	if listen.IsValid() {
		o.Listen = netip.AddrPortFrom(listen, uint16(o.Port))
	}
	switch f.Overlay.Encryption {
	case "", EncryptionNone:
		o.Encryption = EncryptionNone
	case EncryptionWireGuard:
		o.Encryption = EncryptionWireGuard
	default:
		ck.addf("overlay.encryption", "%q is not an encryption (want %q or %q)", f.Overlay.Encryption, EncryptionNone, EncryptionWireGuard)
	}
	o.PrivateKeyFile = cmp.Or(f.Overlay.PrivateKeyFile, DefaultWireGuardKeyFile)
	keys := map[wireguard.Key]string{}

	// Peers.
	names := map[string]string{}
	if c.Node.Name != "" {
		names[c.Node.Name] = "node.name"
	}
	underlays := map[netip.Addr]string{}
	for i, ps := range f.Peers {
		field := fmt.Sprintf("peers[%d]", i)
		p := Peer{Name: ps.Name, Zone: ps.Zone}
		if p.Name == "" {
			ck.addf(field+".name", "missing (want the peer node's name, e.g. hostgw-node)")
		} else if prev, dup := names[p.Name]; dup {
			ck.addf(field+".name", "%q is already used by %s (want unique node names)", p.Name, prev)
		} else {
			names[p.Name] = field + ".name"
		}
		a := ck.addr(field+".underlayAddress", ps.UnderlayAddress, exUnderlay)
		switch {
		case !a.IsValid():
		case a == c.Node.Underlay:
			ck.addf(field+".underlayAddress", "%s is this node's node.underlayAddress (want the peer's own address)", a)
		case c.Node.Underlay.IsValid() && a.Is4() != c.Node.Underlay.Is4():
			ck.addf(field+".underlayAddress", "%s is %s but node.underlayAddress %s is %s (want the same family)", a, family(a), c.Node.Underlay, family(c.Node.Underlay))
		case underlays[a] != "":
			ck.addf(field+".underlayAddress", "%s is already used by %s (want one address per peer)", a, underlays[a])
		default:
			underlays[a] = field
		}
		port, portOK := o.Port, overlayPortOK // an invalid overlay.port is reported once
		if ps.Port != 0 {
			port, portOK = ps.Port, ck.portNumber(field+".port", ps.Port)
		}
		if portOK && a.IsValid() {
			p.Underlay = netip.AddrPortFrom(a, uint16(port))
		}
		p.PodCIDRs, pods = ck.podCIDRs(field+".podCIDRs", ps.PodCIDRs, p.Name, pods)
		switch {
		case ps.PublicKey != "":
			k, err := wireguard.ParseKey(ps.PublicKey)
			switch {
			case err != nil:
				ck.addf(field+".publicKey", "%v", err)
			case keys[k] != "":
				ck.addf(field+".publicKey", "is already %s's (want each router's own key)", keys[k])
			default:
				keys[k] = field
				p.PublicKey = k
			}
		case o.Encryption == EncryptionWireGuard:
			ck.addf(field+".publicKey", "missing: overlay.encryption is wireguard (want the peer's public key: `vrouter pubkey < KEYFILE` on that node, or its log line \"WireGuard key\")")
		}
		c.Peers = append(c.Peers, p)
	}
	ck.checkPodCIDRs(pods, c.ClusterCIDRs)

	// MTUs: after the peers, whose pod CIDRs may bring IPv6.
	overhead := OverheadIPv4
	if c.Node.Underlay.Is6() {
		overhead = OverheadIPv6
	}
	header := "UDP header"
	if o.Encryption == EncryptionWireGuard {
		overhead += OverheadWireGuard
		header = "UDP and WireGuard headers"
	}
	o.UnderlayMTU = cmp.Or(f.Overlay.UnderlayMTU, DefaultUnderlayMTU)
	minMTU, why := MinTunnelMTUIPv4, "the IPv4 minimum"
	if c.hasIPv6(pods) {
		minMTU, why = MinTunnelMTUIPv6, "the IPv6 minimum (the cluster carries IPv6)"
	}
	maxMTU := o.UnderlayMTU - overhead
	if o.UnderlayMTU < minMTU+overhead || o.UnderlayMTU > 65535 {
		ck.addf("overlay.underlayMTU", "%d is out of range (want %d..65535: a tunnel MTU of at least %d, %s, plus %d bytes of %s/%s)", o.UnderlayMTU, minMTU+overhead, minMTU, why, overhead, family(c.Node.Underlay), header)
	} else {
		o.MTU = cmp.Or(f.Overlay.MTU, maxMTU)
		switch {
		case o.MTU < minMTU:
			ck.addf("overlay.mtu", "%d is below %d, %s (want %d..%d)", o.MTU, minMTU, why, minMTU, maxMTU)
		case o.MTU > maxMTU:
			ck.addf("overlay.mtu", "%d is above underlayMTU %d - %d (%s/%s) = %d (want %d..%d)", o.MTU, o.UnderlayMTU, overhead, family(c.Node.Underlay), header, maxMTU, minMTU, maxMTU)
		}
	}

	// TUN.
	t := &c.TUN
	t.Name = cmp.Or(f.TUN.Name, DefaultTUNName)
	if len(t.Name) > 15 || t.Name == "." || t.Name == ".." || strings.ContainsAny(t.Name, "/: \t\n") {
		ck.addf("tun.name", "%q is not a Linux interface name (want at most 15 characters without '/', ':' or spaces, e.g. %s)", t.Name, DefaultTUNName)
	}
	if t.FD = f.TUN.FD; t.FD < 0 {
		ck.addf("tun.fd", "%d is not a file descriptor (want > 0 to adopt an open TUN, or 0 to create one)", t.FD)
	}
	t.MTU = cmp.Or(f.TUN.MTU, o.MTU)
	if f.TUN.MTU != 0 && o.MTU != 0 && (t.MTU < minMTU || t.MTU > o.MTU) {
		ck.addf("tun.mtu", "%d is out of range (want %d..%d: at least %s, at most overlay.mtu)", t.MTU, minMTU, o.MTU, why)
	}
	t.Configure = f.TUN.Configure == nil || *f.TUN.Configure
	t.MultiQueue = f.TUN.MultiQueue
	t.Offload = f.TUN.Offload == nil || *f.TUN.Offload
	if f.TUN.Addresses == nil {
		for _, p := range c.Node.PodCIDRs {
			t.Addresses = append(t.Addresses, DefaultTUNAddress(p))
		}
	}
	for i, s := range f.TUN.Addresses {
		if p := ck.ifacePrefix(fmt.Sprintf("tun.addresses[%d]", i), s, exTUNAddr); p.IsValid() {
			t.Addresses = append(t.Addresses, p)
		}
	}

	c.BusyPoll = ck.duration("router.busyPoll", f.Router.BusyPoll, 0, time.Microsecond, time.Second)

	// Router addresses.
	routerIn, routerField := f.Router.Addresses, "router.addresses"
	if routerIn == nil {
		routerField = "router.addresses (default)"
		for _, p := range c.Node.PodCIDRs {
			routerIn = append(routerIn, DefaultRouterAddresses[familyIndex(p.Addr())].String())
		}
	}
	var seen [2]string
	for i, s := range routerIn {
		field := fmt.Sprintf("%s[%d]", routerField, i)
		a := ck.addr(field, s, exRouter)
		if !a.IsValid() {
			continue
		}
		fam := familyIndex(a)
		switch in := insideAny(a, pods, c.ClusterCIDRs, c.ServiceCIDRs); {
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			ck.addf(field, "%s is not a unicast address (want e.g. %s)", a, exRouter.pick(s))
		case seen[fam] != "":
			ck.addf(field, "%s is a second %s address (want at most one per family; the first is %s)", a, family(a), seen[fam])
		case in != "":
			ck.addf(field, "%s is inside %s (want an address outside every pod, cluster and service CIDR, e.g. %s)", a, in, exRouter.pick(s))
		default:
			seen[fam] = field
			c.RouterAddresses = append(c.RouterAddresses, a)
		}
	}
	for _, p := range c.Node.PodCIDRs {
		if fam := familyIndex(p.Addr()); seen[fam] == "" && f.Router.Addresses != nil {
			ck.addf("router.addresses", "has no %s address but node.podCIDRs has %s (want one, e.g. %s)", family(p.Addr()), p, DefaultRouterAddresses[fam])
		}
	}

	// Services.
	c.LB = ck.lb(&f.LB)
	c.Egress = ck.egress(&f.Egress)
	c.Services = ck.services(f.Services, c, pods)

	if ck.errs != nil {
		return nil, errors.Join(ck.errs...)
	}
	return c, nil
}

// podCIDR is one pod CIDR of a node, kept for the checks across nodes.
type podCIDR struct {
	field  string
	prefix netip.Prefix
	node   string
	order  int // position in the file, for stable blame
}

// prefixes parses a list of canonical prefixes.
func (ck *checker) prefixes(field string, in []string, ex example, required bool) []netip.Prefix {
	if len(in) == 0 && required {
		ck.addf(field, "missing (want a list of CIDR prefixes, e.g. [%s])", ex.v4)
	}
	var out []netip.Prefix
	for i, s := range in {
		if p := ck.prefix(fmt.Sprintf("%s[%d]", field, i), s, ex); p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// podCIDRs parses a node's pod CIDRs, at most one per family, and appends
// them to all.
func (ck *checker) podCIDRs(field string, in []string, node string, all []podCIDR) ([]netip.Prefix, []podCIDR) {
	if len(in) == 0 {
		ck.addf(field, "missing (want the node's pod subnets, one per family, e.g. [%s])", exPodCIDR.v4)
		return nil, all
	}
	var out []netip.Prefix
	var seen [2]string
	for i, s := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		p := ck.prefix(f, s, exPodCIDR)
		if !p.IsValid() {
			continue
		}
		if fam := familyIndex(p.Addr()); seen[fam] != "" {
			ck.addf(f, "%s is a second %s pod CIDR (want at most one per family; the first is %s)", p, family(p.Addr()), seen[fam])
			continue
		} else {
			seen[fam] = f
		}
		out = append(out, p)
		all = append(all, podCIDR{field: f, prefix: p, node: node, order: len(all)})
	}
	return out, all
}

// checkPodCIDRs checks that every pod CIDR lies inside a cluster CIDR and
// that no two overlap. Sorting and sweeping keeps it O(n log n) in the
// number of nodes.
func (ck *checker) checkPodCIDRs(pods []podCIDR, clusters []netip.Prefix) {
	for _, pc := range pods {
		if len(clusters) > 0 && !slices.ContainsFunc(clusters, func(cl netip.Prefix) bool { return contains(cl, pc.prefix) }) {
			ck.addf(pc.field, "%s is outside every cluster CIDR (want a subnet of %s)", pc.prefix, prefixList(clusters))
		}
	}
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b podCIDR) int {
		return cmp.Or(a.prefix.Addr().Compare(b.prefix.Addr()), cmp.Compare(a.prefix.Bits(), b.prefix.Bits()))
	})
	// Prefixes are nested or disjoint, so in address order a prefix
	// overlaps an earlier one exactly when cover, the earlier prefix
	// reaching furthest, contains its first address.
	type overlap struct{ blame, other podCIDR }
	var found []overlap
	var cover podCIDR
	var coverEnd netip.Addr
	for _, p := range sorted {
		if cover.prefix.IsValid() && cover.prefix.Contains(p.prefix.Addr()) {
			if p.order > cover.order {
				found = append(found, overlap{p, cover})
			} else {
				found = append(found, overlap{cover, p})
			}
		}
		if end := lastAddr(p.prefix); !cover.prefix.IsValid() || end.Compare(coverEnd) > 0 {
			cover, coverEnd = p, end
		}
	}
	slices.SortFunc(found, func(a, b overlap) int { return cmp.Compare(a.blame.order, b.blame.order) })
	for _, o := range found {
		ck.addf(o.blame.field, "%s overlaps %s %s of node %q (want disjoint pod CIDRs per node)", o.blame.prefix, o.other.field, o.other.prefix, o.other.node)
	}
}

// contains reports whether prefix outer contains prefix inner.
func contains(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		switch lo := i * 8; {
		case lo >= p.Bits():
			b[i] = 0xff
		case p.Bits() < lo+8:
			b[i] |= 0xff >> (p.Bits() - lo)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func familyIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " or ")
}

// insideAny names the first pod, cluster or service CIDR containing a.
func insideAny(a netip.Addr, pods []podCIDR, clusters, services []netip.Prefix) string {
	for _, p := range pods {
		if p.prefix.Contains(a) {
			return fmt.Sprintf("%s %s (node %q)", p.field, p.prefix, p.node)
		}
	}
	for i, p := range clusters {
		if p.Contains(a) {
			return fmt.Sprintf("clusterCIDRs[%d] %s", i, p)
		}
	}
	for i, p := range services {
		if p.Contains(a) {
			return fmt.Sprintf("serviceCIDRs[%d] %s", i, p)
		}
	}
	return ""
}

// hasIPv6 reports whether the tunnel may carry IPv6: some pod or cluster
// CIDR is IPv6.
func (c *Config) hasIPv6(pods []podCIDR) bool {
	return slices.ContainsFunc(pods, func(p podCIDR) bool { return p.prefix.Addr().Is6() }) ||
		slices.ContainsFunc(c.ClusterCIDRs, func(p netip.Prefix) bool { return p.Addr().Is6() })
}
