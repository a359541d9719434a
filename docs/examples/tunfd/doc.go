// Command tunfd is an example of the privileged helper that hands vrouter
// an open TUN device: it creates the device, gives it its addresses, MTU
// and routes, drops to an unprivileged user and executes the command after
// "--" with the device as file descriptor 3:
//
//	tunfd --name vr0 --addresses 10.244.1.0/32 --mtu 1472 \
//	      --routes 10.244.0.0/16,10.96.0.0/12,169.254.244.1/32 --user 65534:65534 \
//	      -- vrouter run --config node.yaml --tun-fd 3
//
//	tunfd (root, or CAP_NET_ADMIN)            vrouter run --tun-fd 3 (uid 65534, no capabilities)
//	  open /dev/net/tun, TUNSETIFF vr0 ──fd 3──▶ tun.Adopt(3, "vr0")
//	  addresses, MTU, up, routes                 reads and writes packets; tun.configure: false
//	  setgroups, setgid, setuid, execve ─────────┘ (same process: tunfd is replaced)
//
// The router's config must say tun.configure: false (it cannot configure
// the device without CAP_NET_ADMIN) and name the device as --name does.
// A CNI plugin, an init container or a parent process in a user namespace
// plays this part in real deployments; this program is the smallest one,
// to copy from. integration/tunfd_test.go runs it.
//
// It is Linux only.
package main
