"""A DestinationRule's ``spec``, read and checked as istiod's validating webhook does."""

from __future__ import annotations

from controlplane.networking import parts
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHash,
    DestinationRule,
    H2UpgradePolicy,
    HTTPCookie,
    HTTPSettings,
    LoadBalancerSettings,
    OutlierDetection,
    PortTrafficPolicy,
    SimpleLB,
    Subset,
    TcpKeepalive,
    TCPSettings,
    TLSMode,
    TrafficPolicy,
)

_POLICY_FIELDS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_UNMODELLED_POLICY_FIELDS = ("tunnel", "proxyProtocol", "retryBudget")
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")


SPEC_FIELDS = ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector")
UNMODELLED_SPEC_FIELDS: tuple[str, ...] = ()


def destination_rule_spec(
    ctx: Context, raw: object, name: str, namespace: str, created: str
) -> DestinationRule:
    """The checked value of a DestinationRule whose ``spec`` is ``raw``."""
    spec = Fields(ctx, "spec", raw, SPEC_FIELDS, UNMODELLED_SPEC_FIELDS)
    host = spec.text("host")
    if not host:
        spec.fail("host", "a DestinationRule needs a host")
    parts.check_host(ctx, spec.at("host"), host)
    policy = _traffic_policy(spec)
    subsets = tuple(
        _subset(s) for s in spec.list_of("subsets", ("name", "labels", "trafficPolicy"))
    )
    seen: set[str] = set()
    for i, subset in enumerate(subsets):
        if subset.name in seen:
            ctx.fail(f"{spec.at('subsets')}[{i}].name", f"subset {subset.name!r} is defined twice")
        seen.add(subset.name)
    selector = parts.workload_selector(spec, "matchLabels")
    export_to = parts.export_to(spec, namespace)
    if selector is not None and set(export_to) - {".", namespace}:
        spec.fail("exportTo", "a rule with a workloadSelector applies in its own namespace only")
    return DestinationRule(
        name=name,
        namespace=namespace,
        host=host,
        traffic_policy=policy,
        subsets=subsets,
        workload_selector=selector,
        export_to=export_to,
        created=created,
    )


def _subset(f: Fields) -> Subset:
    name = f.text("name")
    if not name:
        f.fail("name", "a subset needs a name")
    parts.check_label(f.ctx, f.at("name"), name, "subset name")
    return Subset(
        name=name,
        labels=f.string_map("labels"),  # empty: every endpoint (istiod admits it)
        traffic_policy=_traffic_policy(f),
    )


def _traffic_policy(f: Fields) -> TrafficPolicy | None:
    """``trafficPolicy`` of the rule or a subset; port-level entries override it per port."""
    known = (*_POLICY_FIELDS, "portLevelSettings")
    raw = f.fields("trafficPolicy", known, _UNMODELLED_POLICY_FIELDS)
    if raw is None:
        return None
    if not raw.raw:
        f.fail("trafficPolicy", "a traffic policy needs at least one setting")
    return TrafficPolicy(
        load_balancer=_load_balancer(raw),
        connection_pool=_connection_pool(raw),
        outlier_detection=_outlier_detection(raw),
        tls=_tls(raw),
        port_level_settings=tuple(
            _port_policy(p) for p in raw.list_of("portLevelSettings", ("port", *_POLICY_FIELDS))
        ),
    )


def _port_policy(f: Fields) -> PortTrafficPolicy:
    port = parts.port_selector(f)
    if port is None:
        f.fail("port", "a port-level setting needs port.number")
    if len(f.raw) < 2:
        f.ctx.fail(f.path, "a port-level setting needs a policy besides its port")
    return PortTrafficPolicy(
        port=port,
        load_balancer=_load_balancer(f),
        connection_pool=_connection_pool(f),
        outlier_detection=_outlier_detection(f),
        tls=_tls(f),
    )


def _load_balancer(f: Fields) -> LoadBalancerSettings | None:
    raw = f.fields(
        "loadBalancer",
        ("simple", "consistentHash", "warmupDurationSecs"),
        unmodelled=("localityLbSetting", "zoneAwareLbSetting", "warmup"),
    )
    if raw is None:
        return None
    if raw.has("simple") and raw.has("consistentHash"):
        raw.fail("consistentHash", "a load balancer sets simple or consistentHash, not both")
    return LoadBalancerSettings(
        simple=raw.enum("simple", SimpleLB),
        consistent_hash=_consistent_hash(raw),
        warmup_duration=raw.duration("warmupDurationSecs"),
    )


def _consistent_hash(f: Fields) -> ConsistentHash | None:
    raw = f.fields(
        "consistentHash", (*_HASH_KEYS, "minimumRingSize"), unmodelled=("ringHash", "maglev")
    )
    if raw is None:
        return None
    keys = [key for key in _HASH_KEYS if raw.has(key)]
    if len(keys) != 1:
        raw.ctx.fail(raw.path, f"a consistent hash needs exactly one of {', '.join(_HASH_KEYS)}")
    cookie = raw.fields("httpCookie", ("name", "path", "ttl"), unmodelled=("attributes",))
    if cookie is not None and not cookie.text("name"):
        cookie.fail("name", "a hash cookie needs a name")
    if raw.has("minimumRingSize") and (raw.has("ringHash") or raw.has("maglev")):
        raw.fail("minimumRingSize", "set minimumRingSize or ringHash/maglev, not both")
    if raw.has("useSourceIp") and not raw.flag("useSourceIp"):
        raw.fail("useSourceIp", "false hashes on nothing: set it true or use another key")
    return ConsistentHash(
        http_header_name=raw.text("httpHeaderName"),
        http_cookie=None
        if cookie is None
        else HTTPCookie(
            name=cookie.text("name"),
            path=cookie.text("path"),
            ttl=cookie.duration("ttl", minimum=0),
        ),
        use_source_ip=bool(raw.flag("useSourceIp")),
        http_query_parameter_name=raw.text("httpQueryParameterName"),
        minimum_ring_size=raw.integer("minimumRingSize", 0),
    )


