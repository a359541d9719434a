// Package kube runs a real control plane for tests: etcd and
// kube-apiserver v1.37.2 as child processes on loopback, with certificates
// made for the run, RBAC on, and no controllers.
//
//	test ──Start──▶ etcd         127.0.0.1:<random>   data dir under a temp dir
//	                 ▲
//	                 │ --etcd-servers
//	               kube-apiserver https://127.0.0.1:<random>
//	                 ▲    --authorization-mode=RBAC, --service-cluster-ip-range=10.96.0.0/12,
//	                 │    client certificates from a CA made for the run
//	     admin (system:masters)      vrouter (no rights until a test binds a role)
//	     Cluster.Admin / AdminKubeconfig       Cluster.Vrouter / VrouterKubeconfig
//
// The binaries come from $KUBE_APISERVER and $ETCD, else from .cache/bin
// in the repository (integration/tools/build.sh, `make kube-tools`), else
// from PATH. Without them Start skips the test, saying how to build them,
// unless VROUTER_REQUIRE_KUBE=1, which makes it an error.
//
// Close (also registered with the test's Cleanup) stops both processes and
// removes every file Start made. The processes get SIGKILL if the test
// binary dies first (Linux).
package kube
