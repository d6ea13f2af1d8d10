"""A VirtualService's ``spec``, read and checked as istiod's validating webhook does."""

from __future__ import annotations

import base64
import binascii
from http import HTTPStatus

from controlplane.networking import parts
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    MESH_GATEWAY,
    CorsPolicy,
    Delegate,
    FaultAbort,
    FaultDelay,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    MatchKind,
    RedirectPortSource,
    RegexRewrite,
    RouteDestination,
    StringMatch,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
    VirtualService,
)
from meshlib.syntax import split_list

_HTTP_ROUTE_FIELDS = (
    "name",
    "match",
    "route",
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercentage",
    "mirrorPercent",
    "mirrors",
    "corsPolicy",
    "headers",
)
_MATCH_FIELDS = (
    "name",
    "uri",
    "scheme",
    "method",
    "authority",
    "headers",
    "withoutHeaders",
    "queryParams",
    "port",
    "sourceLabels",
    "sourceNamespace",
    "gateways",
    "ignoreUriCase",
)
_REDIRECT_TARGETS = ("uri", "authority", "port", "derivePort", "scheme", "prefixRewrite")
_HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
_MAX_DIRECT_BODY = 1024 * 1024
_HTTP_STATUSES = frozenset(status.value for status in HTTPStatus)
# Envoy's retry conditions Istio accepts in retryOn (besides HTTP status codes).
_RETRY_ON = frozenset(
    (
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        # gRPC status names
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    )
)


SPEC_FIELDS = ("hosts", "gateways", "http", "tcp", "tls", "exportTo")
UNMODELLED_SPEC_FIELDS: tuple[str, ...] = ()


def virtual_service_spec(
    ctx: Context, raw: object, name: str, namespace: str, created: str
) -> VirtualService:
    """The checked value of a VirtualService whose ``spec`` is ``raw``."""
    spec = Fields(ctx, "spec", raw, SPEC_FIELDS, UNMODELLED_SPEC_FIELDS)
    gateways = _gateways(spec)
    hosts = parts.hosts(spec)
    if "*" in hosts and (not gateways or MESH_GATEWAY in gateways):
        spec.fail("hosts", "'*' is not allowed for a VirtualService of the mesh gateway (sidecars)")
    return VirtualService(
        name=name,
        namespace=namespace,
        hosts=hosts,
        gateways=gateways,
        http=tuple(_http_route(route) for route in spec.list_of("http", _HTTP_ROUTE_FIELDS)),
        tcp=tuple(_tcp_route(route) for route in spec.list_of("tcp", ("match", "route"))),
        tls=tuple(_tls_route(route) for route in spec.list_of("tls", ("match", "route"))),
        export_to=parts.export_to(spec, namespace),
        created=created,
    )


def _gateways(f: Fields) -> tuple[str, ...]:
    """``mesh``, ``<gateway>`` (the VirtualService's namespace) or ``<namespace>/<gateway>``."""
    gateways = f.strings("gateways")
    for i, gateway in enumerate(gateways):
        namespace, slash, name = gateway.rpartition("/")
        valid_namespace = not slash or parts.is_dns1123_label(namespace)
        if "*" in gateway or not valid_namespace or parts.host_problem(name):
            f.ctx.fail(
                f"{f.at('gateways')}[{i}]",
                f"{gateway!r} is not mesh, a gateway name or namespace/name",
            )
    return gateways


# --- http ---------------------------------------------------------------------------------------


