//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "tunfd: TUN devices are handed over on Linux only")
	os.Exit(1)
}
