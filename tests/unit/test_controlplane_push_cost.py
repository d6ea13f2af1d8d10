"""What keeps a full push cheap without changing a byte of it.

A full push (1,000 services to a proxy) translates every service before the first cluster
can leave, so the hot path avoids per-resource work that gives the same answer every time:
the delta envelope is built with the resource, EDS clusters start from a prebuilt message,
and a mesh without pods skips auto-mTLS. Each shortcut must produce exactly what the long
way produces (the golden files pin the output; these pin the shortcuts).
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.model import Protocol, Service, ServiceKind, ServicePort
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    NameOnlyVariants,
    ProxyResources,
    ResourceSet,
    make_resource,
)
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.translate import auto_mtls, clusters
from controlplane.translate import generate as generate_module
from controlplane.translate.common import ads
from controlplane.translate.generate import ConfigGenerator, policy_index
from controlplane.xds.protocol import DeltaProtocol, SotwProtocol
from harness.kube_objects import endpoint_slice_object, service_object


def mesh(services: int, endpoints: int) -> list[dict[str, Any]]:
    """Namespace ``bench``: ``svc-<i>`` (HTTP port 80) with ``endpoints`` ready endpoints each."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
    ]
    for i in range(services):
        name = f"svc-{i}"
        objects.append(
            service_object(name, "bench", f"10.96.0.{i + 1}", {"http": 80}, with_api_version=True)
        )
        objects.append(
            endpoint_slice_object(
                name,
                "bench",
                {"http": 8080},
                [f"10.100.{i}.{j + 1}" for j in range(endpoints)],
                name=f"{name}-abcde",
                ready=True,
                address_type="IPv4",
                protocol="TCP",
                with_api_version=True,
            )
        )
    return objects


PROXY = parse_proxy_identity(
    "sidecar~10.200.0.1~client-0.bench~bench.svc.cluster.local",
    {"NAME": "client-0", "NAMESPACE": "bench", "INSTANCE_IPS": "10.200.0.1"},
)


def test_the_delta_envelope_is_built_with_the_resource_and_carries_the_same_any() -> None:
    message = cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.EDS)
    resource = make_resource("a", message)
    assert resource.wrapped.name == "a"
    assert resource.wrapped.version == resource.version
    assert resource.wrapped.resource == resource.packed
    assert resource.packed.type_url == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert resource.packed.value == message.SerializeToString(deterministic=True)
    sets = ProxyResources(
        {CLUSTER: ResourceSet.of(CLUSTER, [resource]), ENDPOINT: ResourceSet.of(ENDPOINT, [])}
    )

    delta = DeltaProtocol()
    delta.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER), now=0)
    (response,) = delta.responses(sets)
    assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
    assert list(response.resources) == [
        discovery_pb2.Resource(name="a", version=resource.version, resource=resource.packed)
    ]

    sotw = SotwProtocol()
    sotw.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), now=0)
    (state_of_the_world,) = sotw.responses(sets)
    assert list(state_of_the_world.resources) == [resource.packed]


def _eds_cluster_the_long_way(name: str) -> cluster_pb2.Cluster:
    cluster = clusters._base(name)  # the shared template: timeouts, circuit breakers
    cluster.type = cluster_pb2.Cluster.EDS
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    return cluster


@pytest.mark.parametrize("protocol", [Protocol.HTTP, Protocol.GRPC, Protocol.TCP])
def test_an_eds_cluster_from_the_template_is_byte_for_byte_the_long_way(
    protocol: Protocol,
) -> None:
    service = Service(
        namespace="shop",
        name="web",
        kind=ServiceKind.CLUSTER_IP,
        cluster_ips=("10.96.0.10",),
        ports=(ServicePort(name="p", port=80, protocol=protocol),),
    )
    built = clusters.outbound_cluster(service, service.ports[0], "cluster.local")
    expected = _eds_cluster_the_long_way("outbound|80||web.shop.svc.cluster.local")
    clusters._set_upstream_protocol(expected, protocol)
    # Equal bytes, so equal versions: Envoys that reconnect are sent nothing new.
    assert built.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


def _snapshot(objects: list[dict[str, Any]]) -> Any:
    store = MeshStore()
    load_into(store, objects)
    return store.snapshot()


