"""DestinationRules: which one applies to a service seen from a proxy, and the clusters and
load assignments it makes (the service port's cluster with its policy, one per subset).

Which rule applies follows Istio (``pilot/pkg/model/push_context.go`` and
``sidecar.go``): a rule's short host resolves in the rule's namespace; a rule is visible
where its ``exportTo`` says (empty: every namespace); for a host, the proxy's own namespace
is searched first (for a proxy of the root namespace, only its private rules), then the
rules exported by the service's namespace, then by the root namespace, and within one
namespace an exact host beats the longest matching wildcard. Several rules for one host in
one namespace are merged, oldest first: subsets are concatenated (a name already taken is
dropped) and the first top-level traffic policy wins. A rule with a ``workloadSelector``
applies only to the proxies it selects in its own namespace, is merged only with rules of
the same selector, and beats the selector-less rule for them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.model import Endpoint, EndpointSlice, Protocol, Service, ServicePort
from controlplane.networking.model import (
    ConsistentHash,
    DestinationRule,
    Labels,
    SimpleLB,
    TLSMode,
    TrafficPolicy,
)
from controlplane.translate import clusters, endpoints, names, tls_origination
from controlplane.translate.traffic_policy import apply_traffic_policy, upgrades_to_http2

PUBLIC = "*"
PRIVATE = "."

LabelsOf = Callable[[Endpoint], Mapping[str, str] | None]
"""The labels of the pod behind an endpoint, None when no pod is known for it."""


# --- which rule applies -------------------------------------------------------------------------


def resolve_host(host: str, namespace: str, domain_suffix: str) -> str:
    """A rule's ``host`` as a FQDN: a short name is a service of the rule's namespace."""
    if host == PUBLIC or "." in host or _is_ip(host):
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def host_matches(rule_host: str, host: str) -> bool:
    """Whether a (resolved) rule host covers ``host``: equal, or a wildcard suffix of it."""
    if rule_host.startswith(PUBLIC):
        return host.endswith(rule_host[1:])
    return rule_host == host


def _age(rule: DestinationRule) -> tuple[str, str, str]:
    return (rule.created, rule.name, rule.namespace)


def _merge(rules: list[DestinationRule], rule: DestinationRule) -> None:
    """Add ``rule`` (one of the same host and namespace, younger than ``rules``) as Istio.

    Into every earlier rule it may join (both without selector, or the same selector; a
    selector-less rule also joins those with one) go its new subsets and, if they have
    none, its traffic policy; it stays a rule of its own unless it joined one of the same
    kind, so a selecting rule keeps the selector-less settings merged into it.
    """
    separate = True
    for index, existing in enumerate(rules):
        both_selecting = (
            existing.workload_selector is not None and rule.workload_selector is not None
        )
        if both_selecting and existing.workload_selector != rule.workload_selector:
            continue
        if both_selecting or (
            existing.workload_selector is None and rule.workload_selector is None
        ):
            separate = False
        taken = {subset.name for subset in existing.subsets}
        rules[index] = replace(
            existing,
            subsets=existing.subsets + tuple(s for s in rule.subsets if s.name not in taken),
            traffic_policy=existing.traffic_policy or rule.traffic_policy,
        )
    if separate:
        rules.append(rule)


@dataclass(frozen=True)
class _HostRules:
    """The merged rules for one host in one namespace, and to whom they are exported."""

    rules: tuple[DestinationRule, ...]
    export_to: frozenset[str]


_ByHost = Mapping[str, _HostRules]


def _most_specific(by_host: _ByHost | None, host: str) -> _HostRules | None:
    if not by_host:
        return None
    exact = by_host.get(host)
    if exact is not None:
        return exact
    matching = [rule_host for rule_host in by_host if host_matches(rule_host, host)]
    return by_host[max(matching, key=len)] if matching else None


def _visible_to_own_namespace(rule: DestinationRule) -> bool:
    export = rule.export_to
    return not export or PUBLIC in export or PRIVATE in export or rule.namespace in export


def _exported(rule: DestinationRule) -> bool:
    return rule.export_to != (PRIVATE,)


class _Grouping:
    """Rules being merged per namespace and host, with the union of their ``exportTo``."""

    def __init__(self) -> None:
        self.rules: dict[str, dict[str, list[DestinationRule]]] = {}
        self.export_to: dict[tuple[str, str], set[str]] = {}

    def add(self, rule: DestinationRule) -> None:
        _merge(self.rules.setdefault(rule.namespace, {}).setdefault(rule.host, []), rule)
        exports = self.export_to.setdefault((rule.namespace, rule.host), set())
        # "." is the rule's own namespace, by name, for the proxies asking from elsewhere.
        exports.update(
            rule.namespace if name == PRIVATE else name for name in rule.export_to or (PUBLIC,)
        )

    def index(self) -> dict[str, _ByHost]:
        return {
            namespace: {
                host: _HostRules(tuple(rules), frozenset(self.export_to[namespace, host]))
                for host, rules in by_host.items()
            }
            for namespace, by_host in self.rules.items()
        }


@dataclass(frozen=True)
class DestinationRuleIndex:
    """The DestinationRules of a snapshot arranged for lookups: build once per rule change.

    Rule hosts are resolved FQDNs. ``local``: per namespace, the rules its own proxies look
    at first (every rule of the namespace exported to itself; in the root namespace only the
    private ones, so that its proxies, gateways in Istio, still prefer the service's own
    rules to the mesh-wide defaults kept there); ``exported``: per namespace, the rules it
    offers other namespaces.
    """

    root_namespace: str
    local: Mapping[str, _ByHost]
    exported: Mapping[str, _ByHost]

    @classmethod
    def build(
        cls, rules: Iterable[DestinationRule], root_namespace: str, domain_suffix: str
    ) -> DestinationRuleIndex:
        local, exported = _Grouping(), _Grouping()
        for rule in sorted(rules, key=_age):
            resolved = replace(rule, host=resolve_host(rule.host, rule.namespace, domain_suffix))
            if rule.namespace == root_namespace:
                if not _exported(rule):
                    local.add(resolved)
            elif _visible_to_own_namespace(rule):
                local.add(resolved)
            if _exported(rule):
                exported.add(resolved)
        return cls(root_namespace, local.index(), exported.index())

    def rule_for(
        self,
        host: str,
        service_namespace: str,
        proxy_namespace: str,
        proxy_labels: Mapping[str, str],
    ) -> DestinationRule | None:
        """The (merged) rule for traffic from a proxy of ``proxy_namespace`` with
        ``proxy_labels`` to the service ``host`` of ``service_namespace``, or None."""
        found = _most_specific(self.local.get(proxy_namespace), host)
        if found is None:
            for namespace in (service_namespace, self.root_namespace):
                found = _most_specific(self.exported.get(namespace), host)
                if found is not None and (
                    PUBLIC in found.export_to or proxy_namespace in found.export_to
                ):
                    break
                found = None
        if found is None:
            return None
        return _for_proxy(found.rules, proxy_namespace, proxy_labels)


def _selects(selector: Labels, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector)


def _for_proxy(
    rules: tuple[DestinationRule, ...], proxy_namespace: str, proxy_labels: Mapping[str, str]
) -> DestinationRule | None:
    """The first rule of the proxy's namespace that selects it, else the (last)
    selector-less one; a selector only counts for the proxies of its own namespace."""
    catch_all = None
    for rule in rules:
        if rule.workload_selector is None:
            catch_all = rule
        elif rule.namespace == proxy_namespace and _selects(rule.workload_selector, proxy_labels):
            return rule
    return catch_all


# --- what the rule makes ------------------------------------------------------------------------


def consistent_hash(
    rule: DestinationRule | None, subset: str = "", port: int | None = None
) -> ConsistentHash | None:
    """The hash key of traffic to ``subset`` on ``port``, for the route's hash policy (the
    cluster only says RING_HASH; each request's key is computed by the route)."""
    policy = rule.policy_for(subset, port) if rule is not None else None
    balancer = policy.load_balancer if policy is not None else None
    return balancer.consistent_hash if balancer is not None else None


