"""Model, conversion, store, proxy identity, scoping, debounce and incremental generation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.convert import ObjectError, endpoint_slice_from_object, service_from_object
from controlplane.debounce import Debouncer, fire_at
from controlplane.model import Protocol, ServiceKind, infer_protocol
from controlplane.proxy import ProxyIdentityError, parse_proxy_identity
from controlplane.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from controlplane.sources.files import FileSource, parse_objects
from controlplane.store import Kind, MeshStore
from controlplane.translate.generate import ConfigGenerator
from harness.kube_objects import endpoint_slice_object, service_object


@pytest.mark.parametrize(
    ("name", "app_protocol", "transport", "expected"),
    [
        ("http", None, "TCP", Protocol.HTTP),
        ("http-web", None, "TCP", Protocol.HTTP),
        ("HTTP2-api", None, "TCP", Protocol.HTTP2),
        ("grpc", None, "TCP", Protocol.GRPC),
        ("grpc-web", None, "TCP", Protocol.GRPC_WEB),
        ("grpc-web-ui", None, "TCP", Protocol.GRPC_WEB),
        ("tcp-db", None, "TCP", Protocol.TCP),
        ("redis", None, "TCP", Protocol.REDIS),
        ("web", None, "TCP", Protocol.TCP),  # no protocol prefix: opaque TCP
        ("httpx", None, "TCP", Protocol.TCP),  # a prefix must be followed by '-' or nothing
        ("", None, "TCP", Protocol.TCP),
        ("tcp", "http", "TCP", Protocol.HTTP),  # appProtocol wins over the name
        ("web", "kubernetes.io/h2c", "TCP", Protocol.HTTP2),
        ("web", "unknown.example/proto", "TCP", Protocol.TCP),
        ("http", "http", "UDP", Protocol.UDP),
    ],
)
def test_protocol_inference_follows_istio(
    name: str, app_protocol: str | None, transport: str, expected: Protocol
) -> None:
    assert infer_protocol(name, app_protocol, transport) is expected


def test_service_conversion_kinds_and_errors() -> None:
    headless = service_from_object(
        {
            "kind": "Service",
            "metadata": {"name": "h", "namespace": "n"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
        }
    )
    assert headless.kind is ServiceKind.HEADLESS and headless.cluster_ips == ()
    dual = service_from_object(
        {
            "metadata": {"name": "d"},
            "spec": {
                "clusterIP": "10.0.0.1",
                "clusterIPs": ["10.0.0.1", "fd00::1"],
                "ports": [{"port": 80, "targetPort": "8080"}],
            },
        }
    )
    assert dual.namespace == "default" and dual.cluster_ips == ("10.0.0.1", "fd00::1")
    assert dual.ports[0].target_port == 8080
    with pytest.raises(ObjectError, match=r"spec\.externalName"):
        service_from_object(
            {"kind": "Service", "metadata": {"name": "x"}, "spec": {"type": "ExternalName"}}
        )
    with pytest.raises(ObjectError, match=r"ports\[0\].port"):
        service_from_object(
            {"kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": "eighty"}]}}
        )


def test_endpoint_slice_conditions_default_like_kubernetes() -> None:
    eps = endpoint_slice_from_object(
        {
            "kind": "EndpointSlice",
            "metadata": {
                "name": "s",
                "namespace": "n",
                "labels": {"kubernetes.io/service-name": "svc"},
            },
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "terminating": True}},
            ],
        }
    )
    first, second = eps.endpoints
    assert (first.ready, first.serving, first.terminating) == (True, True, False)
    assert (second.ready, second.serving, second.terminating) == (False, False, True)
    with pytest.raises(ObjectError, match=r"kubernetes\.io/service-name"):
        endpoint_slice_from_object({"kind": "EndpointSlice", "metadata": {"name": "s"}})


def test_proxy_identity_from_metadata_or_node_id() -> None:
    identity = parse_proxy_identity(
        "sidecar~10.0.0.5~web-1.shop~shop.svc.cluster.local",
        {
            "NAME": "web-1",
            "NAMESPACE": "shop",
            "INSTANCE_IPS": "10.0.0.5,fd00::5",
            "SERVICE_ACCOUNT": "web",
            "LABELS": {"app": "web"},
        },
    )
    assert identity.pod_ref == "web-1.shop" and identity.ips == ("10.0.0.5", "fd00::5")
    assert identity.service_account == "web" and identity.labels == (("app", "web"),)
    assert identity.has_ipv4 and identity.has_ipv6
    from_id = parse_proxy_identity("sidecar~10.0.0.6~db-0.data~data.svc.cluster.local", {})
    assert (from_id.pod_name, from_id.namespace, from_id.ips) == ("db-0", "data", ("10.0.0.6",))
    with pytest.raises(ProxyIdentityError, match="NAMESPACE"):
        parse_proxy_identity("envoy-1", {})
    with pytest.raises(ProxyIdentityError, match="not an IP"):
        parse_proxy_identity("x", {"NAME": "a", "NAMESPACE": "b", "INSTANCE_IPS": "nope"})


def _svc(name: str, ns: str, ip: str) -> dict[str, Any]:
    return service_object(name, ns, ip, {"http": 80})


def _slice(name: str, ns: str, *ips: str) -> dict[str, Any]:
    return endpoint_slice_object(name, ns, {"http": 8080}, ips)


def test_store_counts_only_effective_changes_and_replace_is_atomic() -> None:
    changes: list[Kind] = []
    store = MeshStore(on_change=changes.append)
    assert store.upsert(Kind.SERVICE, _svc("a", "n", "10.0.0.1"))
    assert not store.upsert(Kind.SERVICE, _svc("a", "n", "10.0.0.1"))  # same content
    first = store.snapshot()
    assert store.snapshot() is first
    assert store.replace(Kind.SERVICE, [_svc("b", "n", "10.0.0.2"), _svc("c", "n", "10.0.0.3")])
    assert changes == [Kind.SERVICE, Kind.SERVICE]  # the re-list is one change
    assert sorted(store.snapshot().services) == [("n", "b"), ("n", "c")]
    assert sorted(first.services) == [("n", "a")]  # old snapshots never change
    assert not store.upsert(
        Kind.SERVICE,
        {"kind": "Service", "metadata": {"name": "bad"}, "spec": {"type": "ExternalName"}},
    )


def identity(ns: str = "n") -> Any:
    return parse_proxy_identity(f"sidecar~10.9.0.1~p.{ns}~{ns}.svc.cluster.local", {})


def test_generator_rebuilds_only_what_changed() -> None:
    store = MeshStore()
    for i in range(3):
        store.upsert(Kind.SERVICE, _svc(f"s{i}", "n", f"10.0.0.{i + 1}"))
        store.upsert(Kind.ENDPOINT_SLICE, _slice(f"s{i}", "n", f"10.1.0.{i + 1}"))
    generator = ConfigGenerator()
    before = generator.generate(store.snapshot(), identity())
    assert generator.generate(store.snapshot(), identity()) is before  # same shape, same object
    store.upsert(Kind.ENDPOINT_SLICE, _slice("s1", "n", "10.1.0.99"))
    after = generator.generate(store.snapshot(), identity())
    changed = {
        t: sorted(n for n, r in after[t].by_name.items() if before[t].by_name.get(n) is not r)
        for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE)
    }
    # One load assignment is new; every other resource is the very same object.
    assert changed == {
        CLUSTER: [],
        ENDPOINT: ["outbound|80||s1.n.svc.cluster.local"],
        LISTENER: [],
        ROUTE: [],
    }


def test_scoping_limits_a_proxy_to_its_namespace_and_listed_ones() -> None:
    store = MeshStore()
    for ns in ("a", "b", "shared"):
        store.upsert(Kind.SERVICE, _svc("svc", ns, f"10.0.{len(ns)}.1"))
    generator = ConfigGenerator()
    everything = generator.generate(store.snapshot(), identity("a"))
    assert {n for n in everything[CLUSTER].by_name if n.startswith("outbound")} == {
        "outbound|80||svc.a.svc.cluster.local",
        "outbound|80||svc.b.svc.cluster.local",
        "outbound|80||svc.shared.svc.cluster.local",
    }
    store.upsert(
        Kind.MESH_CONFIG,
        {
            "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "egressNamespaces: [shared]"},
        },
    )
    scoped = generator.generate(store.snapshot(), identity("a"))
    assert {n for n in scoped[CLUSTER].by_name if n.startswith("outbound")} == {
        "outbound|80||svc.a.svc.cluster.local",
        "outbound|80||svc.shared.svc.cluster.local",
    }


def test_debounce_deadline() -> None:
    assert fire_at(first_event=0.0, last_event=0.05, quiet=0.1, max_delay=1.0) == pytest.approx(
        0.15
    )
    assert fire_at(first_event=0.0, last_event=0.95, quiet=0.1, max_delay=1.0) == pytest.approx(1.0)


def test_debouncer_coalesces_a_burst_into_one_push() -> None:
    pushes: list[float] = []

    async def scenario() -> None:
        async def push(first: float) -> None:
            pushes.append(first)

        debouncer = Debouncer(push, quiet=0.05, max_delay=0.2)
        task = asyncio.create_task(debouncer.run())
        for _ in range(5):
            debouncer.notify()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert len(pushes) == 1
        # A steady stream of events still pushes by max_delay.
        for _ in range(30):
            debouncer.notify()
            await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(scenario())
    assert len(pushes) >= 3  # 0.6 s of constant events with max_delay 0.2 s


def test_file_source_keeps_last_good_state_on_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(_svc("a", "n", "10.0.0.1")))
    store = MeshStore()
    source = FileSource(tmp_path, store)
    assert source.load()
    assert list(store.snapshot().services) == [("n", "a")]
    (tmp_path / "b.yaml").write_text("kind: Service\nmetadata: {name: [unclosed\n")
    assert not source.load()
    assert list(store.snapshot().services) == [("n", "a")]


def test_file_source_applies_only_what_an_edit_changed(tmp_path: Path) -> None:
    (tmp_path / "services.yaml").write_text(
        yaml.safe_dump_all([_svc("a", "n", "10.0.0.1"), _svc("b", "n", "10.0.0.2")])
    )
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump(_slice("a", "n", "10.1.0.1")))
    changes: list[Kind] = []
    store = MeshStore(on_change=changes.append)
    source = FileSource(tmp_path, store)
    assert source.load()
    services_before = dict(store.snapshot().services)
    changes.clear()
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump(_slice("a", "n", "10.1.0.2")))
    assert source.load()
    assert changes == [Kind.ENDPOINT_SLICE]  # one object changed, one event
    assert all(store.snapshot().services[k] is v for k, v in services_before.items())  # untouched
    (tmp_path / "slice.yaml").unlink()
    assert source.load()
    assert changes == [Kind.ENDPOINT_SLICE, Kind.ENDPOINT_SLICE]
    assert store.snapshot().endpoint_slices == {}
    assert (
        parse_objects("kind: List\nitems:\n- {kind: Service, metadata: {name: x}}\n")[0][
            "metadata"
        ]["name"]
        == "x"
    )


def test_relist_keeps_unchanged_objects_and_indexes_identical() -> None:
    store = MeshStore()
    store.replace(Kind.SERVICE, [_svc("s0", "n", "10.0.0.1"), _svc("s1", "n", "10.0.0.2")])
    store.replace(
        Kind.ENDPOINT_SLICE, [_slice("s0", "n", "10.1.0.1"), _slice("s1", "n", "10.1.0.2")]
    )
    before = store.snapshot()
    # A re-list after 410 Gone: fresh dicts, one slice really changed.
    assert store.replace(
        Kind.ENDPOINT_SLICE, [_slice("s0", "n", "10.1.0.1"), _slice("s1", "n", "10.1.0.3")]
    )
    after = store.snapshot()
    s0, s1 = after.services[("n", "s0")], after.services[("n", "s1")]
    assert after.slices_for(s0) is before.slices_for(s0)  # unchanged: reused as is
    assert after.slices_for(s1) is not before.slices_for(s1)
    assert after.services_by_endpoint_address["10.1.0.3"] == frozenset({("n", "s1")})
    assert "10.1.0.2" not in after.services_by_endpoint_address


def test_a_snapshot_shares_the_maps_of_unchanged_kinds_with_the_previous_one() -> None:
    store = MeshStore()
    store.upsert(Kind.SERVICE, _svc("s0", "n", "10.0.0.1"))
    store.upsert(Kind.ENDPOINT_SLICE, _slice("s0", "n", "10.1.0.1"))
    before = store.snapshot()
    store.upsert(Kind.ENDPOINT_SLICE, _slice("s0", "n", "10.1.0.2"))
    after = store.snapshot()
    # An endpoint change copies the slices and their indexes only.
    assert after.services is before.services and after.workloads is before.workloads
    assert after.endpoint_slices is not before.endpoint_slices
    assert after.services_by_endpoint_address is not before.services_by_endpoint_address
    assert after.services_by_namespace is before.services_by_namespace
    assert dict(after.services_by_endpoint_address) == {"10.1.0.2": frozenset({("n", "s0")})}
    # And a snapshot never sees later changes to the store (copies, not views).
    store.upsert(Kind.SERVICE, _svc("s1", "n", "10.0.0.2"))
    assert list(after.services) == [("n", "s0")]
    assert list(store.snapshot().services) == [("n", "s0"), ("n", "s1")]


def _pod(name: str, ns: str, ip: str, sa: str = "default") -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"serviceAccountName": sa},
        "status": {"podIP": ip},
    }


def test_the_store_notes_which_services_a_changed_pod_is_behind() -> None:
    store = MeshStore()
    store.upsert(Kind.SERVICE, _svc("a", "n", "10.0.0.1"))
    store.upsert(Kind.SERVICE, _svc("b", "n", "10.0.0.2"))
    store.upsert(Kind.ENDPOINT_SLICE, _slice("a", "n", "10.1.0.1"))
    store.upsert(Kind.ENDPOINT_SLICE, _slice("b", "n", "10.1.0.2"))
    store.replace(Kind.POD, [_pod("a-0", "n", "10.1.0.1"), _pod("b-0", "n", "10.1.0.2")])
    first = store.snapshot()
    assert set(first.pod_changes) == {("n", "a"), ("n", "b")}

    # A re-list in which only b-0 changed (new service account) stamps b alone.
    store.replace(Kind.POD, [_pod("a-0", "n", "10.1.0.1"), _pod("b-0", "n", "10.1.0.2", "x")])
    second = store.snapshot()
    assert second.pod_changes[("n", "a")] == first.pod_changes[("n", "a")]
    assert second.pod_changes[("n", "b")] == second.generation

    # A pod moving to an address behind a stamps a (its new address) and b (its old one).
    store.upsert(Kind.POD, _pod("b-0", "n", "10.1.0.1", "x"))
    third = store.snapshot()
    assert third.pod_changes[("n", "a")] == third.pod_changes[("n", "b")] == third.generation
    # A pod behind no service stamps nothing; an endpoint change leaves the stamps shared.
    store.upsert(Kind.POD, _pod("lone", "n", "10.9.9.9"))
    store.upsert(Kind.ENDPOINT_SLICE, _slice("a", "n", "10.1.0.1", "10.1.0.3"))
    fourth = store.snapshot()
    assert dict(fourth.pod_changes) == dict(third.pod_changes)


@pytest.mark.parametrize(
    ("status", "spec"),
    [
        ({"phase": "Succeeded", "podIP": "10.1.0.7"}, {}),
        ({"phase": "Failed", "podIP": "10.1.0.7"}, {}),
        ({"phase": "Running", "podIP": "10.1.0.7"}, {"hostNetwork": True}),
    ],
)
def test_a_finished_or_host_network_pod_claims_no_address(
    status: dict[str, Any], spec: dict[str, Any]
) -> None:
    """A completed Job pod keeps its podIP after the address went to a live pod; a
    host-network pod's is the node's. Neither may shadow the pod behind an endpoint."""
    store = MeshStore()
    live = _pod("web-0", "n", "10.1.0.7", sa="web")
    gone = _pod("a-job", "n", "10.1.0.7", sa="job")  # sorts first by name
    gone["status"] = status
    gone["spec"] = {**gone["spec"], **spec}
    store.replace(Kind.POD, [live, gone])
    snapshot = store.snapshot()
    assert snapshot.workloads[("n", "a-job")].ips == ()
    assert snapshot.workloads_by_ip["10.1.0.7"].name == "web-0"
