#!/usr/bin/env bash
# wireguard-go.sh builds wireguard-go, the userspace WireGuard daemon, into
# .cache/bin: the baseline of make bench's encrypted rows (kernel host-gw
# routes over a wireguard-go interface on each node, configured with
# Debian's wireguard-tools `wg`). It is the main package of
# golang.zx2c4.com/wireguard at the version vrouter's go.mod requires (the
# module vrouter's encrypted overlay is built on), so both sides run the
# same WireGuard code. Skipped when the binary is up to date with that
# version and the Go version; a build takes seconds.
#
# Usage: integration/tools/wireguard-go.sh   (make wireguard-go runs the same)
# Env:   VROUTER_TOOLS_BIN   output directory (default: <repo>/.cache/bin)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VROUTER_TOOLS_BIN:-$root/.cache/bin}
go=${GO:-go}
mod=golang.zx2c4.com/wireguard
mkdir -p "$bin"

log() { printf 'wireguard-go: %s\n' "$*" >&2; }

cd "$root"
version=$("$go" list -m -f '{{.Version}}' "$mod")
want=$(printf '%s\n%s@%s\n' "$("$go" version)" "$mod" "$version" | sha256sum | cut -d' ' -f1)
if [ -x "$bin/wireguard-go" ] && [ "$(cat "$bin/.wireguard-go.stamp" 2>/dev/null)" = "$want" ]; then
	log "up to date: $bin/wireguard-go ($mod@$version)"
	exit 0
fi
log "building $mod@$version"
"$go" build -trimpath -o "$bin/.wireguard-go.tmp" "$mod"
mv -f "$bin/.wireguard-go.tmp" "$bin/wireguard-go"
echo "$want" >"$bin/.wireguard-go.stamp"
log "built $bin/wireguard-go ($("$bin/wireguard-go" --version | head -1))"