def _cluster_mtls(
    policy: TrafficPolicy | None,
    port: ServicePort,
    mtls: clusters.UpstreamMtls | None,
    peer_ids: tuple[str, ...],
) -> clusters.UpstreamMtls | None:
    """How the cluster speaks mesh mTLS once the policy's ``tls`` has its say.

    ``DISABLE`` is plaintext even where auto-mTLS would choose mTLS; ``ISTIO_MUTUAL`` is
    mTLS to every endpoint, sidecar seen or not; no ``tls`` leaves auto-mTLS (``mtls``).
    ``SIMPLE`` and ``MUTUAL`` originate TLS instead (:mod:`tls_origination`), except with a
    ``credentialName`` or files, not translated yet: auto-mTLS stays then.
    """
    tls = policy.tls if policy is not None else None
    if tls is None:
        return mtls
    if tls.mode is TLSMode.DISABLE or tls_origination.translatable(tls):
        return None
    if tls.mode is TLSMode.ISTIO_MUTUAL:
        peers = peer_ids or (mtls.peer_ids if mtls is not None else ())
        return clusters.UpstreamMtls(
            peers, per_endpoint=False, all_mtls_ports=frozenset({port.name})
        )
    return mtls


def _cluster(
    service: Service,
    port: ServicePort,
    domain_suffix: str,
    policy: TrafficPolicy | None,
    mtls: clusters.UpstreamMtls | None,
    peer_ids: tuple[str, ...],
    subset: str,
) -> cluster_pb2.Cluster:
    if upgrades_to_http2(policy, port.protocol):
        port = replace(port, protocol=Protocol.HTTP2)
    cluster = clusters.outbound_cluster(
        service, port, domain_suffix, _cluster_mtls(policy, port, mtls, peer_ids), subset
    )
    if policy is not None:
        apply_traffic_policy(cluster, policy, port.protocol)
        if policy.tls is not None and tls_origination.translatable(policy.tls):
            tls_origination.originate_tls(cluster, policy.tls, port.protocol)
    return cluster


