package cni

import (
	"encoding/json"
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// The file a node of the seed's cluster gets (hostgw-master, the default
// tunnel MTU over an IPv4 underlay), as the runtime reads it.
const seedConflist = `{
  "cniVersion": "1.0.0",
  "name": "vrouter",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "mtu": 1472,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [
            {
              "subnet": "10.244.0.0/24"
            }
          ]
        ],
        "routes": [
          {
            "dst": "0.0.0.0/0"
          }
        ]
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
`

func TestConflistIPv4(t *testing.T) {
	n := Network{PodCIDRs: prefixes("10.244.0.0/24"), MTU: 1472}
	got, err := Conflist(n)
	if err != nil {
		t.Fatalf("Conflist(%+v): %v", n, err)
	}
	if string(got) != seedConflist {
		t.Errorf("Conflist(%+v) =\n%s\nwant\n%s", n, got, seedConflist)
	}
	checkSpec(t, got)
}

// parsed is the part of a conflist the tests look at.
type parsed struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type         string          `json:"type"`
		Bridge       string          `json:"bridge"`
		MTU          int             `json:"mtu"`
		Capabilities map[string]bool `json:"capabilities"`
		IPAM         *struct {
			Type    string                `json:"type"`
			DataDir string                `json:"dataDir"`
			Ranges  [][]map[string]string `json:"ranges"`
			Routes  []map[string]string   `json:"routes"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func parse(t *testing.T, b []byte) parsed {
	t.Helper()
	var p parsed
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("conflist does not parse: %v\n%s", err, b)
	}
	return p
}

// checkSpec holds a conflist to the CNI spec's rules for a network
// configuration list and to what the reference plugins need.
func checkSpec(t *testing.T, b []byte) {
	t.Helper()
	p := parse(t, b)
	if p.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q, want 1.0.0", p.CNIVersion)
	}
	// The spec's network name rule.
	if !regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).MatchString(p.Name) {
		t.Errorf("name %q breaks the CNI spec's name rule", p.Name)
	}
	if len(p.Plugins) == 0 {
		t.Fatal("no plugins")
	}
	for i, pl := range p.Plugins {
		if pl.Type == "" {
			t.Errorf("plugins[%d] has no type", i)
		}
	}
	br := p.Plugins[0]
	if br.Type != "bridge" || br.IPAM == nil || br.IPAM.Type != "host-local" {
		t.Fatalf("plugins[0] = %+v, want bridge with host-local IPAM", br)
	}
	if br.IPAM.DataDir != "" {
		t.Errorf("ipam.dataDir %q, want host-local's default", br.IPAM.DataDir)
	}
	for i, set := range br.IPAM.Ranges {
		if len(set) == 0 {
			t.Errorf("ipam.ranges[%d] is empty", i)
		}
		for _, r := range set {
			if _, err := netip.ParsePrefix(r["subnet"]); err != nil {
				t.Errorf("ipam.ranges[%d] subnet %q: %v", i, r["subnet"], err)
			}
		}
	}
}

func TestConflistDualStack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cidrs  []netip.Prefix
		ranges [][]map[string]string
		routes []map[string]string
	}{
		{
			name:   "IPv4 primary",
			cidrs:  prefixes("10.244.0.0/24", "fd00:10:244::/64"),
			ranges: [][]map[string]string{{{"subnet": "10.244.0.0/24"}}, {{"subnet": "fd00:10:244::/64"}}},
			routes: []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}},
		},
		{
			name:   "IPv6 primary",
			cidrs:  prefixes("fd00:10:244:1::/64", "10.244.1.0/24"),
			ranges: [][]map[string]string{{{"subnet": "fd00:10:244:1::/64"}}, {{"subnet": "10.244.1.0/24"}}},
			routes: []map[string]string{{"dst": "::/0"}, {"dst": "0.0.0.0/0"}},
		},
		{
			name:   "IPv6 only",
			cidrs:  prefixes("fd00:10:244:2::/64"),
			ranges: [][]map[string]string{{{"subnet": "fd00:10:244:2::/64"}}},
			routes: []map[string]string{{"dst": "::/0"}},
		},
		{
			// Not from the API server (one per family), but a config
			// file may list two: host-local takes both as one family's
			// range set, one address per pod.
			name:   "two IPv4 ranges",
			cidrs:  prefixes("10.244.0.0/25", "10.244.0.128/25"),
			ranges: [][]map[string]string{{{"subnet": "10.244.0.0/25"}, {"subnet": "10.244.0.128/25"}}},
			routes: []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := Network{PodCIDRs: tc.cidrs, MTU: 1452}
			b, err := Conflist(n)
			if err != nil {
				t.Fatalf("Conflist(%+v): %v", n, err)
			}
			checkSpec(t, b)
			p := parse(t, b)
			ipam := p.Plugins[0].IPAM
			if !reflect.DeepEqual(ipam.Ranges, tc.ranges) {
				t.Errorf("Conflist(%v) ranges %v, want %v", tc.cidrs, ipam.Ranges, tc.ranges)
			}
			if !reflect.DeepEqual(ipam.Routes, tc.routes) {
				t.Errorf("Conflist(%v) routes %v, want %v", tc.cidrs, ipam.Routes, tc.routes)
			}
			if p.Plugins[0].MTU != 1452 {
				t.Errorf("Conflist(%v) mtu %d, want 1452", tc.cidrs, p.Plugins[0].MTU)
			}
			if pm := p.Plugins[1]; pm.Type != "portmap" || !pm.Capabilities["portMappings"] {
				t.Errorf("plugins[1] = %+v, want portmap with the portMappings capability", pm)
			}
		})
	}
}

func TestConflistRefuses(t *testing.T) {
	for _, tc := range []struct {
		n    Network
		want string
	}{
		{Network{MTU: 1472}, "no pod CIDR"},
		{Network{PodCIDRs: prefixes("10.244.0.1/24"), MTU: 1472}, "10.244.0.1/24 is not a network prefix"},
		{Network{PodCIDRs: []netip.Prefix{{}}, MTU: 1472}, "not a network prefix"},
		{Network{PodCIDRs: prefixes("10.244.0.0/24")}, "MTU 0 is out of range (want 68..65535)"},
		{Network{PodCIDRs: prefixes("10.244.0.0/24", "fd00::/64"), MTU: 1200}, "MTU 1200 is out of range (want 1280..65535)"},
		{Network{PodCIDRs: prefixes("10.244.0.0/24"), MTU: 70000}, "MTU 70000"},
	} {
		b, err := Conflist(tc.n)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Conflist(%+v) = %q, %v; want an error saying %q", tc.n, b, err, tc.want)
		}
	}
}

// files lists the names in dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "cni", "net.d") // not there yet
	path := filepath.Join(dir, FileName)
	v1 := []byte(seedConflist)

	written, err := Write(dir, v1)
	if err != nil || !written {
		t.Fatalf("Write(%s) into a missing directory = %v, %v; want written", dir, written, err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(v1) {
		t.Fatalf("after Write: %s holds %q (%v), want the conflist", path, got, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s has mode %v, want 0644 (the runtime reads it)", path, fi.Mode().Perm())
	}

	// The same content again: the file is left alone.
	written, err = Write(dir, v1)
	if err != nil || written {
		t.Errorf("Write of the same conflist = %v, %v; want not written", written, err)
	}
	if fi2, err := os.Stat(path); err != nil || !os.SameFile(fi, fi2) || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("Write of the same conflist replaced or touched the file (%v)", err)
	}

	// A new pod CIDR: the file is replaced whole. A reader that opened
	// the old file reads the old config to its end, never a mix.
	reader, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	v2 := []byte(strings.ReplaceAll(seedConflist, "10.244.0.0/24", "10.244.7.0/24"))
	written, err = Write(dir, v2)
	if err != nil || !written {
		t.Fatalf("Write of a changed conflist = %v, %v; want written", written, err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(v2) {
		t.Errorf("after the rewrite: %s holds %q (%v), want the new conflist", path, got, err)
	}
	if old, err := io.ReadAll(reader); err != nil || string(old) != string(v1) {
		t.Errorf("a reader of the old file read %q (%v), want the old conflist whole", old, err)
	}
	if got := files(t, dir); !reflect.DeepEqual(got, []string{FileName}) {
		t.Errorf("directory holds %v, want only %s (no temporary file left)", got, FileName)
	}
}

func TestWriteFails(t *testing.T) {
	// A regular file where the directory should be: no temporary file is
	// left, and the error names the path.
	base := t.TempDir()
	blocker := filepath.Join(base, "net.d")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if written, err := Write(blocker, []byte(seedConflist)); err == nil || written || !strings.Contains(err.Error(), "net.d") {
		t.Errorf("Write(%s) where a file is = %v, %v; want an error naming the path", blocker, written, err)
	}
	if got := files(t, base); !reflect.DeepEqual(got, []string{"net.d"}) {
		t.Errorf("after a failed Write %s holds %v, want only the file that was there", base, got)
	}
}

func TestWriterFlag(t *testing.T) {
	n := Network{PodCIDRs: prefixes("10.244.0.0/24"), MTU: 1472}
	parse := func(args ...string) *DirFlag {
		t.Helper()
		var d DirFlag
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.Var(&d, "cni-conf-dir", "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &d
	}
	def := filepath.Join(t.TempDir(), "default")
	chosen := filepath.Join(t.TempDir(), "chosen")
	for _, tc := range []struct {
		args     []string
		def      string
		dir      string
		required bool
	}{
		{nil, def, def, false}, // the mode's default
		{nil, "", "", false},   // a mode without one
		{[]string{"--cni-conf-dir=" + chosen}, def, chosen, true}, // chosen: failing is an error
		{[]string{"--cni-conf-dir="}, def, "", false},             // turned off
	} {
		w := parse(tc.args...).Writer(tc.def, zap.NewNop())
		if w.Dir != tc.dir || w.Required != tc.required {
			t.Errorf("%v with default %q: Writer = {Dir: %q, Required: %v}, want {%q, %v}", tc.args, tc.def, w.Dir, w.Required, tc.dir, tc.required)
		}
	}

	// Turned off: nothing is written, even where the default would go.
	if err := parse("--cni-conf-dir=").Writer(def, zap.NewNop()).Write(n); err != nil {
		t.Errorf("Write with --cni-conf-dir= : %v", err)
	}
	if _, err := os.Stat(def); !os.IsNotExist(err) {
		t.Errorf("with --cni-conf-dir= the default directory was made (%v)", err)
	}

	// A default that cannot be written warns; a chosen one fails.
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	if err := parse().Writer(blocker, zap.New(core)).Write(n); err != nil {
		t.Errorf("Write to an unwritable default = %v, want nil and a warning", err)
	}
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("Write to an unwritable default logged %d warnings, want 1: %v", got, logs.All())
	}
	err := parse("--cni-conf-dir="+blocker).Writer(def, zap.NewNop()).Write(n)
	if err == nil || !strings.Contains(err.Error(), "--cni-conf-dir "+blocker) {
		t.Errorf("Write to an unwritable --cni-conf-dir = %v, want an error naming the flag and directory", err)
	}

	// Written once, logged once; the same network again is not rewritten.
	core, logs = observer.New(zapcore.InfoLevel)
	w := parse("--cni-conf-dir="+chosen).Writer(def, zap.New(core))
	for range 2 {
		if err := w.Write(n); err != nil {
			t.Fatalf("Write(%+v) into %s: %v", n, chosen, err)
		}
	}
	if got := logs.FilterMessage("CNI config written").Len(); got != 1 {
		t.Errorf("two Writes of one network logged %d writes, want 1: %v", got, logs.All())
	}
	if b, err := os.ReadFile(filepath.Join(chosen, FileName)); err != nil || string(b) != seedConflist {
		t.Errorf("%s holds %q (%v), want the seed's conflist", chosen, b, err)
	}

	// A nil Writer writes nothing.
	var nw *Writer
	if err := nw.Write(n); err != nil {
		t.Errorf("(*Writer)(nil).Write = %v, want nil", err)
	}
}