def _connection_pool(f: Fields) -> ConnectionPoolSettings | None:
    raw = f.fields("connectionPool", ("tcp", "http"))
    if raw is None:
        return None
    if not (raw.has("tcp") or raw.has("http")):
        f.fail("connectionPool", "a connection pool needs tcp or http settings")
    tcp = raw.fields(
        "tcp",
        ("maxConnections", "connectTimeout", "tcpKeepalive", "maxConnectionDuration"),
        unmodelled=("idleTimeout",),
    )
    http = raw.fields(
        "http",
        (
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "idleTimeout",
            "h2UpgradePolicy",
            "useClientProtocol",
            "maxConcurrentStreams",
        ),
        unmodelled=("http2KeepAlive",),
    )
    return ConnectionPoolSettings(
        tcp=None if tcp is None else _tcp_settings(tcp),
        http=None if http is None else _http_settings(http),
    )


def _tcp_settings(f: Fields) -> TCPSettings:
    keepalive = f.fields("tcpKeepalive", ("probes", "time", "interval"))
    return TCPSettings(
        max_connections=f.integer("maxConnections", 0),
        connect_timeout=f.duration("connectTimeout"),
        tcp_keepalive=None
        if keepalive is None
        else TcpKeepalive(
            probes=keepalive.integer("probes", 0),
            time=keepalive.duration("time"),
            interval=keepalive.duration("interval"),
        ),
        max_connection_duration=f.duration("maxConnectionDuration"),
    )


def _http_settings(f: Fields) -> HTTPSettings:
    upgrade = f.enum("h2UpgradePolicy", H2UpgradePolicy)
    if upgrade is H2UpgradePolicy.UPGRADE and f.flag("useClientProtocol"):
        f.fail("useClientProtocol", "cannot be true with h2UpgradePolicy UPGRADE")
    return HTTPSettings(
        http1_max_pending_requests=f.integer("http1MaxPendingRequests", 0),
        http2_max_requests=f.integer("http2MaxRequests", 0),
        max_requests_per_connection=f.integer("maxRequestsPerConnection", 0),
        max_retries=f.integer("maxRetries", 0),
        idle_timeout=f.duration("idleTimeout"),
        h2_upgrade_policy=upgrade,
        use_client_protocol=bool(f.flag("useClientProtocol")),
        max_concurrent_streams=f.integer("maxConcurrentStreams", 0),
    )


def _outlier_detection(f: Fields) -> OutlierDetection | None:
    raw = f.fields(
        "outlierDetection",
        (
            "consecutiveErrors",
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "consecutiveLocalOriginFailures",
            "splitExternalLocalOriginErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
            "minHealthPercent",
        ),
        unmodelled=("outlierDetectionHttpErrorCodes",),
    )
    if raw is None:
        return None
    split = bool(raw.flag("splitExternalLocalOriginErrors"))
    if raw.has("consecutiveLocalOriginFailures") and not split:
        raw.fail(
            "consecutiveLocalOriginFailures",
            "counts only with splitExternalLocalOriginErrors: true",
        )
    return OutlierDetection(
        consecutive_errors=raw.integer("consecutiveErrors", 0),
        consecutive_5xx_errors=raw.integer("consecutive5xxErrors", 0),
        consecutive_gateway_errors=raw.integer("consecutiveGatewayErrors", 0),
        consecutive_local_origin_failures=raw.integer("consecutiveLocalOriginFailures", 0),
        split_external_local_origin_errors=split,
        interval=raw.duration("interval"),
        base_ejection_time=raw.duration("baseEjectionTime"),
        max_ejection_percent=raw.integer("maxEjectionPercent", 0, 100),
        min_health_percent=raw.integer("minHealthPercent", 0, 100),
    )


def _tls(f: Fields) -> ClientTLSSettings | None:
    raw = f.fields(
        "tls",
        (
            "mode",
            "clientCertificate",
            "privateKey",
            "caCertificates",
            "credentialName",
            "subjectAltNames",
            "sni",
            "insecureSkipVerify",
        ),
        unmodelled=("caCrl",),
    )
    if raw is None:
        return None
    mode = raw.enum("mode", TLSMode) or TLSMode.DISABLE
    files = [key for key in ("clientCertificate", "privateKey", "caCertificates") if raw.has(key)]
    if mode is TLSMode.ISTIO_MUTUAL and (files or raw.has("credentialName")):
        raw.fail(
            (files or ["credentialName"])[0],
            "ISTIO_MUTUAL uses the mesh's certificates: leave certificates and credentialName unset",
        )
    if mode in (TLSMode.SIMPLE, TLSMode.MUTUAL) and raw.has("credentialName") and files:
        raw.fail(files[0], "credentialName brings the certificates: leave the files unset")
    if mode is TLSMode.MUTUAL and not raw.has("credentialName"):
        for key in ("clientCertificate", "privateKey"):
            if not raw.has(key):
                raw.fail(
                    key, "MUTUAL needs a client certificate and private key (or credentialName)"
                )
    return ClientTLSSettings(
        mode=mode,
        client_certificate=raw.text("clientCertificate"),
        private_key=raw.text("privateKey"),
        ca_certificates=raw.text("caCertificates"),
        credential_name=raw.text("credentialName"),
        subject_alt_names=raw.strings("subjectAltNames"),
        sni=raw.text("sni"),
        insecure_skip_verify=raw.flag("insecureSkipVerify"),
    )
