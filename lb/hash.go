package lb

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// The hashes here are fixed functions of their input, with no per-process
// seed: every node must map a flow to the same Maglev slot, and a backend to
// the same permutation, or consistent hashing would not be consistent
// across nodes and restarts. They are not meant to resist chosen inputs.

const (
	wyK0 = 0xa0761d6478bd642f // wyhash's secrets
	wyK1 = 0xe7037ed1a0b428db
	wyK2 = 0x8ebc6af09c88c6e3
	wyK3 = 0x589965cc75374cc3
)

// mum is wyhash's multiply-and-fold mixing step.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// addrWords returns a's 16-byte form (IPv4 as IPv4-mapped) as two words.
func addrWords(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// hashAddrPort hashes an address and port with a seed.
func hashAddrPort(a netip.Addr, port uint16, seed uint64) uint64 {
	hi, lo := addrWords(a)
	h := mum(hi^seed^wyK0, lo^wyK1)
	return mum(h^wyK2, uint64(port)^seed^wyK3)
}

// hashClient hashes a client address.
func hashClient(a netip.Addr) uint64 { return hashAddrPort(a, 0, 0) }

// hashFlow hashes a flow's 5-tuple.
func hashFlow(f *Flow) uint64 {
	shi, slo := addrWords(f.Src.Addr())
	dhi, dlo := addrWords(f.Dst.Addr())
	h := mum(shi^wyK0, slo^wyK1)
	h = mum(h^dhi^wyK2, dlo^wyK3)
	ports := uint64(f.Src.Port())<<32 | uint64(f.Dst.Port())<<16 | uint64(f.Proto)
	return mum(h^wyK1, ports^wyK0)
}

// shardOf spreads keys over the snapshot's shards (Fibonacci hashing of
// the key's words).
func shardOf(k ServiceKey) int {
	var x uint64
	if k.VIP.Is4() {
		a := k.VIP.As4()
		x = uint64(binary.BigEndian.Uint32(a[:]))
	} else {
		hi, lo := addrWords(k.VIP)
		x = hi*0x9e3779b97f4a7c15 ^ lo
	}
	h := (x ^ uint64(k.Port)<<32 ^ uint64(k.Proto)<<48) * 0x9e3779b97f4a7c15
	return int(h >> (64 - shardBits))
}
