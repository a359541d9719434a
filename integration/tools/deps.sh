#!/usr/bin/env bash
# deps.sh checks, before make test runs anything, that the commands its
# tests run are installed, and as root installs the missing ones with
# apt-get. What is still missing then stops make test at once, in one line
# that names each command and the Debian package that has it.
#
#   always        go and gofmt (Go 1.26, from https://go.dev/dl), git
#   as root       the namespace tests and the benchmark smoke run:
#                 ip (iproute2), ping (iputils-ping), iptables-save,
#                 ip6tables-save, iptables-restore (iptables), nft (nftables),
#                 iperf3, nsenter, unshare, setpriv (util-linux);
#                 the benchmark's endpoints: nginx (nginx-light), wrk,
#                 sockperf;
#                 the real-cluster test's nodes: containerd, ctr (containerd),
#                 runc, /usr/lib/cni/bridge (containernetworking-plugins).
#                 etcd is kube-tools' (Debian's etcd-server, else built).
#   optional      as root, installed when apt-get can, never missing:
#                 slirp4netns, the userspace anchor of make bench's egress
#                 rows; wg (wireguard-tools), which configures the
#                 wireguard-go baseline of its encrypted rows (without
#                 them those rows are n/a, with the reason).
#
# Not root, the namespace tests skip themselves and need none of the root
# list. Usage: integration/tools/deps.sh [--check-only]   (make check-deps)
set -euo pipefail

install=1
[ "${1:-}" = --check-only ] && install=

# "command package" pairs; a command starting with / is a file.
always="go go.dev/dl
git git
gofmt go.dev/dl"
root="ip iproute2
ping iputils-ping
iptables-save iptables
ip6tables-save iptables
iptables-restore iptables
nft nftables
iperf3 iperf3
nginx nginx-light
wrk wrk
sockperf sockperf
nsenter util-linux
unshare util-linux
setpriv util-linux
containerd containerd
ctr containerd
runc runc
/usr/lib/cni/bridge containernetworking-plugins"
optional="slirp4netns slirp4netns
wg wireguard-tools"

want=$always
[ "$(id -u)" = 0 ] && want="$want
$root"

# missing prints the "command package" pairs not installed.
missing() {
	local cmd pkg
	while read -r cmd pkg; do
		case $cmd in
		/*) [ -x "$cmd" ] && continue ;;
		*) command -v "$cmd" >/dev/null 2>&1 && continue ;;
		esac
		echo "$cmd $pkg"
	done <<<"$want"
}

gone=$(missing)
# Optional commands are installed along with missing required ones, or
# alone, but their absence stops nothing.
extra=
if [ "$(id -u)" = 0 ]; then
	extra=$(want=$optional missing)
fi
[ -z "$gone" ] && [ -z "$extra" ] && exit 0

if [ -n "$install" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	pkgs=$(printf '%s\n%s\n' "$gone" "$extra" | awk 'NF && $2 !~ /\// {print $2}' | sort -u | tr '\n' ' ')
fi
if [ -n "${pkgs:-}" ]; then
	echo "check-deps: installing $pkgs with apt-get" >&2
	# policy-rc.d keeps containerd's package from starting a system
	# containerd where no policy says so already.
	policy=/usr/sbin/policy-rc.d made=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
	fi
	rc=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } >/dev/null || rc=$?
	[ -z "$made" ] || rm -f "$policy"
	[ "$rc" = 0 ] || echo "check-deps: apt-get failed (exit $rc)" >&2
	gone=$(missing)
fi
[ -z "$gone" ] && exit 0

list=$(awk '{printf "%s%s (%s %s)", (NR > 1 ? ", " : ""), $1, ($2 ~ /\// ? "from" : "apt-get install"), $2}' <<<"$gone")
if [ "$(id -u)" = 0 ]; then
	echo "make test: missing $list; install them (or run make test as another user: the namespace tests then skip)" >&2
else
	echo "make test: missing $list" >&2
fi
exit 1
