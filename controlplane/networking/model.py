"""Istio's networking API (``networking.istio.io/v1``) as frozen values.

:mod:`controlplane.networking.parse` makes these from Kubernetes objects after checking them
as istiod's validating webhook does, so every value here is valid: translation reads them
without checking again. Field names follow Istio's (snake_case); an optional field Istio
leaves unset is ``None`` (or empty), never a default guessed here, so translation applies
Istio's default in one place; the comments name that default.

Durations are float seconds, percentages float 0-100, label sets sorted ``(key, value)``
pairs. All values are hashable and compare by value, as :mod:`controlplane.model`'s are.

Not modelled (valid in Istio, not honoured by Remora yet) is kept as field paths in each
top-level value's ``unmodelled``; :func:`controlplane.networking.unsupported.unsupported`
lists them with the modelled ones Remora does not honour yet either.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, replace

from controlplane.model import Protocol

Labels = tuple[tuple[str, str], ...]
"""A label set or selector as sorted ``(key, value)`` pairs."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MESH_GATEWAY = "mesh"
"""The reserved gateway name meaning every sidecar in the mesh (Istio's default)."""


# --- shared parts -------------------------------------------------------------------------------


class MatchKind(enum.StrEnum):
    """Istio's ``StringMatch`` oneof: how a request attribute is compared."""

    EXACT = "exact"
    PREFIX = "prefix"
    REGEX = "regex"  # RE2 in Envoy; checked with Python's re, which accepts nearly all of RE2


@dataclass(frozen=True)
class StringMatch:
    kind: MatchKind
    value: str


@dataclass(frozen=True)
class HeaderMatch:
    """One ``headers`` / ``withoutHeaders`` / ``queryParams`` entry.

    ``match`` None is Istio's empty ``{}``: the header (or parameter) is present, any value.
    """

    name: str
    match: StringMatch | None


@dataclass(frozen=True)
class Destination:
    """Where traffic goes: a service host (short names resolve in the rule's namespace)."""

    host: str
    subset: str = ""
    port: int | None = None  # None: the service's only port (Istio requires it with several)


# --- VirtualService -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True)
class HTTPRouteDestination:
    destination: Destination
    weight: int | None = None  # None: a lone destination takes all traffic
    headers: Headers | None = None


@dataclass(frozen=True)
class RouteDestination:
    """A TCP or TLS route's destination."""

    destination: Destination
    weight: int | None = None


@dataclass(frozen=True)
class HTTPMatchRequest:
    """One ``match`` entry; all its conditions must hold (the entries of a route are ORed)."""

    name: str = ""
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    without_headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[HeaderMatch, ...] = ()
    port: int | None = None
    source_labels: Labels = ()
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()  # empty: the VirtualService's own gateways
    ignore_uri_case: bool = False


class RedirectPortSource(enum.StrEnum):
    """``derivePort``: which port a redirect keeps when it sets none."""

    FROM_PROTOCOL_DEFAULT = "FROM_PROTOCOL_DEFAULT"
    FROM_REQUEST_PORT = "FROM_REQUEST_PORT"


@dataclass(frozen=True)
class HTTPRedirect:
    uri: str = ""
    authority: str = ""
    port: int | None = None
    derive_port: RedirectPortSource | None = None
    scheme: str = ""
    redirect_code: int = 301  # Istio's default: 301 Moved Permanently


@dataclass(frozen=True)
class HTTPDirectResponse:
    status: int
    body: bytes | None = None  # ``body.string`` UTF-8 encoded or ``body.bytes`` decoded


@dataclass(frozen=True)
class Delegate:
    """``delegate``: another VirtualService holds this route (modelled, not honoured yet)."""

    name: str
    namespace: str


@dataclass(frozen=True)
class RegexRewrite:
    match: str
    rewrite: str


@dataclass(frozen=True)
class HTTPRewrite:
    uri: str = ""
    authority: str = ""
    uri_regex_rewrite: RegexRewrite | None = None


