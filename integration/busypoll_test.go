package integration

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/harness"
	"github.com/vrouter/vrouter/integration/topology"
)

// TestBusyPollSeed runs the seed's cluster with router.busyPoll, the
// opt-in low-latency mode: every cross-node check passes with each router
// reading its TUN and overlay socket from one polling goroutine, and at
// rest a router waits in poll(2) instead of spinning.
var tunStatusLine = regexp.MustCompile(`offload on \(TCP(, UDP)?\)(, batched I/O)?, busy polling 5ms`)

func TestBusyPollSeed(t *testing.T) {
	e := newEnv(t, "busypoll", topology.Seed(), harness.ConfigOptions{BusyPoll: "5ms"})
	e.startAll()
	for _, n := range e.spec.Nodes {
		eventually(t, 5*time.Second, n.Name+"'s router logs that it busy-polls", func() error {
			if off := e.logCount(n.Name, "busy polling is off"); off > 0 || e.logCount(n.Name, `busy polling	{"window": "5ms"}`) != 1 {
				return fmt.Errorf("no %q line in its log", `busy polling {"window": "5ms"}`)
			}
			return nil
		})
	}
	for _, n := range e.spec.Nodes {
		out, err := e.c.Command(n.Name, vrouterBin, "status").CombinedOutput() // the default socket of its namespace
		// UDP offload where the kernel has it (6.2 and later).
		if err != nil || !tunStatusLine.Match(out) {
			t.Errorf("vrouter status on %s: %v\n%s\nwant its TUN line to match %s", n.Name, err, out, tunStatusLine)
		}
	}
	seedChecks(t, e)

	t.Run("idle routers wait", func(t *testing.T) {
		time.Sleep(100 * time.Millisecond) // past the window after the last check's packets
		cpu := func() (sum float64) {
			for _, n := range e.spec.Nodes {
				s, err := processCPU(e.router(n.Name).PID())
				if err != nil {
					t.Fatal(err)
				}
				sum += s
			}
			return sum
		}
		const watch = 2 * time.Second
		c0 := cpu()
		time.Sleep(watch)
		// A router that kept polling would use a whole core, one that
		// polled a window after every poll(2) timeout a tenth of one;
		// one that waits uses next to nothing (its timers).
		if used := (cpu() - c0) / watch.Seconds(); used > 0.05 {
			t.Errorf("the two routers used %.0f%% of a core over %v with no traffic: a busy-polling router must wait in poll(2) once its window has passed", 100*used, watch)
		}
	})
}

// processCPU is process pid's user+system CPU time in seconds, from
// /proc/PID/stat.
func processCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime and stime fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q: too few fields", pid, b)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return float64(u+s) / 100, nil // USER_HZ
}
