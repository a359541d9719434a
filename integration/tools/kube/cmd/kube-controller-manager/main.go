// Command kube-controller-manager is upstream's (k8s.io/kubernetes
// cmd/kube-controller-manager), built for the real-cluster test
// (integration/cluster): it allocates the Nodes' pod CIDRs and runs the
// EndpointSlice controller.
package main

import (
	"os"
	_ "time/tzdata" // as upstream: time zones for CronJobs

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: version metric
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
