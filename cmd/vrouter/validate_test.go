package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/validate")

// TestValidateGolden holds what vrouter validate (and vrouter run with a
// tuning file) print to the golden files in testdata/validate: every
// problem of a file in one run, each as FILE:LINE:COLUMN: FIELD: PROBLEM,
// standard input, and tuning files for Kubernetes mode. go test -update
// rewrites them.
func TestValidateGolden(t *testing.T) {
	const dir = "testdata/validate"
	three, err := os.ReadFile(filepath.Join(dir, "three-errors.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := os.ReadFile("../../configs/examples/hostgw-master.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		golden string
		args   []string
		stdin  []byte
	}{
		// An unknown field does not hide the two other problems.
		{"three-errors", []string{"validate", dir + "/three-errors.yaml"}, nil},
		{"stdin-bad", []string{"validate", "-"}, three},
		{"stdin-good", []string{"validate", "-"}, master},
		// Valid, with a warning: an IPv6 TUN address the kernel owns as
		// cni0's subnet-router anycast address.
		{"tun-anycast", []string{"validate", dir + "/tun-anycast.yaml"}, nil},
		{"tuning-good", []string{"validate", "--tuning", dir + "/tuning-good.yaml"}, nil},
		{"tuning-bad", []string{"validate", "--tuning", dir + "/tuning-bad.yaml"}, nil},
		// A tuning file checked as a node's file: what it lacks, and a hint.
		{"tuning-without-flag", []string{"validate", dir + "/tuning-good.yaml"}, nil},
		// vrouter run checks a tuning file before it asks the API server
		// (there is none here), with validate's messages.
		{"run-tuning-bad", []string{"run", "--kubeconfig", "/nonexistent/kubeconfig", "--node-name", "n", "--config", dir + "/tuning-bad.yaml"}, nil},
		// And a node's file before it opens anything.
		{"run-config-bad", []string{"run", "--config", dir + "/three-errors.yaml"}, nil},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			var code int
			if tc.stdin != nil {
				code = exitCode(validate(tc.args[1:], bytes.NewReader(tc.stdin), &stdout, &stderr), tc.args[0], &stderr)
			} else {
				code = mainWithArgs(tc.args, &stdout, &stderr)
			}
			got := fmt.Sprintf("$ vrouter %s\n[stdout]\n%s[stderr]\n%s[exit %d]\n", strings.Join(tc.args, " "), &stdout, &stderr, code)
			path := filepath.Join(dir, tc.golden+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if got != string(want) {
				t.Errorf("vrouter %q printed\n%s\nwant (%s)\n%s", tc.args, got, path, want)
			}
		})
	}
}

// exitCode is what mainWithArgs makes of a command's error.
func exitCode(err error, name string, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "vrouter %s: %v\n", name, err)
	return 1
}
