package configs

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// tuningOnly are the sections a tuning file must not have, and where they
// come from instead.
var tuningOnly = []struct{ field, from string }{
	{"node", "the node is its Node in the API server"},
	{"peers", "the peers are the other Nodes in the API server"},
	{"services", "the Services are the API server's Services and EndpointSlices"},
}

// LoadTuning reads the Kubernetes-mode tuning file at path and checks it
// as ParseTuning does. A file that cannot be read gives the read error;
// an invalid one a *FileError.
func LoadTuning(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tuning file: %w", err)
	}
	return ParseTuningFile(path, data)
}

// ParseTuningFile is ParseTuning for the contents of the file at path:
// its error is a *FileError naming path, as ParseFile's.
func ParseTuningFile(path string, data []byte) (*File, error) {
	f, err := ParseTuning(data)
	if err != nil {
		return nil, fileError(path, err)
	}
	return f, nil
}

// ParseTuning decodes a tuning file: the config file of a router whose
// node, peers and Services come from an API server (vrouter run
// --kubeconfig or --in-cluster --config FILE), which File.ForNode
// completes with the Node. It must not have node, peers or services; the
// rest is checked as Parse checks it, errors joined and located alike,
// except what depends on the Node (its pod CIDRs inside clusterCIDRs, the
// router addresses for its address families, an MTU over an IPv6
// underlay), which ForNode checks once the Node is known.
func ParseTuning(data []byte) (*File, error) {
	d := decode(data)
	if d.file == nil {
		return nil, d.err()
	}
	var ck checker
	for _, s := range tuningOnly {
		if _, ok := d.top[s.field]; ok {
			ck.keyf(s.field, "not allowed in a tuning file: with --kubeconfig or --in-cluster %s (remove it)", s.from)
		}
	}
	d.addForm(ck.errs)
	f := *d.file
	f.Node, f.Peers, f.Services = NodeSpec{}, nil, nil
	// Validated without a node: its problems are the Node's, not the
	// file's.
	if _, err := f.config(NodeSpec{}); err != nil {
		var rest []error
		for _, e := range unjoin(err) {
			if fe, ok := e.(*FieldError); ok && (fe.Field == "node" || strings.HasPrefix(fe.Field, "node.")) {
				continue
			}
			rest = append(rest, e)
		}
		d.add(errors.Join(rest...))
	}
	if err := d.err(); err != nil {
		return nil, err
	}
	return &f, nil
}
