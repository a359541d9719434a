package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"go.uber.org/zap"
)

const (
	// DefaultDir is where containerd and CRI-O read CNI configs by
	// default (their conf_dir); vrouter writes there in Kubernetes mode
	// unless --cni-conf-dir says otherwise.
	DefaultDir = "/etc/cni/net.d"
	// FileName is the conflist vrouter writes. Runtimes load the first
	// config in the directory by name: remove another network's file
	// (flannel's 10-flannel.conflist sorts first) when moving to vrouter.
	FileName = "10-vrouter.conflist"
	// NetworkName is the network's name in the conflist; host-local keeps
	// its leases under /var/lib/cni/networks/<NetworkName>.
	NetworkName = "vrouter"
	// Version is the CNI spec version of the conflist: 1.0.0, which the
	// reference plugins read since v1.0.0 and containerd since 1.6.
	Version = "1.0.0"
	// Bridge is the Linux bridge the pods' veths join.
	Bridge = "cni0"
)

// Network is what the conflist is made of: the node's pod CIDRs (at most
// one per address family from the API server; the first is the primary)
// and the MTU pods get, the router's TUN MTU.
type Network struct {
	PodCIDRs []netip.Prefix
	MTU      int
}

// The conflist as the reference plugins read it; field order is the file's.
type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type bridgeConf struct {
	Type        string   `json:"type"`
	Bridge      string   `json:"bridge"`
	IsGateway   bool     `json:"isGateway"`
	IPMasq      bool     `json:"ipMasq"`
	HairpinMode bool     `json:"hairpinMode"`
	MTU         int      `json:"mtu"`
	IPAM        ipamConf `json:"ipam"`
}

type ipamConf struct {
	Type   string      `json:"type"`
	Ranges [][]ipRange `json:"ranges"`
	Routes []route     `json:"routes"`
}

type ipRange struct {
	Subnet string `json:"subnet"`
}

type route struct {
	Dst string `json:"dst"`
}

type portmapConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

// Conflist renders n as a CNI network config list:
//
//   - bridge cni0, the pods' gateway (isGateway, which also turns on the
//     node's IP forwarding), no masquerade (vrouter routes pod addresses
//     as they are), hairpin mode (a pod reaches itself through a
//     ClusterIP), the MTU n.MTU;
//   - host-local IPAM with one range set per address family (dual-stack:
//     one IPv4 and one IPv6 address per pod), each pod CIDR a range, and
//     a default route per family through the bridge;
//   - portmap, so that hostPort works (the node needs the portmap plugin,
//     which every CNI plugins package ships).
//
// The runtime sets up the pod's loopback itself. Conflist is pure: the
// same Network gives the same bytes.
func Conflist(n Network) ([]byte, error) {
	if len(n.PodCIDRs) == 0 {
		return nil, errors.New("CNI config: no pod CIDR: the node needs one to hand out pod addresses")
	}
	var v4, v6 []ipRange
	var families []bool // true for IPv6, in the order the pod CIDRs name them
	for _, p := range n.PodCIDRs {
		if !p.IsValid() || p != p.Masked() {
			return nil, fmt.Errorf("CNI config: pod CIDR %s is not a network prefix (want e.g. 10.244.0.0/24)", p)
		}
		is6 := p.Addr().Is6()
		if !slices.Contains(families, is6) {
			families = append(families, is6)
		}
		r := ipRange{Subnet: p.String()}
		if is6 {
			v6 = append(v6, r)
		} else {
			v4 = append(v4, r)
		}
	}
	minMTU := 68 // RFC 791
	if len(v6) > 0 {
		minMTU = 1280 // RFC 8200
	}
	if n.MTU < minMTU || n.MTU > 65535 {
		return nil, fmt.Errorf("CNI config: MTU %d is out of range (want %d..65535)", n.MTU, minMTU)
	}
	ipam := ipamConf{Type: "host-local"}
	for _, is6 := range families {
		if is6 {
			ipam.Ranges = append(ipam.Ranges, v6)
			ipam.Routes = append(ipam.Routes, route{Dst: "::/0"})
		} else {
			ipam.Ranges = append(ipam.Ranges, v4)
			ipam.Routes = append(ipam.Routes, route{Dst: "0.0.0.0/0"})
		}
	}
	c := conflist{
		CNIVersion: Version,
		Name:       NetworkName,
		Plugins: []any{
			bridgeConf{Type: "bridge", Bridge: Bridge, IsGateway: true, IPMasq: false, HairpinMode: true, MTU: n.MTU, IPAM: ipam},
			portmapConf{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}},
		},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("CNI config: %w", err)
	}
	return append(b, '\n'), nil
}

