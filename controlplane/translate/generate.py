"""Model + proxy -> the Envoy resources that proxy should have.

:func:`translate` is the pure definition, used by the golden tests. :class:`ConfigGenerator`
computes the same thing for a running control plane, reusing work:

* per-service clusters and load assignments are cached by the *identity* of their inputs
  (the store keeps an unchanged object identical across snapshots), so an endpoint change
  rebuilds one load assignment, not a thousand;
* listeners and routes depend only on services, the mesh config and the proxy's shape,
  and are rebuilt only when one of those changed;
* proxies of the same shape (namespace, scope, served ports, IP families, mTLS modes)
  share one :class:`ProxyResources` object per snapshot: each resource is built and
  packed once;
* auto-mTLS (which endpoints take mTLS, whose identities to expect) is computed per
  service from its endpoints, pods and policies, and clusters and load assignments are
  cached by that value, so a pod change rebuilds only the services it is behind (the
  store notes which, ``MeshSnapshot.pod_changes``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from controlplane.model import (
    EndpointSlice,
    MeshSnapshot,
    Protocol,
    Service,
    ServiceKind,
)
from controlplane.proxy import ProxyIdentity
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    NameOnlyVariants,
    ProxyResources,
    Resource,
    ResourceSet,
    make_resource,
)
from controlplane.translate import clusters, endpoints, listeners, names, routes
from controlplane.translate.auto_mtls import ServiceMtls, service_mtls
from controlplane.translate.listeners import InboundPort
from controlplane.translate.peer_authentication import PolicyIndex, WorkloadMtls
from controlplane.translate.scope import inbound_ports, visible_namespaces, visible_services

V = TypeVar("V")
_MtlsEntry = tuple[ServiceMtls, "clusters.UpstreamMtls | None"]


@dataclass(frozen=True)
class ProxyShape:
    """Everything about a proxy that its configuration depends on, besides the snapshot."""

    namespace: str
    scope: frozenset[str] | None
    inbound: tuple[InboundPort, ...]
    ipv4: bool
    ipv6: bool
    mtls: WorkloadMtls
    trust_domain: str


def policy_index(snapshot: MeshSnapshot) -> PolicyIndex:
    return PolicyIndex.build(snapshot.peer_authentications.values(), snapshot.mesh.root_namespace)


def proxy_shape(
    snapshot: MeshSnapshot, proxy: ProxyIdentity, policies: PolicyIndex | None = None
) -> ProxyShape:
    policies = policies if policies is not None else policy_index(snapshot)
    workload = snapshot.workloads.get((proxy.namespace, proxy.pod_name))
    labels = workload.label_map if workload is not None else dict(proxy.labels)
    return ProxyShape(
        namespace=proxy.namespace,
        scope=visible_namespaces(snapshot, proxy.namespace),
        inbound=inbound_ports(snapshot, proxy),
        ipv4=proxy.has_ipv4,
        ipv6=proxy.has_ipv6,
        mtls=policies.workload_mtls(proxy.namespace, labels),
        trust_domain=snapshot.mesh.trust_domain,
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


def upstream_mtls(service: Service, view: ServiceMtls) -> clusters.UpstreamMtls | None:
    """How the clusters of ``service`` use mTLS (None: plaintext only).

    EDS clusters always offer mTLS by endpoint metadata, so endpoints gaining a sidecar need
    no cluster change; original-destination (headless) clusters cannot see per-endpoint
    metadata and use mTLS on a port only when every endpoint takes it there, as Istio does.
    """
    if service.kind is ServiceKind.EXTERNAL_NAME or not view.peer_ids:
        # Outside the mesh, or no endpoint with a sidecar: there is no identity to verify,
        # so no mTLS to offer (a pod gaining a sidecar brings its identity, and with it
        # the cluster change).
        return None
    if clusters.uses_eds(service):
        return clusters.UpstreamMtls(view.peer_ids, per_endpoint=True)
    if view.all_mtls_ports:
        return clusters.UpstreamMtls(
            view.peer_ids, per_endpoint=False, all_mtls_ports=view.all_mtls_ports
        )
    return None


def _service_clusters(
    service: Service,
    domain_suffix: str,
    mtls: clusters.UpstreamMtls | None,
    prototypes: dict[Protocol, NameOnlyVariants],
) -> tuple[Resource, ...]:
    """The service's clusters; those that differ from others only by name are made from
    ``prototypes`` (one per protocol, seeded with the first such cluster built)."""
    out = []
    shared = clusters.same_but_for_name(service, mtls)
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        variants = prototypes.get(port.protocol) if shared else None
        if variants is not None:
            out.append(
                variants.make(names.outbound_cluster(port.port, service.fqdn(domain_suffix)))
            )
            continue
        cluster = clusters.outbound_cluster(service, port, domain_suffix, mtls)
        if shared:
            prototypes[port.protocol] = NameOnlyVariants(cluster)
        out.append(make_resource(cluster.name, cluster))
    return tuple(out)


def _service_load_assignments(
    service: Service,
    slices: tuple[EndpointSlice, ...],
    domain_suffix: str,
    mtls_endpoints: frozenset[tuple[str, int]],
) -> tuple[Resource, ...]:
    out = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        name = names.outbound_cluster(port.port, service.fqdn(domain_suffix))
        out.append(
            make_resource(name, endpoints.load_assignment(name, port, slices, mtls_endpoints))
        )
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
        self._service_mtls: _Memo[_MtlsEntry] = _Memo()
        self._policies: _Memo[PolicyIndex] = _Memo()
        # Plaintext EDS clusters by protocol, minus their names (see _service_clusters); new
        # for each snapshot, so nothing a snapshot decides can outlive it in a prototype.
        self._cluster_prototypes: dict[Protocol, NameOnlyVariants] = {}
        self._by_shape: dict[ProxyShape, ProxyResources] = {}
        # Auto-mTLS of each service for the current snapshot (shared by every shape), and the
        # snapshot's policy index (looked up once per service on a full push).
        self._mtls_now: dict[tuple[str, str], _MtlsEntry] = {}
        self._policies_now: PolicyIndex | None = None

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
                self._service_mtls,
                self._policies,
            ):
                memo.rotate()
            self._mtls_now = {}
            self._policies_now = None
            self._cluster_prototypes = {}
        shape = proxy_shape(snapshot, proxy, self._policy_index(snapshot))
        found = self._by_shape.get(shape)
        if found is None:
            found = self._by_shape[shape] = self._build(snapshot, shape)
        return found

    def _policy_index(self, snapshot: MeshSnapshot) -> PolicyIndex:
        if self._policies_now is not None and snapshot is self._snapshot:
            return self._policies_now
        key = (
            snapshot.revisions.get("PeerAuthentication", 0),
            snapshot.revisions.get("ConfigMap", 0),
        )
        found = self._policies.get(key, None, partial(policy_index, snapshot))
        if snapshot is self._snapshot:
            self._policies_now = found
        return found

    def _mtls_of(self, snapshot: MeshSnapshot, service: Service) -> _MtlsEntry:
        """The service's auto-mTLS view and cluster setting, recomputed only when needed."""
        found = self._mtls_now.get(service.key)
        if found is not None:
            return found
        slices = snapshot.slices_for(service)
        policies = self._policy_index(snapshot)
        key = (
            id(service),
            id(slices),
            id(policies),
            snapshot.mesh.trust_domain,
            # A pod behind the service changed (the store notes which): its mTLS may have.
            snapshot.pod_changes.get(service.key, 0),
        )

        def compute() -> _MtlsEntry:
            view = service_mtls(snapshot, service, slices, policies)
            return view, upstream_mtls(service, view)

        found = self._mtls_now[service.key] = self._service_mtls.get(
            key, (service, slices, policies), compute
        )
        return found

    def _build(self, snapshot: MeshSnapshot, shape: ProxyShape) -> ProxyResources:
        suffix = snapshot.domain_suffix
        services = visible_services(snapshot, shape.scope)
        auto_mtls = snapshot.mesh.enable_auto_mtls
        # With no pod known there is no sidecar to upgrade to: skip asking every service.
        any_mtls = auto_mtls and bool(snapshot.workloads)

        def mtls_of(service: Service) -> clusters.UpstreamMtls | None:
            if not any_mtls or service.kind is ServiceKind.EXTERNAL_NAME:
                return None
            return self._mtls_of(snapshot, service)[1]

        allow_any = snapshot.mesh.outbound_traffic_policy != "REGISTRY_ONLY"
        detection_timeout = snapshot.mesh.protocol_detection_timeout_s
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
            for service, mtls in zip(services, cluster_mtls, strict=True):
                built.extend(
                    self._clusters.get(
                        (id(service), suffix, mtls),
                        service,
                        partial(_service_clusters, service, suffix, mtls, self._cluster_prototypes),
                    )
                )
            return ResourceSet.of(CLUSTER, built)

        def build_endpoints() -> ResourceSet:
            built: list[Resource] = []
            for service in services:
                if not clusters.uses_eds(service):
                    continue
                slices = snapshot.slices_for(service)
                mtls_endpoints = (
                    self._mtls_of(snapshot, service)[0].endpoints if any_mtls else frozenset()
                )
                built.extend(
                    self._assignments.get(
                        (id(service), id(slices), mtls_endpoints),
                        (service, slices),
                        partial(_service_load_assignments, service, slices, suffix, mtls_endpoints),
                    )
                )
            return ResourceSet.of(ENDPOINT, built)

        def build_listeners() -> ResourceSet:
            headless = [
                snapshot.slices_for(s) for s in services if listeners.matches_endpoint_ips(s)
            ]
            outbound_key = (
                "outbound",
                services_rev,
                shape.scope,
                shape.ipv6,
                allow_any,
                detection_timeout,
                *(id(e) for h in headless for e in h),
            )

            def outbound() -> Resource:
                listener = listeners.outbound_listener(
                    services,
                    snapshot.slices_for,
                    suffix,
                    allow_any,
                    shape.ipv6,
                    detection_timeout_s=detection_timeout,
                )
                return make_resource(listener.name, listener)

            def inbound() -> Resource:
                listener = listeners.inbound_listener(
                    shape.inbound,
                    shape.ipv6,
                    shape.mtls,
                    shape.trust_domain,
                    detection_timeout_s=detection_timeout,
                )
                return make_resource(listener.name, listener)

            return ResourceSet.of(
                LISTENER,
                [
                    self._listeners.get(outbound_key, headless, outbound),
                    self._listeners.get(
                        (
                            "inbound",
                            shape.inbound,
                            shape.ipv6,
                            shape.mtls,
                            shape.trust_domain,
                            detection_timeout,
                        ),
                        None,
                        inbound,
                    ),
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
        has_headless = any(listeners.matches_endpoint_ips(s) for s in services)
        # Clusters depend on auto-mTLS only through each service's value (peer identities,
        # all-meshed): compared by value, so an endpoint change that moves no identity keeps
        # the very same cluster set.
        cluster_mtls = tuple(mtls_of(service) for service in services)
        mtls_inputs = (
            snapshot.revisions.get("Pod", 0),
            snapshot.revisions.get("PeerAuthentication", 0),
            auto_mtls,
        )
        keys = {
            CLUSTER: (
                CLUSTER,
                services_rev,
                shape.scope,
                shape.inbound,
                shape.ipv4,
                shape.ipv6,
                cluster_mtls,
            ),
            ENDPOINT: (ENDPOINT, services_rev, slices_rev, shape.scope, mtls_inputs),
            LISTENER: (
                LISTENER,
                services_rev,
                slices_rev if has_headless else None,
                shape.scope,
                shape.inbound,
                shape.ipv6,
                shape.mtls,
                shape.trust_domain,
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
