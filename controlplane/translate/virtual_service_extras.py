"""The parts of an HTTP rule that ride beside its action: fault, CORS, mirrors, hash policy.

Faults and CORS are per-route configurations of HTTP filters (``typed_per_filter_config``):
they take effect only where the outbound HTTP connection manager carries the filter before
the router (:func:`http_filters`), with an empty configuration each route's replaces. Mirrors
and hash policies are fields of the route action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.priority.previous_priorities.v3 import (
    previous_priorities_config_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from controlplane.networking.model import (
    ConsistentHash,
    CorsPolicy,
    Destination,
    HTTPFaultInjection,
    HTTPMirrorPolicy,
    HTTPRoute,
    MatchKind,
    StringMatch,
)
from controlplane.translate.common import duration, packed

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
# gRPC status names Istio accepts in ``fault.abort.grpcStatus``, with their codes.
GRPC_STATUS = {
    name: code
    for code, name in enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
}


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    if match.kind is MatchKind.EXACT:
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind is MatchKind.PREFIX:
        return string_pb2.StringMatcher(prefix=match.value)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))


def http_filters() -> list[hcm_pb2.HttpFilter]:
    """The filters the outbound HTTP connection manager must carry, in this order and before
    the router, for the per-route fault and CORS configurations to take effect.

    Both are empty, so a route without its own configuration passes untouched.
    """
    return [
        hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=packed(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=CORS_FILTER, typed_config=packed(cors_pb2.Cors())),
    ]


def apply_per_filter(out: rc.Route, rule: HTTPRoute) -> None:
    if rule.fault is not None:
        out.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed(http_fault(rule.fault)))
    if rule.cors_policy is not None:
        out.typed_per_filter_config[CORS_FILTER].CopyFrom(packed(cors_policy(rule.cors_policy)))


def fractional_percent(percent: float | None) -> percent_pb2.FractionalPercent:
    """Istio's percentages (0-100, fractions allowed) in millionths; None is 0."""
    return percent_pb2.FractionalPercent(
        numerator=round((percent or 0) * 10_000),
        denominator=percent_pb2.FractionalPercent.MILLION,
    )


def http_fault(fault: HTTPFaultInjection) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay.fixed_delay),
                percentage=fractional_percent(fault.delay.percentage),
            )
        )
    if fault.abort is not None:
        abort = fault_pb2.FaultAbort(percentage=fractional_percent(fault.abort.percentage))
        if fault.abort.http_status is not None:
            abort.http_status = fault.abort.http_status
        else:
            status = fault.abort.grpc_status
            abort.grpc_status = int(status) if status.isdigit() else GRPC_STATUS[status]
        out.abort.CopyFrom(abort)
    return out


def cors_policy(policy: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in policy.allow_origins],
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
        filter_enabled=base_pb2.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(
                numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
            )
        ),
    )
    if policy.max_age is not None:
        out.max_age = str(int(policy.max_age))
    if policy.allow_credentials is not None:
        out.allow_credentials.value = policy.allow_credentials
    return out


def apply_mirrors(
    action: rc.RouteAction,
    mirrors: Iterable[HTTPMirrorPolicy],
    cluster_of: Callable[[Destination], str],
) -> None:
    """Mirror a share of requests (100% when unset; 0% is no mirror at all, as Istio)."""
    for mirror in mirrors:
        percent = 100.0 if mirror.percentage is None else mirror.percentage
        if percent <= 0:
            continue
        policy = rc.RouteAction.RequestMirrorPolicy(
            cluster=cluster_of(mirror.destination),
            runtime_fraction=base_pb2.RuntimeFractionalPercent(
                default_value=fractional_percent(percent)
            ),
        )
        policy.trace_sampled.value = False
        action.request_mirror_policies.append(policy)


def hash_policy(consistent_hash: ConsistentHash) -> rc.RouteAction.HashPolicy | None:
    """The route's half of a consistent hash (the cluster's ring hash is the other half)."""
    out = rc.RouteAction.HashPolicy()
    if consistent_hash.http_header_name:
        out.header.header_name = consistent_hash.http_header_name
    elif consistent_hash.http_cookie is not None:
        cookie = consistent_hash.http_cookie
        out.cookie.name = cookie.name
        out.cookie.path = cookie.path
        if cookie.ttl is not None:
            out.cookie.ttl.CopyFrom(duration(cookie.ttl))
    elif consistent_hash.use_source_ip:
        out.connection_properties.source_ip = True
    elif consistent_hash.http_query_parameter_name:
        out.query_parameter.name = consistent_hash.http_query_parameter_name
    else:
        return None
    return out


def apply_hash_policies(
    action: rc.RouteAction, clusters: Iterable[str], hashes: Mapping[str, ConsistentHash]
) -> None:
    """One hash policy per distinct consistent hash of the route's destination clusters."""
    seen: list[rc.RouteAction.HashPolicy] = []
    for cluster in clusters:
        consistent_hash = hashes.get(cluster)
        policy = None if consistent_hash is None else hash_policy(consistent_hash)
        if policy is not None and policy not in seen:
            seen.append(policy)
    action.hash_policy.extend(seen)


def previous_priorities() -> rc.RetryPolicy.RetryPriority:
    """``retryRemoteLocalities``: retry in other localities, Istio's configuration."""
    return rc.RetryPolicy.RetryPriority(
        name="envoy.retry_priorities.previous_priorities",
        typed_config=packed(
            previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2)
        ),
    )
