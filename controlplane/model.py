"""The mesh model: an immutable snapshot of what the control plane knows about the cluster.

Config sources (Kubernetes watches, a directory of YAML) turn Kubernetes objects into these
plain, frozen values (see :mod:`controlplane.convert`); :class:`controlplane.store.MeshStore`
assembles them into a :class:`MeshSnapshot`; translation reads only snapshots. Nothing here
knows about Envoy, gRPC or the Kubernetes client.

Frozen dataclasses are hashable and compare by value, which the translation relies on to
build each Envoy resource once and reuse it while its inputs stay equal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshlib.meshconfig import MeshConfig

if TYPE_CHECKING:  # networking.model builds on this module's Protocol
    from controlplane.networking.model import (
        DestinationRule,
        ServiceEntry,
        Sidecar,
        VirtualService,
    )

DEFAULT_DOMAIN_SUFFIX = "cluster.local"


class Protocol(enum.StrEnum):
    """Application protocol of a service port, as Istio names it."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    MYSQL = "MySQL"
    REDIS = "Redis"
    UDP = "UDP"

    @property
    def is_http(self) -> bool:
        """Whether Envoy should parse this port as HTTP (route by Host, retries, L7 stats)."""
        return self in _HTTP_PROTOCOLS

    @property
    def is_http2(self) -> bool:
        """Whether the upstream connection must speak HTTP/2."""
        return self in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)


_HTTP_PROTOCOLS = frozenset({Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB})

# Port-name prefixes and appProtocol values, as Istio's protocol selection documents them.
_PROTOCOL_NAMES: Mapping[str, Protocol] = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "h2c": Protocol.HTTP2,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "https": Protocol.HTTPS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "mongo": Protocol.MONGO,
    "mysql": Protocol.MYSQL,
    "redis": Protocol.REDIS,
    "udp": Protocol.UDP,
    # Kubernetes' own appProtocol values (KEP-3726).
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}


def infer_protocol(
    port_name: str | None, app_protocol: str | None, transport: str = "TCP"
) -> Protocol:
    """The protocol of a service port, the way Istio selects it.

    UDP ports are UDP whatever their name. Otherwise ``appProtocol`` wins, then the port
    name: ``<protocol>`` or ``<protocol>-<suffix>`` (``http-web``, ``grpc-api``), case
    insensitive. Anything else is TCP: Remora does not sniff protocols, so an unnamed HTTP
    port is proxied as opaque TCP (it works, without L7 routing or metrics).
    """
    if transport.upper() == "UDP":
        return Protocol.UDP
    if app_protocol:
        known = _PROTOCOL_NAMES.get(app_protocol.lower())
        if known is not None:
            return known
    if port_name:
        lowered = port_name.lower()
        if lowered in _PROTOCOL_NAMES:
            return _PROTOCOL_NAMES[lowered]
        prefix = lowered.split("-", 1)[0]
        # "grpc-web" is itself hyphenated: check it before splitting it into "grpc".
        if lowered.startswith("grpc-web"):
            return Protocol.GRPC_WEB
        if prefix in _PROTOCOL_NAMES:
            return _PROTOCOL_NAMES[prefix]
    return Protocol.TCP


class ServiceKind(enum.StrEnum):
    """How a Service is reached, which decides how it is translated."""

    CLUSTER_IP = "ClusterIP"  # a virtual IP; also NodePort and LoadBalancer services
    HEADLESS = "Headless"  # clusterIP: None; clients connect to endpoint IPs directly
    EXTERNAL_NAME = "ExternalName"  # a DNS alias to a name outside the cluster


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    target_port: int | str | None = None  # a number, a container port name, or unset (= port)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    kind: ServiceKind
    ports: tuple[ServicePort, ...]
    cluster_ips: tuple[str, ...] = ()
    selector: tuple[tuple[str, str], ...] | None = None  # None: endpoints are managed by hand
    external_name: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def fqdn(self, domain_suffix: str = DEFAULT_DOMAIN_SUFFIX) -> str:
        return f"{self.name}.{self.namespace}.svc.{domain_suffix}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether this service's selector picks a pod with ``labels`` (never, without one)."""
        if not self.selector:
            return False
        return all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class Endpoint:
    """One address of an EndpointSlice with its conditions (Kubernetes semantics).

    ``ready`` is ``serving and not terminating``; a terminating endpoint may still be
    serving while it drains.
    """

    address: str
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone: str | None = None
    node_name: str | None = None
    pod_name: str | None = None


@dataclass(frozen=True)
class EndpointSlice:
    name: str
    namespace: str
    service_name: str
    ports: tuple[tuple[str, int], ...]  # (service port name, endpoint port number)
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    transport: str = "TCP"


@dataclass(frozen=True)
class Workload:
    """A pod, as far as the mesh cares: where it is, who it runs as, what it listens on."""

    name: str
    namespace: str
    ips: tuple[str, ...]
    service_account: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    # Whether a sidecar runs beside the app (it was injected), so it accepts mesh mTLS:
    # clients then upgrade to mTLS on their own (auto-mTLS). See ``convert.is_meshed``.
    meshed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)

    def resolve_port(self, target: int | str | None, default: int) -> int | None:
        """A service ``targetPort`` as a number: named ports resolve against the containers."""
        if target is None:
            return default
        if isinstance(target, int):
            return target
        for port in self.ports:
            if port.name == target:
                return port.port
        return None


