"""The two capture listeners: ``virtualOutbound`` (15001) and ``virtualInbound`` (15006).

The capture rules redirect every connection to one of these ports; the ``original_dst``
listener filter restores where the connection was going, and filter chains match on that
destination:

* outbound: each TCP service port gets a chain on its ``VIP:port`` that proxies bytes to
  its cluster (headless services: their endpoints' IPs, as Istio does). A port with an
  HTTP service gets one chain for the whole port, as Istio's ``0.0.0.0_<port>``: an
  ``http_inspector`` (run only for such ports) recognises HTTP/1.x and h2c, which is
  parsed and routed by Host over RDS (route configuration ``<port>``, whose ``*``
  virtual host takes unknown hosts). The chain names no IP on purpose: Envoy builds a
  trie of a chain's prefixes on every listener update (~40 ms for 1,000 virtual IPs,
  most of a full push's listener time), and a chain whose IP list changes is replaced,
  draining every connection on it; routing by Host needs neither. So a new HTTP service
  on a port already served leaves the listener as it was. (A new HTTP port *number*
  changes the inspector's port list, and Envoy replaces a listener whose non-chain parts
  change, draining its connections gracefully: rare, and Istio's sniffing does the same.)
  A more specific TCP chain (``VIP:port``) still wins for its VIP. Anything else,
  including non-HTTP bytes to an unknown address on an HTTP port, falls to the default
  chain: ``PassthroughCluster`` (ALLOW_ANY) or ``BlackHoleCluster`` (REGISTRY_ONLY).
  HTTP connection managers, outbound and inbound, let WebSocket upgrades through, as
  Istio's do.
* inbound: one chain per port the workload serves, delivering to ``inbound|<port>||``;
  other ports pass through to the application unchanged (under their own port-level mode
  when a policy gives them one); a connection to 15006 itself is refused (it would loop). What each port accepts follows
  the workload's ``PeerAuthentication`` mode for it: STRICT only mTLS, PERMISSIVE mTLS,
  the application's own TLS and plaintext (a ``tls_inspector`` tells them apart by
  transport protocol and Istio's mesh ALPN tokens), DISABLE only plaintext. mTLS is
  terminated here; HTTP chains hand the caller's SPIFFE id to the application in
  ``x-forwarded-client-cert``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.type.v3 import range_pb2

from controlplane.model import (
    EndpointSlice,
    MtlsMode,
    Protocol,
    Service,
    ServiceKind,
    ServicePort,
)
from controlplane.translate import names, tls
from controlplane.translate import virtual_service_extras as extras
from controlplane.translate.common import ads, duration, host_cidr, packed, socket_address
from controlplane.translate.endpoints import endpoint_health
from controlplane.translate.peer_authentication import WorkloadMtls
from controlplane.translate.routes import routed_by_host

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
ORIGINAL_DST_FILTER = "envoy.filters.listener.original_dst"
TLS_INSPECTOR_FILTER = "envoy.filters.listener.tls_inspector"
HTTP_INSPECTOR_FILTER = "envoy.filters.listener.http_inspector"
# What the http_inspector reports for plaintext HTTP (Istio matches the same three).
PLAINTEXT_HTTP_PROTOCOLS = ("http/1.0", "http/1.1", "h2c")
TRANSPORT_TLS = "tls"
TRANSPORT_PLAINTEXT = "raw_buffer"
INBOUND_BLACKHOLE_CHAIN = "virtualInbound-blackhole"
MTLS_CHAIN_SUFFIX = "-mtls"
APP_TLS_CHAIN_SUFFIX = "-tls"


@dataclass(frozen=True, order=True)
class InboundPort:
    """A port the local application serves, with the protocol its services declare."""

    port: int
    protocol: Protocol


def _original_dst() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(
        name=ORIGINAL_DST_FILTER, typed_config=packed(original_dst_pb2.OriginalDst())
    )


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=packed(router_pb2.Router()))


def _tcp_proxy(cluster: str) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    return listener_components_pb2.Filter(name=TCP_PROXY_FILTER, typed_config=packed(proxy))


def _http(
    hcm: hcm_pb2.HttpConnectionManager, filters: Iterable[hcm_pb2.HttpFilter] = ()
) -> listener_components_pb2.Filter:
    # Without it Envoy answers 403 to an Upgrade: websocket request.
    hcm.upgrade_configs.add(upgrade_type="websocket")
    hcm.http_filters.extend(filters)
    hcm.http_filters.append(_router())
    return listener_components_pb2.Filter(name=HCM_FILTER, typed_config=packed(hcm))


def _chain(
    name: str, port: int | None, ips: Iterable[str], network_filter: listener_components_pb2.Filter
) -> listener_components_pb2.FilterChain:
    match = listener_components_pb2.FilterChainMatch(
        prefix_ranges=[host_cidr(ip) for ip in sorted(ips)]
    )
    if port is not None:
        match.destination_port.value = port
    return listener_components_pb2.FilterChain(
        name=name, filter_chain_match=match, filters=[network_filter]
    )


def _listener(name: str, port: int, ipv6: bool, direction: int) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=name,
        address=socket_address("0.0.0.0", port),
        traffic_direction=direction,
        listener_filters=[_original_dst()],
    )
    if ipv6:
        listener.additional_addresses.add().address.CopyFrom(socket_address("::", port))
    return listener


def _headless_ips(slices: Iterable[EndpointSlice]) -> list[str]:
    """The addresses of a headless service's endpoints that may receive traffic."""
    return sorted(
        {ep.address for eps in slices for ep in eps.endpoints if endpoint_health(ep) is not None}
    )


