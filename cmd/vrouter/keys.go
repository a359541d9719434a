package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/vrouter/vrouter/router/wireguard"
)

// genkeyCmd is `vrouter genkey`: a new WireGuard private key on stdout, as
// `wg genkey` prints one.
func genkeyCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter genkey > KEYFILE

Prints a new WireGuard private key in base64, as wg genkey does, for
overlay.privateKeyFile (keep it mode 0600: umask 077). A router with
overlay.encryption wireguard also generates its key there if the file is
missing. vrouter pubkey prints the public key that peers need.`)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	k, err := wireguard.GenerateKey()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, k)
	return err
}

// pubkeyCmd is `vrouter pubkey`: the public key of the private key on
// stdin, as `wg pubkey` prints it.
func pubkeyCmd(args []string, stdout, stderr io.Writer) error {
	return pubkey(args, os.Stdin, stdout, stderr)
}

func pubkey(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pubkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `Usage: vrouter pubkey < KEYFILE

Reads a WireGuard private key in base64 on standard input and prints its
public key, as wg pubkey does: the value of a peer's publicKey in the
other nodes' config files (Kubernetes mode publishes it on the Node).`)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	b, err := io.ReadAll(io.LimitReader(stdin, 1<<10))
	if err != nil {
		return fmt.Errorf("read the private key: %w", err)
	}
	k, err := wireguard.ParseKey(string(b))
	if err != nil {
		return fmt.Errorf("read the private key from standard input: %w", err)
	}
	_, err = fmt.Fprintln(stdout, k.Public())
	return err
}
