"""Golden translation tests: model YAML -> the Envoy resources one proxy gets, as JSON.

Each ``tests/golden/controlplane/<case>.yaml`` holds Kubernetes objects (the same YAML the
file source reads) and the proxy to translate for; ``<case>.json`` is the expected output,
reviewed by eye. ``REMORA_UPDATE_GOLDEN=1`` rewrites the JSON files (review the diff!).
Every rendered snapshot must also pass ``envoy --mode validate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from controlplane.proxy import parse_proxy_identity
from controlplane.resources import TYPE_BY_SHORT_NAME, ProxyResources
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.translate.generate import translate
from controlplane.validate import validate_with_envoy

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "controlplane"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def render_case(case: str) -> ProxyResources:
    spec = yaml.safe_load((GOLDEN / f"{case}.yaml").read_text())
    store = MeshStore()
    load_into(store, spec["objects"])
    proxy = spec["proxy"]
    identity = parse_proxy_identity(
        f"sidecar~{proxy['ips'][0]}~{proxy['name']}.{proxy['namespace']}~{proxy['namespace']}.svc.cluster.local",
        {
            "NAME": proxy["name"],
            "NAMESPACE": proxy["namespace"],
            "INSTANCE_IPS": ",".join(proxy["ips"]),
            "SERVICE_ACCOUNT": proxy.get("serviceAccount", "default"),
        },
    )
    return translate(store.snapshot(), identity)


def as_json(resources: ProxyResources) -> dict[str, Any]:
    return {
        short: [
            json_format.MessageToDict(r.message)
            for r in sorted(resources[type_url], key=lambda r: r.name)
        ]
        for short, type_url in TYPE_BY_SHORT_NAME.items()
    }


def test_there_are_golden_cases() -> None:
    assert {
        "http",
        "tcp",
        "headless",
        "multiport",
        "externalname",
        "no-endpoints",
        "terminating",
        "registry-only",
        "scoped",
    } <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_translation_matches_golden(case: str) -> None:
    rendered = json.dumps(as_json(render_case(case)), indent=2, sort_keys=False) + "\n"
    expected_path = GOLDEN / f"{case}.json"
    if os.environ.get("REMORA_UPDATE_GOLDEN") == "1":
        expected_path.write_text(rendered)
    assert expected_path.exists(), (
        f"no golden file: run with REMORA_UPDATE_GOLDEN=1 and review {expected_path}"
    )
    assert rendered == expected_path.read_text()


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_rendered_snapshot_passes_envoy_validate(case: str) -> None:
    resources = render_case(case)
    result = validate_with_envoy(resources)
    assert result.ok, result.output
    assert "OK" in result.output, result.output
