package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/vrouter/vrouter/configs"
)

func validateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: vrouter validate FILE...\n\nChecks each config file and prints what it configures.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErrorf("no config file given")
	}
	failed := 0
	for _, path := range fs.Args() {
		cfg, err := configs.Load(path)
		if err != nil {
			fmt.Fprintf(stdout, "%s: invalid\n%v\n", path, err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s: ok — node %s, pods %v, %d peer(s), %d service(s), tunnel MTU %d\n",
			path, cfg.Node.Name, cfg.Node.PodCIDRs, len(cfg.Peers), len(cfg.Services), cfg.Overlay.MTU)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d file(s) invalid", failed, fs.NArg())
	}
	return nil
}
