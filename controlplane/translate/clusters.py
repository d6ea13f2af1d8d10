"""Clusters: where a proxy can send traffic.

One outbound cluster per service port (EDS for services with a virtual IP, original
destination for headless ones, DNS for ExternalName), the inbound clusters that deliver
captured traffic to the local application, and the fixed passthrough/blackhole clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.model import Protocol, Service, ServiceKind, ServicePort
from controlplane.translate import names, tls
from controlplane.translate.common import ads, duration, packed, socket_address

CONNECT_TIMEOUT_SECONDS = 10.0  # Istio's default connectTimeout
# Envoy's default circuit breakers (1024 connections/requests) throttle busy services long
# before they are overloaded; like Istio, leave limiting to explicit policy.
_UNLIMITED = 4294967295
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _template() -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(connect_timeout=duration(CONNECT_TIMEOUT_SECONDS))
    cluster.circuit_breakers.CopyFrom(
        circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections={"value": _UNLIMITED},
                    max_pending_requests={"value": _UNLIMITED},
                    max_requests={"value": _UNLIMITED},
                    max_retries={"value": _UNLIMITED},
                )
            ]
        )
    )
    return cluster


def _eds_template() -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(_TEMPLATE)
    cluster.type = cluster_pb2.Cluster.EDS
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    return cluster


_TEMPLATE = _template()
_PLAINTEXT_SOCKET = tls.plaintext()  # copied into every mTLS cluster's fallback match
# Most clusters of a mesh are EDS clusters that differ only by name (and protocol, mTLS):
# a full push builds a thousand of them before anything leaves, so they start from a
# prebuilt message too (building the config source alone was half the cost).
_EDS_TEMPLATE = _eds_template()


def _base(name: str, template: cluster_pb2.Cluster = _TEMPLATE) -> cluster_pb2.Cluster:
    # Copying a prebuilt message is several times faster than building it field by field.
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(template)
    cluster.name = name
    return cluster


def _set_upstream_protocol(cluster: cluster_pb2.Cluster, protocol: Protocol) -> None:
    if protocol.is_http2:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(options))


def _original_destination(cluster: cluster_pb2.Cluster) -> None:
    cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
    cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED


@dataclass(frozen=True)
class UpstreamMtls:
    """How a cluster speaks mesh mTLS (auto-mTLS): to whom, and to which endpoints.

    ``per_endpoint``: Istio's pattern for EDS clusters: the cluster offers both transport
    sockets and each endpoint picks by its metadata (``tlsMode: istio`` for endpoints with
    a sidecar that accepts mTLS), so a pod gaining or losing its sidecar changes one
    endpoint, not the cluster. Without it (original-destination clusters, whose hosts carry
    no metadata) every connection to the service ports in ``all_mtls_ports`` (by name) uses
    mTLS, and the other ports stay plaintext.
    """

    peer_ids: tuple[str, ...]
    per_endpoint: bool = True
    all_mtls_ports: frozenset[str] = frozenset()


def _mesh_alpn(protocol: Protocol) -> tuple[str, ...]:
    if protocol.is_http2:
        return tls.MESH_ALPN_H2
    if protocol.is_http:
        return tls.MESH_ALPN_HTTP11
    return tls.MESH_ALPN_TCP


def _set_mtls(
    cluster: cluster_pb2.Cluster, mtls: UpstreamMtls, sni: str, protocol: Protocol
) -> None:
    socket = tls.upstream_mtls(sni, mtls.peer_ids, _mesh_alpn(protocol))
    if not mtls.per_endpoint:
        cluster.transport_socket.CopyFrom(socket)
        return
    istio = cluster.transport_socket_matches.add(name=f"{tls.TLS_MODE_KEY}-{tls.TLS_MODE_ISTIO}")
    istio.match.fields[tls.TLS_MODE_KEY].string_value = tls.TLS_MODE_ISTIO
    istio.transport_socket.CopyFrom(socket)
    # The last match has no criteria: every other endpoint (no sidecar) gets plaintext.
    plain = cluster.transport_socket_matches.add(name=f"{tls.TLS_MODE_KEY}-disabled")
    plain.transport_socket.CopyFrom(_PLAINTEXT_SOCKET)


def outbound_cluster(
    service: Service,
    port: ServicePort,
    domain_suffix: str,
    mtls: UpstreamMtls | None = None,
    subset: str = "",
) -> cluster_pb2.Cluster:
    """The cluster for one service port (or one DestinationRule ``subset`` of it). Its name
    is also its load assignment's name.

    With ``mtls``, connections to endpoints with a sidecar use the workload certificate and
    verify the server's SPIFFE identity (see :class:`UpstreamMtls`).
    """
    fqdn = service.fqdn(domain_suffix)
    name = names.outbound_cluster(port.port, fqdn, subset)
    cluster = _base(name, _EDS_TEMPLATE if uses_eds(service) else _TEMPLATE)
    if service.kind is ServiceKind.HEADLESS:
        # Clients pick a pod themselves (DNS returns pod IPs): keep their choice.
        _original_destination(cluster)
    elif service.kind is ServiceKind.EXTERNAL_NAME:
        cluster.type = cluster_pb2.Cluster.STRICT_DNS
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        cluster.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN
        cluster.load_assignment.CopyFrom(
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=name,
                endpoints=[
                    endpoint_components_pb2.LocalityLbEndpoints(
                        lb_endpoints=[
                            endpoint_components_pb2.LbEndpoint(
                                endpoint=endpoint_components_pb2.Endpoint(
                                    address=socket_address(service.external_name or "", port.port)
                                )
                            )
                        ]
                    )
                ],
            )
        )
    _set_upstream_protocol(cluster, port.protocol)
    if (
        mtls is not None
        and service.kind is not ServiceKind.EXTERNAL_NAME
        and (mtls.per_endpoint or port.name in mtls.all_mtls_ports)
    ):
        _set_mtls(cluster, mtls, tls.upstream_sni(port.port, fqdn, subset), port.protocol)
    return cluster


def same_but_for_name(service: Service, mtls: UpstreamMtls | None) -> bool:
    """Whether each cluster of ``service`` is, but for its name, the cluster of any other
    such service port with the same protocol: plaintext EDS clusters (the bulk of a mesh).

    The generator then serializes them from one prototype per protocol (a full push builds
    a thousand before anything leaves). Keep this true: a field that depends on the
    service (metadata, stats names, SNI) must make this return False for that service.
    """
    return mtls is None and uses_eds(service)


def uses_eds(service: Service) -> bool:
    """Whether the service's clusters get their endpoints over EDS."""
    return service.kind is ServiceKind.CLUSTER_IP


