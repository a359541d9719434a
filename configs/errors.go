package configs

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// FieldError is one invalid field of a config file. Parse returns every
// FieldError it finds joined with errors.Join; errors.As reaches each one.
type FieldError struct {
	// Field is the path of the field as written in the file:
	// "peers[1].podCIDRs[0]".
	Field string
	// Msg names the value found and what was expected.
	Msg string
	// Line and Column (1-based) locate the field in the file: its value,
	// or for a field that is missing, the section that lacks it. Zero
	// for a Config that no file describes (File.ForNode's node).
	Line, Column int

	// atKey locates the error at the field's key rather than its value:
	// the key is what is wrong (an unknown or forbidden field).
	atKey bool
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// checker collects FieldErrors while a File becomes a Config.
type checker struct {
	errs []error
	// shadowed are the field paths checkFields dropped from the file
	// (values of the wrong type) or found misspelt (the field an unknown
	// one suggests, if absent): validating them as missing would report
	// the same mistake twice.
	shadowed []string
}

func (ck *checker) addf(field, format string, args ...any) {
	ck.errs = append(ck.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
}

// keyf is addf for a problem with the field's key, not its value.
func (ck *checker) keyf(field, format string, args ...any) {
	ck.errs = append(ck.errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), atKey: true})
}

// example is a sample value for an error message, per address family.
type example struct{ v4, v6 string }

// pick returns the sample of the family s looks like.
func (e example) pick(s string) string {
	if strings.Contains(s, ":") && e.v6 != "" {
		return e.v6
	}
	return e.v4
}

var (
	exUnderlay  = example{"192.168.31.202", "fd00:31::202"}
	exPodCIDR   = example{"10.244.1.0/24", "fd00:10:244:1::/64"}
	exCluster   = example{"10.244.0.0/16", "fd00:10:244::/56"}
	exService   = example{"10.96.0.0/12", "fd00:10:96::/112"}
	exClusterIP = example{"10.96.0.10", "fd00:10:96::a"}
	exEndpoint  = example{"10.244.1.2", "fd00:10:244:1::2"}
	exRouter    = example{defaultRouterAddress4, defaultRouterAddress6}
	exTUNAddr   = example{"10.244.0.0/32", "fd00:10:244:0:ffff:ffff:ffff:ffff/128"}
	// The documentation ranges: an address outside the cluster.
	exExternalIP   = example{"203.0.113.10", "2001:db8::10"}
	exNodePortCIDR = example{"192.168.31.0/24", "fd00:31::/64"}
)

// addr parses s as a plain IP address. It returns the zero Addr (not
// valid) after recording an error.
func (ck *checker) addr(field, s string, ex example) netip.Addr {
	if s == "" {
		ck.addf(field, "missing (want an IP address such as %s)", ex.v4)
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		if _, perr := netip.ParsePrefix(s); perr == nil {
			ck.addf(field, "%q is a CIDR prefix (want a single address, e.g. %s)", s, ex.pick(s))
		} else if _, aperr := netip.ParseAddrPort(s); aperr == nil {
			ck.addf(field, "%q has a port (want the address alone, e.g. %s)", s, ex.pick(s))
		} else {
			ck.addf(field, "%q is not an IP address (want e.g. %s)", s, ex.pick(s))
		}
		return netip.Addr{}
	}
	if a.Zone() != "" {
		ck.addf(field, "%q has an IPv6 zone (want %s)", s, a.WithZone(""))
		return netip.Addr{}
	}
	if a.Is4In6() {
		ck.addf(field, "%q is an IPv4-mapped IPv6 address (want %s)", s, a.Unmap())
		return netip.Addr{}
	}
	return a
}

// prefix parses s as a canonical CIDR prefix (host bits zero).
func (ck *checker) prefix(field, s string, ex example) netip.Prefix {
	if s == "" {
		ck.addf(field, "missing (want a CIDR prefix such as %s)", ex.v4)
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			ck.addf(field, "%q is an address, not a CIDR prefix (want e.g. %s)", s, ex.pick(s))
		} else {
			ck.addf(field, "%q is not a CIDR prefix (want e.g. %s)", s, ex.pick(s))
		}
		return netip.Prefix{}
	}
	if p.Addr().Is4In6() {
		ck.addf(field, "%q is an IPv4-mapped IPv6 prefix (want an IPv4 prefix, e.g. %s)", s, ex.v4)
		return netip.Prefix{}
	}
	if m := p.Masked(); m != p {
		ck.addf(field, "%q has host bits set (want %s)", s, m)
		return netip.Prefix{}
	}
	return p
}

// ifacePrefix parses s as an interface address: a prefix whose host bits
// may be set, or a bare address taken as a host prefix (/32, /128).
func (ck *checker) ifacePrefix(field, s string, ex example) netip.Prefix {
	if s == "" {
		ck.addf(field, "missing (want an address with prefix length such as %s)", ex.v4)
		return netip.Prefix{}
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
		return netip.PrefixFrom(a, a.BitLen())
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4In6() {
		ck.addf(field, "%q is not an address with prefix length (want e.g. %s)", s, ex.pick(s))
		return netip.Prefix{}
	}
	return p
}

// portNumber checks that n is a port number.
func (ck *checker) portNumber(field string, n int) bool {
	if n < 1 || n > 65535 {
		ck.addf(field, "%d is not a port number (want 1..65535)", n)
		return false
	}
	return true
}

// oneOf parses s as one of want, each spelt as its String method prints
// it (the lb enums): def when s is empty, else the value whose spelling s
// is, exactly.
func oneOf[T fmt.Stringer](ck *checker, field, s string, def T, want ...T) T {
	if s == "" {
		return def
	}
	names := make([]string, len(want))
	for i, w := range want {
		if names[i] = w.String(); s == names[i] {
			return w
		}
	}
	for _, n := range names {
		if strings.EqualFold(s, n) {
			ck.addf(field, "%q is not supported (want %q: values are case-sensitive)", s, n)
			return def
		}
	}
	ck.addf(field, "%q is not supported (want one of %s)", s, quoteList(names))
	return def
}

// valid reports whether oneOf takes s without an error: s is empty or
// the spelling of one of want.
func valid[T fmt.Stringer](s string, want ...T) bool {
	return s == "" || slices.ContainsFunc(want, func(w T) bool { return w.String() == s })
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// family names the address family of a for messages.
func family(a netip.Addr) string {
	if !a.IsValid() {
		return "IP"
	}
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
