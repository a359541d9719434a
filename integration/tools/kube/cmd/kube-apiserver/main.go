// Command kube-apiserver is upstream's kube-apiserver (k8s.io/kubernetes
// cmd/kube-apiserver), built from the module proxy for vrouter's integration
// tests. integration/tools/build.sh builds it into .cache/bin; integration/kube
// starts it against a loopback etcd.
package main

import (
	"os"
	_ "time/tzdata" // as upstream: time zones for CronJob validation

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