def _http_route(f: Fields) -> HTTPRoute:
    actions = [key for key in ("route", "redirect", "directResponse", "delegate") if f.has(key)]
    for answer in ("redirect", "directResponse"):  # answered by the proxy: nothing to alter
        for key in ("rewrite", "fault"):
            if f.has(answer) and f.has(key):
                f.fail(key, f"a route with {answer} answers itself: it cannot have {key}")
    if len(actions) != 1:
        problem = "needs" if not actions else f"has {' and '.join(actions)}; it needs"
        f.ctx.fail(
            f.path,
            f"an HTTP route {problem} exactly one of route, redirect, directResponse, delegate",
        )
    route = tuple(
        _http_route_destination(d) for d in f.list_of("route", ("destination", "weight", "headers"))
    )
    if f.has("route") and not route:
        f.fail("route", "at least one destination is required")
    _check_weights(f, "route", [d.weight for d in route])
    rewrite = _rewrite(f)
    headers = _headers(f, "headers")
    _check_authority_rewrites(f, rewrite, headers)
    return HTTPRoute(
        name=f.text("name"),
        match=tuple(_match(m) for m in f.list_of("match", _MATCH_FIELDS, ("statPrefix",))),
        route=route,
        redirect=_redirect(f),
        direct_response=_direct_response(f),
        delegate=_delegate(f),
        rewrite=rewrite,
        timeout=f.duration("timeout"),
        retries=_retries(f),
        fault=_fault(f),
        mirrors=_mirrors(f),
        cors_policy=_cors(f),
        headers=headers,
    )


def _check_authority_rewrites(
    f: Fields, rewrite: HTTPRewrite | None, headers: Headers | None
) -> None:
    """The authority may be rewritten in one place: ``rewrite.authority`` or one header."""
    places = ["rewrite.authority"] if rewrite and rewrite.authority else []
    if headers:
        for op, pairs in (("set", headers.request.set), ("add", headers.request.add)):
            places += [f"headers.request.{op}.{name}" for name, _ in pairs if _is_authority(name)]
    if len(places) > 1:
        f.ctx.fail(f"{f.path}.{places[1]}", f"the authority is already rewritten by {places[0]}")


def _check_weights(f: Fields, key: str, weights: list[int | None]) -> None:
    """With more than one destination the weights must add up to 100 (a lone one may omit it).

    The error names the last weight: the sum is wrong there at the latest.
    """
    if len(weights) < 2:
        return
    total = sum(w or 0 for w in weights)
    if total != 100:
        last = f"{f.at(key)}[{len(weights) - 1}].weight"
        f.ctx.fail(last, f"weights must add up to 100, they add up to {total}")


def _http_route_destination(f: Fields) -> HTTPRouteDestination:
    return HTTPRouteDestination(
        destination=parts.destination(f),
        weight=f.integer("weight", 0, 100),
        headers=_headers(f, "headers"),
    )


def _match(f: Fields) -> HTTPMatchRequest:
    for key in ("scheme", "method", "authority"):  # unlike uri, Envoy takes no empty match here
        match = parts.string_match(f, key)
        if match is not None and not match.value:
            f.fail(key, f"an empty {match.kind} match is allowed on uri only")
    source_namespace = f.text("sourceNamespace")
    if source_namespace and not parts.is_dns1123_label(source_namespace):
        f.fail("sourceNamespace", f"{source_namespace!r} is not a namespace name")
    return HTTPMatchRequest(
        name=f.text("name"),
        uri=parts.string_match(f, "uri"),
        scheme=parts.string_match(f, "scheme"),
        method=parts.string_match(f, "method"),
        authority=parts.string_match(f, "authority"),
        headers=parts.header_matches(f, "headers"),
        # Istio's one non-RE2 regex: "*" in withoutHeaders means "the header is present".
        without_headers=parts.header_matches(f, "withoutHeaders", star_is_presence=True),
        query_params=parts.header_matches(f, "queryParams", names_are_headers=False),
        port=f.port("port"),
        source_labels=f.string_map("sourceLabels"),
        source_namespace=source_namespace,
        gateways=f.strings("gateways"),
        ignore_uri_case=bool(f.flag("ignoreUriCase")),
    )


def _redirect(f: Fields) -> HTTPRedirect | None:
    raw = f.fields(
        "redirect",
        ("uri", "authority", "port", "derivePort", "scheme", "redirectCode"),
        unmodelled=("prefixRewrite",),
    )
    if raw is None:
        return None
    if not any(raw.has(key) for key in _REDIRECT_TARGETS):
        f.fail("redirect", "a redirect needs at least one of uri, authority, scheme, port")
    if raw.has("uri") and raw.has("prefixRewrite"):
        raw.fail("prefixRewrite", "a redirect sets uri or prefixRewrite, not both")
    if raw.has("port") and raw.has("derivePort"):
        raw.fail("derivePort", "a redirect sets port or derivePort, not both")
    code = raw.integer("redirectCode", 300, 399)
    if raw.text("scheme") not in ("", "http", "https"):
        raw.fail("scheme", f"{raw.text('scheme')!r} is not http or https")
    return HTTPRedirect(
        uri=raw.text("uri"),
        authority=raw.text("authority"),
        port=raw.port("port"),
        derive_port=raw.enum("derivePort", RedirectPortSource),
        scheme=raw.text("scheme"),
        redirect_code=code or 301,
    )


