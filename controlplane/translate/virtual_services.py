"""A VirtualService's ``http`` rules as the Envoy routes of one service port's virtual host.

Rules are tried in order and the first that matches takes the request; each ``match`` entry
of a rule is one Envoy route (entries are ORed, the conditions inside one are ANDed), and a
rule without ``match`` takes everything (prefix ``/``). Nothing follows the last rule: a
request no rule matches gets Envoy's 404, as with Istio, which adds no default route to a
virtual host built from a VirtualService. Routes stop at the first catch-all, which hides
everything after it.

Conditions on the client (``sourceLabels``, ``sourceNamespace``, ``gateways``) and on the
port (``port``) are decided here, for the proxy and port being generated: a match that does
not hold for them is left out, as Istio does.

Which VirtualService applies to a host is :mod:`controlplane.translate.virtual_service_selection`'s
job; the cluster names are :func:`controlplane.translate.names.outbound_cluster`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from controlplane.model import Service, ServicePort
from controlplane.networking.model import (
    MESH_GATEWAY,
    ConsistentHash,
    Destination,
    HeaderMatch,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    Labels,
    MatchKind,
    RedirectPortSource,
    StringMatch,
    VirtualService,
)
from controlplane.translate import names, routes
from controlplane.translate import virtual_service_extras as extras
from controlplane.translate.common import duration
from controlplane.translate.virtual_service_selection import (
    mesh_virtual_services,
    resolve_host,
    virtual_services_for_host,
)

# Istio's catch-all regex in header matches: "the header is present" (not RE2's "*").
_PRESENCE_REGEX = "*"
# Envoy's names of the redirect codes it can send: keyed by exactly the codes
# controlplane.networking.unsupported.REDIRECT_CODES calls honoured (a test holds them equal).
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Client:
    """The sidecar routes are generated for; rules with source conditions are decided by it."""

    namespace: str
    labels: Labels = ()


@dataclass(frozen=True)
class RouteContext:
    """What routing one service port needs besides the VirtualService.

    ``port`` is the service port being routed (the route configuration's port). ``hashes``
    maps a cluster name to the consistent hash its DestinationRule asks for (the route's
    hash policies; the cluster's ring hash is the cluster's translation).
    """

    port: int
    client: Client
    domain_suffix: str
    hashes: Mapping[str, ConsistentHash] = field(default_factory=dict)


def outbound_route_configs(
    services: Iterable[Service],
    virtual_services: Iterable[VirtualService],
    client: Client,
    domain_suffix: str,
    allow_any: bool,
    hashes: Mapping[str, ConsistentHash] | None = None,
) -> list[route_pb2.RouteConfiguration]:
    """:func:`controlplane.translate.routes.outbound_route_configs` with VirtualServices:
    the same configurations, each service port's routes replaced by its VirtualService's.

    Without VirtualServices the result is the same as today's, byte for byte.
    """
    ordered = mesh_virtual_services(virtual_services, client.namespace)
    configs = []
    for number, entries in sorted(routes.http_ports(services).items()):
        context = RouteContext(number, client, domain_suffix, hashes or {})
        config = route_pb2.RouteConfiguration(name=names.outbound_route(number))
        config.validate_clusters.value = False  # as today: routes may precede their clusters
        config.virtual_hosts.extend(
            service_virtual_host(service, port, ordered, context) for service, port in entries
        )
        config.virtual_hosts.append(routes.fallback_virtual_host(allow_any))
        configs.append(config)
    return configs


def service_virtual_host(
    service: Service,
    port: ServicePort,
    ordered: Sequence[VirtualService],
    context: RouteContext,
) -> rc.VirtualHost:
    """The service port's virtual host: the routes of the first VirtualService of
    ``ordered`` (:func:`~controlplane.translate.virtual_service_selection.mesh_virtual_services`)
    that yields any for this port and client, else today's default route, which still hashes
    as the service's DestinationRule says (Istio puts the hash policy on its default route
    too: a consistent hash needs no VirtualService)."""
    vhost = routes.service_virtual_host(
        service, port, context.client.namespace, context.domain_suffix
    )
    candidates = virtual_services_for_host(
        service.fqdn(context.domain_suffix), ordered, context.domain_suffix
    )
    for virtual_service in candidates:
        translated = http_routes(virtual_service, context)
        if translated:
            del vhost.routes[:]
            vhost.routes.extend(translated)
            return vhost
    for route in vhost.routes:
        extras.apply_hash_policies(route.route, (route.route.cluster,), context.hashes)
    return vhost


def http_routes(virtual_service: VirtualService, context: RouteContext) -> list[rc.Route]:
    """The routes of a VirtualService for ``context``'s port and client, in order.

    A ``delegate`` rule is left out (delegation is not honoured yet), as Istio leaves it out
    when the delegate VirtualService is missing.
    """
    out: list[rc.Route] = []
    for rule in virtual_service.http:
        if rule.delegate is not None:
            continue
        for match in rule.match or (None,):
            if match is not None and not _applies(match, context):
                continue
            route = _route(virtual_service, rule, match, context)
            if route is None:
                continue
            out.append(route)
            if _catches_all(route.match):
                return out
        if not rule.match:
            return out  # a rule without match takes everything, even when left out here
    return out


def _applies(match: HTTPMatchRequest, context: RouteContext) -> bool:
    """Whether the match may hold here: the port it names and the client it selects."""
    if match.port is not None and match.port != context.port:
        return False
    if match.gateways:
        return MESH_GATEWAY in match.gateways
    client = context.client
    if not set(match.source_labels) <= set(client.labels):
        return False
    return not match.source_namespace or match.source_namespace == client.namespace


def _catches_all(match: rc.RouteMatch) -> bool:
    path = match.WhichOneof("path_specifier")
    catch_all = (path == "prefix" and match.prefix == "/") or (
        path == "safe_regex" and match.safe_regex.regex == ".*"
    )
    return catch_all and not match.headers and not match.query_parameters


def _route(
    virtual_service: VirtualService,
    rule: HTTPRoute,
    match: HTTPMatchRequest | None,
    context: RouteContext,
) -> rc.Route | None:
    name = rule.name
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    out = rc.Route(name=name, match=route_match(match))
    authority = _apply_headers(out, rule.headers)
    if rule.redirect is not None:
        if rule.redirect.redirect_code not in _REDIRECT_CODES:
            return None  # Istio leaves such a route without an action, which Envoy refuses
        out.redirect.CopyFrom(redirect_action(rule.redirect, context.port))
    elif rule.direct_response is not None:
        out.direct_response.CopyFrom(direct_response_action(rule.direct_response))
    else:
        _route_action(out, virtual_service.namespace, rule, authority, context)
    extras.apply_per_filter(out, rule)
    return out


# --- match ----------------------------------------------------------------------------------


def route_match(match: HTTPMatchRequest | None) -> rc.RouteMatch:
    """One ``match`` entry as an Envoy match; None (a rule without match) takes every path."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers = [_header_matcher(h.name, h.match) for h in match.headers]
    headers += [_absent_matcher(h) for h in match.without_headers]
    out.headers.extend(sorted(headers, key=lambda h: h.name))
    if match.uri is not None:
        _set_path(out, match.uri)
    out.case_sensitive.value = not match.ignore_uri_case
    for pseudo, value in ((":method", match.method), (":authority", match.authority)):
        if value is not None:
            out.headers.append(_header_matcher(pseudo, value))
    if match.scheme is not None:
        out.headers.append(_header_matcher(":scheme", match.scheme))
    out.query_parameters.extend(_query_matcher(q) for q in match.query_params)
    return out