def outbound_listener(
    services: Iterable[Service],
    slices_for: Callable[[Service], tuple[EndpointSlice, ...]],
    domain_suffix: str,
    allow_any: bool,
    ipv6: bool = False,
    *,
    detection_timeout_s: float | None = None,
) -> listener_pb2.Listener:
    """The outbound capture listener for a proxy that may reach ``services``.

    A port with a virtual host (:func:`routes.routed_by_host`) gets the port-wide HTTP chain,
    whatever the service's endpoints. A TCP destination (IP or whole port) belongs to the
    first service, in namespace/name order, that claims it; Envoy rejects two chains with
    the same match. ``detection_timeout_s`` is how long the http_inspector waits for a
    client's first bytes (:func:`set_detection_timeout`).
    """
    claimed: set[tuple[str | None, int]] = set()
    http_ports: set[int] = set()
    tcp_chains: list[listener_components_pb2.FilterChain] = []
    for service in services:
        http_ports.update(p.port for p in service.ports if routed_by_host(service, p))
        tcp_ports = [p for p in service.ports if _proxied_as_tcp(p)]
        if not tcp_ports:
            continue
        if service.kind is ServiceKind.CLUSTER_IP:
            ips: list[str | None] = list(service.cluster_ips)
        elif service.kind is ServiceKind.HEADLESS:
            ips = list(_headless_ips(slices_for(service)))
        else:
            ips = [None]  # ExternalName: no IP to match, so the whole port
        for port in tcp_ports:
            free = [ip for ip in ips if (ip, port.port) not in claimed]
            if not free:
                continue
            claimed.update((ip, port.port) for ip in free)
            cluster = names.outbound_cluster(port.port, service.fqdn(domain_suffix))
            tcp_chains.append(
                _chain(cluster, port.port, [ip for ip in free if ip], _tcp_proxy(cluster))
            )
    chains = list(tcp_chains)
    for number in http_ports:
        hcm = hcm_pb2.HttpConnectionManager(
            stat_prefix=f"outbound_0.0.0.0_{number}",
            rds=hcm_pb2.Rds(config_source=ads(), route_config_name=names.outbound_route(number)),
        )
        # VirtualService faults and CORS policies are per-route configs of these filters.
        chain = _chain(f"0.0.0.0_{number}", number, (), _http(hcm, extras.http_filters()))
        chain.filter_chain_match.application_protocols.extend(PLAINTEXT_HTTP_PROTOCOLS)
        chains.append(chain)
    chains.sort(key=lambda c: (c.filter_chain_match.destination_port.value, c.name))

    listener = _listener(
        names.OUTBOUND_LISTENER, names.OUTBOUND_CAPTURE_PORT, ipv6, base_pb2.OUTBOUND
    )
    if http_ports:
        listener.listener_filters.append(_http_inspector(sorted(http_ports)))
    # Set whether or not an inspector runs yet, so that the first HTTP port changes only the
    # inspector (any change outside the chains replaces the whole listener, see the module).
    set_detection_timeout(listener, detection_timeout_s)
    listener.filter_chains.extend(chains)
    fallback = names.PASSTHROUGH_CLUSTER if allow_any else names.BLACKHOLE_CLUSTER
    listener.default_filter_chain.CopyFrom(
        listener_components_pb2.FilterChain(name=fallback, filters=[_tcp_proxy(fallback)])
    )
    return listener


