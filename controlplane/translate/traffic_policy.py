"""A DestinationRule's traffic policy on an outbound cluster, as Istio applies it.

Each part of :class:`~controlplane.networking.model.TrafficPolicy` maps to its own cluster
fields: the load balancer to ``lb_policy`` and its config, the connection pool to the
circuit breakers, timeouts and HTTP protocol options, outlier detection to
``outlier_detection`` and the panic threshold. A part left unset keeps what
:mod:`controlplane.translate.clusters` builds, which already holds Istio's defaults
(LEAST_REQUEST, a 10s connect timeout, no circuit-breaker limits). The policy's ``tls`` is
not applied here: it decides how the cluster is built (see
:mod:`controlplane.translate.destination_rules`).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, outlier_detection_pb2
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.model import Protocol
from controlplane.networking.model import (
    ConnectionPoolSettings,
    H2UpgradePolicy,
    HTTPSettings,
    LoadBalancerSettings,
    OutlierDetection,
    SimpleLB,
    TCPSettings,
    TrafficPolicy,
)
from controlplane.translate.clusters import HTTP_PROTOCOL_OPTIONS
from controlplane.translate.common import duration, packed

# Envoy's own default ring size, which Istio also sends when the rule names none.
DEFAULT_MINIMUM_RING_SIZE = 1024
# Istio enforces every consecutive-error check it turns on at 100%.
_ENFORCE_ALL = 100

_SIMPLE_POLICIES = {
    SimpleLB.UNSPECIFIED: Cluster.LEAST_REQUEST,  # Istio's default
    SimpleLB.LEAST_CONN: Cluster.LEAST_REQUEST,
    SimpleLB.LEAST_REQUEST: Cluster.LEAST_REQUEST,
    SimpleLB.ROUND_ROBIN: Cluster.ROUND_ROBIN,
    SimpleLB.RANDOM: Cluster.RANDOM,
}


def upgrades_to_http2(policy: TrafficPolicy | None, protocol: Protocol) -> bool:
    """Whether ``h2UpgradePolicy: UPGRADE`` makes an HTTP/1.1 port's cluster speak HTTP/2.

    Only plain HTTP ports are upgraded (as Istio). ``DEFAULT`` follows the mesh config's
    ``h2UpgradePolicy``, whose default (the only value Remora has) is not to upgrade.
    """
    pool = policy.connection_pool if policy is not None else None
    http = pool.http if pool is not None else None
    return (
        protocol is Protocol.HTTP
        and http is not None
        and http.h2_upgrade_policy is H2UpgradePolicy.UPGRADE
    )


def apply_traffic_policy(cluster: Cluster, policy: TrafficPolicy, protocol: Protocol) -> None:
    """Set ``policy``'s load balancer, connection pool and outlier detection on ``cluster``
    (an outbound cluster of a port speaking ``protocol``, after any HTTP/2 upgrade)."""
    if policy.load_balancer is not None:
        _apply_load_balancer(cluster, policy.load_balancer)
    if policy.connection_pool is not None:
        _apply_connection_pool(cluster, policy.connection_pool, protocol)
    if policy.outlier_detection is not None:
        _apply_outlier_detection(cluster, policy.outlier_detection)


# --- load balancer ------------------------------------------------------------------------------


def _apply_load_balancer(cluster: Cluster, settings: LoadBalancerSettings) -> None:
    if cluster.type == Cluster.ORIGINAL_DST:
        return  # the connection's own destination is the host: nothing to balance (as Istio)
    if settings.simple is SimpleLB.PASSTHROUGH:
        # Skip load balancing: connect to the address the caller connected to.
        cluster.ClearField("eds_cluster_config")
        cluster.ClearField("load_assignment")  # an ExternalName's DNS host, refused here
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        return
    if settings.consistent_hash is not None:
        # The hash key is per request: routes name it (see destination_rules.consistent_hash).
        cluster.lb_policy = Cluster.RING_HASH
        ring_size = settings.consistent_hash.minimum_ring_size or DEFAULT_MINIMUM_RING_SIZE
        cluster.ring_hash_lb_config.minimum_ring_size.value = ring_size
        return
    cluster.lb_policy = _SIMPLE_POLICIES[settings.simple or SimpleLB.UNSPECIFIED]
    if settings.warmup_duration is not None:
        _apply_slow_start(cluster, settings.warmup_duration)


def _apply_slow_start(cluster: Cluster, window: float) -> None:
    """``warmupDurationSecs``: new endpoints get traffic ramped up over ``window``; Envoy
    supports it for round robin and least request only (Istio ignores it for the others)."""
    if cluster.lb_policy == Cluster.ROUND_ROBIN:
        cluster.round_robin_lb_config.slow_start_config.slow_start_window.CopyFrom(duration(window))
    elif cluster.lb_policy == Cluster.LEAST_REQUEST:
        cluster.least_request_lb_config.slow_start_config.slow_start_window.CopyFrom(
            duration(window)
        )


# --- connection pool ----------------------------------------------------------------------------


def _apply_connection_pool(
    cluster: Cluster, pool: ConnectionPoolSettings, protocol: Protocol
) -> None:
    # Istio sends zero limits as "not set": the template's unlimited thresholds stay.
    thresholds = cluster.circuit_breakers.thresholds[0]
    before = http_options(cluster, protocol)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.CopyFrom(before)
    if pool.tcp is not None:
        _apply_tcp(cluster, thresholds, pool.tcp, options.common_http_protocol_options)
    if pool.http is not None:
        _apply_http(thresholds, pool.http, options)
    if protocol.is_http and options != before:
        # HTTP options mean something to HTTP clusters only (a TCP proxy ignores them).
        set_http_options(cluster, options)


def set_http_options(
    cluster: Cluster, options: http_protocol_options_pb2.HttpProtocolOptions
) -> None:
    """Replace the cluster's HTTP protocol options (Envoy reads them by extension name)."""
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(packed(options))


