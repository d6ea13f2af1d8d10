"""kind-config.yaml is checked against kind's v1alpha4 config schema, since kind cannot run here.

The schema below is transcribed from sigs.k8s.io/kind@v0.30.0 pkg/apis/config/v1alpha4/types.go
(the JSON field names and their Go types); an unknown or mistyped field fails the test just
as kind's strict YAML decoding would reject it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from testbed.versions import KUBERNETES_VERSION

ROOT = Path(__file__).resolve().parents[2]

STR, INT, BOOL = str, int, bool
PATCH_JSON6902 = {"group": STR, "version": STR, "kind": STR, "patch": STR}
MOUNT = {
    "containerPath": STR,
    "hostPath": STR,
    "readOnly": BOOL,
    "selinuxRelabel": BOOL,
    "propagation": ("None", "HostToContainer", "Bidirectional"),
}
PORT_MAPPING = {
    "containerPort": INT,
    "hostPort": INT,
    "listenAddress": STR,
    "protocol": ("TCP", "UDP", "SCTP"),
}
NODE = {
    "role": ("control-plane", "worker"),
    "image": STR,
    "labels": {STR: STR},
    "extraMounts": [MOUNT],
    "extraPortMappings": [PORT_MAPPING],
    "kubeadmConfigPatches": [STR],
    "kubeadmConfigPatchesJSON6902": [PATCH_JSON6902],
}
NETWORKING = {
    "ipFamily": ("ipv4", "ipv6", "dual"),
    "apiServerPort": INT,
    "apiServerAddress": STR,
    "podSubnet": STR,
    "serviceSubnet": STR,
    "disableDefaultCNI": BOOL,
    "kubeProxyMode": ("iptables", "ipvs", "nftables", "none"),
    "dnsSearch": [STR],
}
CLUSTER = {
    "kind": ("Cluster",),
    "apiVersion": ("kind.x-k8s.io/v1alpha4",),
    "name": STR,
    "nodes": [NODE],
    "networking": NETWORKING,
    "featureGates": {STR: BOOL},
    "runtimeConfig": {STR: STR},
    "kubeadmConfigPatches": [STR],
    "kubeadmConfigPatchesJSON6902": [PATCH_JSON6902],
    "containerdConfigPatches": [STR],
    "containerdConfigPatchesJSON6902": [STR],
}


def schema_errors(value: Any, schema: Any, where: str = "$") -> list[str]:
    """Every place where ``value`` does not fit ``schema`` (empty when it fits)."""
    if isinstance(schema, tuple):
        return [] if value in schema else [f"{where}: {value!r} is not one of {schema}"]
    if isinstance(schema, type):
        ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
        return [] if ok else [f"{where}: {value!r} is not a {schema.__name__}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [
            e
            for i, item in enumerate(value)
            for e in schema_errors(item, schema[0], f"{where}[{i}]")
        ]
    if isinstance(schema, dict) and set(schema) == {STR}:
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        return [
            e
            for k, v in value.items()
            for e in schema_errors(k, STR, f"{where} key")
            + schema_errors(v, schema[STR], f"{where}.{k}")
        ]
    if not isinstance(value, dict):
        return [f"{where}: expected an object"]
    errors = [f"{where}.{k}: unknown field" for k in value if k not in schema]
    return errors + [
        e
        for k, v in value.items()
        if k in schema
        for e in schema_errors(v, schema[k], f"{where}.{k}")
    ]


def load() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "kind-config.yaml").read_text())


def test_kind_config_fits_kinds_v1alpha4_schema() -> None:
    assert schema_errors(load(), CLUSTER) == []


def test_schema_check_catches_the_mistakes_it_is_for() -> None:
    bad = load()
    bad["nodes"][0]["rol"] = "worker"
    bad["networking"]["ipFamily"] = "ipv5"
    bad["nodes"][1]["extraPortMappings"] = [{"containerPort": "80"}]
    errors = schema_errors(bad, CLUSTER)
    assert "$.nodes[0].rol: unknown field" in errors
    assert any(e.startswith("$.networking.ipFamily") for e in errors)
    assert any(e.startswith("$.nodes[1].extraPortMappings[0].containerPort") for e in errors)


def test_one_control_plane_two_workers_on_a_pinned_image_of_the_test_beds_minor() -> None:
    nodes = load()["nodes"]
    assert [n["role"] for n in nodes] == ["control-plane", "worker", "worker"]
    minor = ".".join(KUBERNETES_VERSION.split(".")[:2])  # v1.34
    for node in nodes:
        match = re.fullmatch(r"kindest/node:(v\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
        assert match, f"node image must be pinned by digest: {node['image']}"
        assert match.group(1) == minor


def test_the_kind_we_build_is_the_release_the_config_and_schema_are_for() -> None:
    """`make kind-up` builds kind from hack/tools/kind/go.mod: the release that published the
    pinned node image, whose config types the schema above transcribes."""
    go_mod = (ROOT / "hack" / "tools" / "kind" / "go.mod").read_text()
    assert re.search(r"^tool sigs\.k8s\.io/kind$", go_mod, re.M)
    pinned = re.search(r"^\s*sigs\.k8s\.io/kind (v\S+)", go_mod, re.M)
    assert pinned, "hack/tools/kind/go.mod must require sigs.k8s.io/kind"
    assert f"kind {pinned.group(1)}" in (ROOT / "kind-config.yaml").read_text()
    assert f"sigs.k8s.io/kind@{pinned.group(1)}" in (__doc__ or "")
