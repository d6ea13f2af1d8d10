#!/usr/bin/env bash
# Install everything Remora's demo and tests need on a fresh Debian 12 machine (as root):
# Debian packages, the Python environment (uv, from the lock file) and the test bed binaries.
# Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES="iptables iproute2 procps psmisc gcc libc6-dev docker.io debootstrap"

step() { echo "setup: $*" >&2; }

missing=()
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    step "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

uv() { if command -v uv >/dev/null 2>&1; then command uv "$@"; else python3 -m uv "$@"; fi; }
if ! uv --version >/dev/null 2>&1; then
    step "installing uv (the Python package manager that reads uv.lock)"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore uv
fi
step "syncing the Python environment in .venv from uv.lock"
uv sync --quiet --frozen --extra dev

step "building (or reusing) the Kubernetes test bed binaries"
hack/testbed/build.sh
