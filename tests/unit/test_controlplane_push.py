"""The push hub with real protocol state machines (no gRPC): only affected proxies get pushes;
and the Kubernetes source's re-list and back-off policy."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from kubernetes.client.rest import ApiException

from controlplane.app import DiscoveryOptions, DiscoveryServer
from controlplane.metrics import ControlPlaneMetrics
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.sources.kube import KubeSource
from controlplane.store import Kind, MeshStore
from controlplane.xds.protocol import DeltaProtocol, Response
from controlplane.xds.server import ProxyConnection, PushHub
from harness.kube_objects import endpoint_slice_object, service_object


def connect(hub: PushHub, pod: str, ns: str, ip: str) -> ProxyConnection:
    identity = parse_proxy_identity(f"sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local", {})
    conn = ProxyConnection(
        identity=identity, protocol=DeltaProtocol(), peer="test", queue=asyncio.Queue()
    )
    hub.register(conn)
    return conn


def sync(conn: ProxyConnection) -> list[Response]:
    """Subscribe like Envoy (wildcard CDS/LDS, then what they name) and ACK until quiet."""
    sent: list[Response] = []
    for type_url in (CLUSTER, LISTENER):
        conn.protocol.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url), now=0)
    for _ in range(10):
        responses = conn.protocol.responses(conn.desired)
        if not responses:
            break
        sent.extend(responses)
        for response in responses:
            subscribe: list[str] = []
            if response.type_url == CLUSTER and ENDPOINT not in conn.protocol.types:
                subscribe = [r.name for r in response.resources if r.name.startswith("outbound")]
                conn.protocol.on_request(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=ENDPOINT, resource_names_subscribe=subscribe
                    ),
                    now=0,
                )
            if response.type_url == LISTENER and ROUTE not in conn.protocol.types:
                conn.protocol.on_request(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=ROUTE, resource_names_subscribe=["80"]
                    ),
                    now=0,
                )
            conn.protocol.on_request(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=response.type_url, response_nonce=response.nonce
                ),
                now=0,
            )
    return sent


def test_only_proxies_whose_config_changed_are_pushed() -> None:
    store = MeshStore()
    store.upsert(
        Kind.MESH_CONFIG,
        {
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "egressNamespaces: []"},
        },
    )
    store.upsert(Kind.SERVICE, service_object("a", "team-a", "10.96.0.1", {"http": 80}))
    store.upsert(
        Kind.ENDPOINT_SLICE, endpoint_slice_object("a", "team-a", {"http": 8080}, ["10.1.0.1"])
    )
    store.upsert(Kind.SERVICE, service_object("b", "team-b", "10.96.0.2", {"http": 80}))
    store.upsert(
        Kind.ENDPOINT_SLICE, endpoint_slice_object("b", "team-b", {"http": 8080}, ["10.1.0.2"])
    )
    hub = PushHub(ControlPlaneMetrics())
    hub.publish(store.snapshot())
    proxy_a = connect(hub, "pa", "team-a", "10.2.0.1")
    proxy_b = connect(hub, "pb", "team-b", "10.2.0.2")
    assert sync(proxy_a) and sync(proxy_b)

    store.upsert(
        Kind.ENDPOINT_SLICE,
        endpoint_slice_object("a", "team-a", {"http": 8080}, ["10.1.0.1", "10.1.0.9"]),
    )
    hub.publish(store.snapshot())
    pushed_a = proxy_a.protocol.responses(proxy_a.desired)
    assert [(r.type_url, [x.name for x in r.resources]) for r in pushed_a] == [
        (ENDPOINT, ["outbound|80||a.team-a.svc.cluster.local"])
    ]
    assert proxy_b.protocol.responses(proxy_b.desired) == []  # team-b cannot see team-a: unaffected
    # Both proxies of the same shape share one set of resources, built once.
    proxy_a2 = connect(hub, "pa2", "team-a", "10.2.0.3")
    assert proxy_a2.desired is proxy_a.desired


def istio_object(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pushed(conn: ProxyConnection) -> list[tuple[str, list[str]]]:
    return [
        (r.type_url, [x.name for x in r.resources]) for r in conn.protocol.responses(conn.desired)
    ]


def test_virtual_services_and_destination_rules_push_only_to_the_namespaces_they_apply_to() -> None:
    store = MeshStore()
    store.upsert(Kind.SERVICE, service_object("a", "team-a", "10.96.0.1", {"http": 80}))
    store.upsert(
        Kind.ENDPOINT_SLICE, endpoint_slice_object("a", "team-a", {"http": 8080}, ["10.1.0.1"])
    )
    hub = PushHub(ControlPlaneMetrics())
    hub.publish(store.snapshot())
    proxies = {
        ns: connect(hub, f"p-{ns}", ns, ip)
        for ns, ip in (("team-a", "10.2.0.1"), ("team-b", "10.2.0.2"), ("team-c", "10.2.0.3"))
    }
    for conn in proxies.values():
        assert sync(conn)
    # Every namespace sees service a, but the VirtualService is exported to two of them.
    store.upsert(
        Kind.VIRTUAL_SERVICE,
        istio_object(
            "VirtualService",
            "team-a",
            "a",
            {
                "hosts": ["a"],
                "exportTo": [".", "team-b"],
                "http": [{"timeout": "3s", "route": [{"destination": {"host": "a"}}]}],
            },
        ),
    )
    hub.publish(store.snapshot())
    assert pushed(proxies["team-a"]) == [(ROUTE, ["80"])]
    assert pushed(proxies["team-b"]) == [(ROUTE, ["80"])]
    assert pushed(proxies["team-c"]) == []
    for conn in proxies.values():
        sync(conn)
    # A DestinationRule private to team-a: only team-a's proxies get its subset clusters.
    store.upsert(
        Kind.DESTINATION_RULE,
        istio_object(
            "DestinationRule",
            "team-a",
            "a",
            {"host": "a", "exportTo": ["."], "subsets": [{"name": "v1", "labels": {"v": "1"}}]},
        ),
    )
    hub.publish(store.snapshot())
    assert pushed(proxies["team-a"])[0] == (
        CLUSTER,
        ["outbound|80|v1|a.team-a.svc.cluster.local"],
    )
    assert pushed(proxies["team-b"]) == []
    assert pushed(proxies["team-c"]) == []


class _Stop(Exception):
    pass


def test_kube_source_relists_on_410_and_backs_off_on_errors() -> None:
    metrics = ControlPlaneMetrics()
    source = KubeSource.__new__(KubeSource)  # only the retry policy is exercised
    source.metrics = metrics
    source._stopping = threading.Event()
    calls: list[str] = []
    waits: list[float] = []
    script = iter(
        [
            ApiException(status=410, reason="Gone"),
            ConnectionResetError("reset"),
            ApiException(status=403, reason="Forbidden"),
            _Stop(),
        ]
    )

    def fake_list(resource: Any) -> str:
        calls.append("list")
        return "1"

    def fake_watch(resource: Any, version: str) -> str:
        calls.append("watch")
        error = next(script)
        if isinstance(error, _Stop):
            source._stopping.set()
            return version
        raise error

    source._list = fake_list  # type: ignore[method-assign]
    source._watch = fake_watch  # type: ignore[method-assign]

    def no_wait(timeout: float | None = None) -> bool:
        waits.append(timeout or 0.0)
        return False

    source._stopping.wait = no_wait  # type: ignore[method-assign]
    resource = type("R", (), {"kind": Kind.SERVICE})()
    source._run(resource)
    assert calls == ["list", "watch", "list", "watch", "list", "watch", "list", "watch"]
    assert len(waits) == 2  # no back-off after 410 Gone: re-list at once
    assert waits[1] > waits[0]  # the back-off grows
    assert metrics.watch_restarts.labels("Service", "gone")._value.get() == 1
    assert metrics.watch_restarts.labels("Service", "http_403")._value.get() == 1


def test_a_failing_push_is_counted_and_does_not_stop_later_pushes() -> None:
    async def scenario() -> None:
        server = DiscoveryServer(
            MeshStore(), DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None)
        )
        calls: list[int] = []

        def publish(snapshot: object, changed_at: float | None = None) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("translation bug")

        server.hub.publish = publish  # type: ignore[method-assign]
        await server._push(0.0)
        await server._push(0.0)
        assert len(calls) == 2
        assert server.metrics.push_errors._value.get() == 1

    asyncio.run(scenario())
