package configs

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/lb"
)

// Ranges of the lb tuning fields.
const (
	minProxyDialTimeout  = time.Millisecond
	maxProxyDialTimeout  = time.Minute
	minProxyIdleTimeout  = time.Second
	maxProxyIdleTimeout  = 720 * time.Hour
	minProxyDrainTimeout = time.Millisecond
	maxProxyDrainTimeout = 24 * time.Hour
	maxNATFlows          = 1 << 24
	minNATUDPTimeout     = time.Second
	maxNATUDPTimeout     = 24 * time.Hour
	minNATTCPTimeout     = time.Second
	maxNATTCPTimeout     = 720 * time.Hour
	minOutlierEjection   = 100 * time.Millisecond
	maxOutlierEjection   = 24 * time.Hour
)

// lb validates the lb section: modes, pickers and the tuning of both
// modes, with lb's defaults applied.
func (ck *checker) lb(f *LBSpec) LB {
	l := LB{
		Mode:   oneOf(ck, "lb.mode", f.Mode, lb.DefaultMode, modes...),
		Picker: oneOf(ck, "lb.picker", f.Picker, lb.DefaultPicker, pickers...),
	}
	l.Proxy.DialTimeout = ck.duration("lb.proxy.dialTimeout", f.Proxy.DialTimeout, lb.DefaultProxyDialTimeout, minProxyDialTimeout, maxProxyDialTimeout)
	l.Proxy.IdleTimeout = ck.duration("lb.proxy.idleTimeout", f.Proxy.IdleTimeout, lb.DefaultProxyIdleTimeout, minProxyIdleTimeout, maxProxyIdleTimeout)
	l.Proxy.DrainTimeout = ck.duration("lb.proxy.drainTimeout", f.Proxy.DrainTimeout, lb.DefaultProxyDrainTimeout, minProxyDrainTimeout, maxProxyDrainTimeout)

	maxFlows := ck.count("lb.nat.maxFlows", f.NAT.MaxFlows, lb.DefaultNATMaxFlows, 1, maxNATFlows, "")
	perClientDef := min(lb.DefaultNATMaxPerClient, maxFlows)
	perClient := ck.count("lb.nat.maxFlowsPerClient", f.NAT.MaxFlowsPerClient, perClientDef, 1, maxFlows, ": at most lb.nat.maxFlows")
	l.NAT = lb.NATOptions{
		MaxTCP:                int64(maxFlows),
		MaxUDP:                int64(maxFlows),
		MaxPerClient:          int64(perClient),
		UDPTimeout:            ck.duration("lb.nat.udpTimeout", f.NAT.UDPTimeout, lb.DefaultNATUDPTimeout, minNATUDPTimeout, maxNATUDPTimeout),
		TCPEstablishedTimeout: ck.duration("lb.nat.tcpEstablishedTimeout", f.NAT.TCPEstablishedTimeout, lb.DefaultNATTCPEstablishedTimeout, minNATTCPTimeout, maxNATTCPTimeout),
	}
	l.Outlier = lb.OutlierOptions{
		Disabled:           f.Outlier.Enabled != nil && !*f.Outlier.Enabled,
		Failures:           ck.count("lb.outlier.consecutiveFailures", f.Outlier.ConsecutiveFailures, lb.DefaultOutlierFailures, 1, 1000, ""),
		BaseEjection:       ck.duration("lb.outlier.baseEjectionTime", f.Outlier.BaseEjectionTime, lb.DefaultOutlierBaseEjection, minOutlierEjection, maxOutlierEjection),
		MaxEjectionPercent: ck.count("lb.outlier.maxEjectionPercent", f.Outlier.MaxEjectionPercent, lb.DefaultOutlierMaxEjectionPercent, 1, 100, ""),
	}
	l.Outlier.MaxEjection = ck.duration("lb.outlier.maxEjectionTime", f.Outlier.MaxEjectionTime, max(lb.DefaultOutlierMaxEjection, l.Outlier.BaseEjection), l.Outlier.BaseEjection, maxOutlierEjection)
	l.NodePortRange = ck.nodePortRange("lb.nodePortRange", f.NodePortRange)
	l.NodePortAddresses = ck.nodePortAddresses("lb.nodePortAddresses", f.NodePortAddresses)
	l.LocalhostNodePorts = f.LocalhostNodePorts == nil || *f.LocalhostNodePorts
	return l
}

