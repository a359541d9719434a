#!/usr/bin/env bash
# build.sh installs the control plane that integration/kube starts in tests:
#
#   kube-apiserver  built from k8s.io/kubernetes v1.37.2 (the nested module in
#                   integration/tools/kube-apiserver) into .cache/bin; skipped
#                   when the binary is up to date with that module and the Go
#                   version (a cold build takes ~9 minutes on 2 cores)
#   etcd            Debian's etcd-server package (apt-get, as root), else built
#                   from go.etcd.io/etcd/server/v3 v3.6.16 (integration/tools/etcd)
#                   into .cache/bin
#
# Usage: integration/tools/build.sh          (make kube-tools runs the same)
# Env:   VROUTER_TOOLS_BIN   output directory (default: <repo>/.cache/bin)
#        VROUTER_ETCD_BUILD=1  build etcd even when apt could install it
# integration/kube finds the binaries in .cache/bin, on PATH, or through
# $KUBE_APISERVER and $ETCD.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tools=$root/integration/tools
bin=${VROUTER_TOOLS_BIN:-$root/.cache/bin}
go=${GO:-go}
mkdir -p "$bin"

log() { printf 'kube-tools: %s\n' "$*" >&2; }

# stamp prints a digest of everything a build of module dir $1 depends on.
stamp() {
	(
		"$go" version
		cd "$1" && cat go.mod go.sum ./*.go
	) | sha256sum | cut -d' ' -f1
}

# build NAME DIR [go build flags...] builds module DIR into $bin/NAME unless
# the stamp recorded beside the binary says it is up to date.
build() {
	local name=$1 dir=$2 want start
	shift 2
	want=$(stamp "$dir")
	if [ -x "$bin/$name" ] && [ "$(cat "$bin/.$name.stamp" 2>/dev/null)" = "$want" ]; then
		log "$name is up to date: $bin/$name"
		return
	fi
	log "building $name from $dir (a cold build takes minutes)"
	start=$(date +%s)
	(cd "$dir" && "$go" build -trimpath "$@" -o "$bin/.$name.tmp" .)
	mv -f "$bin/.$name.tmp" "$bin/$name"
	echo "$want" >"$bin/.$name.stamp"
	log "built $name in $(($(date +%s) - start))s: $bin/$name"
}

# The version variables make /version and the binary's --version report
# v1.37.2 instead of v0.0.0-master.
kv=v1.37.2
ver=k8s.io/component-base/version
build kube-apiserver "$tools/kube-apiserver" -ldflags "-s -w \
	-X $ver.gitVersion=$kv -X $ver.gitMajor=1 -X $ver.gitMinor=37 \
	-X $ver.gitTreeState=clean -X $ver.buildDate=1970-01-01T00:00:00Z"

# etcd: Debian's package first. policy-rc.d keeps the package's init script
# from starting a system etcd on :2379 where no policy says so already.
have_apt_etcd() {
	[ "${VROUTER_ETCD_BUILD:-}" != 1 ] || return 1
	local found
	found=$(command -v etcd 2>/dev/null) || true
	if [ -n "$found" ] && [ "$found" != "$bin/etcd" ]; then
		return 0
	fi
	[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
	if ! apt-cache show etcd-server >/dev/null 2>&1; then
		apt-get update -qq || return 1
		apt-cache show etcd-server >/dev/null 2>&1 || return 1
	fi
	local policy=/usr/sbin/policy-rc.d made=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
	fi
	log "installing etcd-server with apt-get"
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null || rc=$?
	[ -z "$made" ] || rm -f "$policy"
	[ "$rc" = 0 ] && command -v etcd >/dev/null 2>&1
}

if have_apt_etcd; then
	etcd=$(command -v etcd)
	# Drop an etcd built by an earlier fallback so that integration/kube,
	# which looks in .cache/bin before PATH, uses the package's.
	rm -f "$bin/etcd" "$bin/.etcd.stamp"
else
	if [ "${VROUTER_ETCD_BUILD:-}" = 1 ]; then
		log "VROUTER_ETCD_BUILD=1: building etcd v3.6.16"
	else
		log "etcd-server is not available from apt; building etcd v3.6.16"
	fi
	build etcd "$tools/etcd" -ldflags "-s -w"
	etcd=$bin/etcd
fi

log "kube-apiserver: $bin/kube-apiserver ($("$bin/kube-apiserver" --version 2>&1 | head -1))"
log "etcd:           $etcd ($("$etcd" --version 2>&1 | head -1))"
