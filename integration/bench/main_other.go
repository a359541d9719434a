//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

// The benchmark builds the seed's cluster in Linux network namespaces and
// measures Linux's own data path against vrouter's: it has nothing to run
// elsewhere.
func main() {
	fmt.Fprintf(os.Stderr, "bench: the benchmark builds network namespaces and TUN devices: it runs on Linux only, not %s\n", runtime.GOOS)
	os.Exit(1)
}