def test_a_mesh_without_pods_skips_auto_mtls_and_gets_plaintext_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = _snapshot(mesh(20, 3))
    asked: list[str] = []
    real = generate_module.service_mtls

    def counting(*args: Any) -> Any:
        asked.append(args[1].name)
        return real(*args)

    monkeypatch.setattr(generate_module, "service_mtls", counting)
    resources = ConfigGenerator().generate(snapshot, PROXY).build_all()
    assert asked == []
    outbound = [c for c in resources[CLUSTER] if c.name.startswith("outbound|")]
    assert len(outbound) == 20
    for resource in outbound:
        message = resource.message
        assert isinstance(message, cluster_pb2.Cluster)
        assert not message.transport_socket_matches
        assert not message.HasField("transport_socket")
    # And the view itself says the same when asked directly.
    service = next(iter(snapshot.services.values()))
    view = auto_mtls.service_mtls(
        snapshot, service, snapshot.slices_for(service), policy_index(snapshot)
    )
    assert (view.endpoints, view.peer_ids, view.all_mtls_ports) == (frozenset(), (), frozenset())


def test_a_meshed_pod_still_turns_auto_mtls_on() -> None:
    objects = mesh(3, 2)
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "svc-0-pod",
                "namespace": "bench",
                "labels": {"security.istio.io/tlsMode": "istio"},
            },
            "spec": {"serviceAccountName": "svc-0", "containers": [{"name": "app"}]},
            "status": {"podIP": "10.100.0.1"},
        }
    )
    resources = ConfigGenerator().generate(_snapshot(objects), PROXY).build_all()
    by_name = {r.name: r.message for r in resources[CLUSTER]}
    meshed = by_name["outbound|80||svc-0.bench.svc.cluster.local"]
    plain = by_name["outbound|80||svc-1.bench.svc.cluster.local"]
    assert isinstance(meshed, cluster_pb2.Cluster) and isinstance(plain, cluster_pb2.Cluster)
    assert [m.name for m in meshed.transport_socket_matches] == [
        "tlsMode-istio",
        "tlsMode-disabled",
    ]
    assert not plain.transport_socket_matches


def test_name_only_variants_are_byte_for_byte_the_message_with_that_name() -> None:
    prototype = _eds_cluster_the_long_way("first")
    variants = NameOnlyVariants(prototype)
    for name in ("b", "outbound|80||" + "x" * 200 + ".svc.cluster.local"):  # 1- and 2-byte lengths
        expected = _eds_cluster_the_long_way(name)
        made = variants.make(name)
        assert made.packed.value == expected.SerializeToString(deterministic=True)
        assert made.version == make_resource(name, expected).version
        assert made.wrapped.name == name and made.wrapped.version == made.version
        assert made.message == expected  # parsed back when asked
        assert made.type_url == make_resource(name, expected).type_url
    with pytest.raises(ValueError, match="name"):
        variants.make("")
    with pytest.raises(ValueError, match="field 1"):
        NameOnlyVariants(discovery_pb2.DiscoveryResponse())


def test_clusters_made_from_a_prototype_equal_the_translated_ones() -> None:
    objects = mesh(4, 2)
    # Other protocols get their own prototype; a pod with a sidecar turns its service's
    # cluster into an mTLS one, which is built in full.
    objects[1]["spec"]["ports"] = [
        {"name": "http", "port": 80},
        {"name": "grpc", "port": 9090},
        {"name": "tcp", "port": 5432},
    ]
    objects[3]["spec"]["ports"] = [{"name": "grpc-api", "port": 9091}]
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "svc-2-pod",
                "namespace": "bench",
                "labels": {"security.istio.io/tlsMode": "istio"},
            },
            "spec": {"containers": [{"name": "app"}]},
            "status": {"podIP": "10.100.2.1"},
        }
    )
    snapshot = _snapshot(objects)
    resources = ConfigGenerator().generate(snapshot, PROXY).build_all()
    checked = meshed = 0
    for service in snapshot.services.values():
        mtls = generate_module.upstream_mtls(
            service,
            auto_mtls.service_mtls(
                snapshot, service, snapshot.slices_for(service), policy_index(snapshot)
            ),
        )
        for port in service.ports:
            expected = clusters.outbound_cluster(service, port, "cluster.local", mtls)
            got = resources[CLUSTER].by_name[expected.name]
            assert got.packed.value == expected.SerializeToString(deterministic=True)
            assert got.message == expected
            checked += 1
            meshed += bool(expected.transport_socket_matches)
    assert (checked, meshed) == (6, 1)
