#!/usr/bin/env bash
# Build the Kubernetes test bed binaries from Go modules into a versioned cache.
#
#   hack/testbed/build.sh            build what is missing, print where it went
#   hack/testbed/build.sh --print    print the bin directory and exit (builds nothing)
#   hack/testbed/build.sh --force    rebuild even when the binaries exist
#
# The Kubernetes release is pinned by ./go.mod (k8s.io/kubernetes with every staging
# module replaced by its published v0.<minor>.<patch>); etcd by ./etcd/go.mod.
# Binaries are static (CGO_ENABLED=0) and version-stamped, and land in
#   ${REMORA_CACHE:-$HOME/.cache/remora}/testbed/<k8s>-etcd<etcd>/bin
# Also builds the developer tools pinned by ../tools/go.mod (helm) into
#   ${REMORA_CACHE:-$HOME/.cache/remora}/tools/helm-<version>-k8s<client-go minor>/helm
# fortio (the benchmarks' load generator, also pinned there) is not built here but on first
# use by hack/tools/build.sh; --print-fortio prints where it goes.
# The script is idempotent: a second run with the binaries present does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

k8s_version="$(awk '$1=="k8s.io/kubernetes" && NF>=2{print $2; exit}' "$here/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3" && NF>=2{print $2; exit}' "$here/etcd/go.mod")"
cache_root="${REMORA_CACHE:-$HOME/.cache/remora}"
bin_dir="$cache_root/testbed/${k8s_version}-etcd${etcd_version}/bin"

binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd etcdctl)

helm_version="$(awk '$1=="helm.sh/helm/v3" && NF>=2{print $2; exit}' "$here/../tools/go.mod")"
# helm reports the Kubernetes version of the client-go it is built with, as upstream's Makefile does.
helm_k8s_minor="$(awk '$1=="k8s.io/client-go" && NF>=2{print $2; exit}' "$here/../tools/go.mod" | cut -d. -f2)"
helm_dir="$cache_root/tools/helm-${helm_version}-k8s1.${helm_k8s_minor}"

if [[ "${1:-}" == "--print" ]]; then
    echo "$bin_dir"
    exit 0
fi
if [[ "${1:-}" == "--print-helm" ]]; then
    echo "$helm_dir/helm"
    exit 0
fi
if [[ "${1:-}" == "--print-fortio" ]]; then
    # Only printed: fortio is built lazily by hack/tools/build.sh fortio (bench/mesh_latency.py).
    exec "$here/../tools/build.sh" --print fortio
fi

missing=()
for b in "${binaries[@]}"; do
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
done
[[ -x "$helm_dir/helm" ]] || missing+=(helm)
if [[ "${1:-}" != "--force" && ${#missing[@]} -eq 0 ]]; then
    echo "testbed: all binaries present in $bin_dir (kubernetes $k8s_version, etcd $etcd_version)"
    exit 0
fi

command -v go >/dev/null || { echo "testbed: 'go' not found; install Go >= 1.24 to build the test bed" >&2; exit 1; }
mkdir -p "$bin_dir"
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
stamp="-X k8s.io/component-base/version.gitVersion=$k8s_version
 -X k8s.io/component-base/version.gitMajor=1
 -X k8s.io/component-base/version.gitMinor=$minor
 -X k8s.io/component-base/version.gitTreeState=clean
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version
 -X k8s.io/client-go/pkg/version.gitMajor=1
 -X k8s.io/client-go/pkg/version.gitMinor=$minor
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"
stamp="$(echo $stamp)"

build_one() {  # module_dir output package ldflags [dest_dir]
    local dir="$1" out="$2" pkg="$3" ldflags="$4" dest="${5:-$bin_dir}" t0
    if [[ -x "$dest/$out" && "${FORCE:-}" != 1 ]]; then
        echo "testbed: $out already built"
        return
    fi
    t0=$(date +%s)
    echo "testbed: building $out from $pkg (this takes minutes on a fresh machine)..."
    mkdir -p "$dest"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$dest/$out.tmp" "$pkg")
    mv "$dest/$out.tmp" "$dest/$out"
    echo "testbed: built $out in $(( $(date +%s) - t0 ))s"
}

[[ "${1:-}" == "--force" ]] && export FORCE=1
echo "testbed: kubernetes $k8s_version, etcd $etcd_version -> $bin_dir"
t_start=$(date +%s)
(cd "$here" && go mod download) && (cd "$here/etcd" && go mod download)
etcd_stamp="-X go.etcd.io/etcd/api/v3/version.GitSHA=remora-build"
build_one "$here/etcd" etcd go.etcd.io/etcd/server/v3 "$etcd_stamp"
build_one "$here/etcd" etcdctl go.etcd.io/etcd/etcdctl/v3 "$etcd_stamp"
build_one "$here" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$stamp"
build_one "$here" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$stamp"
build_one "$here" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$stamp"
build_one "$here" kubectl k8s.io/kubernetes/cmd/kubectl "$stamp"
(cd "$here/../tools" && go mod download)
build_one "$here/../tools" helm helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$helm_version
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor" "$helm_dir"
echo "testbed: done in $(( $(date +%s) - t_start ))s"
"$bin_dir/kube-apiserver" --version
"$bin_dir/etcd" --version | head -1
"$helm_dir/helm" version --short