def _proxied_as_tcp(port: ServicePort) -> bool:
    return not port.protocol.is_http and port.protocol is not Protocol.UDP


def matches_endpoint_ips(service: Service) -> bool:
    """Whether the outbound listener names this service's endpoint IPs, and so changes with
    its endpoints: a headless service with TCP ports (HTTP ports match by port alone)."""
    return service.kind is ServiceKind.HEADLESS and any(map(_proxied_as_tcp, service.ports))


def _http_inspector(ports: list[int]) -> listener_components_pb2.ListenerFilter:
    """An http_inspector that runs only for connections to ``ports``: the others need no
    detection, and a server-first protocol on them must not wait for bytes that never come."""
    predicate = listener_components_pb2.ListenerFilterChainMatchPredicate
    ranges = [
        predicate(destination_port_range=range_pb2.Int32Range(start=first, end=last + 1))
        for first, last in _runs(ports)
    ]
    enabled = (
        ranges[0] if len(ranges) == 1 else predicate(or_match=predicate.MatchSet(rules=ranges))
    )
    return listener_components_pb2.ListenerFilter(
        name=HTTP_INSPECTOR_FILTER,
        typed_config=packed(http_inspector_pb2.HttpInspector()),
        filter_disabled=predicate(not_match=enabled),
    )


def _runs(ports: list[int]) -> list[tuple[int, int]]:
    """Sorted ports as inclusive runs of consecutive numbers: [80, 81, 90] -> (80, 81), (90, 90)."""
    runs: list[tuple[int, int]] = []
    for port in ports:
        if runs and runs[-1][1] == port - 1:
            runs[-1] = (runs[-1][0], port)
        else:
            runs.append((port, port))
    return runs


def set_detection_timeout(listener: listener_pb2.Listener, seconds: float | None) -> None:
    """How long the listener's inspectors wait for a client's first bytes, then go on
    without knowing the protocol (the connection takes the chain for unknown traffic).

    ``None`` keeps Envoy's default (15 s); ``0`` waits for ever, as Istio's default
    ``protocolDetectionTimeout: 0s`` does: server-first protocols (MySQL) then hang on a
    port that is inspected unless declared.
    """
    if seconds is not None:
        listener.listener_filters_timeout.CopyFrom(duration(seconds))
    listener.continue_on_listener_filters_timeout = True


def _inbound_route(port: int) -> route_pb2.RouteConfiguration:
    cluster = names.inbound_cluster(port)
    return route_pb2.RouteConfiguration(
        name=cluster,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=f"inbound|http|{port}",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        name="default",
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(
                            cluster=cluster, timeout=duration(0)
                        ),
                    )
                ],
            )
        ],
    )


def _inbound_filter(entry: InboundPort) -> listener_components_pb2.Filter:
    cluster = names.inbound_cluster(entry.port)
    if not entry.protocol.is_http:
        return _tcp_proxy(cluster)
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_0.0.0.0_{entry.port}",
        route_config=_inbound_route(entry.port),
        # The app learns who called in x-forwarded-client-cert (By=<us>;Hash=...;URI=<the
        # caller's SPIFFE id>); a header sent by the caller itself is always replaced, and
        # removed on plaintext connections, so it cannot be forged.
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.SANITIZE_SET,
        set_current_client_cert_details=hcm_pb2.HttpConnectionManager.SetCurrentClientCertDetails(
            uri=True
        ),
    )
    return _http(hcm)


