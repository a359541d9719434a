//go:build linux

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/integration/harness"
)

// The NodePort measurements load my-service's node port from
// outsideClient, a host on the underlay, on both data paths: kube-proxy's
// NodePort rules in the kernel (kubeproxy.go) and vrouter's host
// listeners, which relay each connection to an endpoint.

// nodePortAvailable reports whether this vrouter takes node ports: the
// config package and `vrouter validate` accept my-service with a node
// port (a --vrouter binary from before node ports does not). Without,
// the vrouter bed's my-service has none and the NodePort rows are n/a
// for vrouter (the kernel's are still measured); with, a node port that
// does not answer (checkNodePorts) fails the run.
func nodePortAvailable(ctx context.Context, bin, work string) (bool, string) {
	dir := filepath.Join(work, "nodeport-check")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err.Error()
	}
	opts := harness.ConfigOptions{Services: nodePortServices(), Exclude: []string{outsideClient}}
	path, err := harness.WriteConfig(dir, benchSpec(), masterNode, opts)
	if err != nil {
		return false, fmt.Sprintf("the config package refuses type: NodePort: %v", err)
	}
	if out, err := exec.CommandContext(ctx, bin, "validate", path).CombinedOutput(); err != nil {
		return false, fmt.Sprintf("`vrouter validate` refuses type: NodePort: %s", firstLines(out, 2))
	}
	return true, ""
}

// nodePortServices are the seed's Services with my-service of type
// NodePort on myNodePort (externalTrafficPolicy Cluster, the default).
func nodePortServices() []configs.ServiceSpec {
	svcs := harness.SeedServices("")
	for i := range svcs {
		if svcs[i].Name == "my-service" {
			svcs[i].Type = configs.ServiceTypeNodePort
			svcs[i].Ports[0].NodePort = int(myNodePort)
		}
	}
	return svcs
}

// checkNodePorts makes sure my-service's node port answers outsideClient
// on both nodes' underlay addresses, retrying for a while as check does
// (a router may still be binding its listeners).
func (b *bed) checkNodePorts(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []string
	for ctx.Err() == nil {
		errs = errs[:0]
		for _, n := range []string{masterNode, workerNode} {
			url := "http://" + netip.AddrPortFrom(nodeAddr(n), myNodePort).String() + "/"
			r, err := b.c.HTTPGet(ctx, outsideClient, url)
			if err == nil && !slices.Contains(httpBackends, r.Server) {
				err = fmt.Errorf("http get %s from %s: answered by %q, want one of my-service's backends %v", url, outsideClient, r.Server, httpBackends)
			}
			if err != nil {
				errs = append(errs, err.Error())
			}
		}
		if len(errs) == 0 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("NodePort check on %s: my-service's node port %d does not answer %s: %s", b.mode, myNodePort, outsideClient, strings.Join(errs, "; "))
}
