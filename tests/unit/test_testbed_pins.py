"""The versions the Python launcher expects are the ones hack/testbed builds."""

from __future__ import annotations

import re
from pathlib import Path

from testbed.binaries import default_bin_dir
from testbed.versions import ETCD_VERSION, KUBERNETES_VERSION

HACK = Path(__file__).resolve().parents[2] / "hack" / "testbed"


def _required(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", go_mod.read_text(), re.M)
    assert match, f"{module} not required in {go_mod}"
    return match.group(1)


def test_versions_match_the_go_modules() -> None:
    assert _required(HACK / "go.mod", "k8s.io/kubernetes") == KUBERNETES_VERSION
    assert _required(HACK / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3") == ETCD_VERSION


def test_every_staging_module_is_replaced_by_its_published_version() -> None:
    text = (HACK / "go.mod").read_text()
    staging = f"v0.{KUBERNETES_VERSION.removeprefix('v1.')}"
    replaces = re.findall(r"^replace (k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", text, re.M)
    assert len(replaces) >= 31
    for src, dst, version in replaces:
        assert src == dst
        assert version == staging, f"{src} pinned to {version}, expected {staging}"


def test_cache_directory_is_keyed_by_both_versions() -> None:
    assert default_bin_dir().parent.name == f"{KUBERNETES_VERSION}-etcd{ETCD_VERSION}"
