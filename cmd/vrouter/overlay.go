package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"go.uber.org/zap"

	"github.com/vrouter/vrouter/configs"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/wireguard"
)

// listenOverlay opens the overlay: the plain UDP socket on
// cfg.Overlay.Listen, or, with overlay.encryption wireguard, a WireGuard
// device on cfg.Overlay.Port with the key in overlay.privateKeyFile
// (generated there if missing).
//
// A plain bind that fails because the address is not in this network
// namespace (EADDRNOTAVAIL) says which field chose it and what to set: a
// router in a namespace of its own (unshare -Urn, a rootless node) does
// not hold its node's underlay address, which the overlay binds by
// default.
func listenOverlay(cfg *configs.Config, log *zap.Logger) (router.Conn, error) {
	if cfg.Overlay.Encryption == configs.EncryptionWireGuard {
		wg, err := listenWireGuard(cfg, log)
		if err != nil {
			return nil, err
		}
		return wg, nil
	}
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

// listenWireGuard starts the encrypted overlay on the router's own UDP
// socket. WireGuard listens on every address of its port, as wg(8) does
// (of the underlay's family): overlay.listenAddress does not narrow it.
func listenWireGuard(cfg *configs.Config, log *zap.Logger) (*wireguard.Conn, error) {
	path := cfg.Overlay.PrivateKeyFile
	key, created, err := wireguard.LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("WireGuard private key generated", zap.String("file", path))
	}
	wild := netip.IPv4Unspecified()
	if cfg.Node.Underlay.Is6() && !cfg.Node.Underlay.Is4In6() {
		wild = netip.IPv6Unspecified()
	}
	sock, err := router.ListenUDP(netip.AddrPortFrom(wild, uint16(cfg.Overlay.Port)))
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	conn, err := wireguard.Listen(wireguard.Options{
		PrivateKey: key,
		MTU:        cfg.Overlay.MTU,
		Logger:     log.Named("wireguard"),
		Socket:     sock,
	})
	if err != nil {
		return nil, err
	}
	log.Info("WireGuard key", zap.Stringer("publicKey", key.Public()), zap.String("file", path))
	return conn, nil
}

// reloadKey reads the overlay's private key file again and, if it holds
// a new key, makes it the router's: sessions handshake again, with peers
// that know the new public key. A missing or unreadable file keeps the
// running key. It does nothing for a plain overlay.
func reloadKey(conn router.Conn, path string, log *zap.Logger) error {
	wg, ok := conn.(*wireguard.Conn)
	if !ok {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("WireGuard key file: %w (keeping the running key)", err)
	}
	key, _, err := wireguard.LoadOrCreateKey(path)
	if err != nil {
		return fmt.Errorf("%w (keeping the running key)", err)
	}
	if key.Public() == wg.PublicKey() {
		return nil
	}
	if err := wg.SetPrivateKey(key); err != nil {
		return err
	}
	log.Info("WireGuard key", zap.Stringer("publicKey", key.Public()), zap.String("file", path))
	return nil
}
