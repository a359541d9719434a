//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
)

// Open is implemented on Linux only.
func Open(opts Options) (Device, error) {
	return nil, fmt.Errorf("create TUN %s: %w", opts.name(), errors.ErrUnsupported)
}

// OpenQueues is implemented on Linux only.
func OpenQueues(opts Options, n int) ([]Device, error) {
	return nil, fmt.Errorf("create TUN %s: %w", opts.name(), errors.ErrUnsupported)
}

// Adopt is implemented on Linux only.
func Adopt(fd int, name string) (Device, error) {
	return nil, fmt.Errorf("adopt TUN fd %d: %w", fd, errors.ErrUnsupported)
}

// Configure is implemented on Linux only.
func Configure(name string, c LinkConfig) error {
	return fmt.Errorf("configure TUN %s: %w", name, errors.ErrUnsupported)
}

// SyncRoutes is implemented on Linux only.
func SyncRoutes(name string, want []netip.Prefix) error {
	return fmt.Errorf("sync routes on TUN %s: %w", name, errors.ErrUnsupported)
}
