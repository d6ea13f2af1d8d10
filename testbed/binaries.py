"""Finding the test bed's binaries: ``$KUBEBUILDER_ASSETS`` (envtest's convention), else the
versioned cache that ``hack/testbed/build.sh`` fills."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import BinariesMissing
from testbed.versions import ETCD_VERSION, KUBERNETES_VERSION

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def cache_root() -> Path:
    return Path(os.environ.get("REMORA_CACHE", Path.home() / ".cache" / "remora"))


def default_bin_dir() -> Path:
    return cache_root() / "testbed" / f"{KUBERNETES_VERSION}-etcd{ETCD_VERSION}" / "bin"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path

    @classmethod
    def locate(cls, directory: Path | None = None) -> Binaries:
        """Binaries from ``directory``, ``$KUBEBUILDER_ASSETS`` or the build cache, in that order."""
        assets = os.environ.get("KUBEBUILDER_ASSETS")
        where = directory or (Path(assets) if assets else default_bin_dir())
        missing = [name for name in REQUIRED if not os.access(where / name, os.X_OK)]
        if missing:
            raise BinariesMissing(
                f"test bed binaries missing in {where}: {', '.join(missing)}. "
                "Build them with 'hack/testbed/build.sh' (minutes on a fresh machine, cached "
                "after) or point KUBEBUILDER_ASSETS at a directory that has them."
            )
        return cls(*(where / name for name in REQUIRED))
