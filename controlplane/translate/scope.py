"""What one proxy needs to know: the services it may call and the ports it serves."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.model import MeshSnapshot, Protocol, Service
from controlplane.proxy import ProxyIdentity
from controlplane.translate.listeners import InboundPort

ALL_NAMESPACES = "*"


def visible_namespaces(snapshot: MeshSnapshot, proxy_namespace: str) -> frozenset[str] | None:
    """The namespaces whose services the proxy gets; None means every namespace.

    By default a sidecar gets the whole mesh. With ``egressNamespaces`` in the mesh config
    it gets its own namespace plus the listed ones (``*`` lists them all), like an Istio
    ``Sidecar`` with egress hosts ``./*`` and ``<namespace>/*``.
    """
    listed = snapshot.mesh.egress_namespaces
    if listed is None or ALL_NAMESPACES in listed:
        return None
    return frozenset((proxy_namespace, *listed))


def visible_services(
    by_namespace: Mapping[str, tuple[Service, ...]], namespaces: frozenset[str] | None
) -> tuple[Service, ...]:
    """The services in ``namespaces`` (all when None), in namespace/name order, from the
    snapshot's ``services_by_namespace``."""
    chosen = (
        sorted(by_namespace) if namespaces is None else sorted(namespaces & by_namespace.keys())
    )
    return tuple(service for ns in chosen for service in by_namespace[ns])


def inbound_ports(snapshot: MeshSnapshot, proxy: ProxyIdentity) -> tuple[InboundPort, ...]:
    """The ports the proxy's workload serves for some service, with that service's protocol.

    A service of the proxy's namespace contributes when its selector matches the pod's
    labels (named target ports resolve against the pod's containers) or, for services
    without a selector, when one of its endpoints is a proxy IP. When two services
    disagree on a port's protocol, selecting services come first, then
    selector-less ones, each in name order; the first wins.
    """
    workload = snapshot.workloads.get((proxy.namespace, proxy.pod_name))
    labels = workload.label_map if workload is not None else dict(proxy.labels)
    proxy_ips = set(proxy.ips) | set(workload.ips if workload else ())
    found: dict[int, InboundPort] = {}

    def add(number: int | None, protocol: Protocol) -> None:
        if number is not None and number not in found and protocol is not Protocol.UDP:
            found[number] = InboundPort(number, protocol)

    for service in snapshot.services_selecting(proxy.namespace, labels):
        for port in service.ports:
            if workload is not None:
                add(workload.resolve_port(port.target_port, port.port), port.protocol)
            elif isinstance(port.target_port, int):
                add(port.target_port, port.protocol)
            elif port.target_port is None:
                add(port.port, port.protocol)
    by_address = snapshot.services_by_endpoint_address
    keys = {key for ip in proxy_ips for key in by_address.get(ip, ()) if key[0] == proxy.namespace}
    for key in sorted(keys):
        owner = snapshot.services.get(key)
        if owner is None:
            continue
        protocols = {port.name: port.protocol for port in owner.ports}
        for eps in snapshot.slices_for(owner):
            if any(ep.address in proxy_ips for ep in eps.endpoints):
                for name, number in eps.ports:
                    if name in protocols:
                        add(number, protocols[name])
    return tuple(sorted(found.values()))
