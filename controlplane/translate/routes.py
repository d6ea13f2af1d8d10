"""Outbound HTTP routes: one RouteConfiguration per port, one virtual host per service.

A request is routed by its Host header, so each virtual host lists every name a client in
the proxy's namespace may use for the service: the FQDN, ``name.namespace.svc``,
``name.namespace``, the bare ``name`` (same namespace only, as DNS search paths resolve
it) and the virtual IPs, each with and without ``:port``. A last ``*`` virtual host
decides the fate of unknown hosts: passthrough (ALLOW_ANY) or 502 (REGISTRY_ONLY).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane.model import Service, ServiceKind, ServicePort
from controlplane.translate import names
from controlplane.translate.common import duration

ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"
# Istio's default retry policy: retry what certainly never reached the application.
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
RETRY_ATTEMPTS = 2


def service_domains(
    service: Service, port: int, proxy_namespace: str, domain_suffix: str
) -> list[str]:
    hosts = [
        service.fqdn(domain_suffix),
        f"{service.name}.{service.namespace}.svc",
        f"{service.name}.{service.namespace}",
    ]
    if service.namespace == proxy_namespace:
        hosts.append(service.name)
    hosts.extend(service.cluster_ips)
    domains: list[str] = []
    for host in hosts:
        domains.extend((host, names.host_port(host, port)))
    return domains


def _route_to(cluster: str) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        name="default",
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(
            cluster=cluster,
            timeout=duration(0),  # no deadline by default; streams and long polls must work
            retry_policy=route_components_pb2.RetryPolicy(
                retry_on=RETRY_ON,
                num_retries={"value": RETRY_ATTEMPTS},
                retriable_status_codes=[503],
            ),
        ),
    )


def service_virtual_host(
    service: Service, port: ServicePort, proxy_namespace: str, domain_suffix: str
) -> route_components_pb2.VirtualHost:
    fqdn = service.fqdn(domain_suffix)
    return route_components_pb2.VirtualHost(
        name=names.virtual_host(fqdn, port.port),
        domains=service_domains(service, port.port, proxy_namespace, domain_suffix),
        routes=[_route_to(names.outbound_cluster(port.port, fqdn))],
    )


def fallback_virtual_host(allow_any: bool) -> route_components_pb2.VirtualHost:
    if allow_any:
        return route_components_pb2.VirtualHost(
            name=ALLOW_ANY_VHOST,
            domains=["*"],
            routes=[
                route_components_pb2.Route(
                    name=ALLOW_ANY_VHOST,
                    match=route_components_pb2.RouteMatch(prefix="/"),
                    route=route_components_pb2.RouteAction(
                        cluster=names.PASSTHROUGH_CLUSTER, timeout=duration(0)
                    ),
                )
            ],
        )
    return route_components_pb2.VirtualHost(
        name=BLOCK_ALL_VHOST,
        domains=["*"],
        routes=[
            route_components_pb2.Route(
                name=BLOCK_ALL_VHOST,
                match=route_components_pb2.RouteMatch(prefix="/"),
                direct_response=route_components_pb2.DirectResponseAction(status=502),
            )
        ],
    )


def routed_by_host(service: Service, port: ServicePort) -> bool:
    """Whether the port gets a virtual host (and so the outbound listener's port-wide HTTP
    chain): an HTTP port of a service a client can reach, by VIP or by DNS name."""
    return port.protocol.is_http and (
        service.kind is not ServiceKind.CLUSTER_IP or bool(service.cluster_ips)
    )


def http_ports(services: Iterable[Service]) -> dict[int, list[tuple[Service, ServicePort]]]:
    """Every HTTP service port that gets a virtual host, grouped by port number."""
    grouped: dict[int, list[tuple[Service, ServicePort]]] = {}
    for service in services:
        for port in service.ports:
            if routed_by_host(service, port):
                grouped.setdefault(port.port, []).append((service, port))
    return grouped


def outbound_route_configs(
    services: Iterable[Service], proxy_namespace: str, domain_suffix: str, allow_any: bool
) -> list[route_pb2.RouteConfiguration]:
    configs = []
    for number, entries in sorted(http_ports(services).items()):
        config = route_pb2.RouteConfiguration(name=names.outbound_route(number))
        # Routes arrive over RDS possibly before the clusters they name; Envoy answers 503
        # until then instead of rejecting the whole configuration.
        config.validate_clusters.value = False
        config.virtual_hosts.extend(
            service_virtual_host(service, port, proxy_namespace, domain_suffix)
            for service, port in entries
        )
        config.virtual_hosts.append(fallback_virtual_host(allow_any))
        configs.append(config)
    return configs
