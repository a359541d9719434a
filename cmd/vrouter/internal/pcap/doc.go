// Package pcap writes and reads capture files in the classic libpcap
// format with link type LINKTYPE_RAW (101): each record is one raw IP
// packet, IPv4 or IPv6, with no link-layer header. tcpdump -r and
// Wireshark read these files; `vrouter capture` writes them.
//
//	file:   global header (24 bytes) │ record │ record │ …
//	record: ts_sec ts_usec incl_len orig_len (16 bytes) │ incl_len bytes of packet
//
// Files are written in little-endian byte order with microsecond
// timestamps (magic 0xa1b2c3d4); the Reader also takes big-endian files
// and nanosecond ones (magic 0xa1b23c4d).
package pcap