def _set_path(out: rc.RouteMatch, uri: StringMatch) -> None:
    if uri.kind is MatchKind.EXACT:
        out.path = uri.value
    elif uri.kind is MatchKind.PREFIX:
        out.prefix = uri.value
    else:
        out.safe_regex.regex = uri.value


def _is_presence(match: StringMatch | None) -> bool:
    return match is None or (match.kind is MatchKind.REGEX and match.value == _PRESENCE_REGEX)


def _header_matcher(name: str, match: StringMatch | None) -> rc.HeaderMatcher:
    if _is_presence(match):
        return rc.HeaderMatcher(name=name, present_match=True)
    assert match is not None
    return rc.HeaderMatcher(name=name, string_match=extras.string_matcher(match))


def _absent_matcher(header: HeaderMatch) -> rc.HeaderMatcher:
    """A ``withoutHeaders`` entry: the inverted match; a missing header counts as empty."""
    out = _header_matcher(header.name, header.match)
    out.invert_match = True
    if not _is_presence(header.match):
        out.treat_missing_header_as_empty = True
    return out


def _query_matcher(param: HeaderMatch) -> rc.QueryParameterMatcher:
    if _is_presence(param.match):
        return rc.QueryParameterMatcher(name=param.name, present_match=True)
    assert param.match is not None
    return rc.QueryParameterMatcher(
        name=param.name, string_match=extras.string_matcher(param.match)
    )


# --- headers --------------------------------------------------------------------------------


def _is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


def _header_options(
    pairs: Iterable[tuple[str, str]], action: base_pb2.HeaderValueOption.HeaderAppendAction
) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=action
        )
        for key, value in sorted(pairs)
        if not (key.startswith(":") or key.lower() == "host")
    ]


