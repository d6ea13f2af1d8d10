"""Golden translation of Istio's documentation samples: VirtualServices -> one port's routes.

Each ``tests/golden/controlplane/virtual_services/<case>.yaml`` holds the proxy (namespace,
labels), the port, the services on it and the VirtualService objects; ``<case>.json`` is
the route configuration of that port, reviewed by eye. Every one, together with a minimal
EDS cluster for each cluster its routes name, must pass ``envoy --mode validate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from controlplane.model import Protocol, Service, ServiceKind, ServicePort
from controlplane.networking.model import ConsistentHash, HTTPCookie
from controlplane.networking.parse import virtual_service_from_object
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ProxyResources,
    ResourceSet,
    make_resource,
)
from controlplane.translate import names, routes
from controlplane.translate import virtual_service_extras as extras
from controlplane.translate.common import ads, duration, packed, socket_address
from controlplane.translate.virtual_service_selection import mesh_virtual_services
from controlplane.translate.virtual_services import Client, RouteContext, service_virtual_host
from harness.envoy_validate import validate_with_envoy
from harness.golden import assert_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "controlplane" / "virtual_services"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))
SUFFIX = "cluster.local"


def _service(raw: dict[str, Any]) -> Service:
    protocol = Protocol(raw.get("protocol", "HTTP"))
    return Service(
        name=raw["name"],
        namespace=raw["namespace"],
        kind=ServiceKind.CLUSTER_IP,
        ports=tuple(ServicePort(f"p{p}", p, protocol) for p in raw["ports"]),
        cluster_ips=(raw["ip"],),
    )


def render_case(
    case: str, hashes: dict[str, ConsistentHash] | None = None
) -> route_pb2.RouteConfiguration:
    spec = yaml.safe_load((GOLDEN / f"{case}.yaml").read_text())
    services = [_service(s) for s in spec["services"]]
    proxy = spec["proxy"]
    client = Client(proxy["namespace"], tuple(sorted(proxy.get("labels", {}).items())))
    ordered = mesh_virtual_services(
        [virtual_service_from_object(o) for o in spec["virtualServices"]], client.namespace
    )
    context = RouteContext(
        port=spec["port"],
        client=client,
        domain_suffix=SUFFIX,
        hashes=hashes or {},
    )
    config = route_pb2.RouteConfiguration(name=names.outbound_route(context.port))
    config.validate_clusters.value = False
    for service in services:
        for port in service.ports:
            if port.port == context.port:
                config.virtual_hosts.append(service_virtual_host(service, port, ordered, context))
    config.virtual_hosts.append(routes.fallback_virtual_host(allow_any=True))
    return config


def named_clusters(config: route_pb2.RouteConfiguration) -> set[str]:
    found: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            action = route.route
            if action.cluster:
                found.add(action.cluster)
            found.update(c.name for c in action.weighted_clusters.clusters)
            found.update(m.cluster for m in action.request_mirror_policies)
    return found


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration(1)
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    return cluster


def listener_with_filters(config: route_pb2.RouteConfiguration) -> listener_pb2.Listener:
    """The routes inline behind the filters their per-route configurations need."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="vs", route_config=config)
    hcm.http_filters.extend(extras.http_filters())
    hcm.http_filters.append(
        hcm_pb2.HttpFilter(
            name="envoy.filters.http.router", typed_config=packed(router_pb2.Router())
        )
    )
    listener = listener_pb2.Listener(name="vs", address=socket_address("127.0.0.1", 19000))
    listener.bind_to_port.value = False
    listener.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[
                listener_components_pb2.Filter(
                    name="envoy.filters.network.http_connection_manager", typed_config=packed(hcm)
                )
            ]
        )
    )
    return listener


def validation_resources(config: route_pb2.RouteConfiguration) -> ProxyResources:
    clusters = [eds_cluster(name) for name in sorted(named_clusters(config))]
    clusters.append(
        cluster_pb2.Cluster(
            name=names.PASSTHROUGH_CLUSTER,
            type=cluster_pb2.Cluster.ORIGINAL_DST,
            connect_timeout=duration(1),
            lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        )
    )
    return ProxyResources(
        {
            CLUSTER: ResourceSet.of(CLUSTER, [make_resource(c.name, c) for c in clusters]),
            ENDPOINT: ResourceSet.of(ENDPOINT, []),
            LISTENER: ResourceSet.of(
                LISTENER, [make_resource("vs", listener_with_filters(config))]
            ),
            ROUTE: ResourceSet.of(ROUTE, [make_resource(config.name, config)]),
        }
    )


def test_the_istio_doc_samples_are_all_here() -> None:
    assert {
        "reviews-test-v2",
        "reviews-90-10",
        "ratings-fault",
        "timeout-retries",
        "redirect-direct-response",
        "rewrite",
        "two-namespaces",
        "grpc-method",
    } <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_routes_match_golden(case: str) -> None:
    rendered = json.dumps(json_format.MessageToDict(render_case(case)), indent=2) + "\n"
    assert_golden(GOLDEN / f"{case}.json", rendered, f"the routes of {case}")


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_routes_and_their_clusters_pass_envoy_validate(case: str) -> None:
    result = validate_with_envoy(validation_resources(render_case(case)))
    assert result.ok, result.output
    assert "OK" in result.output, result.output


@pytest.mark.envoy
def test_hash_policies_pass_envoy_validate() -> None:
    """Consistent hashes of the 90/10 split's clusters (their DestinationRule's, as input)."""
    hashes = {
        "outbound|9080|v1|reviews.default.svc.cluster.local": ConsistentHash(
            http_cookie=HTTPCookie("user", "/", 3600.0)
        ),
        "outbound|9080|v3|reviews.default.svc.cluster.local": ConsistentHash(use_source_ip=True),
    }
    config = render_case("reviews-90-10", hashes)
    assert len(config.virtual_hosts[0].routes[0].route.hash_policy) == 2
    result = validate_with_envoy(validation_resources(config))
    assert result.ok, result.output
