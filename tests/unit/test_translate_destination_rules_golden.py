"""Golden files for DestinationRule translation: Istio's docs samples as clusters and subset
load assignments, seen from a proxy of ``default``; each passes ``envoy --mode validate``.

A case (``tests/golden/controlplane/destination_rules/<case>.yaml``) lists services, their
endpoints (address, pod, labels, whether the pod has a sidecar) and DestinationRule objects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from controlplane.model import (
    DEFAULT_DOMAIN_SUFFIX,
    Endpoint,
    EndpointSlice,
    Protocol,
    Service,
    ServiceKind,
    ServicePort,
)
from controlplane.networking.parse import destination_rule_from_object
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ProxyResources,
    ResourceSet,
    make_resource,
)
from controlplane.translate import clusters, tls
from controlplane.translate.destination_rules import (
    DestinationRuleIndex,
    outbound_clusters,
    subset_load_assignments,
)
from harness.envoy_validate import validate_with_envoy
from harness.golden import assert_golden

GOLDEN = Path(__file__).parents[1] / "golden" / "controlplane" / "destination_rules"
CASES = sorted(path.stem for path in GOLDEN.glob("*.yaml"))
PROXY_NAMESPACE = "default"
TRUST_DOMAIN = "cluster.local"


def _service(raw: dict[str, Any], number: int) -> Service:
    ports = tuple(
        ServicePort(name=p["name"], port=p["port"], protocol=Protocol(p["protocol"]))
        for p in raw["ports"]
    )
    kind = ServiceKind(raw.get("kind", ServiceKind.CLUSTER_IP))
    return Service(
        name=raw["name"],
        namespace=raw["namespace"],
        kind=kind,
        ports=ports,
        cluster_ips=(f"10.96.0.{number}",) if kind is ServiceKind.CLUSTER_IP else (),
        selector=(("app", raw["name"]),),
        external_name=raw.get("externalName"),
    )


def render_case(case: str) -> ProxyResources:
    spec = yaml.safe_load((GOLDEN / f"{case}.yaml").read_text())
    services = [_service(raw, number) for number, raw in enumerate(spec["services"], 1)]
    rules = [destination_rule_from_object(obj) for obj in spec["rules"]]
    index = DestinationRuleIndex.build(rules, "istio-system", DEFAULT_DOMAIN_SUFFIX)
    built_clusters, built_assignments = [], []
    for service in services:
        raw_endpoints = spec["endpoints"].get(service.name, [])
        labels = {e["address"]: e["labels"] for e in raw_endpoints}
        meshed = [e for e in raw_endpoints if e.get("meshed")]
        slices = (
            EndpointSlice(
                name=f"{service.name}-1",
                namespace=service.namespace,
                service_name=service.name,
                ports=tuple((port.name, port.port) for port in service.ports),
                endpoints=tuple(
                    Endpoint(address=e["address"], pod_name=e["pod"]) for e in raw_endpoints
                ),
            ),
        )
        peers = (tls.spiffe_id(TRUST_DOMAIN, service.namespace, service.name),) if meshed else ()
        mtls = clusters.UpstreamMtls(peers) if meshed else None
        mtls_endpoints = frozenset(
            (e["address"], port.port) for e in meshed for port in service.ports
        )
        rule = index.rule_for(
            service.fqdn(DEFAULT_DOMAIN_SUFFIX), service.namespace, PROXY_NAMESPACE, {}
        )
        for port in service.ports:
            built_clusters.extend(
                outbound_clusters(service, port, DEFAULT_DOMAIN_SUFFIX, rule, mtls, peers)
            )
        if rule is not None:
            built_assignments.extend(
                subset_load_assignments(
                    service,
                    rule,
                    DEFAULT_DOMAIN_SUFFIX,
                    slices,
                    lambda endpoint, labels=labels: labels.get(endpoint.address),
                    mtls_endpoints,
                )
            )
    return ProxyResources(
        {
            CLUSTER: ResourceSet.of(CLUSTER, [make_resource(c.name, c) for c in built_clusters]),
            ENDPOINT: ResourceSet.of(
                ENDPOINT, [make_resource(a.cluster_name, a) for a in built_assignments]
            ),
            LISTENER: ResourceSet.of(LISTENER, []),
            ROUTE: ResourceSet.of(ROUTE, []),
        }
    )


def as_json(resources: ProxyResources) -> dict[str, Any]:
    return {
        short: [
            json_format.MessageToDict(r.message)
            for r in sorted(resources[type_url], key=lambda r: r.name)
        ]
        for short, type_url in (("clusters", CLUSTER), ("endpoints", ENDPOINT))
    }


def test_there_are_golden_cases() -> None:
    assert {
        "bookinfo-all",
        "circuit-breaking",
        "load-balancers",
        "tls-and-ports",
        "tls-origination",
    } <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_translation_matches_golden(case: str) -> None:
    rendered = json.dumps(as_json(render_case(case)), indent=2) + "\n"
    assert_golden(GOLDEN / f"{case}.json", rendered, f"the clusters of {case}")


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_golden_clusters_pass_envoy_validate(case: str) -> None:
    result = validate_with_envoy(render_case(case))
    assert result.ok, result.output
    assert "OK" in result.output, result.output
