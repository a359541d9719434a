package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vrouter/vrouter/integration/kube"
)

// pki is what writePKI made: the CA and the files the components read.
type pki struct {
	ca *kube.CA
	// dir holds ca.crt, ca.key, apiserver.{crt,key},
	// apiserver-kubelet-client.{crt,key}, sa.{key,pub} and one kubeconfig
	// per client.
	dir string
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// masterIP is the master's underlay address, where kube-apiserver
// listens.
const masterIP = "192.168.31.201"

// writePKI makes the CA, the API server's certificates, the
// ServiceAccount key pair and the admin's kubeconfig.
func (c *Cluster) writePKI() (*pki, error) {
	ca, err := kube.NewCA("vrouter-cluster-ca")
	if err != nil {
		return nil, err
	}
	p := &pki{ca: ca, dir: filepath.Join(c.Dir, "pki")}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	c.CA = ca.Cert
	c.APIServer = "https://" + net.JoinHostPort(masterIP, strconv.Itoa(APIServerPort))
	files := map[string][]byte{"ca.crt": ca.Cert, "ca.key": ca.Key}
	add := func(name string, spec kube.CertSpec) error {
		crt, key, err := ca.Issue(spec)
		if err != nil {
			return err
		}
		files[name+".crt"], files[name+".key"] = crt, key
		return nil
	}
	if err := add("apiserver", kube.CertSpec{
		CommonName: "kube-apiserver", Server: true,
		IPs:      []net.IP{net.ParseIP(masterIP), net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		DNSNames: kube.APIServerNames,
	}); err != nil {
		return nil, err
	}
	// The API server's client certificate towards the kubelets (exec,
	// logs); the kubelets authorize it through the API server (webhook),
	// and system:masters may do everything.
	if err := add("apiserver-kubelet-client", kube.CertSpec{
		CommonName: "kube-apiserver-kubelet-client", Organizations: []string{"system:masters"},
	}); err != nil {
		return nil, err
	}
	if files["sa.key"], files["sa.pub"], err = kube.ServiceAccountKeys(); err != nil {
		return nil, err
	}
	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	if c.AdminKubeconfig, err = p.kubeconfig(c.APIServer, "admin", kube.CertSpec{
		CommonName: "admin", Organizations: []string{"system:masters"},
	}); err != nil {
		return nil, err
	}
	if c.Admin, err = clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig); err != nil {
		return nil, err
	}
	c.Admin.UserAgent = "vrouter-integration/admin"
	c.Admin.Dial = c.dialIn(Master)
	return p, nil
}

// kubeconfig issues a client certificate for spec and writes a
// kubeconfig for it, named <name>.kubeconfig, that reaches server.
func (p *pki) kubeconfig(server, name string, spec kube.CertSpec) (string, error) {
	crt, key, err := p.ca.Issue(spec)
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["vrouter-cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.ca.Cert}
	cfg.AuthInfos[spec.CommonName] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "vrouter-cluster", AuthInfo: spec.CommonName}
	cfg.CurrentContext = "default"
	path := p.path(name + ".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// startControlPlane runs etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler in the master's network namespace and waits until
// each is healthy.
func (c *Cluster) startControlPlane(ctx context.Context, p *pki) error {
	inMaster := func(name string, args ...string) (*kube.Process, error) {
		proc, err := c.run(name, c.Net.Command(Master, c.bins[name], args...))
		if err == nil {
			c.cp = append(c.cp, proc)
		}
		return proc, err
	}
	plain := &http.Client{
		Transport: &http.Transport{DialContext: c.dialIn(Master), DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
	ok := func(hc *http.Client, url string) func() bool {
		return func() bool {
			resp, err := hc.Get(url)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
			return resp.StatusCode == http.StatusOK
		}
	}

	etcd, err := inMaster("etcd",
		"--name=master",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=master=http://127.0.0.1:2380",
		"--logger=zap", "--log-outputs=stderr", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	if err := etcd.WaitFor(ctx, "health", ok(plain, "http://127.0.0.1:2379/health")); err != nil {
		return err
	}

	apiserver, err := inMaster("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+masterIP,
		"--advertise-address="+masterIP,
		"--secure-port="+strconv.Itoa(APIServerPort),
		"--cert-dir="+filepath.Join(c.Dir, "apiserver-certs"),
		"--tls-cert-file="+p.path("apiserver.crt"),
		"--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"),
		"--service-account-signing-key-file="+p.path("sa.key"),
		"--allow-privileged=true",
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	admin, err := rest.HTTPClientFor(c.Admin)
	if err != nil {
		return err
	}
	defer admin.CloseIdleConnections()
	// Ready, and done bootstrapping: the system namespaces and the
	// kubernetes Service exist.
	if err := apiserver.WaitFor(ctx, "readiness", func() bool {
		return ok(admin, c.APIServer+"/readyz")() &&
			ok(admin, c.APIServer+"/api/v1/namespaces/kube-system")() &&
			ok(admin, c.APIServer+"/api/v1/namespaces/default/services/kubernetes")()
	}); err != nil {
		return err
	}

	kcmConfig, err := p.kubeconfig(c.APIServer, "kube-controller-manager", kube.CertSpec{CommonName: "system:kube-controller-manager"})
	if err != nil {
		return err
	}
	kcm, err := inMaster("kube-controller-manager",
		"--kubeconfig="+kcmConfig,
		"--authentication-kubeconfig="+kcmConfig,
		"--authorization-kubeconfig="+kcmConfig,
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+ClusterCIDR,
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-private-key-file="+p.path("sa.key"),
		"--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-signing-cert-file="+p.path("ca.crt"),
		"--cluster-signing-key-file="+p.path("ca.key"),
		"--configure-cloud-routes=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10257",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	schedConfig, err := p.kubeconfig(c.APIServer, "kube-scheduler", kube.CertSpec{CommonName: "system:kube-scheduler"})
	if err != nil {
		return err
	}
	sched, err := inMaster("kube-scheduler",
		"--kubeconfig="+schedConfig,
		"--authentication-kubeconfig="+schedConfig,
		"--authorization-kubeconfig="+schedConfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10259",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	insecure := &http.Client{
		Transport: &http.Transport{DialContext: c.dialIn(Master), DisableKeepAlives: true, TLSClientConfig: insecureTLS()},
		Timeout:   5 * time.Second,
	}
	if err := kcm.WaitFor(ctx, "health", ok(insecure, "https://127.0.0.1:10257/healthz")); err != nil {
		return err
	}
	return sched.WaitFor(ctx, "health", ok(insecure, "https://127.0.0.1:10259/healthz"))
}
