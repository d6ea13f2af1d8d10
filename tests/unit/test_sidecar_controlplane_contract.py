"""The contract with the control plane: the node every golden bootstrap announces is parsed
by ``controlplane.proxy.parse_proxy_identity`` into the pod the agent runs for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controlplane.proxy import parse_proxy_identity
from sidecar.bootstrap import build_bootstrap
from sidecar.config import AgentOptions, build_config

GOLDEN = Path(__file__).parent.parent / "golden" / "sidecar" / "bootstrap"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_control_plane_recognises_the_pod(case: str) -> None:
    spec = yaml.safe_load((GOLDEN / f"{case}.yaml").read_text())
    config = build_config(
        {k: str(v) for k, v in spec["env"].items()},
        AgentOptions(**(spec.get("options") or {})),
        host_cpus=spec.get("host_cpus", 2),
        pod_labels=spec.get("pod_labels"),
        pod_annotations=spec.get("pod_annotations"),
    )
    # What Envoy sends is the bootstrap's node, after a JSON round trip (as a Struct would be).
    node = json.loads(json.dumps(build_bootstrap(config)["node"]))
    identity = parse_proxy_identity(node["id"], node["metadata"])
    assert identity.pod_name == config.pod_name
    assert identity.namespace == config.namespace
    assert identity.ips == config.instance_ips
    assert identity.service_account == config.service_account
    assert dict(identity.labels) == dict(node["metadata"]["LABELS"])
    assert identity.proxy_type == "sidecar"
