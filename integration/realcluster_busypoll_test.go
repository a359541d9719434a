package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/integration/cluster"
)

// testBusyPoll: a user turns on busy polling (the DaemonSet's commented
// --busy-poll flag) as a rolling update; each router says so in `vrouter
// status`, and pods talk across the nodes and through a ClusterIP as
// before. It runs before Encrypt: an encrypted overlay is not
// busy-polled.
func (rc *realCluster) testBusyPoll(t *testing.T) {
	ctx := context.Background()
	rc.rollOutFlag(ctx, "--busy-poll=5ms")
	for _, node := range []string{cluster.Master, cluster.Worker} {
		var out string
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out, "busy polling 5ms") {
			if time.Now().After(deadline) {
				t.Fatalf("60s after the rollout, vrouter status on %s does not say it busy-polls:\n%s", node, out)
			}
			time.Sleep(time.Second)
			out = rc.vrouterCmd(ctx, node, "status")
		}
	}
	rc.testPodToPod(t)
	rc.testClusterIP(t)
}

// rollOutFlag adds flag to the vrouter DaemonSet's arguments, as a user
// turning a feature on would, and waits for the rolling update to end.
func (rc *realCluster) rollOutFlag(ctx context.Context, flag string) {
	rc.kubectl(ctx, nil, "-n", "kube-system", "patch", "daemonset", "vrouter", "--type=json", "-p",
		`[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"`+flag+`"}]`)
	rc.kubectl(ctx, nil, "-n", "kube-system", "rollout", "status", "daemonset/vrouter", "--timeout=180s")
}