@dataclass(frozen=True)
class HTTPRetry:
    """``retries``. Without it Istio retries twice (mesh config's default policy)."""

    attempts: int
    per_try_timeout: float | None = None  # None: the route's timeout
    retry_on: tuple[
        str, ...
    ] = ()  # empty: Istio's "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    retry_remote_localities: bool | None = None  # None: Istio's default, false


@dataclass(frozen=True)
class FaultDelay:
    fixed_delay: float
    percentage: float | None = None  # ``percent`` folded in; None: Istio sends 0% (none)


@dataclass(frozen=True)
class FaultAbort:
    """Exactly one of ``http_status`` and ``grpc_status`` is set."""

    http_status: int | None = None
    grpc_status: str = ""
    percentage: float | None = None  # None: Istio sends 0% (none), as for a delay


@dataclass(frozen=True)
class HTTPFaultInjection:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True)
class HTTPMirrorPolicy:
    destination: Destination
    percentage: float | None = None  # None: Istio's default, 100


@dataclass(frozen=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class HTTPRoute:
    """One ``http`` rule: the first whose ``match`` holds (or that has none) takes the request.

    Exactly one of ``route``, ``redirect``, ``direct_response`` and ``delegate`` is set.
    The deprecated single ``mirror`` with ``mirrorPercentage``/``mirrorPercent`` is folded
    into ``mirrors`` (Istio refuses both forms on one route).
    """

    name: str = ""
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: float | None = None  # None: Istio's default, no timeout (0s)
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirrors: tuple[HTTPMirrorPolicy, ...] = ()
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


@dataclass(frozen=True)
class L4MatchAttributes:
    """A ``tcp`` rule's ``match`` entry."""

    destination_subnets: tuple[IPNetwork, ...] = ()
    port: int | None = None
    source_labels: Labels = ()
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True)
class TCPRoute:
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True)
class TLSMatchAttributes:
    """A ``tls`` rule's ``match`` entry: by SNI, without terminating TLS."""

    sni_hosts: tuple[str, ...]
    destination_subnets: tuple[IPNetwork, ...] = ()
    port: int | None = None
    source_labels: Labels = ()
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True)
class TLSRoute:
    """A ``tls`` rule (modelled, not honoured yet)."""

    match: tuple[TLSMatchAttributes, ...]
    route: tuple[RouteDestination, ...] = ()


@dataclass(frozen=True)
class VirtualService:
    """Istio's ``VirtualService``: how requests to ``hosts`` are routed.

    ``gateways`` empty means ``mesh`` (every sidecar), Istio's default.
    """

    name: str
    namespace: str
    hosts: tuple[str, ...]
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    export_to: tuple[str, ...] = ()  # empty: Istio's default, every namespace
    created: str = ""
    unmodelled: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


# --- DestinationRule ----------------------------------------------------------------------------


class SimpleLB(enum.StrEnum):
    UNSPECIFIED = "UNSPECIFIED"  # Istio's default: LEAST_REQUEST
    LEAST_CONN = "LEAST_CONN"  # deprecated name of LEAST_REQUEST
    RANDOM = "RANDOM"
    PASSTHROUGH = "PASSTHROUGH"
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_REQUEST = "LEAST_REQUEST"


@dataclass(frozen=True)
class HTTPCookie:
    name: str
    path: str = ""
    ttl: float | None = None  # None: a session cookie Envoy does not generate


@dataclass(frozen=True)
class ConsistentHash:
    """``consistentHash``: exactly one of the four keys is set."""

    http_header_name: str = ""
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool = False
    http_query_parameter_name: str = ""
    minimum_ring_size: int | None = None  # None: Envoy's default, 1024


@dataclass(frozen=True)
class LoadBalancerSettings:
    """At most one of ``simple`` and ``consistent_hash``; neither is Istio's LEAST_REQUEST."""

    simple: SimpleLB | None = None
    consistent_hash: ConsistentHash | None = None
    warmup_duration: float | None = None  # ``warmupDurationSecs``; None: no slow start


@dataclass(frozen=True)
class TcpKeepalive:
    probes: int | None = None  # None: the OS default (9 on Linux)
    time: float | None = None  # None: the OS default (7200s on Linux)
    interval: float | None = None  # None: the OS default (75s on Linux)