def _direct_response(f: Fields) -> HTTPDirectResponse | None:
    raw = f.fields("directResponse", ("status", "body"))
    if raw is None:
        return None
    status = raw.integer("status", 200, 599)
    if status is None:
        raw.fail("status", "a direct response needs a status")
    body = raw.fields("body", ("string", "bytes"))
    content: bytes | None = None
    if body is not None:
        if body.has("string") == body.has("bytes"):
            raw.fail("body", "a body needs exactly one of string, bytes")
        if body.has("string"):
            content = body.text("string").encode()
        else:
            try:
                content = base64.b64decode(body.text("bytes"), validate=True)
            except binascii.Error:
                body.fail("bytes", "must be base64")
    if content is not None and len(content) > _MAX_DIRECT_BODY:
        raw.fail(
            "body", f"{len(content)} bytes is too large (at most 1 MiB: it rides in every push)"
        )
    return HTTPDirectResponse(status=status, body=content)


def _delegate(f: Fields) -> Delegate | None:
    raw = f.fields("delegate", ("name", "namespace"))
    if raw is None:
        return None
    if not raw.text("name"):
        raw.fail("name", "a delegate needs the name of a VirtualService")
    return Delegate(name=raw.text("name"), namespace=raw.text("namespace"))


def _rewrite(f: Fields) -> HTTPRewrite | None:
    raw = f.fields("rewrite", ("uri", "authority", "uriRegexRewrite"))
    if raw is None:
        return None
    regex = raw.fields("uriRegexRewrite", ("match", "rewrite"))
    if not (raw.text("uri") or raw.text("authority") or regex is not None):
        f.fail("rewrite", "a rewrite needs uri, authority or uriRegexRewrite")
    if regex is not None and raw.text("uri"):
        raw.fail("uriRegexRewrite", "a rewrite sets uri or uriRegexRewrite, not both")
    return HTTPRewrite(
        uri=raw.text("uri"),
        authority=raw.text("authority"),
        uri_regex_rewrite=None
        if regex is None
        else RegexRewrite(
            match=parts.check_regex(f.ctx, regex.at("match"), regex.text("match")),
            rewrite=regex.text("rewrite"),
        ),
    )


def _retries(f: Fields) -> HTTPRetry | None:
    raw = f.fields(
        "retries",
        ("attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"),
        unmodelled=("retryIgnorePreviousHosts", "backoff"),
    )
    if raw is None:
        return None
    attempts = raw.integer("attempts", 0) or 0
    others = [key for key in ("perTryTimeout", "retryOn", "retryRemoteLocalities") if raw.has(key)]
    if attempts == 0 and others:
        raw.fail(others[0], "retries with attempts 0 (off) cannot set anything else")
    retry_on = tuple(split_list(raw.text("retryOn")))
    for condition in retry_on:
        if condition not in _RETRY_ON and not _is_http_status(condition):
            raw.fail("retryOn", f"{condition!r} is not a retry condition or HTTP status code")
    return HTTPRetry(
        attempts=attempts,
        per_try_timeout=raw.duration("perTryTimeout"),
        retry_on=retry_on,
        retry_remote_localities=raw.flag("retryRemoteLocalities"),
    )


def _is_http_status(text: str) -> bool:
    return text.isdigit() and int(text) in _HTTP_STATUSES


def _fault_percentage(f: Fields) -> float | None:
    """``percentage`` (a double) or the deprecated integer ``percent``, not both."""
    if f.has("percentage") and f.has("percent"):
        f.fail("percent", "set percentage or the deprecated percent, not both")
    percent = f.integer("percent", 0, 100)
    return parts.percent(f, "percentage") if percent is None else float(percent)


