#!/usr/bin/env bash
# build.sh installs the Kubernetes parts that vrouter's integration tests start:
#
#   kube-apiserver, kubelet, kube-controller-manager, kube-scheduler, kubectl
#                   built from k8s.io/kubernetes v1.37.2 (the nested module in
#                   integration/tools/kube, one build for all five) into
#                   .cache/bin; skipped when the binaries are up to date with
#                   that module and the Go version (a cold build takes 20-35
#                   minutes on 2 cores, kubelet the largest)
#   etcd            Debian's etcd-server package (apt-get, as root), else built
#                   from go.etcd.io/etcd/server/v3 v3.6.16 (integration/tools/etcd)
#                   into .cache/bin
#   containerd, runc, CNI plugins
#                   Debian's packages (apt-get, as root), for the real-cluster
#                   test's nodes
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
		cd "$1" && cat go.mod go.sum $(find . -name '*.go' | sort)
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

# build_kube builds every command of the kube module with one go build, so
# that the five binaries share the compile of k8s.io/kubernetes. The version
# variables make /version and --version report v1.37.2 instead of
# v0.0.0-master.
kube_cmds="kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl"
build_kube() {
	local dir=$tools/kube want start c stale=
	want=$(stamp "$dir")
	for c in $kube_cmds; do
		if [ ! -x "$bin/$c" ] || [ "$(cat "$bin/.$c.stamp" 2>/dev/null)" != "$want" ]; then
			stale=1
		fi
	done
	if [ -z "$stale" ]; then
		log "Kubernetes binaries are up to date in $bin"
		return
	fi
	log "building $kube_cmds from $dir (a cold build takes 20-35 minutes on 2 cores)"
	start=$(date +%s)
	local kv=v1.37.2 ver=k8s.io/component-base/version
	rm -rf "$bin/.kube.tmp"
	mkdir -p "$bin/.kube.tmp"
	(cd "$dir" && "$go" build -trimpath -ldflags "-s -w \
		-X $ver.gitVersion=$kv -X $ver.gitMajor=1 -X $ver.gitMinor=37 \
		-X $ver.gitTreeState=clean -X $ver.buildDate=1970-01-01T00:00:00Z" \
		-o "$bin/.kube.tmp/" ./cmd/...)
	for c in $kube_cmds; do
		mv -f "$bin/.kube.tmp/$c" "$bin/$c"
		echo "$want" >"$bin/.$c.stamp"
	done
	rmdir "$bin/.kube.tmp"
	log "built the Kubernetes binaries in $(($(date +%s) - start))s"
}
build_kube

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

# The real-cluster test's node runtime (integration/cluster): containerd,
# runc and the CNI plugins, from Debian, as root. Without them (not root, no
# apt) that test skips, or fails under VROUTER_REQUIRE_KUBE=1.
node_runtime_missing() {
	command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 &&
		command -v runc >/dev/null 2>&1 && [ -x /usr/lib/cni/bridge ] && return 1
	return 0
}
if node_runtime_missing && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	apt-cache show containerd >/dev/null 2>&1 || apt-get update -qq || true
	policy=/usr/sbin/policy-rc.d made=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
	fi
	log "installing containerd, runc and containernetworking-plugins with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		containerd runc containernetworking-plugins >/dev/null || log "apt-get install failed"
	[ -z "$made" ] || rm -f "$policy"
fi
if node_runtime_missing; then
	log "containerd, runc or the CNI plugins are missing: the real-cluster test will skip"
else
	log "$(printf '%-24s' containerd:) $(command -v containerd) ($(containerd --version 2>&1 | awk '{print $3}'), runc $(runc --version 2>&1 | awk 'NR==1 {print $3}'))"
fi

for c in kube-apiserver kubelet kube-controller-manager kube-scheduler; do
	log "$(printf '%-24s' "$c:") $bin/$c ($("$bin/$c" --version 2>&1 | head -1))"
done
log "$(printf '%-24s' kubectl:) $bin/kubectl ($("$bin/kubectl" version --client 2>&1 | head -1))"
log "$(printf '%-24s' etcd:) $etcd ($("$etcd" --version 2>&1 | head -1))"
