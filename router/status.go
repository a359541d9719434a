package router

import (
	"github.com/vrouter/vrouter/tun"

	"slices"
	"time"
)

// Config returns the state the router runs with: the Config last applied
// by Set, normalized (the zero Config before the first Set). For status
// commands; it takes the lock Set holds.
func (r *Router) Config() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := Config{
		PodCIDRs:         slices.Clone(r.cfg.PodCIDRs),
		KernelRoutes:     slices.Clone(r.cfg.KernelRoutes),
		Addresses:        slices.Clone(r.cfg.Addresses),
		NodeAddresses:    slices.Clone(r.cfg.NodeAddresses),
		ServiceAddresses: slices.Clone(r.cfg.ServiceAddresses),
		ClusterCIDRs:     slices.Clone(r.cfg.ClusterCIDRs),
	}
	for _, p := range r.cfg.Peers {
		p.PodCIDRs = slices.Clone(p.PodCIDRs)
		c.Peers = append(c.Peers, p)
	}
	return c
}

// TUNName is the TUN device's name ("vr0").
func (r *Router) TUNName() string { return r.tunName }

// MTU is the tunnel MTU: the largest inner packet an overlay datagram
// carries.
func (r *Router) MTU() int { return int(r.overlay.mtu.Load()) }

// Offload reports whether the TUN device exchanges TCP super-packets with
// the node kernel (segmentation offload).
func (r *Router) Offload() bool { return r.tun.offload }

// UDPOffload reports whether it exchanges UDP super-packets too (UDP
// segmentation offload, Linux 6.2 and later).
func (r *Router) UDPOffload() bool { return r.tun.uso }

// BatchIO reports whether the TUN moves a burst of packets in one system
// call (io_uring) and, if not, why (tun.BatchIO).
func (r *Router) BatchIO() (bool, error) { return tun.BatchIO(r.tun.dev) }

// BusyPolling is the window the router busy-polls its devices with (see
// Options.BusyPoll): zero when it does not, also when it was asked to and
// its devices cannot be read without waiting.
func (r *Router) BusyPolling() time.Duration { return time.Duration(r.polling.Load()) }