def _additions(operations: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    """``set`` overwrites, ``add`` appends; Envoy's own headers are left out."""
    return _header_options(
        operations.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    ) + _header_options(operations.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)


def _removals(operations: HeaderOperations) -> list[str]:
    return [k for k in operations.remove if not (k.startswith(":") or k.lower() == "host")]


def _authority(headers: Headers) -> str:
    """The authority a request header operation sets (``set`` wins over ``add``)."""
    for pairs in (headers.request.set, headers.request.add):
        for key, value in pairs:
            if _is_authority(key):
                return value
    return ""


def _apply_headers(
    out: rc.Route | rc.WeightedCluster.ClusterWeight, headers: Headers | None
) -> str:
    """Add the header operations to a route (or weighted cluster); the authority they set."""
    if headers is None:
        return ""
    out.request_headers_to_add.extend(_additions(headers.request))
    out.request_headers_to_remove.extend(_removals(headers.request))
    out.response_headers_to_add.extend(_additions(headers.response))
    out.response_headers_to_remove.extend(_removals(headers.response))
    return _authority(headers)


# --- redirect and direct response -----------------------------------------------------------


def redirect_action(redirect: HTTPRedirect, port: int) -> rc.RedirectAction:
    """Istio's redirect; a sidecar never terminates TLS, so the default scheme is http."""
    out = rc.RedirectAction(
        host_redirect=redirect.authority, response_code=_REDIRECT_CODES[redirect.redirect_code]
    )
    if redirect.uri:
        out.path_redirect = redirect.uri
    if redirect.scheme:
        out.scheme_redirect = redirect.scheme
    if redirect.port is not None or redirect.derive_port is not None:
        target = redirect.port
        if redirect.derive_port is RedirectPortSource.FROM_REQUEST_PORT:
            target = port
        if target and target != _DEFAULT_PORTS.get(redirect.scheme or "http"):
            out.port_redirect = target
    return out


def direct_response_action(response: HTTPDirectResponse) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=response.status)
    if response.body is not None:
        try:
            out.body.inline_string = response.body.decode()
        except UnicodeDecodeError:
            out.body.inline_bytes = response.body
    return out


# --- route action ---------------------------------------------------------------------------


def destination_cluster(destination: Destination, namespace: str, context: RouteContext) -> str:
    """``outbound|<port>|<subset>|<fqdn>`` of a destination written in ``namespace``.

    Without a port, the port being routed: Istio looks the destination up among the services
    of this port only (``servicesByName`` in ``buildSidecarOutboundHTTPRouteConfig``), so its
    "single port" default is this port too.
    """
    fqdn = resolve_host(destination.host, namespace, context.domain_suffix)
    port = context.port if destination.port is None else destination.port
    return names.outbound_cluster(port, fqdn, subset=destination.subset)


def _route_action(
    out: rc.Route, namespace: str, rule: HTTPRoute, authority: str, context: RouteContext
) -> None:
    action = out.route
    action.timeout.CopyFrom(duration(rule.timeout or 0))  # unset: none, streams must work
    if rule.rewrite is not None:
        if rule.rewrite.uri_regex_rewrite is not None:
            action.regex_rewrite.pattern.regex = rule.rewrite.uri_regex_rewrite.match
            action.regex_rewrite.substitution = rule.rewrite.uri_regex_rewrite.rewrite
        elif rule.rewrite.uri:
            action.prefix_rewrite = rule.rewrite.uri
        authority = rule.rewrite.authority or authority
    if authority:
        action.host_rewrite_literal = authority
    clusters = [destination_cluster(d.destination, namespace, context) for d in rule.route]
    if len(rule.route) == 1:
        action.cluster = clusters[0]
        dest_authority = _apply_headers(out, rule.route[0].headers)
        if dest_authority and not authority:
            action.host_rewrite_literal = dest_authority
    else:
        action.weighted_clusters.clusters.extend(
            _weighted(d, cluster)
            for d, cluster in zip(rule.route, clusters, strict=True)
            if d.weight
        )
    extras.apply_hash_policies(action, clusters, context.hashes)
    extras.apply_mirrors(action, rule.mirrors, lambda d: destination_cluster(d, namespace, context))
    policy = retry_policy(rule.retries)
    if policy is not None:
        action.retry_policy.CopyFrom(policy)


def _weighted(destination: HTTPRouteDestination, cluster: str) -> rc.WeightedCluster.ClusterWeight:
    out = rc.WeightedCluster.ClusterWeight(name=cluster)
    out.weight.value = destination.weight or 0
    authority = _apply_headers(out, destination.headers)
    if authority:
        out.host_rewrite_literal = authority
    return out


def retry_policy(retries: HTTPRetry | None) -> rc.RetryPolicy | None:
    """Istio's retries; unset is the mesh's default policy, ``attempts: 0`` none at all.

    ``retryOn`` names go to ``retry_on`` as written (Envoy's HTTP and gRPC conditions are
    the names Istio takes), HTTP status codes to ``retriable_status_codes``.
    """
    if retries is None:
        return rc.RetryPolicy(
            retry_on=routes.RETRY_ON,
            num_retries={"value": routes.RETRY_ATTEMPTS},
            retriable_status_codes=[503],
        )
    if retries.attempts <= 0:
        return None
    conditions = [c for c in retries.retry_on if not c.isdigit()]
    codes = [int(c) for c in retries.retry_on if c.isdigit()]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    out = rc.RetryPolicy(
        retry_on=",".join(conditions) if retries.retry_on else routes.RETRY_ON,
        num_retries={"value": retries.attempts},
        retriable_status_codes=codes,
    )
    if retries.per_try_timeout is not None:
        out.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if retries.retry_remote_localities:
        out.retry_priority.CopyFrom(extras.previous_priorities())
    return out
