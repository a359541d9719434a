//go:build !linux

package main

import (
	"fmt"
	"io"
	"runtime"
)

// demoCmd is the demo where it cannot run: it builds its cluster out of
// Linux network namespaces and TUN devices (demo_linux.go).
func demoCmd(args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("vrouter demo builds its cluster in Linux network namespaces and TUN devices: it runs on Linux only, not %s", runtime.GOOS)
}
