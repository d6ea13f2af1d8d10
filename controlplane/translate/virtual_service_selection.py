"""Which VirtualService routes a service's host for one sidecar, as Istio chooses.

Istio does not merge two VirtualServices for the same host on a sidecar (only delegates are
merged into their root, ``mergeVirtualServicesIfNeeded``, and gateways merge by host). Every
VirtualService that applies produces a virtual host for the service's ``host:port``, and the
first one in Istio's order keeps the name; the others are dropped as duplicate domains. A
VirtualService whose rules yield no route for the port (all bound to another port, or to
other clients) yields no virtual host, so the next one gets its chance, and with none left
the service keeps its default route.

Istio's order (``SelectVirtualServices``): first the VirtualServices of the proxy's own
namespace exported only to namespaces by name (``.`` included), then those of other
namespaces exported to the proxy's namespace by name, then the public ones (``*``, the
default); within each group by creation time, then name, then namespace.

A service's FQDN is matched by the VirtualServices naming it exactly; only without any such
one does the most specific wildcard host (the longest ``*.suffix``) decide, Istio's
``MostSpecificHostMatch``.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.networking.model import MESH_GATEWAY, VirtualService

PUBLIC = "*"
PRIVATE = "."


def binds_mesh(virtual_service: VirtualService) -> bool:
    """Whether the VirtualService applies to sidecars: no ``gateways`` or ``mesh`` among them."""
    return not virtual_service.gateways or MESH_GATEWAY in virtual_service.gateways


def exported_to(virtual_service: VirtualService) -> frozenset[str]:
    """The namespaces it is visible to, ``*`` standing for all (the default when empty)."""
    values = virtual_service.export_to or (PUBLIC,)
    return frozenset(virtual_service.namespace if v == PRIVATE else v for v in values)


def visible_in(virtual_service: VirtualService, namespace: str) -> bool:
    namespaces = exported_to(virtual_service)
    return PUBLIC in namespaces or namespace in namespaces


def resolve_host(host: str, namespace: str, domain_suffix: str) -> str:
    """A host as written in ``namespace``: a short name is a service of that namespace.

    Only a name without a dot is short (Istio's ``ResolveShortnameToFQDN``): ``reviews``
    in ``default`` is ``reviews.default.svc.<suffix>``; ``reviews.default`` stays as written.
    """
    if "." in host or host.startswith("*"):
        return host.lower()
    return f"{host}.{namespace}.svc.{domain_suffix}".lower()


def host_matches(pattern: str, fqdn: str) -> bool:
    """``pattern`` (an FQDN or ``*.suffix``) names ``fqdn``; ``*`` alone names every host."""
    if pattern == PUBLIC:
        return True
    if pattern.startswith("*"):
        return fqdn.endswith(pattern[1:])
    return pattern == fqdn


def _order(virtual_service: VirtualService, proxy_namespace: str) -> tuple[int, str, str, str]:
    namespaces = exported_to(virtual_service)
    if PUBLIC in namespaces:
        group = 2
    elif virtual_service.namespace == proxy_namespace:
        group = 0
    else:
        group = 1
    return (group, virtual_service.created, virtual_service.name, virtual_service.namespace)


def mesh_virtual_services(
    virtual_services: Iterable[VirtualService], proxy_namespace: str
) -> tuple[VirtualService, ...]:
    """The VirtualServices a sidecar in ``proxy_namespace`` sees, in Istio's order.

    Compute once per proxy namespace and pass to :func:`virtual_services_for_host`.
    """
    chosen = [vs for vs in virtual_services if binds_mesh(vs) and visible_in(vs, proxy_namespace)]
    return tuple(sorted(chosen, key=lambda vs: _order(vs, proxy_namespace)))


def virtual_services_for_host(
    fqdn: str, ordered: Iterable[VirtualService], domain_suffix: str
) -> tuple[VirtualService, ...]:
    """The candidates for ``fqdn``, best first, from :func:`mesh_virtual_services`'s order.

    The exact ones when any names it exactly, else the first VirtualService holding the most
    specific wildcard that matches it.
    """
    fqdn = fqdn.lower()
    exact: list[VirtualService] = []
    wildcard: tuple[int, VirtualService] | None = None
    for vs in ordered:
        for host in (resolve_host(h, vs.namespace, domain_suffix) for h in vs.hosts):
            if host == fqdn:
                exact.append(vs)
                break
            more_specific = wildcard is None or len(host) > wildcard[0]
            if host.startswith("*") and host_matches(host, fqdn) and more_specific:
                wildcard = (len(host), vs)
    if exact:
        return tuple(exact)
    return () if wildcard is None else (wildcard[1],)