def _accepting_chains(
    name: str,
    port: int | None,
    network_filter: listener_components_pb2.Filter,
    *,
    cluster: str,
    mode: MtlsMode,
    trust_domain: str,
    http: bool,
) -> list[listener_components_pb2.FilterChain]:
    """The chains of one port (or of every other port, with ``port`` None) under ``mode``.

    STRICT terminates any TLS with the mesh's mTLS. PERMISSIVE tells three cases apart, as
    Istio does: TLS offering the mesh ALPN tokens is a sidecar (mTLS terminated); other TLS
    is the application's own (passed through to ``cluster`` untouched); anything else is
    plaintext.
    """
    if mode is MtlsMode.DISABLE:
        return [_chain(name, port, (), network_filter)]
    mtls = _chain(name + MTLS_CHAIN_SUFFIX, port, (), network_filter)
    mtls.filter_chain_match.transport_protocol = TRANSPORT_TLS
    mtls.transport_socket.CopyFrom(tls.downstream_mtls(trust_domain, http))
    if mode is MtlsMode.STRICT:
        # No plaintext chain: a plaintext connection matches nothing and is closed.
        return [mtls]
    mtls.filter_chain_match.application_protocols.extend(tls.MESH_ALPN_TOKENS)
    app_tls = _chain(name + APP_TLS_CHAIN_SUFFIX, port, (), _tcp_proxy(cluster))
    app_tls.filter_chain_match.transport_protocol = TRANSPORT_TLS
    plain = _chain(name, port, (), network_filter)
    plain.filter_chain_match.transport_protocol = TRANSPORT_PLAINTEXT
    return [mtls, app_tls, plain]


def inbound_listener(
    ports: Iterable[InboundPort],
    ipv6: bool = False,
    mtls: WorkloadMtls | None = None,
    trust_domain: str = "cluster.local",
    *,
    detection_timeout_s: float | None = None,
) -> listener_pb2.Listener:
    """The inbound capture listener of a workload serving ``ports`` under ``mtls``.

    Ports the workload serves for no service pass through to it under the workload's mode.
    Envoy picks a chain by port first and never falls back to a less specific one, so a
    plaintext connection to a STRICT port is refused even when other ports take plaintext;
    for the same reason there is no default chain once any port accepts mTLS.
    """
    mtls = mtls if mtls is not None else WorkloadMtls()
    listener = _listener(names.INBOUND_LISTENER, names.INBOUND_CAPTURE_PORT, ipv6, base_pb2.INBOUND)
    # A connection to the capture port itself would be passed through to the pod's 15006,
    # captured again, and so on until the sidecar runs out of sockets: refuse it, whatever
    # the mode (Istio's virtualInbound-blackhole).
    listener.filter_chains.append(
        _chain(
            INBOUND_BLACKHOLE_CHAIN,
            names.INBOUND_CAPTURE_PORT,
            (),
            _tcp_proxy(names.BLACKHOLE_CLUSTER),
        )
    )
    served = {entry.port for entry in ports}
    for entry in sorted(ports):
        listener.filter_chains.extend(
            _accepting_chains(
                names.inbound_cluster(entry.port),
                entry.port,
                _inbound_filter(entry),
                cluster=names.inbound_cluster(entry.port),
                mode=mtls.for_port(entry.port),
                trust_domain=trust_domain,
                http=entry.protocol.is_http,
            )
        )
    passthrough = _tcp_proxy(names.INBOUND_PASSTHROUGH_CLUSTER)
    if mtls.modes == {MtlsMode.DISABLE}:
        listener.default_filter_chain.CopyFrom(
            listener_components_pb2.FilterChain(
                name=names.INBOUND_PASSTHROUGH_CLUSTER, filters=[passthrough]
            )
        )
        return listener
    listener.listener_filters.append(
        listener_components_pb2.ListenerFilter(
            name=TLS_INSPECTOR_FILTER, typed_config=packed(tls_inspector_pb2.TlsInspector())
        )
    )
    # Server-first protocols (MySQL) send nothing for the inspector to read: give up
    # waiting and treat the connection as plaintext rather than dropping it.
    set_detection_timeout(listener, detection_timeout_s)
    # A port with a mode of its own that no service declares (a metrics port) passes through
    # under that mode, not the workload's.
    for port, mode in sorted(mtls.port_modes):
        if port in served or port == names.INBOUND_CAPTURE_PORT:
            continue
        listener.filter_chains.extend(
            _accepting_chains(
                f"{names.INBOUND_PASSTHROUGH_CLUSTER}|{port}",
                port,
                passthrough,
                cluster=names.INBOUND_PASSTHROUGH_CLUSTER,
                mode=mode,
                trust_domain=trust_domain,
                http=False,
            )
        )
    listener.filter_chains.extend(
        _accepting_chains(
            names.INBOUND_PASSTHROUGH_CLUSTER,
            None,
            passthrough,
            cluster=names.INBOUND_PASSTHROUGH_CLUSTER,
            mode=mtls.mode,
            trust_domain=trust_domain,
            http=False,
        )
    )
    return listener