// nodePortRange parses s as "MIN-MAX", 1 <= MIN <= MAX <= 65535; "" is
// DefaultNodePortRange.
func (ck *checker) nodePortRange(field, s string) NodePortRange {
	if s == "" {
		return DefaultNodePortRange
	}
	lo, hi, ok := strings.Cut(s, "-")
	if !ok || !isDigits(lo) || !isDigits(hi) {
		ck.addf(field, "%q is not a port range (want MIN-MAX, e.g. %q)", s, DefaultNodePortRange.String())
		return DefaultNodePortRange
	}
	min, err1 := strconv.Atoi(lo)
	max, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || min < 1 || max > 65535 || min > max {
		ck.addf(field, "%q is out of range (want MIN-MAX with 1 <= MIN <= MAX <= 65535, e.g. %q)", s, DefaultNodePortRange.String())
		return DefaultNodePortRange
	}
	return NodePortRange{Min: uint16(min), Max: uint16(max)}
}

// nodePortAddresses parses lb.nodePortAddresses: nil for "primary" alone,
// left out or [], else canonical CIDR prefixes.
func (ck *checker) nodePortAddresses(field string, in []string) []netip.Prefix {
	if len(in) == 0 || len(in) == 1 && in[0] == NodePortAddressesPrimary {
		return nil
	}
	var out []netip.Prefix
	for i, s := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case s == NodePortAddressesPrimary:
			ck.addf(f, "%q is listed with CIDR prefixes (want [%s] alone, or CIDR prefixes only)", s, NodePortAddressesPrimary)
			continue
		case strings.EqualFold(s, NodePortAddressesPrimary):
			ck.addf(f, "%q is not supported (want %q: values are case-sensitive)", s, NodePortAddressesPrimary)
			continue
		}
		p := ck.prefix(f, s, exNodePortCIDR)
		if !p.IsValid() {
			continue
		}
		if j := slices.Index(out, p); j >= 0 {
			ck.addf(f, "%s is listed twice (want each prefix once)", p)
			continue
		}
		out = append(out, p)
	}
	return out
}

// The values of the schema's enums, in the order messages list them.
var (
	protocols = []lb.Protocol{lb.TCP, lb.UDP}
	modes     = []lb.Mode{lb.ModeNAT, lb.ModeProxy}
	pickers   = []lb.PickerKind{lb.PickRandom, lb.PickRoundRobin, lb.PickLeastConn, lb.PickMaglev}
	policies  = []lb.TrafficPolicy{lb.PolicyCluster, lb.PolicyLocal}
	types     = []lb.ServiceType{lb.TypeClusterIP, lb.TypeNodePort, lb.TypeLoadBalancer}
	// affinities lists None first.
	affinities = []lb.Affinity{lb.AffinityNone, lb.AffinityClientIP}
)

// duration parses s as a duration ("30s", "1h30m") within lo..hi. An
// empty or zero duration is def.
func (ck *checker) duration(field, s string, def, lo, hi time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		ck.addf(field, "%q is not a duration (want a number with a unit, ms, s, m or h, e.g. %q)", s, shortDuration(def))
		return def
	}
	switch {
	case d == 0:
		return def
	case d < lo || d > hi:
		ck.addf(field, "%q is out of range (want %s..%s, or leave it out for %s)", s, shortDuration(lo), shortDuration(hi), shortDuration(def))
		return def
	}
	return d
}

// count checks that n, def when 0, is within lo..hi; why explains hi.
func (ck *checker) count(field string, n, def, lo, hi int, why string) int {
	if n == 0 {
		return def
	}
	if n < lo || n > hi {
		ck.addf(field, "%d is out of range (want %d..%d%s, or leave it out for %d)", n, lo, hi, why, def)
		return def
	}
	return n
}

// shortDuration formats d as time.Duration does, without zero minutes
// and seconds after a unit: "1m", "720h", "1h30m".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// egress parses the egress section.
func (ck *checker) egress(f *EgressSpec) Egress {
	e := Egress{Masquerade: f.Masquerade}
	e.NonMasqueradeCIDRs = ck.prefixes("egress.nonMasqueradeCIDRs", f.NonMasqueradeCIDRs, exCluster, false)
	e.MaxFlows = int64(ck.count("egress.maxFlows", f.MaxFlows, int(lb.DefaultProxyMaxConns), 1, 1<<24, ""))
	perPod := ck.count("egress.maxFlowsPerPod", f.MaxFlowsPerPod, int(min(lb.DefaultProxyMaxPerClient, e.MaxFlows)), 1, int(e.MaxFlows), " (at most egress.maxFlows)")
	e.MaxFlowsPerPod = int64(perPod)
	return e
}