def passthrough_cluster() -> cluster_pb2.Cluster:
    """Unknown destinations, when the mesh allows them: connect where the app connected."""
    cluster = _base(names.PASSTHROUGH_CLUSTER)
    _original_destination(cluster)
    return cluster


def blackhole_cluster() -> cluster_pb2.Cluster:
    """Unknown destinations under REGISTRY_ONLY: a cluster with no hosts refuses them."""
    cluster = cluster_pb2.Cluster(
        name=names.BLACKHOLE_CLUSTER, connect_timeout=duration(CONNECT_TIMEOUT_SECONDS)
    )
    cluster.type = cluster_pb2.Cluster.STATIC
    return cluster


def _bind_inbound_source(cluster: cluster_pb2.Cluster, ipv4: bool, ipv6: bool) -> None:
    bind = cluster.upstream_bind_config
    primary = names.INBOUND_SOURCE_IPV4 if ipv4 else names.INBOUND_SOURCE_IPV6
    bind.source_address.CopyFrom(address_pb2.SocketAddress(address=primary, port_value=0))
    if ipv4 and ipv6:
        bind.extra_source_addresses.add().address.CopyFrom(
            address_pb2.SocketAddress(address=names.INBOUND_SOURCE_IPV6, port_value=0)
        )


def inbound_cluster(port: int, protocol: Protocol, ipv4: bool, ipv6: bool) -> cluster_pb2.Cluster:
    """Delivers captured traffic to the application on ``port`` at its original address."""
    cluster = _base(names.inbound_cluster(port))
    _original_destination(cluster)
    _bind_inbound_source(cluster, ipv4, ipv6)
    _set_upstream_protocol(cluster, protocol)
    return cluster


def inbound_passthrough_cluster(ipv4: bool, ipv6: bool) -> cluster_pb2.Cluster:
    """Inbound traffic to ports no service declares still reaches the application."""
    cluster = _base(names.INBOUND_PASSTHROUGH_CLUSTER)
    _original_destination(cluster)
    _bind_inbound_source(cluster, ipv4, ipv6)
    return cluster
