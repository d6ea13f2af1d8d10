"""Golden translation tests: model YAML -> the Envoy resources one proxy gets, as JSON.

Each ``tests/golden/controlplane/<case>.yaml`` holds Kubernetes objects (the same YAML the
file source reads) and the proxy to translate for; ``<case>.json`` is the expected output,
reviewed by eye. ``REMORA_UPDATE_GOLDEN=1`` rewrites the JSON files (review the diff!).
Every rendered snapshot must also pass ``envoy --mode validate``.
"""

from __future__ import annotations

import json
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
from harness.envoy_validate import validate_with_envoy
from harness.golden import assert_golden
from harness.kube_objects import endpoint_slice_object, service_object

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
    assert_golden(expected_path, rendered, f"the resources of {case}")


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_rendered_snapshot_passes_envoy_validate(case: str) -> None:
    resources = render_case(case)
    result = validate_with_envoy(resources)
    assert result.ok, result.output
    assert "OK" in result.output, result.output


def _mixed_mesh(count: int) -> list[dict[str, Any]]:
    """Many services of every kind sharing ports, headless ones sharing pod IPs (conflicts)."""
    objects: list[dict[str, Any]] = []
    for i in range(count):
        ns = f"ns{i % 3}"
        kind = i % 4
        ports = {"http": 80, "tcp-db": 5432}
        if kind == 0:
            service = service_object(f"s{i}", ns, f"10.96.{i // 250}.{i % 250 + 1}", ports)
        elif kind == 1:
            service = service_object(f"s{i}", ns, "None", ports)
        elif kind == 2:
            service = service_object(f"s{i}", ns, None, ports, external_name=f"svc{i}.example.com")
        else:
            ports = {"grpc": 9000}
            service = service_object(f"s{i}", ns, f"10.97.{i // 250}.{i % 250 + 1}", ports)
        objects.append(service)
        if kind in (0, 1, 3):
            # Headless services share pod IPs on purpose: destinations must be claimed once.
            zones = {f"10.1.{j}.{i % 7}": f"z{j % 2}" for j in range(3)}
            objects.append(
                endpoint_slice_object(f"s{i}", ns, ports, list(zones), name=f"s{i}-x", zones=zones)
            )
    return objects


@pytest.mark.envoy
def test_a_large_mixed_mesh_passes_envoy_validate() -> None:
    store = MeshStore()
    load_into(store, _mixed_mesh(240))
    proxy = parse_proxy_identity("sidecar~10.1.0.1~p.ns0~ns0.svc.cluster.local", {})
    resources = translate(store.snapshot(), proxy)
    outbound = resources[TYPE_BY_SHORT_NAME["listeners"]].by_name["virtualOutbound"].message
    matches = [
        (
            m.destination_port.value,
            tuple((r.address_prefix, r.prefix_len.value) for r in m.prefix_ranges),
            tuple(m.application_protocols),
        )
        for m in (c.filter_chain_match for c in outbound.filter_chains)
    ]
    assert len(matches) == len(set(matches))  # Envoy rejects duplicate matches
    assert len(resources[TYPE_BY_SHORT_NAME["clusters"]]) > 400
    result = validate_with_envoy(resources)
    assert result.ok, result.output