class MtlsMode(enum.StrEnum):
    """``PeerAuthentication`` mutual TLS modes (security.istio.io/v1)."""

    UNSET = "UNSET"  # inherit from the parent scope (port -> workload -> namespace -> mesh)
    DISABLE = "DISABLE"  # plaintext only
    PERMISSIVE = "PERMISSIVE"  # mTLS and plaintext both accepted (Istio's default)
    STRICT = "STRICT"  # mTLS only


@dataclass(frozen=True)
class PeerAuthentication:
    """How a scope's workloads accept connections (Istio's ``PeerAuthentication``).

    Without a selector it covers its namespace (the whole mesh when in the root namespace);
    with one, the matching pods of its namespace. ``port_modes`` override the mode per
    workload (container) port. ``created`` is the creationTimestamp (RFC 3339, which sorts
    as text): at one level the oldest policy wins, as in Istio.
    """

    name: str
    namespace: str
    mode: MtlsMode = MtlsMode.UNSET
    selector: tuple[tuple[str, str], ...] | None = None
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()
    created: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def selects(self, labels: Mapping[str, str]) -> bool:
        """Whether the selector picks a pod with ``labels`` (False without a selector)."""
        if not self.selector:
            return False
        return all(labels.get(k) == v for k, v in self.selector)


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, eq=False)
class MeshSnapshot:
    """Everything translation needs, consistent as of one moment. Never mutated.

    The objects of each kind come with the indexes translation looks things up by, all
    built by the store (:class:`controlplane.store.MeshStore`), which hands a snapshot the
    very same map as the previous one for every kind, and index, that has not changed: an
    endpoint change re-sorts no service, and translation recognises what it can reuse.

    ``generation`` increases with every snapshot a store produces; it is for logs and
    debugging, never part of a resource version (versions are content hashes).
    """

    mesh: MeshConfig = field(default_factory=MeshConfig)
    services: Mapping[tuple[str, str], Service] = field(default_factory=dict)
    endpoint_slices: Mapping[tuple[str, str], EndpointSlice] = field(default_factory=dict)
    workloads: Mapping[tuple[str, str], Workload] = field(default_factory=dict)
    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    peer_authentications: Mapping[tuple[str, str], PeerAuthentication] = field(default_factory=dict)
    # Istio's traffic API (controlplane.networking), by (namespace, name): read and checked,
    # not translated yet (controlplane.config_status.TRANSLATED_KINDS).
    virtual_services: Mapping[tuple[str, str], VirtualService] = field(default_factory=dict)
    destination_rules: Mapping[tuple[str, str], DestinationRule] = field(default_factory=dict)
    service_entries: Mapping[tuple[str, str], ServiceEntry] = field(default_factory=dict)
    sidecars: Mapping[tuple[str, str], Sidecar] = field(default_factory=dict)
    domain_suffix: str = DEFAULT_DOMAIN_SUFFIX
    generation: int = 0
    # The generation at which each kind (by Kubernetes kind name) last changed.
    revisions: Mapping[str, int] = field(default_factory=dict)
    # Service -> its EndpointSlices, in slice-name order (deterministic output); an unchanged
    # service keeps the very same tuple from snapshot to snapshot.
    endpoints_by_service: Mapping[tuple[str, str], tuple[EndpointSlice, ...]] = field(
        default_factory=dict
    )
    # Endpoint address -> the services it belongs to: finds a proxy's own services fast.
    services_by_endpoint_address: Mapping[str, frozenset[tuple[str, str]]] = field(
        default_factory=dict
    )
    # Namespace -> its services, in name order.
    services_by_namespace: Mapping[str, tuple[Service, ...]] = field(default_factory=dict)
    # (namespace, key, value) of the first label of each service's selector -> those services:
    # a pod can only be selected by a service indexed under one of its own labels, so finding
    # a proxy's services looks at a handful of candidates, not every service.
    services_by_selector_label: Mapping[tuple[str, str, str], tuple[Service, ...]] = field(
        default_factory=dict
    )
    # Pod IP -> the pod (the first by namespace and name): what an endpoint without a pod
    # reference is.
    workloads_by_ip: Mapping[str, Workload] = field(default_factory=dict)
    # Service -> the generation at which a pod behind it (by endpoint address) last changed:
    # a pod change then redoes the auto-mTLS of the services it is behind, found without
    # comparing every pod of two snapshots.
    pod_changes: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def workload_of(self, namespace: str, endpoint: Endpoint) -> Workload | None:
        """The pod behind an endpoint: by its targetRef when set, else by address."""
        if endpoint.pod_name is not None:
            found = self.workloads.get((namespace, endpoint.pod_name))
            if found is not None:
                return found
        return self.workloads_by_ip.get(endpoint.address)

    def slices_for(self, service: Service) -> tuple[EndpointSlice, ...]:
        return self.endpoints_by_service.get(service.key, ())

    def services_selecting(self, namespace: str, labels: Mapping[str, str]) -> list[Service]:
        """The services of ``namespace`` whose selector matches ``labels``, in name order."""
        index = self.services_by_selector_label
        found = {
            service.name: service
            for label, value in labels.items()
            for service in index.get((namespace, label, value), ())
            if service.selects(labels)
        }
        return [found[name] for name in sorted(found)]
