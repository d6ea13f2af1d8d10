"""Model + proxy -> the Envoy resources that proxy should have.

:func:`translate` is the pure definition, used by the golden tests. :class:`ConfigGenerator`
computes the same thing for a running control plane, reusing work:

* per-service clusters and load assignments are cached by the *identity* of their inputs
  (the store keeps an unchanged object identical across snapshots), so an endpoint change
  rebuilds one load assignment, not a thousand;
* listeners and routes depend only on services, the mesh config and the proxy's shape,
  and are rebuilt only when one of those changed;
* proxies of the same shape (namespace, scope, served ports, IP families) share one
  :class:`ProxyResources` object per snapshot: each resource is built and packed once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from controlplane.model import EndpointSlice, MeshSnapshot, Protocol, Service, ServiceKind
from controlplane.proxy import ProxyIdentity
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ProxyResources,
    Resource,
    ResourceSet,
    make_resource,
)
from controlplane.translate import clusters, endpoints, listeners, names, routes
from controlplane.translate.listeners import InboundPort
from controlplane.translate.scope import inbound_ports, visible_namespaces, visible_services

V = TypeVar("V")


@dataclass(frozen=True)
class ProxyShape:
    """Everything about a proxy that its configuration depends on, besides the snapshot."""

    namespace: str
    scope: frozenset[str] | None
    inbound: tuple[InboundPort, ...]
    ipv4: bool
    ipv6: bool


def proxy_shape(snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyShape:
    return ProxyShape(
        namespace=proxy.namespace,
        scope=visible_namespaces(snapshot, proxy.namespace),
        inbound=inbound_ports(snapshot, proxy),
        ipv4=proxy.has_ipv4,
        ipv6=proxy.has_ipv6,
    )


class _Memo(Generic[V]):
    """Results cached under a key, kept only while still in use.

    Keys may contain ``id()`` of inputs; each entry also holds those inputs, so they stay
    alive and their ids cannot be reused while the entry exists. :meth:`rotate` starts a
    new round: entries not used during the previous round are dropped at the next one.
    """

    def __init__(self) -> None:
        self._current: dict[Hashable, tuple[object, V]] = {}
        self._previous: dict[Hashable, tuple[object, V]] = {}

    def rotate(self) -> None:
        self._previous, self._current = self._current, {}

    def get(self, key: Hashable, inputs: object, build: Callable[[], V]) -> V:
        entry = self._current.get(key)
        if entry is None:
            entry = self._previous.pop(key, None)
            if entry is None:
                entry = (inputs, build())
            self._current[key] = entry
        return entry[1]


def _service_clusters(service: Service, domain_suffix: str) -> tuple[Resource, ...]:
    out = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        cluster = clusters.outbound_cluster(service, port, domain_suffix)
        out.append(make_resource(cluster.name, cluster))
    return tuple(out)


def _service_load_assignments(
    service: Service, slices: tuple[EndpointSlice, ...], domain_suffix: str
) -> tuple[Resource, ...]:
    out = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        name = names.outbound_cluster(port.port, service.fqdn(domain_suffix))
        out.append(make_resource(name, endpoints.load_assignment(name, port, slices)))
    return tuple(out)


def _fixed_clusters(shape: ProxyShape) -> list[Resource]:
    built = [
        clusters.passthrough_cluster(),
        clusters.blackhole_cluster(),
        clusters.inbound_passthrough_cluster(shape.ipv4, shape.ipv6),
        *(
            clusters.inbound_cluster(p.port, p.protocol, shape.ipv4, shape.ipv6)
            for p in shape.inbound
        ),
    ]
    return [make_resource(c.name, c) for c in built]


class ConfigGenerator:
    """Builds and caches :class:`ProxyResources`; see the module docstring.

    One generator serves the snapshots of one store (its caches are keyed by that store's
    revisions). Not thread-safe: use it from the event loop.
    """

    def __init__(self) -> None:
        self._snapshot: MeshSnapshot | None = None
        self._clusters: _Memo[tuple[Resource, ...]] = _Memo()
        self._assignments: _Memo[tuple[Resource, ...]] = _Memo()
        self._listeners: _Memo[Resource] = _Memo()
        self._routes: _Memo[tuple[Resource, ...]] = _Memo()
        self._fixed: _Memo[list[Resource]] = _Memo()
        self._sets: _Memo[ResourceSet] = _Memo()
        self._by_shape: dict[ProxyShape, ProxyResources] = {}

    def generate(self, snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyResources:
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._by_shape = {}
            for memo in (
                self._sets,
                self._clusters,
                self._assignments,
                self._listeners,
                self._routes,
                self._fixed,
            ):
                memo.rotate()
        shape = proxy_shape(snapshot, proxy)
        found = self._by_shape.get(shape)
        if found is None:
            found = self._by_shape[shape] = self._build(snapshot, shape)
        return found

    def _build(self, snapshot: MeshSnapshot, shape: ProxyShape) -> ProxyResources:
        suffix = snapshot.domain_suffix
        services = visible_services(snapshot, shape.scope)
        allow_any = snapshot.mesh.outbound_traffic_policy != "REGISTRY_ONLY"
        # Listeners and routes change only with services, the mesh config or the shape.
        services_rev = (
            snapshot.revisions.get("Service", 0),
            snapshot.revisions.get("ConfigMap", 0),
            suffix,
        )

        def build_clusters() -> ResourceSet:
            built = list(
                self._fixed.get(
                    (shape.inbound, shape.ipv4, shape.ipv6), None, partial(_fixed_clusters, shape)
                )
            )
            for service in services:
                built.extend(
                    self._clusters.get(
                        (id(service), suffix), service, partial(_service_clusters, service, suffix)
                    )
                )
            return ResourceSet.of(CLUSTER, built)

        def build_endpoints() -> ResourceSet:
            built: list[Resource] = []
            for service in services:
                if not clusters.uses_eds(service):
                    continue
                slices = snapshot.slices_for(service)
                built.extend(
                    self._assignments.get(
                        (id(service), id(slices)),
                        (service, slices),
                        partial(_service_load_assignments, service, slices, suffix),
                    )
                )
            return ResourceSet.of(ENDPOINT, built)

        def build_listeners() -> ResourceSet:
            headless = [snapshot.slices_for(s) for s in services if s.kind is ServiceKind.HEADLESS]
            outbound_key = (
                "outbound",
                services_rev,
                shape.scope,
                shape.ipv6,
                *(id(e) for h in headless for e in h),
            )

            def outbound() -> Resource:
                listener = listeners.outbound_listener(
                    services, snapshot.slices_for, suffix, allow_any, shape.ipv6
                )
                return make_resource(listener.name, listener)

            def inbound() -> Resource:
                listener = listeners.inbound_listener(shape.inbound, shape.ipv6)
                return make_resource(listener.name, listener)

            return ResourceSet.of(
                LISTENER,
                [
                    self._listeners.get(outbound_key, headless, outbound),
                    self._listeners.get(("inbound", shape.inbound, shape.ipv6), None, inbound),
                ],
            )

        def build_routes() -> ResourceSet:
            def routes_for_shape() -> tuple[Resource, ...]:
                configs = routes.outbound_route_configs(
                    services, shape.namespace, suffix, allow_any
                )
                return tuple(make_resource(c.name, c) for c in configs)

            key = (services_rev, shape.scope, shape.namespace)
            return ResourceSet.of(ROUTE, self._routes.get(key, None, routes_for_shape))

        # Whole sets are reused while their inputs' revisions stand: an endpoint change then
        # leaves the cluster, listener and route sets the very same objects, which the
        # streams recognise in O(1).
        slices_rev = snapshot.revisions.get("EndpointSlice", 0)
        has_headless = any(s.kind is ServiceKind.HEADLESS for s in services)
        keys = {
            CLUSTER: (CLUSTER, services_rev, shape.scope, shape.inbound, shape.ipv4, shape.ipv6),
            ENDPOINT: (ENDPOINT, services_rev, slices_rev, shape.scope),
            LISTENER: (
                LISTENER,
                services_rev,
                slices_rev if has_headless else None,
                shape.scope,
                shape.inbound,
                shape.ipv6,
            ),
            ROUTE: (ROUTE, services_rev, shape.scope, shape.namespace),
        }
        builders = {
            CLUSTER: build_clusters,
            ENDPOINT: build_endpoints,
            LISTENER: build_listeners,
            ROUTE: build_routes,
        }
        return ProxyResources(
            {
                type_url: partial(self._sets.get, keys[type_url], None, builders[type_url])
                for type_url in builders
            }
        )


def translate(snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyResources:
    """The resources for ``proxy`` under ``snapshot``, computed from scratch (all types built)."""
    return ConfigGenerator().generate(snapshot, proxy).build_all()