@dataclass(frozen=True)
class TCPSettings:
    max_connections: int | None = None  # None: Envoy's default, 2^32-1
    connect_timeout: float | None = None  # None: Istio's default, 10s
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: float | None = None  # None: unlimited


class H2UpgradePolicy(enum.StrEnum):
    DEFAULT = "DEFAULT"  # mesh config's h2UpgradePolicy
    DO_NOT_UPGRADE = "DO_NOT_UPGRADE"
    UPGRADE = "UPGRADE"


@dataclass(frozen=True)
class HTTPSettings:
    """``connectionPool.http``; None everywhere is Envoy's default (2^32-1, no limit)."""

    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None  # None or 0: unlimited
    max_retries: int | None = None
    idle_timeout: float | None = None  # None: Istio's default, 1h
    h2_upgrade_policy: H2UpgradePolicy | None = None
    use_client_protocol: bool = False
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class ConnectionPoolSettings:
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


@dataclass(frozen=True)
class OutlierDetection:
    """``outlierDetection``; the None defaults are Istio's."""

    consecutive_errors: int | None = None  # deprecated: folded by Istio into 5xx errors
    consecutive_5xx_errors: int | None = None  # None: 5; 0 turns this check off
    consecutive_gateway_errors: int | None = None  # None: off
    consecutive_local_origin_failures: int | None = None  # None: 5 when split is on
    split_external_local_origin_errors: bool = False
    interval: float | None = None  # None: 10s
    base_ejection_time: float | None = None  # None: 30s
    max_ejection_percent: int | None = None  # None: 10
    min_health_percent: int | None = None  # None: 0


class TLSMode(enum.StrEnum):
    DISABLE = "DISABLE"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"
    ISTIO_MUTUAL = "ISTIO_MUTUAL"


@dataclass(frozen=True)
class ClientTLSSettings:
    mode: TLSMode = TLSMode.DISABLE  # Istio's default when ``tls`` is present without mode
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool | None = None  # None: verify (Istio's default)


@dataclass(frozen=True)
class PortTrafficPolicy:
    """One ``portLevelSettings`` entry: overrides the policy for one destination port."""

    port: int
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()


@dataclass(frozen=True)
class Subset:
    """A named group of a service's endpoints, by labels; its policy overrides the rule's."""

    name: str
    labels: Labels
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True)
class DestinationRule:
    """Istio's ``DestinationRule``: how traffic to ``host`` is sent once routed there."""

    name: str
    namespace: str
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    # ``matchLabels``; None: every workload the rule is visible to
    workload_selector: Labels | None = None
    export_to: tuple[str, ...] = ()  # empty: Istio's default, every namespace
    created: str = ""
    unmodelled: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def subset(self, name: str) -> Subset | None:
        return next((subset for subset in self.subsets if subset.name == name), None)

    def policy_for(self, subset: str = "", port: int | None = None) -> TrafficPolicy | None:
        """The policy for traffic to ``subset`` (or the whole host) on ``port``, as Istio
        merges it: the rule's policy, its settings for the port, then the subset's policy
        and the subset's settings for the port, each replacing whole parts (load balancer,
        connection pool, outlier detection, TLS) and leaving the others. The result has no
        port-level settings left; None when nothing applies.
        """
        policy = _overlay(self.traffic_policy, _port_settings(self.traffic_policy, port))
        chosen = self.subset(subset) if subset else None
        if chosen is not None and chosen.traffic_policy is not None:
            policy = _overlay(policy, chosen.traffic_policy)
            policy = _overlay(policy, _port_settings(chosen.traffic_policy, port))
        return policy


_POLICY_PARTS = ("load_balancer", "connection_pool", "outlier_detection", "tls")


def _port_settings(policy: TrafficPolicy | None, port: int | None) -> PortTrafficPolicy | None:
    if policy is None or port is None:
        return None
    return next((p for p in policy.port_level_settings if p.port == port), None)


