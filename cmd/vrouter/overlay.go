package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/router"
)

// listenOverlay opens the overlay socket on cfg.Overlay.Listen. A bind
// that fails because the address is not in this network namespace
// (EADDRNOTAVAIL) says which field chose it and what to set: a router in a
// namespace of its own (unshare -Urn, a rootless node) does not hold its
// node's underlay address, which the overlay binds by default.
func listenOverlay(cfg *configs.Config) (router.Conn, error) {
	conn, err := router.ListenUDP(cfg.Overlay.Listen)
	if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return conn, err
	}
	addr := cfg.Overlay.Listen.Addr()
	if addr == cfg.Node.Underlay {
		return nil, fmt.Errorf("%w: %s (node.underlayAddress, which the overlay binds unless overlay.listenAddress is set) is not an address of this network namespace; set overlay.listenAddress to one it has, such as 0.0.0.0 (any), as a router in a network namespace of its own (unshare -Urn, a rootless node) needs", err, addr)
	}
	return nil, fmt.Errorf("%w: overlay.listenAddress %s is not an address of this network namespace; set it to one it has, such as 0.0.0.0 (any)", err, addr)
}
