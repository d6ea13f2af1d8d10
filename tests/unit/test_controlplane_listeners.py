"""The outbound listener's HTTP detection: which ports inspect, and how long they wait.

The golden files show whole listeners; these pin the pieces a golden case cannot vary
cheaply (port runs, the timeout's three settings) and the property the port-only HTTP
chain exists for: the listener does not change when HTTP services come and go.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.convert import service_from_object
from controlplane.model import MtlsMode, Protocol, Service
from controlplane.proxy import parse_proxy_identity
from controlplane.resources import TYPE_BY_SHORT_NAME
from controlplane.store import Kind, MeshStore
from controlplane.translate import listeners
from controlplane.translate.generate import ConfigGenerator
from controlplane.translate.peer_authentication import WorkloadMtls
from harness.kube_objects import endpoint_slice_object, service_object
from meshlib.meshconfig import MeshConfigError, parse_mesh_config


def _service_object(name: str, ip: str, *ports: tuple[str, int]) -> dict[str, Any]:
    return service_object(name, "shop", ip, dict(ports))


def _service(name: str, ip: str, *ports: tuple[str, int]) -> Service:
    return service_from_object(_service_object(name, ip, *ports))


def _outbound(*services: Service, timeout: float | None = None) -> Any:
    return listeners.outbound_listener(
        services, lambda _s: (), "cluster.local", True, detection_timeout_s=timeout
    )


def _inspector(listener: Any) -> Any:
    found = [f for f in listener.listener_filters if f.name == listeners.HTTP_INSPECTOR_FILTER]
    return found[0] if found else None


def test_only_ports_with_an_http_service_are_inspected_in_runs() -> None:
    listener = _outbound(
        _service("a", "10.96.0.1", ("http", 80), ("http-b", 81), ("tcp-db", 5432)),
        _service("b", "10.96.0.2", ("grpc", 9090)),
    )
    disabled = _inspector(listener).filter_disabled.not_match.or_match.rules
    assert [(r.destination_port_range.start, r.destination_port_range.end) for r in disabled] == [
        (80, 82),
        (9090, 9091),
    ]
    http_chains = [c for c in listener.filter_chains if c.filter_chain_match.application_protocols]
    assert {c.filter_chain_match.destination_port.value for c in http_chains} == {80, 81, 9090}
    assert all(not c.filter_chain_match.prefix_ranges for c in http_chains)
    tcp = [c for c in listener.filter_chains if c.filter_chain_match.destination_port.value == 5432]
    assert [r.address_prefix for r in tcp[0].filter_chain_match.prefix_ranges] == ["10.96.0.1"]


def test_a_mesh_without_http_ports_runs_no_inspector() -> None:
    listener = _outbound(_service("db", "10.96.0.3", ("tcp", 5432)))
    assert _inspector(listener) is None
    assert not listener.HasField("listener_filters_timeout")


@pytest.mark.parametrize(("timeout", "expected"), [(None, None), (0.0, 0), (0.25, 250_000_000)])
def test_the_detection_timeout_is_envoys_default_none_or_the_mesh_setting(
    timeout: float | None, expected: int | None
) -> None:
    listener = _outbound(_service("web", "10.96.0.4", ("http", 80)), timeout=timeout)
    assert listener.continue_on_listener_filters_timeout
    if expected is None:
        assert not listener.HasField("listener_filters_timeout")
    else:
        assert listener.listener_filters_timeout.ToNanoseconds() == expected


def test_new_http_services_leave_the_outbound_listener_unchanged() -> None:
    """Envoy replaces a chain whose match changes and drains its connections: a new HTTP
    service on a port already served must not touch the listener (only its route)."""
    one = _outbound(_service("a", "10.96.0.1", ("http", 80)))
    two = _outbound(
        _service("a", "10.96.0.1", ("http", 80)), _service("b", "10.96.0.9", ("http", 80))
    )
    assert one.SerializeToString(deterministic=True) == two.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("300ms", 0.3), ("0s", 0.0), ("5s", 5.0), ("1m", 60.0)]
)
def test_protocol_detection_timeout_is_read_from_the_mesh_config(raw: str, seconds: float) -> None:
    assert parse_mesh_config({"protocolDetectionTimeout": raw}).protocol_detection_timeout_s == (
        pytest.approx(seconds)
    )
    assert parse_mesh_config({}).protocol_detection_timeout_s is None


@pytest.mark.parametrize("raw", ["-1s", "500us", "soon"])
def test_a_bad_protocol_detection_timeout_names_the_field_and_value(raw: str) -> None:
    with pytest.raises(MeshConfigError, match=rf"protocolDetectionTimeout: '{raw}'"):
        parse_mesh_config({"protocolDetectionTimeout": raw})


def test_a_headless_http_port_gets_its_chain_before_any_endpoint_is_ready() -> None:
    """Its route exists from the start; without the chain its traffic would bypass the
    route (passthrough, or the black hole under REGISTRY_ONLY) until some later change."""
    listener = _outbound(_service("kafka", "None", ("http-admin", 8080), ("tcp-broker", 9092)))
    by_port = {c.filter_chain_match.destination_port.value: c for c in listener.filter_chains}
    assert list(by_port[8080].filter_chain_match.application_protocols) == [
        "http/1.0",
        "http/1.1",
        "h2c",
    ]
    assert 9092 not in by_port  # a TCP port has no IP to match until an endpoint is ready


def test_endpoints_of_a_headless_http_service_leave_the_listener_alone() -> None:
    store = MeshStore()
    store.upsert(Kind.SERVICE, _service_object("kafka", "None", ("http-admin", 8080)))
    generator = ConfigGenerator()
    proxy = parse_proxy_identity("sidecar~10.1.0.9~client.shop~shop.svc.cluster.local", {})
    listeners_type = TYPE_BY_SHORT_NAME["listeners"]
    before = generator.generate(store.snapshot(), proxy)[listeners_type]
    store.upsert(
        Kind.ENDPOINT_SLICE,
        endpoint_slice_object(
            "kafka",
            "shop",
            {"http-admin": 8080},
            ["10.1.3.1"],
            name="kafka-1",
            ready=True,
            address_type="IPv4",
        ),
    )
    after = generator.generate(store.snapshot(), proxy)[listeners_type]
    outbound = after.by_name["virtualOutbound"]
    assert outbound.version == before.by_name["virtualOutbound"].version
    assert [c.name for c in outbound.message.filter_chains] == ["0.0.0.0_8080"]


@pytest.mark.parametrize("mode", list(MtlsMode))
def test_a_connection_to_the_inbound_capture_port_itself_is_refused(mode: MtlsMode) -> None:
    """Passed through, it would reach the pod's 15006, be captured again, and loop."""
    listener = listeners.inbound_listener(
        [listeners.InboundPort(8080, Protocol.HTTP)], mtls=WorkloadMtls(mode)
    )
    first = listener.filter_chains[0]
    assert first.name == listeners.INBOUND_BLACKHOLE_CHAIN
    assert first.filter_chain_match.destination_port.value == 15006
    assert not first.filter_chain_match.transport_protocol  # whatever the client sends
    assert first.filters[0].typed_config.value.endswith(b"BlackHoleCluster")


def test_a_port_level_mode_applies_to_a_port_no_service_declares() -> None:
    """A STRICT workload whose metrics port 9090 is DISABLE, with no Service for 9090: a
    plaintext scrape of 9090 must find a plaintext chain, not only the STRICT passthrough."""
    mtls = WorkloadMtls(MtlsMode.STRICT, ((9090, MtlsMode.DISABLE),))
    listener = listeners.inbound_listener([listeners.InboundPort(8080, Protocol.HTTP)], mtls=mtls)
    on_9090 = [
        c for c in listener.filter_chains if c.filter_chain_match.destination_port.value == 9090
    ]
    # One chain taking anything (no transport required), passing it through untouched.
    assert [(c.name, c.filter_chain_match.transport_protocol) for c in on_9090] == [
        ("InboundPassthroughCluster|9090", "")
    ]
    assert not on_9090[0].HasField("transport_socket")
