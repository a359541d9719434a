// Package publish opens node-port sockets in another network namespace
// than the router's: a rootless router, inside a user and network
// namespace of its own, asks a helper in the parent namespace to bind them
// there, so that they answer on the host's addresses, and serves them as
// if it had bound them itself.
//
//	node namespace: vrouter run --publish-socket PATH       parent namespace: vrouter publish --socket PATH
//	lb.HostPorts
//	  Client.ListenTCP(127.0.0.1:30080) ──"bind tcp 127.0.0.1:30080"──▶ Server: policy, bind(2)
//	  *net.TCPListener ◀── net.FileListener ◀──"ok" + the fd (SCM_RIGHTS)── close(fd)
//	  accept(2) on it: the host's connections to 127.0.0.1:30080 arrive in the node namespace
//
// A socket belongs to the network namespace it was created in, wherever
// its file descriptor goes: once passed, the router accepts and reads on
// it as on any of its own, and the helper has no part in the traffic. The
// helper keeps no state either: it closes its copy of each descriptor as
// soon as it is sent, so the socket lives exactly as long as the router
// keeps it, and a router that restarts asks again.
//
// The protocol is one request and one reply per message on a
// SOCK_SEQPACKET unix socket (0600: only its owner, and root, may use it):
//
//	request:  bind tcp|udp ADDR:PORT
//	replies:  ok                         with the socket's fd in SCM_RIGHTS
//	          errno N TEXT               bind failed with errno N (helper and router share a kernel)
//	          refused TEXT               the helper's policy does not allow the address or port
//	          bad TEXT                   the request is malformed
//	          error TEXT                 bind failed otherwise
//
// The helper binds only the ports its Options allow (by default the
// node-port range, 30000-32767, never a port below 1024 unless allowed)
// and, if told, only some addresses.
//
// The package does not choose which addresses and ports to publish (the
// load balancer's host ports do, through lb.Binder), nor does it relay
// anything.
package publish
