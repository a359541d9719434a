package harness

import (
	"os"
	"testing"
)

// The bench and the tests read the kernel's counters from /proc/net/snmp and
// /proc/net/netstat: each group's names line pairs with its values line,
// other groups are left out, and a line out of pair is skipped.
func TestParseNetstat(t *testing.T) {
	out := []byte(`Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 404231
Tcp: RtoAlgorithm ActiveOpens PassiveOpens MaxConn
Tcp: 1 7068 6737 -1
Udp: InDatagrams NoPorts
Udp: 28055 21
TcpExt: SyncookiesSent TW PAWSTimewait TCPSynRetrans
TcpExt: 0 5968 7775 16030
IpExt: InNoRoutes
TcpExt: Orphan
`)
	got := ParseNetstat(out, "Tcp", "TcpExt")
	want := map[string]float64{
		"Tcp.RtoAlgorithm": 1, "Tcp.ActiveOpens": 7068, "Tcp.PassiveOpens": 6737, "Tcp.MaxConn": -1,
		"TcpExt.SyncookiesSent": 0, "TcpExt.TW": 5968, "TcpExt.PAWSTimewait": 7775, "TcpExt.TCPSynRetrans": 16030,
	}
	if len(got) != len(want) {
		t.Errorf("got %d counters, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	// This machine's own files parse the same way.
	var own []byte
	for _, f := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		own = append(own, b...)
	}
	c := ParseNetstat(own, "Tcp", "TcpExt")
	for _, k := range []string{"Tcp.PassiveOpens", "TcpExt.PAWSTimewait", "TcpExt.TCPSynRetrans"} {
		if _, ok := c[k]; !ok {
			t.Errorf("%s not in this machine's counters", k)
		}
	}
}