def _fault(f: Fields) -> HTTPFaultInjection | None:
    raw = f.fields("fault", ("delay", "abort"))
    if raw is None:
        return None
    if not (raw.has("delay") or raw.has("abort")):
        raw.ctx.fail(raw.path, "a fault needs a delay or an abort")
    delay = raw.fields("delay", ("fixedDelay", "percentage", "percent", "exponentialDelay"))
    abort = raw.fields("abort", ("httpStatus", "grpcStatus", "percentage", "http2Error"))
    return HTTPFaultInjection(
        delay=None if delay is None else _delay(delay),
        abort=None if abort is None else _abort(abort),
    )


def _delay(f: Fields) -> FaultDelay:
    if f.has("exponentialDelay"):
        f.fail("exponentialDelay", "Istio does not support exponential delays: use fixedDelay")
    fixed = f.duration("fixedDelay")
    if fixed is None:
        f.fail("fixedDelay", "a delay needs fixedDelay")
    return FaultDelay(fixed_delay=fixed, percentage=_fault_percentage(f))


def _abort(f: Fields) -> FaultAbort:
    if f.has("http2Error"):
        f.fail("http2Error", "Istio does not support HTTP/2 error aborts: use httpStatus")
    if f.has("httpStatus") == f.has("grpcStatus"):
        f.ctx.fail(f.path, "an abort needs exactly one of httpStatus, grpcStatus")
    return FaultAbort(
        http_status=f.integer("httpStatus", 200, 599),
        grpc_status=f.text("grpcStatus"),
        percentage=parts.percent(f, "percentage"),
    )


def _mirrors(f: Fields) -> tuple[HTTPMirrorPolicy, ...]:
    """``mirrors``, or the older ``mirror`` with ``mirrorPercentage``/``mirrorPercent``."""
    if f.has("mirror") and f.has("mirrors"):
        f.fail("mirrors", "set mirror or mirrors, not both")
    if f.has("mirrorPercentage") and f.has("mirrorPercent"):
        f.fail("mirrorPercent", "set mirrorPercentage or the deprecated mirrorPercent, not both")
    mirrors = tuple(
        HTTPMirrorPolicy(
            destination=parts.destination(m), percentage=parts.percent(m, "percentage")
        )
        for m in f.list_of("mirrors", ("destination", "percentage"))
    )
    legacy = f.integer("mirrorPercent", 0, 100)
    percentage = parts.percent(f, "mirrorPercentage") if legacy is None else float(legacy)
    if not f.has("mirror"):
        if percentage is not None:
            f.fail("mirrorPercentage" if legacy is None else "mirrorPercent", "needs mirror")
        return mirrors
    return (HTTPMirrorPolicy(destination=parts.destination(f, "mirror"), percentage=percentage),)


def _cors(f: Fields) -> CorsPolicy | None:
    raw = f.fields(
        "corsPolicy",
        (
            "allowOrigins",
            "allowOrigin",
            "allowMethods",
            "allowHeaders",
            "exposeHeaders",
            "maxAge",
            "allowCredentials",
        ),
        unmodelled=("unmatchedPreflights",),
    )
    if raw is None:
        return None
    # The deprecated ``allowOrigin`` strings are exact matches, as Istio reads them.
    origins = [StringMatch(MatchKind.EXACT, origin) for origin in raw.strings("allowOrigin")]
    for path, item in raw.items("allowOrigins"):
        origin = parts.match_value(raw.ctx, path, item)
        if origin is None or not origin.value:
            raw.ctx.fail(path, "an allowed origin needs a non-empty exact, prefix or regex")
        origins.append(origin)
    methods = raw.strings("allowMethods")
    for i, method in enumerate(methods):
        if method not in _HTTP_METHODS:
            raw.ctx.fail(f"{raw.at('allowMethods')}[{i}]", f"{method!r} is not an HTTP method")
    max_age = raw.duration("maxAge")
    if max_age is not None and max_age != int(max_age):
        raw.fail("maxAge", "browsers cache preflights in whole seconds: use e.g. 24h or 30s")
    return CorsPolicy(
        allow_origins=tuple(origins),
        allow_methods=methods,
        allow_headers=_header_names(raw, "allowHeaders"),
        expose_headers=_header_names(raw, "exposeHeaders"),
        max_age=max_age,
        allow_credentials=raw.flag("allowCredentials"),
    )