def http_options(
    cluster: Cluster, protocol: Protocol
) -> http_protocol_options_pb2.HttpProtocolOptions:
    """The cluster's HTTP protocol options, or explicit HTTP/1.1 ones if it has none."""
    options = http_protocol_options_pb2.HttpProtocolOptions()
    existing = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
    if existing is not None:
        existing.Unpack(options)
    elif protocol.is_http2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    return options


def _apply_tcp(
    cluster: Cluster,
    thresholds: circuit_breaker_pb2.CircuitBreakers.Thresholds,
    tcp: TCPSettings,
    common: protocol_pb2.HttpProtocolOptions,
) -> None:
    if tcp.max_connections:
        thresholds.max_connections.value = tcp.max_connections
    if tcp.connect_timeout is not None:
        cluster.connect_timeout.CopyFrom(duration(tcp.connect_timeout))
    if tcp.max_connection_duration is not None:
        common.max_connection_duration.CopyFrom(duration(tcp.max_connection_duration))
    keepalive = tcp.tcp_keepalive
    if keepalive is not None:
        # Envoy takes whole seconds; an unset field keeps the OS default.
        socket = cluster.upstream_connection_options.tcp_keepalive
        socket.SetInParent()
        if keepalive.probes:
            socket.keepalive_probes.value = keepalive.probes
        if keepalive.time is not None:
            socket.keepalive_time.value = int(keepalive.time)
        if keepalive.interval is not None:
            socket.keepalive_interval.value = int(keepalive.interval)


def _apply_http(
    thresholds: circuit_breaker_pb2.CircuitBreakers.Thresholds,
    http: HTTPSettings,
    options: http_protocol_options_pb2.HttpProtocolOptions,
) -> None:
    if http.http1_max_pending_requests:
        thresholds.max_pending_requests.value = http.http1_max_pending_requests
    if http.http2_max_requests:
        thresholds.max_requests.value = http.http2_max_requests
    if http.max_retries:
        thresholds.max_retries.value = http.max_retries
    common = options.common_http_protocol_options
    if http.idle_timeout is not None:
        common.idle_timeout.CopyFrom(duration(http.idle_timeout))
    if http.max_requests_per_connection:
        common.max_requests_per_connection.value = http.max_requests_per_connection
    explicit = options.explicit_http_config
    if http.max_concurrent_streams and explicit.HasField("http2_protocol_options"):
        explicit.http2_protocol_options.max_concurrent_streams.value = http.max_concurrent_streams


# --- outlier detection --------------------------------------------------------------------------


def _apply_outlier_detection(cluster: Cluster, outlier: OutlierDetection) -> None:
    out = cluster.outlier_detection
    out.enforcing_success_rate.value = 0  # Istio never ejects by success rate
    if outlier.consecutive_errors:
        # The deprecated field counts gateway errors only (istio/api#617).
        out.consecutive_gateway_failure.value = outlier.consecutive_errors
        out.enforcing_consecutive_gateway_failure.value = _ENFORCE_ALL
        out.enforcing_consecutive_5xx.value = 0
    if outlier.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = outlier.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = _enforcing(outlier.consecutive_5xx_errors)
    if outlier.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = outlier.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = _enforcing(
            outlier.consecutive_gateway_errors
        )
    _apply_local_origin(out, outlier)
    if outlier.interval is not None:
        out.interval.CopyFrom(duration(outlier.interval))
    if outlier.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time))
    if outlier.max_ejection_percent:
        out.max_ejection_percent.value = outlier.max_ejection_percent
    # Istio always sets the panic threshold with outlier detection, to 0 (no panic mode)
    # unless minHealthPercent says otherwise: services with few pods would otherwise send
    # to ejected hosts as soon as half of them are out.
    cluster.common_lb_config.healthy_panic_threshold.value = float(outlier.min_health_percent or 0)


def _apply_local_origin(
    out: outlier_detection_pb2.OutlierDetection, outlier: OutlierDetection
) -> None:
    if not outlier.split_external_local_origin_errors:
        return
    out.split_external_local_origin_errors = True
    if outlier.consecutive_local_origin_failures:
        out.consecutive_local_origin_failure.value = outlier.consecutive_local_origin_failures
        out.enforcing_consecutive_local_origin_failure.value = _ENFORCE_ALL
    out.enforcing_local_origin_success_rate.value = 0


def _enforcing(threshold: int) -> int:
    """A check with a zero threshold is off (enforced at 0%), any other at 100%."""
    return _ENFORCE_ALL if threshold > 0 else 0