// Write makes dir/FileName hold conflist: unless it already does, it
// writes a temporary file in dir (mode 0644), syncs it and renames it over
// the old one, so that a runtime reading the directory sees the old file
// or the new one, never a part. It creates dir (0755) if missing and
// reports whether it wrote.
func Write(dir string, conflist []byte) (written bool, err error) {
	path := filepath.Join(dir, FileName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, conflist) {
		return false, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("write CNI config: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("write CNI config: %w", err)
	}
	// The runtime loads *.conf, *.conflist and *.json: the temporary
	// file's .tmp keeps it from being read half-written.
	f, err := os.CreateTemp(dir, "."+FileName+"-*.tmp")
	if err != nil {
		return false, fmt.Errorf("write CNI config: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	_, err = f.Write(conflist)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write CNI config %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("write CNI config: %w", err)
	}
	// The rename is durable once the directory is synced; a failure here
	// leaves the new file in place, so it is not an error.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return true, nil
}

// DirFlag is the value of --cni-conf-dir: a directory, or "" for none. It
// remembers whether it was given, as its default depends on how vrouter
// runs (Writer).
type DirFlag struct {
	dir string
	set bool
}

func (f *DirFlag) String() string {
	if f == nil {
		return ""
	}
	return f.dir
}

func (f *DirFlag) Set(s string) error {
	f.dir, f.set = s, true
	return nil
}

// Writer is the Writer the flag selects: its directory if given (a
// failure to write there is an error), else def (a failure only warns, as
// with the health and admin endpoints' defaults). "" writes nothing.
func (f *DirFlag) Writer(def string, log *zap.Logger) *Writer {
	if f.set {
		return &Writer{Dir: f.dir, Required: f.dir != "", Log: log}
	}
	return &Writer{Dir: def, Log: log}
}

// Writer keeps the conflist in Dir equal to the node's network. Its
// methods may be called from one goroutine at a time.
type Writer struct {
	// Dir is the CNI config directory; "" writes nothing.
	Dir string
	// Required makes a failure to write an error. Otherwise it is logged
	// as a warning, Write returns nil, and vrouter routes without a CNI
	// config (something else may provide one).
	Required bool
	// Log gets one line per file written; nil logs nothing.
	Log *zap.Logger
}

// Write renders n's conflist and writes it into w.Dir if the file there
// differs, logging what it wrote. It does nothing when w.Dir is "" (or w
// is nil).
func (w *Writer) Write(n Network) error {
	if w == nil || w.Dir == "" {
		return nil
	}
	log := w.Log
	if log == nil {
		log = zap.NewNop()
	}
	b, err := Conflist(n)
	if err == nil {
		var written bool
		written, err = Write(w.Dir, b)
		if err == nil {
			path := filepath.Join(w.Dir, FileName)
			if written {
				log.Info("CNI config written", zap.String("path", path),
					zap.Stringers("podCIDRs", n.PodCIDRs), zap.Int("mtu", n.MTU), zap.String("bridge", Bridge))
			} else {
				log.Debug("CNI config up to date", zap.String("path", path))
			}
			return nil
		}
	}
	if w.Required {
		return fmt.Errorf("--cni-conf-dir %s: %w", w.Dir, err)
	}
	log.Warn("CNI config not written; pods on this node get no network from vrouter (pass --cni-conf-dir, or --cni-conf-dir= to turn this off)",
		zap.String("dir", w.Dir), zap.Error(err))
	return nil
}
