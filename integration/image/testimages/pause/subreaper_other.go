//go:build !linux

package main

import "errors"

// setSubreaper: child subreapers are a Linux feature. pause runs in Linux
// containers; elsewhere it only builds.
func setSubreaper() error { return errors.ErrUnsupported }
