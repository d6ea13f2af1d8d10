"""The xDS protocol state machines, driven request by request without gRPC or Envoy."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ProxyResources,
    ResourceSet,
    make_resource,
)
from controlplane.xds.protocol import DeltaProtocol, SotwProtocol, SyncStatus


def cluster(name: str, timeout: int = 1) -> object:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = timeout
    return make_resource(name, c)


def cla(name: str, port: int = 80) -> object:
    m = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    m.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return make_resource(name, m)


def resources(clusters: list[object], endpoints: list[object] | None = None) -> ProxyResources:
    return ProxyResources(
        {
            CLUSTER: ResourceSet.of(CLUSTER, clusters),  # type: ignore[arg-type]
            ENDPOINT: ResourceSet.of(ENDPOINT, endpoints or []),  # type: ignore[arg-type]
            LISTENER: ResourceSet.of(LISTENER, []),
            ROUTE: ResourceSet.of(ROUTE, []),
        }
    )


def nack(message: str) -> status_pb2.Status:
    return status_pb2.Status(code=13, message=message)


# --- state of the world ------------------------------------------------------------------


def test_sotw_sends_then_waits_for_ack_then_sends_changes() -> None:
    p = SotwProtocol()
    p.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), now=0)
    first = p.responses(resources([cluster("a")]))
    assert [r.type_url for r in first] == [CLUSTER]
    assert p.types[CLUSTER].status is SyncStatus.STALE
    # While in flight, a change waits.
    assert p.responses(resources([cluster("a"), cluster("b")])) == []
    p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=first[0].version_info, response_nonce=first[0].nonce
        ),
        now=1,
    )
    assert p.types[CLUSTER].status is SyncStatus.SYNCED
    second = p.responses(resources([cluster("a"), cluster("b")]))
    assert len(second) == 1 and len(second[0].resources) == 2
    assert second[0].version_info != first[0].version_info


def test_sotw_ignores_stale_nonce_and_answers_a_repeated_acked_nonce() -> None:
    p = SotwProtocol()
    want = resources([cluster("a")], [cla("a")])
    p.on_request(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"]), now=0)
    (sent,) = p.responses(want)
    ack = discovery_pb2.DiscoveryRequest(
        type_url=ENDPOINT,
        resource_names=["a"],
        version_info=sent.version_info,
        response_nonce=sent.nonce,
    )
    p.on_request(ack, now=1)
    assert p.responses(want) == []
    events = p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=ENDPOINT, resource_names=["a"], response_nonce="old"
        ),
        now=2,
    )
    assert [e.kind for e in events] == ["stale"]
    assert p.responses(want) == []
    # Envoy re-created cluster "a" and asks again quoting the ACKed nonce: must be answered,
    # or the cluster stays warming until its initial fetch timeout.
    p.on_request(ack, now=3)
    (again,) = p.responses(want)
    assert again.version_info == sent.version_info and len(again.resources) == 1


def test_sotw_nack_is_recorded_and_not_resent_until_content_changes() -> None:
    p = SotwProtocol()
    p.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), now=0)
    (good,) = p.responses(resources([cluster("a")]))
    p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=good.version_info, response_nonce=good.nonce
        ),
        now=1,
    )
    (bad,) = p.responses(resources([cluster("a", timeout=-1)]))
    events = p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER,
            version_info=good.version_info,
            response_nonce=bad.nonce,
            error_detail=nack("Invalid duration"),
        ),
        now=2,
    )
    assert [e.kind for e in events] == ["nack"]
    state = p.types[CLUSTER]
    assert state.status is SyncStatus.STALE and state.acked_version == good.version_info
    assert state.last_nack is not None and state.last_nack.message == "Invalid duration"
    assert p.responses(resources([cluster("a", timeout=-1)])) == []  # no NACK loop
    (fixed,) = p.responses(resources([cluster("a", timeout=2)]))
    p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=fixed.version_info, response_nonce=fixed.nonce
        ),
        now=3,
    )
    assert state.status is SyncStatus.SYNCED


def test_sotw_push_order_and_listeners_wait_for_the_cluster_ack() -> None:
    p = SotwProtocol()
    for type_url in (ROUTE, LISTENER, ENDPOINT, CLUSTER):
        p.on_request(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=["a"] if type_url == ENDPOINT else []
            ),
            now=0,
        )
    out = p.responses(resources([cluster("a")], [cla("a")]))
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT]  # LDS/RDS held back
    cds = out[0]
    p.on_request(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=cds.version_info, response_nonce=cds.nonce
        ),
        now=1,
    )
    assert [r.type_url for r in p.responses(resources([cluster("a")], [cla("a")]))] == [
        LISTENER,
        ROUTE,
    ]


def test_sotw_versions_are_content_hashes_stable_across_instances() -> None:
    versions = []
    for _ in range(2):
        p = SotwProtocol(nonce_prefix="x")
        p.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER), now=0)
        versions.append(p.responses(resources([cluster("a"), cluster("b")]))[0].version_info)
    assert versions[0] == versions[1]


# --- delta -------------------------------------------------------------------------------


def delta_request(type_url: str, **kwargs: object) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, **kwargs)


def test_delta_sends_only_changes_and_removals() -> None:
    p = DeltaProtocol()
    p.on_request(delta_request(CLUSTER), now=0)  # legacy wildcard
    (first,) = p.responses(resources([cluster("a"), cluster("b")]))
    assert sorted(r.name for r in first.resources) == ["a", "b"]
    p.on_request(delta_request(CLUSTER, response_nonce=first.nonce), now=1)
    (second,) = p.responses(resources([cluster("a", timeout=5)]))
    assert [r.name for r in second.resources] == ["a"]
    assert list(second.removed_resources) == ["b"]
    p.on_request(delta_request(CLUSTER, response_nonce=second.nonce), now=2)
    assert p.responses(resources([cluster("a", timeout=5)])) == []
    assert p.types[CLUSTER].status is SyncStatus.SYNCED


def test_delta_reconnect_with_initial_versions_sends_nothing_unchanged() -> None:
    have = resources([cluster("a"), cluster("b", timeout=3)])
    p = DeltaProtocol()
    initial = {"a": have[CLUSTER].by_name["a"].version, "b": "some-other-version"}
    p.on_request(delta_request(CLUSTER, initial_resource_versions=initial), now=0)
    (response,) = p.responses(have)
    assert [r.name for r in response.resources] == ["b"]


def test_delta_modified_cluster_resends_its_load_assignment() -> None:
    p = DeltaProtocol()
    p.on_request(delta_request(CLUSTER), now=0)
    p.on_request(delta_request(ENDPOINT, resource_names_subscribe=["a"]), now=0)
    out = p.responses(resources([cluster("a")], [cla("a")]))
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT]
    for r in out:
        p.on_request(delta_request(r.type_url, response_nonce=r.nonce), now=1)
    # The cluster changes, its endpoints do not: the endpoints must still be re-sent.
    out = p.responses(resources([cluster("a", timeout=9)], [cla("a")]))
    assert [(r.type_url, [x.name for x in r.resources]) for r in out] == [
        (CLUSTER, ["a"]),
        (ENDPOINT, ["a"]),
    ]


def test_delta_nack_rolls_back_and_does_not_loop() -> None:
    p = DeltaProtocol()
    p.on_request(delta_request(CLUSTER), now=0)
    (first,) = p.responses(resources([cluster("a")]))
    p.on_request(delta_request(CLUSTER, response_nonce=first.nonce), now=1)
    (bad,) = p.responses(resources([cluster("a", timeout=-1)]))
    events = p.on_request(
        delta_request(CLUSTER, response_nonce=bad.nonce, error_detail=nack("bad cluster")), now=2
    )
    assert [e.kind for e in events] == ["nack"]
    state = p.types[CLUSTER]
    assert state.known["a"] == first.resources[0].version  # rolled back to what Envoy has
    assert state.status is SyncStatus.STALE
    assert p.responses(resources([cluster("a", timeout=-1)])) == []
    # Going back to the content Envoy kept needs no push, and reads as synced again.
    assert p.responses(resources([cluster("a")])) == []
    assert state.status is SyncStatus.SYNCED


def test_delta_unsubscribe_forgets_and_resubscribe_resends() -> None:
    p = DeltaProtocol()
    want = resources([cluster("a")], [cla("a")])
    p.on_request(delta_request(ENDPOINT, resource_names_subscribe=["a"]), now=0)
    (sent,) = p.responses(want)
    p.on_request(
        delta_request(ENDPOINT, response_nonce=sent.nonce, resource_names_unsubscribe=["a"]), now=1
    )
    assert p.responses(want) == []
    p.on_request(delta_request(ENDPOINT, resource_names_subscribe=["a"]), now=2)
    (again,) = p.responses(want)
    assert [r.name for r in again.resources] == ["a"]


def test_sotw_first_request_quoting_an_old_servers_nonce_still_subscribes() -> None:
    p = SotwProtocol(nonce_prefix="new-")
    p.on_request(
        discovery_pb2.DiscoveryRequest(type_url=CLUSTER, version_info="v1", response_nonce="old-7"),
        now=0,
    )
    (response,) = p.responses(resources([cluster("a")]))
    assert [r.type_url for r in response.resources] and len(response.resources) == 1
