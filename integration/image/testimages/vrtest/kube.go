package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// defaultSADir is where the kubelet mounts a Pod's ServiceAccount token and
// the cluster's CA.
const defaultSADir = "/var/run/secrets/kubernetes.io/serviceaccount"

// apiClient lists Services from the Kubernetes API with a ServiceAccount's
// token: plain HTTPS and JSON, no client-go.
type apiClient struct {
	base      string // https://10.96.0.1:443
	tokenFile string
	transport *http.Transport
	client    *http.Client
}

// inClusterAPI returns the API server's URL a Pod is given in its
// environment.
func inClusterAPI(getenv func(string) string) (string, error) {
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "", fmt.Errorf("no API server: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset (not in a Pod?); give --api")
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// newAPIClient returns a client of the API server at base that trusts
// saDir/ca.crt and sends saDir/token (read for every request, as the
// kubelet rotates it).
func newAPIClient(base, saDir string) (*apiClient, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if strings.HasPrefix(base, "https://") {
		caFile := filepath.Join(saDir, "ca.crt")
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("API server CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("API server CA: %s holds no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     30 * time.Second,
	}
	return &apiClient{
		base:      strings.TrimSuffix(base, "/"),
		tokenFile: filepath.Join(saDir, "token"),
		transport: tr,
		client:    &http.Client{Transport: tr, Timeout: 5 * time.Second},
	}, nil
}

// close drops idle connections.
func (c *apiClient) close() { c.transport.CloseIdleConnections() }

// serviceList is the part of a v1 ServiceList vrtest reads.
type serviceList struct {
	Items []struct {
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Spec struct {
			ClusterIP  string   `json:"clusterIP"`
			ClusterIPs []string `json:"clusterIPs"`
		} `json:"spec"`
	} `json:"items"`
}

// service is a Service with its ClusterIPs.
type service struct {
	namespace, name string
	ips             []netip.Addr
}

// services lists every Service in the cluster; headless Services ("None")
// and Services without a ClusterIP come with no addresses.
func (c *apiClient) services(ctx context.Context) ([]service, error) {
	url := c.base + "/api/v1/services"
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, fmt.Errorf("ServiceAccount token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err // names GET and the URL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	var list serviceList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET %s: decode ServiceList: %w", url, err)
	}
	out := make([]service, 0, len(list.Items))
	for _, it := range list.Items {
		svc := service{namespace: it.Metadata.Namespace, name: it.Metadata.Name}
		ips := it.Spec.ClusterIPs
		if len(ips) == 0 && it.Spec.ClusterIP != "" {
			ips = []string{it.Spec.ClusterIP}
		}
		for _, s := range ips {
			if ip, err := netip.ParseAddr(s); err == nil { // "None" is headless
				svc.ips = append(svc.ips, ip)
			}
		}
		out = append(out, svc)
	}
	return out, nil
}