def _overlay(
    base: TrafficPolicy | None, top: TrafficPolicy | PortTrafficPolicy | None
) -> TrafficPolicy | None:
    """``base`` with each part ``top`` sets replaced by ``top``'s, port-level settings gone."""
    if base is None and top is None:
        return None
    parts = {
        name: value for name in _POLICY_PARTS if (value := getattr(top, name, None)) is not None
    }
    return replace(base or TrafficPolicy(), port_level_settings=(), **parts)


# --- ServiceEntry -------------------------------------------------------------------------------


class Location(enum.StrEnum):
    MESH_EXTERNAL = "MESH_EXTERNAL"  # Istio's default: no mTLS, no sidecar on the other end
    MESH_INTERNAL = "MESH_INTERNAL"


class Resolution(enum.StrEnum):
    NONE = "NONE"  # Istio's default: forward to the address the caller connected to
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"


@dataclass(frozen=True)
class ServiceEntryPort:
    number: int
    protocol: Protocol
    name: str
    target_port: int | None = None  # None: the same as ``number``


@dataclass(frozen=True)
class WorkloadEntry:
    """One ``endpoints`` entry: an IP (STATIC) or a DNS name (DNS)."""

    address: str
    ports: tuple[tuple[str, int], ...] = ()  # port name -> endpoint port, sorted by name
    labels: Labels = ()
    network: str = ""
    locality: str = ""
    weight: int | None = None
    service_account: str = ""


@dataclass(frozen=True)
class ServiceEntry:
    """Istio's ``ServiceEntry``: a service the mesh cannot discover from Kubernetes."""

    name: str
    namespace: str
    hosts: tuple[str, ...]
    addresses: tuple[IPNetwork, ...] = ()
    ports: tuple[ServiceEntryPort, ...] = ()
    location: Location = Location.MESH_EXTERNAL
    resolution: Resolution = Resolution.NONE
    endpoints: tuple[WorkloadEntry, ...] = ()
    # ``labels``: the pods (and WorkloadEntries) of the namespace that are its endpoints;
    # None: none (``endpoints`` or DNS instead); (): every one of them
    workload_selector: Labels | None = None
    export_to: tuple[str, ...] = ()  # empty: Istio's default, every namespace
    subject_alt_names: tuple[str, ...] = ()
    created: str = ""
    unmodelled: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


# --- Sidecar ------------------------------------------------------------------------------------


class CaptureMode(enum.StrEnum):
    DEFAULT = "DEFAULT"  # Istio's default: as the pod's interception mode
    IPTABLES = "IPTABLES"
    NONE = "NONE"


@dataclass(frozen=True)
class SidecarPort:
    number: int
    protocol: Protocol
    name: str


@dataclass(frozen=True)
class EgressHost:
    """``namespace/dnsName``: ``*`` any namespace, ``.`` the Sidecar's, ``~`` none."""

    namespace: str
    dns_name: str


@dataclass(frozen=True)
class EgressListener:
    hosts: tuple[EgressHost, ...]
    port: SidecarPort | None = None  # None: every port (must then be the last listener)
    bind: str = ""
    capture_mode: CaptureMode = CaptureMode.DEFAULT


class OutboundTrafficMode(enum.StrEnum):
    REGISTRY_ONLY = "REGISTRY_ONLY"  # the default of a policy written without a mode
    ALLOW_ANY = "ALLOW_ANY"  # mesh config's default when a Sidecar sets no policy


@dataclass(frozen=True)
class Sidecar:
    """Istio's ``Sidecar``: what the selected proxies may reach (Istio's has no exportTo).

    ``workload_selector`` is Istio's ``labels`` (() matches every pod). Without one, the
    Sidecar covers every pod of its namespace that no selecting Sidecar covers; at most one
    such Sidecar per namespace is a rule across objects, for the store to apply.
    """

    name: str
    namespace: str
    egress: tuple[EgressListener, ...] = ()
    workload_selector: Labels | None = None
    outbound_traffic_policy: OutboundTrafficMode | None = None  # None: mesh config's
    created: str = ""
    unmodelled: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)
