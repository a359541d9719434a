// Package packet decodes an IP packet's headers once, where it enters the
// router, into a Parsed that every later step reads instead of parsing
// again:
//
//	TUN Read / overlay ReadBatch ──▶ Parsed.Decode ──▶ router's checks (drop reasons)
//	                                       │
//	                                       ├──▶ router.Hook (lb's NAT: 5-tuple, flags;
//	                                       │    it keeps Parsed current as it rewrites)
//	                                       ├──▶ fast path (addresses, TTL, options)
//	                                       └──▶ super-packets (TCP header end for TSO)
//
// It is a leaf package: router and lb import it and it imports neither,
// so lb implements router.Hook without importing router. It also holds
// the one set of converters between net/netip and gVisor's tcpip
// addresses. It does not validate checksums, rewrite packets or build
// them.
package packet
