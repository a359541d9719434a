//go:build !linux

package router

import "golang.zx2c4.com/wireguard/conn"

// NewWireGuardBind returns the socket for wireguard.Options.Bind: on
// Linux the overlay's own (wgbind_linux.go), elsewhere wireguard-go's
// conn.StdNetBind.
func NewWireGuardBind() conn.Bind { return conn.NewStdNetBind() }
