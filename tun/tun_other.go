//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
)

// linuxOnly is the error every function here wraps: package tun drives
// Linux's TUN driver (/dev/net/tun) and rtnetlink, and nothing else. It
// matches errors.ErrUnsupported.
type linuxOnly struct{}

func (linuxOnly) Error() string {
	return "TUN devices are supported on Linux only, not " + runtime.GOOS
}

func (linuxOnly) Is(target error) bool { return target == errors.ErrUnsupported }

// Open is implemented on Linux only.
func Open(opts Options) (Device, error) {
	return nil, fmt.Errorf("create TUN %s: %w", opts.name(), linuxOnly{})
}

// OpenQueues is implemented on Linux only.
func OpenQueues(opts Options, n int) ([]Device, error) {
	return nil, fmt.Errorf("create TUN %s: %w", opts.name(), linuxOnly{})
}

// Adopt is implemented on Linux only.
func Adopt(fd int, name string) (Device, error) {
	return nil, fmt.Errorf("adopt TUN fd %d: %w", fd, linuxOnly{})
}

// Configure is implemented on Linux only.
func Configure(name string, c LinkConfig) error {
	return fmt.Errorf("configure TUN %s: %w", name, linuxOnly{})
}

// SyncRoutes is implemented on Linux only.
func SyncRoutes(name string, want []netip.Prefix) error {
	return fmt.Errorf("sync routes on TUN %s: %w", name, linuxOnly{})
}

// SyncEgress is implemented on Linux only.
func SyncEgress(name string, r EgressRules) error {
	return fmt.Errorf("sync egress rules for TUN %s: %w", name, linuxOnly{})
}

// RemoveEgress is implemented on Linux only.
func RemoveEgress() error { return fmt.Errorf("remove egress rules: %w", linuxOnly{}) }

// EgressRulesInstalled is implemented on Linux only.
func EgressRulesInstalled() ([]EgressRule, error) {
	return nil, fmt.Errorf("list egress rules: %w", linuxOnly{})
}