def outbound_clusters(
    service: Service,
    port: ServicePort,
    domain_suffix: str,
    rule: DestinationRule | None,
    mtls: clusters.UpstreamMtls | None = None,
    peer_ids: tuple[str, ...] = (),
) -> tuple[cluster_pb2.Cluster, ...]:
    """The clusters of one service port under ``rule``: the port's own (``outbound|port||
    fqdn``), then one per subset (``outbound|port|subset|fqdn``), each with its merged
    policy (:meth:`DestinationRule.policy_for`).

    ``mtls`` is auto-mTLS's choice for the service (as :func:`clusters.outbound_cluster`
    takes it); ``peer_ids``, the SPIFFE ids of the service's pods, are what an
    ``ISTIO_MUTUAL`` cluster verifies (``mtls``'s when empty). Without a rule this is
    exactly ``clusters.outbound_cluster(service, port, domain_suffix, mtls)``.
    """
    if rule is None:
        return (clusters.outbound_cluster(service, port, domain_suffix, mtls),)
    subsets = ("", *(subset.name for subset in rule.subsets))
    return tuple(
        _cluster(
            service, port, domain_suffix, rule.policy_for(name, port.port), mtls, peer_ids, name
        )
        for name in subsets
    )


def passthrough_clusters(
    service: Service, rule: DestinationRule, domain_suffix: str
) -> frozenset[str]:
    """The names of the service's clusters whose policy is ``PASSTHROUGH``: original-destination
    clusters (:func:`traffic_policy.apply_traffic_policy`), which take no load assignment."""
    fqdn = service.fqdn(domain_suffix)
    return frozenset(
        names.outbound_cluster(port.port, fqdn, subset)
        for port in service.ports
        for subset in ("", *(s.name for s in rule.subsets))
        if _passes_through(rule.policy_for(subset, port.port))
    )


def _passes_through(policy: TrafficPolicy | None) -> bool:
    balancer = policy.load_balancer if policy is not None else None
    return balancer is not None and balancer.simple is SimpleLB.PASSTHROUGH


def _subset_filter(selector: Labels, labels_of: LabelsOf) -> Callable[[Endpoint], bool] | None:
    if not selector:
        return None  # a subset without labels is every endpoint

    def selected(endpoint: Endpoint) -> bool:
        labels = labels_of(endpoint)
        return labels is not None and _selects(selector, labels)

    return selected


def subset_load_assignments(
    service: Service,
    rule: DestinationRule,
    domain_suffix: str,
    slices: Iterable[EndpointSlice],
    labels_of: LabelsOf,
    mtls_endpoints: Collection[tuple[str, int]] = (),
) -> tuple[endpoint_pb2.ClusterLoadAssignment, ...]:
    """The load assignments of ``rule``'s subset clusters of ``service`` (EDS services
    only): per port and subset, the endpoints whose pod has the subset's labels (an
    endpoint with no known pod is in no subset that names labels)."""
    if not clusters.uses_eds(service) or not rule.subsets:
        return ()
    slices = tuple(slices)
    fqdn = service.fqdn(domain_suffix)
    out = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue
        for subset in rule.subsets:
            name = names.outbound_cluster(port.port, fqdn, subset.name)
            selected = _subset_filter(subset.labels, labels_of)
            out.append(endpoints.load_assignment(name, port, slices, mtls_endpoints, selected))
    return tuple(out)
