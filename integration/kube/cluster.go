package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The users Start makes client certificates for.
const (
	// AdminUser is in group system:masters: it may do everything.
	AdminUser = "admin"
	// VrouterUser has no rights until a test binds a role to it.
	VrouterUser = "vrouter"
)

// Environment variables Start reads.
const (
	EnvAPIServer   = "KUBE_APISERVER"       // path of kube-apiserver
	EnvEtcd        = "ETCD"                 // path of etcd
	EnvRequireKube = "VROUTER_REQUIRE_KUBE" // "1": missing binaries are an error, not a skip
)

// stopTimeout is how long Close waits for a process to exit after SIGTERM
// before it kills it. kube-apiserver usually stops in about a second, but
// now and then its graceful shutdown waits on an HTTP/2 connection
// accepted while it was stopping (seen right after start-up, with its own
// loopback clients); the processes' state is thrown away, so Close does
// not wait for that.
const stopTimeout = 5 * time.Second

// DefaultServiceCIDR is the seed cluster's --service-cluster-ip-range.
const DefaultServiceCIDR = "10.96.0.0/12"

// Options configure Start. Zero values are the documented defaults.
type Options struct {
	// ServiceCIDR is --service-cluster-ip-range. Default
	// DefaultServiceCIDR.
	ServiceCIDR string
	// StartTimeout bounds the wait for etcd and for the API server's
	// /readyz. Default 2 minutes (a loaded 2-core machine with -race
	// tests running beside it).
	StartTimeout time.Duration
	// APIServerArgs are appended to kube-apiserver's command line.
	APIServerArgs []string
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// URL is the API server's address, https://127.0.0.1:<port>.
	URL string
	// Admin and Vrouter are client configurations of the two users;
	// AdminKubeconfig and VrouterKubeconfig are the same as kubeconfig
	// files.
	Admin, Vrouter                     *rest.Config
	AdminKubeconfig, VrouterKubeconfig string
	// Dir holds the certificates, kubeconfigs, etcd's data and the logs
	// (etcd.log, kube-apiserver.log); Close removes it.
	Dir string

	procs     []*Process // started first, stopped last
	closeOnce sync.Once
	closeErr  error
}

