package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vrouter/vrouter/configs"
)

// stdinName names standard input (`vrouter validate -`) in messages.
const stdinName = "<stdin>"

func validateCmd(args []string, stdout, stderr io.Writer) error {
	return validate(args, os.Stdin, stdout, stderr)
}

// validate is `vrouter validate`, reading "-" from stdin.
func validate(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tuning := fs.Bool("tuning", false, "check Kubernetes-mode tuning files (vrouter run --kubeconfig|--in-cluster --config FILE): no node, peers or services, which come from the API server")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter validate [--tuning] FILE|- ...

Checks each config file ("-": standard input) and prints what it configures,
or every problem it has, one line each as FILE:LINE:COLUMN: FIELD: PROBLEM.
Exits 1 if a file is invalid.

Flags:`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("no config file given (\"-\" reads standard input)")
	}
	failed := 0
	readStdin := false
	for _, path := range fs.Args() {
		name, data, err := path, []byte(nil), error(nil)
		if path == "-" {
			if readStdin {
				return usageErrorf(`"-" given twice: standard input is read once`)
			}
			readStdin = true
			name = stdinName
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(path)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s: cannot read: %v\n", name, err)
			failed++
			continue
		}
		if !validateOne(stdout, name, data, *tuning) {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d file(s) invalid", failed, fs.NArg())
	}
	return nil
}

// validateOne checks one file and prints the result; it reports whether
// the file is valid.
func validateOne(w io.Writer, name string, data []byte, tuning bool) bool {
	if tuning {
		f, err := configs.ParseTuningFile(name, data)
		if err != nil {
			printProblems(w, name, err)
			return false
		}
		fmt.Fprintf(w, "%s: ok — tuning file for Kubernetes mode: clusterCIDRs [%s], serviceCIDRs [%s]; node, peers and services from the API server\n",
			name, strings.Join(f.ClusterCIDRs, " "), strings.Join(f.ServiceCIDRs, " "))
		return true
	}
	cfg, err := configs.ParseFile(name, data)
	if err != nil {
		printProblems(w, name, err)
		if _, terr := configs.ParseTuning(data); terr == nil {
			fmt.Fprintf(w, "%s: it is a valid tuning file for Kubernetes mode: check it with vrouter validate --tuning\n", name)
		}
		return false
	}
	fmt.Fprintf(w, "%s: ok — node %s, pods %v, %d peer(s), %d service(s), tunnel MTU %d\n",
		name, cfg.Node.Name, cfg.Node.PodCIDRs, len(cfg.Peers), len(cfg.Services), cfg.Overlay.MTU)
	for _, l := range cfg.Warnings() {
		fmt.Fprintf(w, "%s: warning: %s\n", name, l)
	}
	return true
}

// printProblems prints a file's problems, one line each, then how many.
func printProblems(w io.Writer, name string, err error) {
	var fe *configs.FileError
	if !errors.As(err, &fe) {
		fmt.Fprintf(w, "%s: invalid: %v\n", name, err)
		return
	}
	for _, l := range fe.Lines() {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "%s: invalid: %d problem(s)\n", name, len(fe.Errs))
}
