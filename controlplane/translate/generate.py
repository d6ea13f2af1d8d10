"""Model + proxy -> the Envoy resources that proxy should have.

:func:`translate` is the pure definition, used by the golden tests. :class:`ConfigGenerator`
computes the same thing for a running control plane, reusing work by one rule: **a result
is reused exactly while what it is built from is equal**.

* Each resource set (clusters, endpoints, listeners, routes) has one frozen inputs value
  (:mod:`controlplane.translate.inputs`), filled from the facts a proxy sees
  (:class:`_Facts`, and :class:`_Seen` for those shared by every proxy of a scope): it is
  at once all its builder reads and its cache key. An endpoint change thus leaves the
  cluster, listener and route sets the very same objects, which the streams recognise in
  O(1). To make a set depend on something new, add a field to its inputs and, if no set
  read it before, the fact of that name.
* Proxies of the same :class:`ProxyShape` (namespace, scope, served ports, IP families,
  mTLS modes) share one :class:`ProxyResources` per snapshot.
* Inside a set, each service's clusters, load assignments and auto-mTLS (which endpoints
  take mTLS, whose identities to expect) are rebuilt only when that service's own inputs
  differ, so an endpoint change rebuilds one load assignment, not a thousand. The pods
  behind a service enter its auto-mTLS by the generation at which one of them last changed
  (the store notes it, ``MeshSnapshot.pod_changes``): comparing them would cost what
  recomputing does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Generic, TypeVar

from controlplane.model import Endpoint, EndpointSlice, MeshSnapshot, Protocol, Service, ServiceKind
from controlplane.networking.model import ConsistentHash, DestinationRule, Labels, VirtualService
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
from controlplane.translate import clusters, destination_rules, endpoints, listeners, names
from controlplane.translate.auto_mtls import ServiceMtls, service_mtls
from controlplane.translate.destination_rules import DestinationRuleIndex
from controlplane.translate.inputs import (
    ClusterInputs,
    EndpointInputs,
    InboundClusterInputs,
    InboundListenerInputs,
    ListenerInputs,
    OutboundListenerInputs,
    RouteInputs,
    Same,
    inputs_of,
)
from controlplane.translate.listeners import InboundPort
from controlplane.translate.peer_authentication import PolicyIndex, WorkloadMtls
from controlplane.translate.scope import inbound_ports, visible_namespaces, visible_services
from controlplane.translate.virtual_service_selection import mesh_virtual_services
from controlplane.translate.virtual_services import Client, outbound_route_configs

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)
E = TypeVar("E")
_MtlsEntry = tuple[ServiceMtls, "clusters.UpstreamMtls | None"]
_NO_MTLS_ENDPOINTS: frozenset[tuple[str, int]] = frozenset()


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
    # The proxy's labels (sorted) when a config of its namespace selects proxies by them (a
    # VirtualService's sourceLabels, a DestinationRule's workloadSelector); else (), so
    # that the proxies of a namespace keep sharing their resources.
    labels: Labels = ()


def policy_index(snapshot: MeshSnapshot) -> PolicyIndex:
    return PolicyIndex.build(snapshot.peer_authentications.values(), snapshot.mesh.root_namespace)


def proxy_shape(
    snapshot: MeshSnapshot,
    proxy: ProxyIdentity,
    policies: PolicyIndex | None = None,
    labels_matter: bool = False,
) -> ProxyShape:
    """The proxy's shape; ``labels_matter``: whether a config of its namespace selects
    proxies by their labels (:attr:`_Namespace.labels_matter`)."""
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
        labels=tuple(sorted(labels.items())) if labels_matter else (),
    )


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


class _Rounds:
    """The generator's round (one per snapshot), and what the caches share about rounds.

    A cache keeps what was asked of it during its last round of use and the one before it;
    the rest is dropped when it starts a new one. A cache only used to rebuild a resource
    set (a service's load assignments) thus keeps its entries for as long as that set is
    reused, however many snapshots that is, and is ready when the set is next rebuilt.
    """

    def __init__(self) -> None:
        self.now = 0

    def next(self) -> None:
        self.now += 1


class _Cache(Generic[K, E]):
    """Entries by key, kept across rounds as :class:`_Rounds` says."""

    def __init__(self, rounds: _Rounds) -> None:
        self._rounds = rounds
        self._round = rounds.now
        self._current: dict[K, E] = {}
        self._previous: dict[K, E] = {}

    def _entry(self, key: K) -> E | None:
        if self._round != self._rounds.now:
            self._round = self._rounds.now
            self._previous, self._current = self._current, {}
        found = self._current.get(key)
        if found is None:
            found = self._previous.pop(key, None)
        return found


class _Memo(_Cache[Hashable, V]):
    """``build(*inputs)``, remembered under its inputs."""

    def get(self, build: Callable[..., V], *inputs: Hashable) -> V:
        found = self._entry(inputs)
        if found is None:
            found = build(*inputs)
        self._current[inputs] = found
        return found


class _Latest(_Cache[Hashable, tuple[tuple[Any, ...], V]]):
    """Per name (a service, a scope), the last ``build(*inputs)`` and its inputs: rebuilt
    when asked with inputs that differ (``==``, which is O(1) for the very same objects).

    For results with one current version each: unlike :class:`_Memo`, the inputs are never
    hashed, only compared, so large values (a service, its slices) cost nothing to look up.
    """

    def get(self, name: Hashable, build: Callable[..., V], *inputs: Any) -> V:
        entry = self._entry(name)
        if entry is None or entry[0] != inputs:
            entry = (inputs, build(*inputs))
        self._current[name] = entry
        return entry[1]


def _inbound_clusters(inputs: InboundClusterInputs) -> tuple[Resource, ...]:
    built = [
        clusters.passthrough_cluster(),
        clusters.blackhole_cluster(),
        clusters.inbound_passthrough_cluster(inputs.ipv4, inputs.ipv6),
        *(
            clusters.inbound_cluster(p.port, p.protocol, inputs.ipv4, inputs.ipv6)
            for p in inputs.inbound
        ),
    ]
    return tuple(make_resource(c.name, c) for c in built)


def _service_load_assignments(
    service: Service,
    slices: tuple[EndpointSlice, ...],
    domain_suffix: str,
    mtls_endpoints: frozenset[tuple[str, int]],
    rule: DestinationRule | None,
    endpoint_labels: _EndpointLabels | None,
) -> tuple[Resource, ...]:
    """The load assignments of the service's EDS clusters: per port, then per port and
    subset of its rule; none for a cluster its rule makes original-destination."""
    assignments = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        name = names.outbound_cluster(port.port, service.fqdn(domain_suffix))
        assignments.append(endpoints.load_assignment(name, port, slices, mtls_endpoints))
    if rule is not None:
        labels = {endpoint: dict(found) for endpoint, found in endpoint_labels or () if found}
        assignments.extend(
            destination_rules.subset_load_assignments(
                service, rule, domain_suffix, slices, labels.get, mtls_endpoints
            )
        )
        unsent = destination_rules.passthrough_clusters(service, rule, domain_suffix)
        assignments = [a for a in assignments if a.cluster_name not in unsent]
    return tuple(make_resource(a.cluster_name, a) for a in assignments)


def _outbound_listener(inputs: OutboundListenerInputs) -> Resource:
    services = inputs.services.value
    by_ips = [s for s in services if listeners.matches_endpoint_ips(s)]
    slices = dict(zip([s.key for s in by_ips], inputs.endpoint_ip_slices.value, strict=True))
    listener = listeners.outbound_listener(
        services,
        lambda service: slices.get(service.key, ()),
        inputs.domain_suffix,
        inputs.allow_any,
        inputs.ipv6,
        detection_timeout_s=inputs.detection_timeout_s,
    )
    return make_resource(listener.name, listener)


def _inbound_listener(inputs: InboundListenerInputs) -> Resource:
    listener = listeners.inbound_listener(
        inputs.inbound,
        inputs.ipv6,
        inputs.mtls,
        inputs.trust_domain,
        detection_timeout_s=inputs.detection_timeout_s,
    )
    return make_resource(listener.name, listener)


def _routes(inputs: RouteInputs) -> ResourceSet:
    services = inputs.services.value
    configs = outbound_route_configs(
        services,
        inputs.virtual_services.value,
        Client(inputs.namespace, inputs.client_labels),
        inputs.domain_suffix,
        inputs.allow_any,
        _consistent_hashes(services, inputs.destination_rules.value, inputs.domain_suffix),
    )
    return ResourceSet.of(ROUTE, (make_resource(c.name, c) for c in configs))


def _consistent_hashes(
    services: tuple[Service, ...],
    rules: tuple[DestinationRule | None, ...],
    domain_suffix: str,
) -> dict[str, ConsistentHash]:
    """Cluster name -> the hash key its DestinationRule asks for (the routes' hash policies)."""
    hashes = {}
    for service, rule in zip(services, rules, strict=True):
        if rule is None:
            continue
        fqdn = service.fqdn(domain_suffix)
        for port in service.ports:
            for subset in ("", *(s.name for s in rule.subsets)):
                found = destination_rules.consistent_hash(rule, subset, port.port)
                if found is not None:
                    hashes[names.outbound_cluster(port.port, fqdn, subset)] = found
    return hashes


def _uses_source_labels(virtual_service: VirtualService) -> bool:
    return any(match.source_labels for rule in virtual_service.http for match in rule.match)


class _Namespace:
    """What the VirtualServices and DestinationRules of one snapshot are to the proxies of one
    namespace, computed once per snapshot and namespace."""

    def __init__(self, generator: ConfigGenerator, snapshot: MeshSnapshot, namespace: str) -> None:
        ordered = mesh_virtual_services(snapshot.virtual_services.values(), namespace)
        self.virtual_services = generator.interned(("virtual services", namespace), ordered)
        self.source_labels = any(_uses_source_labels(vs) for vs in ordered)
        selectors = any(
            rule.namespace == namespace and rule.workload_selector is not None
            for rule in snapshot.destination_rules.values()
        )
        # Whether its proxies' resources depend on their labels (ProxyShape.labels).
        self.labels_matter = self.source_labels or selectors


_Rules = tuple[DestinationRule | None, ...]
_EndpointLabels = tuple[tuple[Endpoint, Labels | None], ...]


class _Seen:
    """What every proxy of one scope sees under one snapshot (its services, their auto-mTLS),
    computed once per snapshot and scope, on first use.

    Each value is interned: equal to the previous snapshot's, it is that very object, so
    the inputs holding it compare and hash in O(1) (:class:`Same`) for every shape.
    """

    def __init__(
        self, generator: ConfigGenerator, snapshot: MeshSnapshot, scope: frozenset[str] | None
    ) -> None:
        self._generator = generator
        self._snapshot = snapshot
        self._scope = scope
        self.services = generator.interned(
            ("services", scope),
            visible_services(snapshot.services_by_namespace, scope),
        )
        self._rules: dict[tuple[str, Labels], tuple[Same[_Rules], Same[Any]]] = {}

    @cached_property
    def _auto_mtls(self) -> tuple[_MtlsEntry | None, ...] | None:
        """Each service's auto-mTLS; None for all when no service can have any (auto-mTLS
        off, or no pod known, hence no sidecar to upgrade to)."""
        snapshot = self._snapshot
        if not (snapshot.mesh.enable_auto_mtls and snapshot.workloads):
            return None
        of = self._generator.auto_mtls
        return tuple(
            None if service.kind is ServiceKind.EXTERNAL_NAME else of(snapshot, service)
            for service in self.services.value
        )

    @cached_property
    def upstream_mtls(self) -> Same[tuple[clusters.UpstreamMtls | None, ...]]:
        entries = self._auto_mtls
        values = (
            (None,) * len(self.services.value)
            if entries is None
            else tuple(None if entry is None else entry[1] for entry in entries)
        )
        return self._generator.interned(("upstream mTLS", self._scope), values)

    @cached_property
    def mtls_endpoints(self) -> Same[tuple[frozenset[tuple[str, int]], ...]]:
        services, entries = self.services.value, self._auto_mtls
        values = (
            (_NO_MTLS_ENDPOINTS,) * len(services)
            if entries is None
            else tuple(
                entry[0].endpoints
                if entry is not None and clusters.uses_eds(service)
                else _NO_MTLS_ENDPOINTS
                for service, entry in zip(services, entries, strict=True)
            )
        )
        return self._generator.interned(("mTLS endpoints", self._scope), values)

    @cached_property
    def _no_rules(self) -> tuple[Same[_Rules], Same[tuple[_EndpointLabels | None, ...]]]:
        none = (None,) * len(self.services.value)
        return (
            self._generator.interned(("destination rules", self._scope), none),
            self._generator.interned(("subset endpoint labels", self._scope), none),
        )

    def destination_rules(
        self, namespace: str, labels: Labels
    ) -> tuple[Same[_Rules], Same[tuple[_EndpointLabels | None, ...]]]:
        """Each service's DestinationRule for a proxy of ``namespace`` with ``labels``, and
        the pod labels of the endpoints of those services whose rule has subsets.

        Interned by scope alone while no rule applies, so that a rule change leaves the
        proxies of namespaces it does not touch on their cached sets.
        """
        found = self._rules.get((namespace, labels))
        if found is None:
            found = self._rules[(namespace, labels)] = self._build_rules(namespace, labels)
        return found

    def _build_rules(
        self, namespace: str, labels: Labels
    ) -> tuple[Same[_Rules], Same[tuple[_EndpointLabels | None, ...]]]:
        index = self._generator.rule_index(self._snapshot)
        services = self.services.value
        suffix = self._snapshot.domain_suffix
        label_map = dict(labels)
        rules = (
            ()
            if index is None
            else tuple(
                index.rule_for(s.fqdn(suffix), s.namespace, namespace, label_map) for s in services
            )
        )
        if not any(rule is not None for rule in rules):
            return self._no_rules
        endpoint_labels = tuple(
            self._generator.endpoint_labels(self._snapshot, service)
            if rule is not None and rule.subsets and clusters.uses_eds(service)
            else None
            for service, rule in zip(services, rules, strict=True)
        )
        name = (self._scope, namespace, labels)
        return (
            self._generator.interned(("destination rules", *name), rules),
            self._generator.interned(("subset endpoint labels", *name), endpoint_labels),
        )

    @cached_property
    def endpoint_ip_slices(self) -> Same[tuple[tuple[EndpointSlice, ...], ...]]:
        slices_for = self._snapshot.slices_for
        values = tuple(
            slices_for(s) for s in self.services.value if listeners.matches_endpoint_ips(s)
        )
        return self._generator.interned(("endpoint IP slices", self._scope), values)


class _Facts:
    """What a proxy of one shape sees under one snapshot: the values resource-set inputs
    are made of (an inputs field takes the fact of its name)."""

    def __init__(
        self, snapshot: MeshSnapshot, shape: ProxyShape, seen: _Seen, namespace: _Namespace
    ) -> None:
        self._seen = seen
        self.namespace = shape.namespace
        self.virtual_services = namespace.virtual_services
        self.client_labels = shape.labels if namespace.source_labels else ()
        self.destination_rules, self.subset_endpoint_labels = seen.destination_rules(
            shape.namespace, shape.labels
        )
        self.inbound = shape.inbound
        self.ipv4 = shape.ipv4
        self.ipv6 = shape.ipv6
        self.mtls = shape.mtls
        self.trust_domain = shape.trust_domain
        self.domain_suffix = snapshot.domain_suffix
        self.allow_any = snapshot.mesh.outbound_traffic_policy != "REGISTRY_ONLY"
        self.detection_timeout_s = snapshot.mesh.protocol_detection_timeout_s
        self.endpoints_by_service = Same(snapshot.endpoints_by_service)
        self.services = seen.services

    @property
    def upstream_mtls(self) -> Same[tuple[clusters.UpstreamMtls | None, ...]]:
        return self._seen.upstream_mtls

    @property
    def mtls_endpoints(self) -> Same[tuple[frozenset[tuple[str, int]], ...]]:
        return self._seen.mtls_endpoints

    @property
    def endpoint_ip_slices(self) -> Same[tuple[tuple[EndpointSlice, ...], ...]]:
        return self._seen.endpoint_ip_slices

    @property
    def inbound_clusters(self) -> InboundClusterInputs:
        return inputs_of(InboundClusterInputs, self)

    @property
    def outbound_listener(self) -> OutboundListenerInputs:
        return inputs_of(OutboundListenerInputs, self)

    @property
    def inbound_listener(self) -> InboundListenerInputs:
        return inputs_of(InboundListenerInputs, self)


class ConfigGenerator:
    """Builds and caches :class:`ProxyResources`; see the module docstring.

    Not thread-safe: use it from the event loop.
    """

    def __init__(self) -> None:
        self._snapshot: MeshSnapshot | None = None
        self._by_shape: dict[ProxyShape, ProxyResources] = {}
        self._rounds = _Rounds()
        self._sets: _Memo[ResourceSet] = _Memo(self._rounds)
        self._inbound_clusters: _Memo[tuple[Resource, ...]] = _Memo(self._rounds)
        self._listeners: _Memo[Resource] = _Memo(self._rounds)
        self._policies: _Memo[PolicyIndex] = _Memo(self._rounds)
        self._rule_indexes: _Memo[DestinationRuleIndex | None] = _Memo(self._rounds)
        self._endpoint_labels: _Latest[_EndpointLabels] = _Latest(self._rounds)
        self._interned: _Latest[Same[Any]] = _Latest(self._rounds)
        self._service_clusters: _Latest[tuple[Resource, ...]] = _Latest(self._rounds)
        self._assignments: _Latest[tuple[Resource, ...]] = _Latest(self._rounds)
        self._service_mtls: _Latest[_MtlsEntry] = _Latest(self._rounds)
        # Plaintext EDS clusters by protocol, minus their names (see _clusters_of_service);
        # new for each snapshot, so nothing a snapshot decides can outlive it in a prototype.
        self._cluster_prototypes: dict[Protocol, NameOnlyVariants] = {}
        # For the current snapshot: the policy index (every proxy's shape asks for it) and
        # each service's auto-mTLS (every shape asks for those of the services it sees).
        self._policies_now: PolicyIndex | None = None
        self._mtls_now: dict[tuple[str, str], _MtlsEntry] = {}
        self._seen_now: dict[frozenset[str] | None, _Seen] = {}
        self._namespaces_now: dict[str, _Namespace] = {}
        # Each resource set: its inputs, and how it is built from them.
        self._set_builders: Mapping[str, tuple[type, Callable[[Any], ResourceSet]]] = {
            CLUSTER: (ClusterInputs, self._clusters),
            ENDPOINT: (EndpointInputs, self._endpoints),
            LISTENER: (ListenerInputs, self._listener_set),
            ROUTE: (RouteInputs, _routes),
        }

    def generate(self, snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyResources:
        if snapshot is not self._snapshot:
            self._start_round(snapshot)
        namespace = self._namespaces_now.get(proxy.namespace)
        if namespace is None:
            namespace = self._namespaces_now[proxy.namespace] = _Namespace(
                self, snapshot, proxy.namespace
            )
        shape = proxy_shape(snapshot, proxy, self._policy_index(snapshot), namespace.labels_matter)
        found = self._by_shape.get(shape)
        if found is None:
            seen = self._seen_now.get(shape.scope)
            if seen is None:
                seen = self._seen_now[shape.scope] = _Seen(self, snapshot, shape.scope)
            facts = _Facts(snapshot, shape, seen, namespace)
            # Inputs now (they are the keys), sets when first asked for: the server sends
            # clusters first, and building the rest overlaps Envoy's work on them.
            found = self._by_shape[shape] = ProxyResources(
                {
                    type_url: partial(self._sets.get, build, inputs_of(inputs, facts))
                    for type_url, (inputs, build) in self._set_builders.items()
                }
            )
        return found

    def _start_round(self, snapshot: MeshSnapshot) -> None:
        self._snapshot = snapshot
        self._by_shape = {}
        self._rounds.next()
        self._cluster_prototypes = {}
        self._policies_now = None
        self._mtls_now = {}
        self._seen_now = {}
        self._namespaces_now = {}

    def rule_index(self, snapshot: MeshSnapshot) -> DestinationRuleIndex | None:
        """The snapshot's DestinationRules arranged for lookups; None without any."""
        return self._rule_indexes.get(
            _rule_index,
            Same(snapshot.destination_rules),
            snapshot.mesh.root_namespace,
            snapshot.domain_suffix,
        )

    def endpoint_labels(self, snapshot: MeshSnapshot, service: Service) -> _EndpointLabels:
        """The labels of the pod behind each endpoint of ``service`` (subsets select by
        them), recomputed only when its slices or the pods behind it change."""
        return self._endpoint_labels.get(
            service.key,
            partial(_endpoint_labels, snapshot),
            service,
            snapshot.slices_for(service),
            snapshot.pod_changes.get(service.key, 0),
        )

    def _policy_index(self, snapshot: MeshSnapshot) -> PolicyIndex:
        if self._policies_now is not None and snapshot is self._snapshot:
            return self._policies_now
        found = self._policies.get(
            _policy_index, Same(snapshot.peer_authentications), snapshot.mesh.root_namespace
        )
        if snapshot is self._snapshot:
            self._policies_now = found
        return found

    def interned(self, name: Hashable, value: V) -> Same[V]:
        """``value``, or the equal one given under ``name`` for the previous snapshot (then
        compared in O(1) by identity, see :class:`Same`)."""
        return self._interned.get(name, Same, value)

    def auto_mtls(self, snapshot: MeshSnapshot, service: Service) -> _MtlsEntry:
        """The service's auto-mTLS view and cluster setting, recomputed only when needed."""
        found = self._mtls_now.get(service.key)
        if found is None:
            found = self._mtls_now[service.key] = self._service_mtls.get(
                service.key,
                partial(_auto_mtls, snapshot),
                service,
                snapshot.slices_for(service),
                self._policy_index(snapshot),
                snapshot.mesh.trust_domain,
                snapshot.pod_changes.get(service.key, 0),
            )
        return found

    def _clusters(self, inputs: ClusterInputs) -> ResourceSet:
        built = list(self._inbound_clusters.get(_inbound_clusters, inputs.inbound_clusters))
        for service, mtls, rule in zip(
            inputs.services.value,
            inputs.upstream_mtls.value,
            inputs.destination_rules.value,
            strict=True,
        ):
            # Under its rule's name too: proxies that see different rules for a service
            # (namespaces, workload selectors) each keep theirs.
            name = service.key if rule is None else (service.key, rule)
            built.extend(
                self._service_clusters.get(
                    name, self._clusters_of_service, service, inputs.domain_suffix, mtls, rule
                )
            )
        return ResourceSet.of(CLUSTER, built)

    def _clusters_of_service(
        self,
        service: Service,
        domain_suffix: str,
        mtls: clusters.UpstreamMtls | None,
        rule: DestinationRule | None,
    ) -> tuple[Resource, ...]:
        """The service's clusters; those that differ from others only by name are made from
        prototypes (one per protocol, seeded with the first such cluster built)."""
        if rule is not None:
            return tuple(
                make_resource(cluster.name, cluster)
                for port in service.ports
                if port.protocol is not Protocol.UDP
                for cluster in destination_rules.outbound_clusters(
                    service, port, domain_suffix, rule, mtls
                )
            )
        out = []
        shared = clusters.same_but_for_name(service, mtls)
        prototypes = self._cluster_prototypes
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

    def _endpoints(self, inputs: EndpointInputs) -> ResourceSet:
        built: list[Resource] = []
        slices = inputs.endpoints_by_service.value
        for service, mtls, rule, labels in zip(
            inputs.services.value,
            inputs.mtls_endpoints.value,
            inputs.destination_rules.value,
            inputs.subset_endpoint_labels.value,
            strict=True,
        ):
            if clusters.uses_eds(service):
                built.extend(
                    self._assignments.get(
                        service.key if rule is None else (service.key, rule),
                        _service_load_assignments,
                        service,
                        slices.get(service.key, ()),
                        inputs.domain_suffix,
                        mtls,
                        rule,
                        labels,
                    )
                )
        return ResourceSet.of(ENDPOINT, built)

    def _listener_set(self, inputs: ListenerInputs) -> ResourceSet:
        return ResourceSet.of(
            LISTENER,
            [
                self._listeners.get(_outbound_listener, inputs.outbound_listener),
                self._listeners.get(_inbound_listener, inputs.inbound_listener),
            ],
        )


def _policy_index(
    policies: Same[Mapping[tuple[str, str], Any]], root_namespace: str
) -> PolicyIndex:
    return PolicyIndex.build(policies.value.values(), root_namespace)


def _rule_index(
    rules: Same[Mapping[tuple[str, str], DestinationRule]], root_namespace: str, domain_suffix: str
) -> DestinationRuleIndex | None:
    if not rules.value:
        return None
    return DestinationRuleIndex.build(rules.value.values(), root_namespace, domain_suffix)


def _endpoint_labels(
    snapshot: MeshSnapshot,
    service: Service,
    slices: tuple[EndpointSlice, ...],
    _pods_changed_at: int,
) -> _EndpointLabels:
    """Each endpoint of ``slices`` with the labels of its pod (None: no pod known); the
    snapshot's pods enter the inputs by the generation at which one behind it changed."""
    out = []
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints:
            workload = snapshot.workload_of(service.namespace, endpoint)
            out.append((endpoint, None if workload is None else workload.labels))
    return tuple(out)


def _auto_mtls(
    snapshot: MeshSnapshot,
    service: Service,
    slices: tuple[EndpointSlice, ...],
    policies: PolicyIndex,
    _trust_domain: str,
    _pods_changed_at: int,
) -> _MtlsEntry:
    """``service_mtls`` (which also reads the snapshot's pods and trust domain, in the
    inputs by the last two arguments) and the cluster setting that follows from it."""
    view = service_mtls(snapshot, service, slices, policies)
    return view, upstream_mtls(service, view)


def translate(snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyResources:
    """The resources for ``proxy`` under ``snapshot``, computed from scratch (all types built)."""
    return ConfigGenerator().generate(snapshot, proxy).build_all()