// Start runs etcd and kube-apiserver for tb and registers Close with
// tb.Cleanup. Missing binaries skip tb (see the package documentation).
func Start(tb testing.TB, opts Options) (*Cluster, error) {
	tb.Helper()
	apiserver, etcd, err := binaries()
	if err != nil {
		if os.Getenv(EnvRequireKube) == "1" {
			return nil, fmt.Errorf("%w (%s=1 makes this an error)", err, EnvRequireKube)
		}
		tb.Skipf("skipping: %v", err)
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	dir, err := os.MkdirTemp(tmpBase(), "vrouter-kube-")
	if err != nil {
		return nil, fmt.Errorf("make the cluster's directory: %w", err)
	}
	c := &Cluster{Dir: dir}
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, p := range c.procs {
				tb.Logf("%s", Tail(p.Log, 40))
			}
		}
		if err := c.Close(); err != nil {
			tb.Errorf("stop the control plane: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	if err := c.start(ctx, apiserver, etcd, opts); err != nil {
		c.Close()
		return nil, err
	}
	tb.Logf("kube-apiserver %s ready (etcd %s, files in %s)", c.URL, etcd, c.Dir)
	return c, nil
}

func (c *Cluster) start(ctx context.Context, apiserverBin, etcdBin string, opts Options) error {
	p, err := newPKI()
	if err != nil {
		return fmt.Errorf("make certificates: %w", err)
	}
	files := map[string][]byte{
		"ca.crt": p.caCert, "apiserver.crt": p.servingCert, "apiserver.key": p.servingKey,
		"sa.key": p.saSigningKey, "sa.pub": p.saPublicKey,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), data, 0o600); err != nil {
			return err
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	etcd, err := c.run("etcd", etcdBin,
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		"--logger=zap", "--log-outputs=stderr", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	plain := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	if err := etcd.WaitFor(ctx, "health", func() bool {
		resp, err := plain.Get(etcdURL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`))
	}); err != nil {
		return err
	}

	f := func(name string) string { return filepath.Join(c.Dir, name) }
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		"--cert-dir=" + f("certs"),
		"--tls-cert-file=" + f("apiserver.crt"),
		"--tls-private-key-file=" + f("apiserver.key"),
		"--client-ca-file=" + f("ca.crt"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + opts.ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"),
		"--service-account-signing-key-file=" + f("sa.key"),
		// No controllers run, and 127.0.0.1 may not be an endpoint:
		// no Endpoints for the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}
	args = append(args, opts.APIServerArgs...)
	apiserver, err := c.run("kube-apiserver", apiserverBin, args...)
	if err != nil {
		return err
	}

	if c.AdminKubeconfig, c.Admin, err = c.kubeconfig(AdminUser, p.caCert, p.adminCert, p.adminKey); err != nil {
		return err
	}
	if c.VrouterKubeconfig, c.Vrouter, err = c.kubeconfig(VrouterUser, p.caCert, p.vrouterCert, p.vrouterKey); err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(c.Admin)
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	get := func(path string) bool {
		resp, err := hc.Get(c.URL + path)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	}
	// Ready, and done bootstrapping: the system namespaces and the
	// kubernetes Service exist. Tests then see a settled cluster, and a
	// SIGTERM does not land in the middle of the bootstrap (which holds
	// the API server's shutdown up for 10s and more).
	return apiserver.WaitFor(ctx, "readiness", func() bool {
		return get("/readyz") &&
			get("/api/v1/namespaces/kube-system") &&
			get("/api/v1/namespaces/default/services/kubernetes")
	})
}

// kubeconfig writes user's kubeconfig file and returns it with its
// rest.Config.
func (c *Cluster) kubeconfig(user string, ca, cert, key []byte) (string, *rest.Config, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["vrouter-test"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "vrouter-test", AuthInfo: user}
	cfg.CurrentContext = user
	path := filepath.Join(c.Dir, user+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", nil, fmt.Errorf("write %s: %w", path, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return "", nil, fmt.Errorf("load %s: %w", path, err)
	}
	rc.UserAgent = "vrouter-integration/" + user
	return path, rc, nil
}

// Client returns a clientset for cfg (c.Admin or c.Vrouter), or fails tb.
func (c *Cluster) Client(tb testing.TB, cfg *rest.Config) kubernetes.Interface {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatalf("kubernetes.NewForConfig(%s): %v", cfg.Host, err)
	}
	return cs
}

// run starts a child process whose output goes to <Dir>/<name>.log.
func (c *Cluster) run(name, bin string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	if runtime.GOARCH == "arm64" {
		cmd.Env = append(cmd.Env, "ETCD_UNSUPPORTED_ARCH=arm64") // etcd 3.4
	}
	p, err := StartProcess(name, cmd, filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// Close stops kube-apiserver, then etcd (SIGTERM, SIGKILL after
// stopTimeout), and removes Dir. It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		for i := len(c.procs) - 1; i >= 0; i-- {
			errs = append(errs, c.procs[i].Stop(stopTimeout))
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// binaries finds kube-apiserver and etcd.
func binaries() (apiserver, etcd string, err error) {
	var missing []string
	find := func(env, name string) string {
		p, err := Binary(env, name)
		if err != nil {
			missing = append(missing, err.Error())
		}
		return p
	}
	apiserver, etcd = find(EnvAPIServer, "kube-apiserver"), find(EnvEtcd, "etcd")
	if len(missing) > 0 {
		return "", "", fmt.Errorf("control plane binaries not found: %s (looked in $%s/$%s, .cache/bin, PATH); build them with `make kube-tools` (integration/tools/build.sh; 20 to 35 minutes cold)",
			strings.Join(missing, ", "), EnvAPIServer, EnvEtcd)
	}
	return apiserver, etcd, nil
}

// Binary finds the program name: at $env if env is set and non-empty
// (it must exist), else in .cache/bin in the nearest directory above the
// working directory that has it (where integration/tools/build.sh puts
// it), else on PATH. The error names what is missing.
func Binary(env, name string) (string, error) {
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("$%s=%s: %w", env, p, err)
			}
			return p, nil
		}
	}
	if p := inCache(name); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", errors.New(name)
}

// inCache returns .cache/bin/name in the nearest directory above the
// working directory that has it, or "".
func inCache(name string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, ".cache", "bin", name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// tmpBase is where cluster directories go: /dev/shm when it is there, so
// that etcd's fsyncs cost nothing.
func tmpBase() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", "vrouter-probe-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return os.TempDir()
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
