"""What each resource set a proxy gets is built from: one frozen value per set.

An inputs value is both everything its set's builder reads and the key the generator
reuses the set by, so the two cannot disagree: a set is rebuilt exactly when its inputs
differ (:mod:`controlplane.translate.generate`). Every field is filled from the generator's
fact of the same name (:func:`inputs_of`), so making a set depend on one more thing (a kind
of config, a mesh setting) is one field here, reading a fact the generator knows.

Collections too big to compare on every lookup (a proxy's visible services, their
auto-mTLS, the endpoints of the mesh) are wrapped in :class:`Same`, which compares by
identity. The same object is certainly the same value, so such a key can miss but never
lie; and it rarely misses: the store hands every snapshot the very same collection while
its kind is unchanged, and the generator interns what it derives (an equal value is the
previous snapshot's very object).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from controlplane.model import Endpoint, EndpointSlice, Service
from controlplane.networking.model import DestinationRule, Labels, VirtualService
from controlplane.translate.clusters import UpstreamMtls
from controlplane.translate.listeners import InboundPort
from controlplane.translate.peer_authentication import WorkloadMtls

T = TypeVar("T")
Inputs = TypeVar("Inputs")


@dataclass(frozen=True, eq=False, slots=True)
class Same(Generic[T]):
    """``value``, compared by identity (see the module docstring); holding it keeps its
    ``id`` from being reused while a key made of it exists."""

    value: T

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


@dataclass(frozen=True)
class InboundClusterInputs:
    """The clusters of a proxy's own side: passthrough, blackhole and one per served port."""

    inbound: tuple[InboundPort, ...]
    ipv4: bool
    ipv6: bool


@dataclass(frozen=True)
class ClusterInputs:
    inbound_clusters: InboundClusterInputs
    services: Same[tuple[Service, ...]]
    upstream_mtls: Same[tuple[UpstreamMtls | None, ...]]  # of each service, in order
    # Of each service, in order: its DestinationRule for this proxy (policy, subsets).
    destination_rules: Same[tuple[DestinationRule | None, ...]]
    domain_suffix: str


@dataclass(frozen=True)
class EndpointInputs:
    services: Same[tuple[Service, ...]]
    endpoints_by_service: Same[Mapping[tuple[str, str], tuple[EndpointSlice, ...]]]
    # Of each service, in order: the (address, port) of its endpoints that take mTLS.
    mtls_endpoints: Same[tuple[frozenset[tuple[str, int]], ...]]
    destination_rules: Same[tuple[DestinationRule | None, ...]]  # as ClusterInputs'
    # Of each service whose rule has subsets, in order: each endpoint with its pod's labels
    # (None: no pod known), which the subsets select by; None for the other services.
    subset_endpoint_labels: Same[tuple[tuple[tuple[Endpoint, Labels | None], ...] | None, ...]]
    domain_suffix: str


@dataclass(frozen=True)
class OutboundListenerInputs:
    services: Same[tuple[Service, ...]]
    # The slices of each service whose endpoint IPs the listener names
    # (listeners.matches_endpoint_ips), in order: only those make it change with endpoints.
    endpoint_ip_slices: Same[tuple[tuple[EndpointSlice, ...], ...]]
    domain_suffix: str
    allow_any: bool
    ipv6: bool
    detection_timeout_s: float | None


@dataclass(frozen=True)
class InboundListenerInputs:
    inbound: tuple[InboundPort, ...]
    ipv6: bool
    mtls: WorkloadMtls
    trust_domain: str
    detection_timeout_s: float | None


@dataclass(frozen=True)
class ListenerInputs:
    outbound_listener: OutboundListenerInputs
    inbound_listener: InboundListenerInputs


@dataclass(frozen=True)
class RouteInputs:
    services: Same[tuple[Service, ...]]
    # The VirtualServices a sidecar of the namespace sees, in Istio's order.
    virtual_services: Same[tuple[VirtualService, ...]]
    # Of each service, in order: its DestinationRule for this proxy (the routes' hash keys).
    destination_rules: Same[tuple[DestinationRule | None, ...]]
    namespace: str
    # The proxy's labels when one of those VirtualServices matches by sourceLabels, else ()
    # (so that the proxies of a namespace keep sharing one route set).
    client_labels: Labels
    domain_suffix: str
    allow_any: bool


def inputs_of(cls: type[Inputs], facts: object) -> Inputs:
    """A ``cls`` whose every field is the attribute of ``facts`` with the same name."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = _FIELD_NAMES[cls] = tuple(field.name for field in fields)
    return cls(**{name: getattr(facts, name) for name in names})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
