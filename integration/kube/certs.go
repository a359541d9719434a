package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"
)

// pki is what Start makes for one control plane: a CA, the API server's
// serving certificate, client certificates and the ServiceAccount token
// signing key. Everything is PEM.
type pki struct {
	caCert                    []byte
	servingCert, servingKey   []byte
	adminCert, adminKey       []byte
	vrouterCert, vrouterKey   []byte
	saSigningKey, saPublicKey []byte
}

// CA is a test certificate authority: it issues the serving and client
// certificates of a control plane and its clients. Certificates are valid
// from an hour ago for a day.
type CA struct {
	// Cert is the CA certificate, PEM: the API server's --client-ca-file
	// and every kubeconfig's certificate-authority-data.
	Cert []byte
	// Key is the CA's private key, PEM (kube-controller-manager's
	// --cluster-signing-key-file).
	Key []byte

	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	mu     sync.Mutex
	serial int64
}

// NewCA makes a CA whose certificate has common name cn.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("make CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{
		Cert: pemBlock("CERTIFICATE", der), Key: pemBlock("EC PRIVATE KEY", keyDER),
		cert: cert, key: key, serial: 1,
	}, nil
}

// CertSpec says what a certificate is for.
type CertSpec struct {
	// CommonName and Organizations: the API server takes a client
	// certificate's CN as the user name and its O as the groups.
	CommonName    string
	Organizations []string
	// Server makes a serving certificate (for IPs and DNSNames), else a
	// client certificate.
	Server   bool
	IPs      []net.IP
	DNSNames []string
}

// Issue makes a key and a certificate for spec, both PEM.
func (ca *CA) Issue(spec CertSpec) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: spec.CommonName, Organization: spec.Organizations},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IPAddresses:  spec.IPs,
		DNSNames:     spec.DNSNames,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", spec.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// APIServerNames are the DNS names an API server's serving certificate
// carries: those of the kubernetes Service.
var APIServerNames = []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}

// ServiceAccountKeys makes the key pair that signs ServiceAccount tokens:
// the private key for --service-account-signing-key-file (and
// kube-controller-manager's --service-account-private-key-file), the
// public key for --service-account-key-file. Both PEM.
func ServiceAccountKeys() (private, public []byte, err error) {
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)), pemBlock("PUBLIC KEY", pub), nil
}

func newPKI() (*pki, error) {
	ca, err := NewCA("vrouter-test-ca")
	if err != nil {
		return nil, err
	}
	p := &pki{caCert: ca.Cert}
	if p.servingCert, p.servingKey, err = ca.Issue(CertSpec{
		CommonName: "kube-apiserver",
		Server:     true,
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
		DNSNames:   APIServerNames,
	}); err != nil {
		return nil, err
	}
	// The API server maps a client certificate's CN to the user name
	// and its O to groups; system:masters may do everything.
	if p.adminCert, p.adminKey, err = ca.Issue(CertSpec{CommonName: AdminUser, Organizations: []string{"system:masters"}}); err != nil {
		return nil, err
	}
	if p.vrouterCert, p.vrouterKey, err = ca.Issue(CertSpec{CommonName: VrouterUser}); err != nil {
		return nil, err
	}
	if p.saSigningKey, p.saPublicKey, err = ServiceAccountKeys(); err != nil {
		return nil, err
	}
	return p, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
