package harness

import (
	"slices"
	"strconv"
	"strings"
)

// ParseNetstat reads the kernel's protocol counters as /proc/net/snmp
// and /proc/net/netstat print them — for each group a line of names and a
// line of values, both starting "Group:" — keeping the groups named,
// keyed "Tcp.PassiveOpens", "TcpExt.PAWSTimewait", "Udp.InCsumErrors"
// and so on. A line out of pair is skipped.
func ParseNetstat(out []byte, groups ...string) map[string]float64 {
	c := map[string]float64{}
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) < 2 || len(names) != len(values) || names[0] != values[0] {
			continue
		}
		g := strings.TrimSuffix(names[0], ":")
		if !slices.Contains(groups, g) {
			continue
		}
		for j := 1; j < len(names); j++ {
			if v, err := strconv.ParseFloat(values[j], 64); err == nil {
				c[g+"."+names[j]] = v
			}
		}
		i++
	}
	return c
}