def _header_names(f: Fields, key: str) -> tuple[str, ...]:
    names = f.strings(key)
    for i, name in enumerate(names):
        parts.header_name(f.ctx, f"{f.at(key)}[{i}]", name)
    return names


def _headers(f: Fields, key: str) -> Headers | None:
    raw = f.fields(key, ("request", "response"))
    if raw is None:
        return None
    return Headers(
        request=_header_operations(raw, "request") or HeaderOperations(),
        response=_header_operations(raw, "response") or HeaderOperations(),
    )


def _header_operations(f: Fields, key: str) -> HeaderOperations | None:
    """Headers to set, add or remove. Pseudo-headers and Host are Envoy's own, except that a
    request may set its authority (``:authority`` or ``Host``), as Istio allows."""
    raw = f.fields(key, ("set", "add", "remove"))
    if raw is None:
        return None
    for op in ("set", "add", "remove"):
        names = [name for name, _ in raw.string_map(op)] if op != "remove" else raw.strings(op)
        for i, name in enumerate(names):
            path = f"{raw.at(op)}.{name}" if op != "remove" else f"{raw.at(op)}[{i}]"
            parts.header_name(f.ctx, path, name)
            internal = name.startswith(":") or name.lower() == "host"
            if internal and not (key == "request" and op != "remove" and _is_authority(name)):
                f.ctx.fail(path, f"{name!r} is Envoy's own header: a route cannot {op} it")
    return HeaderOperations(
        set=raw.string_map("set"), add=raw.string_map("add"), remove=raw.strings("remove")
    )


def _is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


# --- tcp and tls --------------------------------------------------------------------------------


def _route_destinations(f: Fields) -> tuple[RouteDestination, ...]:
    route = tuple(
        RouteDestination(destination=parts.destination(d), weight=d.integer("weight", 0, 100))
        for d in f.list_of("route", ("destination", "weight"))
    )
    if not route:
        f.fail("route", "at least one destination is required")
    _check_weights(f, "route", [d.weight for d in route])
    return route


def _tcp_route(f: Fields) -> TCPRoute:
    known = ("destinationSubnets", "port", "sourceLabels", "sourceNamespace", "gateways")
    unmodelled = ("sourceSubnet",)
    return TCPRoute(
        match=tuple(
            L4MatchAttributes(
                destination_subnets=parts.subnets(m, "destinationSubnets"),
                port=m.port("port"),
                source_labels=m.string_map("sourceLabels"),
                source_namespace=m.text("sourceNamespace"),
                gateways=m.strings("gateways"),
            )
            for m in f.list_of("match", known, unmodelled)
        ),
        route=_route_destinations(f),
    )


def _tls_route(f: Fields) -> TLSRoute:
    known = (
        "sniHosts",
        "destinationSubnets",
        "port",
        "sourceLabels",
        "sourceNamespace",
        "gateways",
    )
    matches = tuple(_tls_match(m) for m in f.list_of("match", known))
    if not matches:
        f.fail("match", "a TLS route needs at least one match")
    return TLSRoute(match=matches, route=_route_destinations(f))


def _tls_match(m: Fields) -> TLSMatchAttributes:
    sni_hosts = m.strings("sniHosts")
    if not sni_hosts:
        m.fail("sniHosts", "a TLS match needs at least one SNI host")
    for i, host in enumerate(sni_hosts):
        parts.check_host(m.ctx, f"{m.at('sniHosts')}[{i}]", host)
    return TLSMatchAttributes(
        sni_hosts=sni_hosts,
        destination_subnets=parts.subnets(m, "destinationSubnets"),
        port=m.port("port"),
        source_labels=m.string_map("sourceLabels"),
        source_namespace=m.text("sourceNamespace"),
        gateways=m.strings("gateways"),
    )
