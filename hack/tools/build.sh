#!/usr/bin/env bash
# Build one developer tool pinned by ./go.mod into the versioned tools cache, on demand.
#
#   hack/tools/build.sh fortio            build fortio if missing, print its path (last line)
#   hack/tools/build.sh --print fortio    print where fortio goes and exit (builds nothing)
#   hack/tools/build.sh --force fortio    rebuild even when the binary exists
#   (tools: fortio, kind)
#
# Tools needed by every run of the test suite (helm) are built by hack/testbed/build.sh
# during `make setup`. Tools needed only by a benchmark (fortio, the load generator of
# bench/mesh_latency.py) or only by a user's own machine (kind, for `make kind-up` where
# Docker can run privileged containers) are built here, lazily, by whoever needs them: a
# fresh machine's `make test` never pays for them. kind has a module of its own (./kind), so
# its dependencies never move helm's or fortio's. Binaries are static (CGO_ENABLED=0) and land in
#   ${REMORA_CACHE:-$HOME/.cache/remora}/tools/<tool>-<version>/<tool>
# Progress goes to stderr; stdout is only the binary's path, so callers can capture it.
#
# fortio is pinned below v1.69: from v1.69 on it imports grol.io/grol, which the Go module
# proxy reachable from this project's machines refuses (403).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# -mod=readonly: the pins in go.mod/go.sum are what gets built, never rewritten by a build.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
cache_root="${REMORA_CACHE:-$HOME/.cache/remora}"

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mode=build
case "${1:-}" in
    --print) mode=print; shift ;;
    --force) mode=force; shift ;;
    -h|--help|"") usage ;;
esac
tool="${1:-}"

case "$tool" in
    fortio)
        module=fortio.org/fortio
        package=fortio.org/fortio
        moddir="$here"
        ;;
    kind)
        # The release that made kind-config.yaml's node image (kindest/node:v1.34.0).
        module=sigs.k8s.io/kind
        package=sigs.k8s.io/kind
        moddir="$here/kind"
        ;;
    *)
        echo "tools: unknown tool '${tool}'; known: fortio, kind (helm is built by hack/testbed/build.sh)" >&2
        exit 2
        ;;
esac

version="$(awk -v m="$module" '$1==m && NF>=2{print $2; exit}' "$moddir/go.mod")"
[[ -n "$version" ]] || { echo "tools: $module is not required by $moddir/go.mod" >&2; exit 1; }
dest="$cache_root/tools/${tool}-${version}"

if [[ "$mode" == print ]]; then
    echo "$dest/$tool"
    exit 0
fi
if [[ "$mode" == build && -x "$dest/$tool" ]]; then
    echo "$dest/$tool"
    exit 0
fi

command -v go >/dev/null || { echo "tools: 'go' not found; install Go >= 1.24 to build $tool" >&2; exit 1; }
t0=$(date +%s)
echo "tools: building $tool $version from $package (about a minute on a fresh machine)..." >&2
mkdir -p "$dest"
# A temporary name of its own, then an atomic rename: two builds at once (a benchmark and
# `make kind-up`) never see or leave a half-written binary.
tmp="$(mktemp "$dest/.$tool.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$moddir" && go build -trimpath -ldflags "-s -w" -o "$tmp" "$package") >&2
chmod 0755 "$tmp"
mv -f "$tmp" "$dest/$tool"
echo "tools: built $tool in $(( $(date +%s) - t0 ))s" >&2
echo "$dest/$tool"
