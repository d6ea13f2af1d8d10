"""Cluster load assignments: the endpoints of each service port, from its EndpointSlices.

Ready endpoints are HEALTHY. Terminating endpoints that still serve are kept as DRAINING:
Envoy sends them no new requests but lets what is in flight finish, which is what a
rolling update needs. Endpoints that are neither are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.model import Endpoint, EndpointSlice, ServicePort
from controlplane.translate import tls

HEALTHY = health_check_pb2.HealthStatus.HEALTHY


def _istio_tls_metadata() -> base_pb2.Metadata:
    metadata = base_pb2.Metadata()
    fields = metadata.filter_metadata[tls.TRANSPORT_SOCKET_MATCH].fields
    fields[tls.TLS_MODE_KEY].string_value = tls.TLS_MODE_ISTIO
    return metadata


_ISTIO_TLS_METADATA = _istio_tls_metadata()
DRAINING = health_check_pb2.HealthStatus.DRAINING


def endpoint_health(endpoint: Endpoint) -> int | None:
    """The Envoy health status of an endpoint, or None if it must not be sent at all."""
    if endpoint.ready:
        return HEALTHY
    if endpoint.terminating and endpoint.serving:
        return DRAINING
    return None


def load_assignment(
    cluster_name: str,
    port: ServicePort,
    slices: Iterable[EndpointSlice],
    mtls_endpoints: Collection[tuple[str, int]] = (),
    selected: Callable[[Endpoint], bool] | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of ``port`` across ``slices``, grouped by zone (Envoy's locality).

    A slice lists endpoint ports by service port name; a slice without that port does not
    serve it. An address listed twice (two slices, during a slice rebalance) is sent once.
    Endpoints in ``mtls_endpoints`` (address, port) accept mesh mTLS: they are marked
    ``tlsMode: istio`` for the cluster's transport socket match (auto-mTLS). With
    ``selected``, only the endpoints it accepts are sent (a DestinationRule subset's).
    """
    # Plain tuples first, protobuf last: building messages is the expensive part, so each
    # field is set exactly once, in final order (about 3x faster than constructors + sort).
    by_zone: dict[str, list[tuple[str, int, int]]] = {}
    seen: set[tuple[str, int]] = set()
    for eps in slices:
        number = next((n for name, n in eps.ports if name == port.name), None)
        if number is None:
            continue
        for endpoint in eps.endpoints:
            health = endpoint_health(endpoint)
            if health is None or (endpoint.address, number) in seen:
                continue
            if selected is not None and not selected(endpoint):
                continue
            seen.add((endpoint.address, number))
            by_zone.setdefault(endpoint.zone or "", []).append((endpoint.address, number, health))
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    for zone in sorted(by_zone):
        group = cla.endpoints.add()
        if zone:
            group.locality.zone = zone
        for address, number, health in sorted(by_zone[zone]):
            lb_endpoint = group.lb_endpoints.add()
            socket = lb_endpoint.endpoint.address.socket_address
            socket.address = address
            socket.port_value = number
            lb_endpoint.health_status = health
            if (address, number) in mtls_endpoints:
                lb_endpoint.metadata.CopyFrom(_ISTIO_TLS_METADATA)
    return cla
