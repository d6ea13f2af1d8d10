"""DestinationRule translation, field by field: which rule applies, and what it does to a
cluster and its subsets' load assignments (each case fails a plausible wrong translation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.ca.authority import CA_CERT, CA_KEY, CAMaterial
from controlplane.model import (
    Endpoint,
    EndpointSlice,
    Protocol,
    Service,
    ServiceKind,
    ServicePort,
)
from controlplane.networking.model import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHash,
    DestinationRule,
    H2UpgradePolicy,
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
from controlplane.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ProxyResources,
    ResourceSet,
    make_resource,
)
from controlplane.translate import clusters, tls_origination
from controlplane.translate.clusters import HTTP_PROTOCOL_OPTIONS
from controlplane.translate.destination_rules import (
    DestinationRuleIndex,
    consistent_hash,
    host_matches,
    outbound_clusters,
    resolve_host,
    subset_load_assignments,
)
from controlplane.translate.tls_origination import SYSTEM_TRUST_BUNDLE
from harness.envoy_validate import validate_with_envoy

SUFFIX = "cluster.local"
UNLIMITED = 4294967295
HTTP = ServicePort("http", 80, Protocol.HTTP)
TCP = ServicePort("tcp", 5432, Protocol.TCP)
GRPC = ServicePort("grpc", 9000, Protocol.GRPC)
REVIEWS = Service("reviews", "bookinfo", ServiceKind.CLUSTER_IP, (HTTP, TCP, GRPC), ("10.96.0.1",))
REVIEWS_FQDN = "reviews.bookinfo.svc.cluster.local"
SAN = common_pb2.SubjectAltNameMatcher
MTLS = clusters.UpstreamMtls(("spiffe://cluster.local/ns/bookinfo/sa/reviews",))


def rule(
    name: str = "r",
    namespace: str = "bookinfo",
    host: str = "reviews",
    policy: TrafficPolicy | None = None,
    **more: object,
) -> DestinationRule:
    return DestinationRule(name, namespace, host, traffic_policy=policy, **more)  # type: ignore[arg-type]


def lb(**settings: object) -> TrafficPolicy:
    return TrafficPolicy(load_balancer=LoadBalancerSettings(**settings))  # type: ignore[arg-type]


def pool(tcp: TCPSettings | None = None, http: HTTPSettings | None = None) -> TrafficPolicy:
    return TrafficPolicy(connection_pool=ConnectionPoolSettings(tcp=tcp, http=http))


def only(
    policy: TrafficPolicy | None,
    port: ServicePort = HTTP,
    service: Service = REVIEWS,
    mtls: clusters.UpstreamMtls | None = None,
) -> cluster_pb2.Cluster:
    (cluster,) = outbound_clusters(service, port, SUFFIX, rule(policy=policy), mtls)
    return cluster


def http_options(cluster: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    return options


# --- which rule applies -------------------------------------------------------------------------


def lookup(
    rules: list[DestinationRule],
    proxy_namespace: str = "bookinfo",
    labels: Mapping[str, str] | None = None,
    host: str = REVIEWS_FQDN,
    service_namespace: str = "bookinfo",
) -> DestinationRule | None:
    index = DestinationRuleIndex.build(rules, "istio-system", SUFFIX)
    return index.rule_for(host, service_namespace, proxy_namespace, labels or {})


def test_a_short_host_is_a_service_of_the_rules_namespace() -> None:
    assert resolve_host("reviews", "bookinfo", SUFFIX) == REVIEWS_FQDN
    assert resolve_host("reviews.other", "bookinfo", SUFFIX) == "reviews.other"
    assert resolve_host("*.example.com", "bookinfo", SUFFIX) == "*.example.com"
    assert resolve_host("*", "bookinfo", SUFFIX) == "*"
    assert resolve_host("10.0.0.1", "bookinfo", SUFFIX) == "10.0.0.1"
    # A rule for "reviews" in another namespace names that namespace's reviews.
    assert lookup([rule(namespace="other")], proxy_namespace="other") is None


def test_wildcard_hosts_match_by_suffix_and_the_exact_host_wins() -> None:
    assert host_matches("*.bookinfo.svc.cluster.local", REVIEWS_FQDN)
    assert host_matches("*", REVIEWS_FQDN)
    assert not host_matches("*.bookinfo.svc.cluster.local", "bookinfo.svc.cluster.local")
    wide = rule("wide", host="*.svc.cluster.local")
    narrow = rule("narrow", host="*.bookinfo.svc.cluster.local")
    exact = rule("exact")
    found = lookup([wide, narrow])
    assert found is not None and found.name == "narrow"
    found = lookup([wide, narrow, exact])
    assert found is not None and found.name == "exact"


def test_export_to_limits_where_a_rule_is_seen() -> None:
    private = rule(export_to=(".",))
    assert lookup([private]) is not None
    assert lookup([private], proxy_namespace="shop") is None
    named = rule(export_to=("shop",))
    assert lookup([named], proxy_namespace="shop") is not None
    assert lookup([named], proxy_namespace="web") is None
    # Exported only elsewhere, the rule does not apply in its own namespace either.
    assert lookup([named]) is None
    assert lookup([rule()], proxy_namespace="web") is not None  # empty: everywhere


def test_the_proxys_namespace_then_the_services_then_the_root() -> None:
    own = rule("own", namespace="shop", host=REVIEWS_FQDN)
    service = rule("service")
    root = rule("root", namespace="istio-system", host=REVIEWS_FQDN)
    elsewhere = rule("elsewhere", namespace="web", host=REVIEWS_FQDN)

    def name(rules: list[DestinationRule]) -> str | None:
        found = lookup(rules, proxy_namespace="shop")
        return found.name if found is not None else None

    assert name([root, service, own]) == "own"
    assert name([root, service]) == "service"
    assert name([root]) == "root"
    assert name([elsewhere]) is None  # a third namespace's rule is never consulted


def test_root_namespace_proxies_prefer_the_services_rule_to_the_root_defaults() -> None:
    service = rule("service")
    public_root = rule("root", namespace="istio-system", host=REVIEWS_FQDN)
    private_root = rule("private", namespace="istio-system", host=REVIEWS_FQDN, export_to=(".",))

    def name(rules: list[DestinationRule]) -> str | None:
        found = lookup(rules, proxy_namespace="istio-system")
        return found.name if found is not None else None

    assert name([public_root, service]) == "service"
    assert name([public_root]) == "root"
    assert name([private_root, service]) == "private"
    assert lookup([private_root], proxy_namespace="shop") is None


def test_rules_for_one_host_merge_oldest_first() -> None:
    older = rule(
        "a",
        created="2024-01-01T00:00:00Z",
        subsets=(Subset("v1", (("version", "v1"),)),),
    )
    newer = rule(
        "b",
        created="2024-02-01T00:00:00Z",
        policy=lb(simple=SimpleLB.RANDOM),
        subsets=(Subset("v1", (("version", "other"),)), Subset("v2", (("version", "v2"),))),
    )
    merged = lookup([newer, older])
    assert merged is not None
    assert merged.name == "a"
    assert [(s.name, s.labels) for s in merged.subsets] == [
        ("v1", (("version", "v1"),)),
        ("v2", (("version", "v2"),)),
    ]
    # The older rule had no top-level policy: the younger one's fills in.
    assert merged.traffic_policy == lb(simple=SimpleLB.RANDOM)
    first = rule("c", created="2023-01-01T00:00:00Z", policy=lb(simple=SimpleLB.ROUND_ROBIN))
    merged = lookup([newer, older, first])
    assert merged is not None and merged.traffic_policy == lb(simple=SimpleLB.ROUND_ROBIN)


def test_a_workload_selector_applies_to_the_pods_it_selects_in_its_namespace() -> None:
    general = rule("general", created="1")
    special = rule(
        "special",
        created="2",
        workload_selector=(("app", "web"),),
        policy=lb(simple=SimpleLB.RANDOM),
    )
    found = lookup([general, special], labels={"app": "web"})
    assert found is not None and found.name == "special"
    found = lookup([general, special], labels={"app": "api"})
    assert found is not None and found.name == "general"
    alone = lookup([special], labels={"app": "api"})
    assert alone is None
    # Seen from another namespace, the selector selects nobody: the general rule applies.
    found = lookup([general, special], proxy_namespace="web", labels={"app": "web"})
    assert found is not None and found.name == "general"


# --- the cluster --------------------------------------------------------------------------------


def test_without_a_rule_or_policy_the_cluster_is_todays() -> None:
    for port in REVIEWS.ports:
        today = clusters.outbound_cluster(REVIEWS, port, SUFFIX, MTLS)
        assert outbound_clusters(REVIEWS, port, SUFFIX, None, MTLS) == (today,)
        assert outbound_clusters(REVIEWS, port, SUFFIX, rule(), MTLS) == (today,)


def test_simple_load_balancers() -> None:
    expected = {
        None: cluster_pb2.Cluster.LEAST_REQUEST,
        SimpleLB.UNSPECIFIED: cluster_pb2.Cluster.LEAST_REQUEST,
        SimpleLB.LEAST_CONN: cluster_pb2.Cluster.LEAST_REQUEST,
        SimpleLB.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
        SimpleLB.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
        SimpleLB.RANDOM: cluster_pb2.Cluster.RANDOM,
    }
    for simple, policy in expected.items():
        assert only(lb(simple=simple)).lb_policy == policy, simple


def test_passthrough_connects_to_the_callers_destination() -> None:
    cluster = only(lb(simple=SimpleLB.PASSTHROUGH))
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert not cluster.HasField("eds_cluster_config")


def test_passthrough_of_an_external_name_drops_its_dns_host() -> None:
    external = Service("api", "bookinfo", ServiceKind.EXTERNAL_NAME, (TCP,), external_name="a.io")
    cluster = only(lb(simple=SimpleLB.PASSTHROUGH), TCP, external)
    assert cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert not cluster.HasField("load_assignment")  # Envoy refuses hosts on ORIGINAL_DST


def test_headless_clusters_keep_their_original_destination() -> None:
    headless = Service("db", "bookinfo", ServiceKind.HEADLESS, (TCP,))
    cluster = only(lb(simple=SimpleLB.ROUND_ROBIN), TCP, headless)
    assert cluster.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED


def test_consistent_hash_is_a_ring_hash_and_the_route_gets_the_key() -> None:
    by_header = ConsistentHash(http_header_name="x-user")
    cluster = only(lb(consistent_hash=by_header))
    assert cluster.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert cluster.ring_hash_lb_config.minimum_ring_size.value == 1024  # Envoy's, sent
    sized = ConsistentHash(use_source_ip=True, minimum_ring_size=4096)
    assert only(lb(consistent_hash=sized)).ring_hash_lb_config.minimum_ring_size.value == 4096
    with_subset = rule(
        policy=lb(consistent_hash=by_header),
        subsets=(Subset("v1", (), lb(consistent_hash=sized)),),
    )
    assert consistent_hash(with_subset) == by_header
    assert consistent_hash(with_subset, "v1") == sized
    assert consistent_hash(rule(policy=lb(simple=SimpleLB.RANDOM))) is None
    assert consistent_hash(None) is None


def test_warmup_is_slow_start_for_round_robin_and_least_request_only() -> None:
    least = only(lb(warmup_duration=30.0))
    assert least.least_request_lb_config.slow_start_config.slow_start_window.seconds == 30
    rr = only(lb(simple=SimpleLB.ROUND_ROBIN, warmup_duration=10.0))
    assert rr.round_robin_lb_config.slow_start_config.slow_start_window.seconds == 10
    random = only(lb(simple=SimpleLB.RANDOM, warmup_duration=10.0))
    assert random.WhichOneof("lb_config") is None


def test_tcp_connection_pool() -> None:
    keepalive = TcpKeepalive(probes=3, time=600.0, interval=75.0)
    cluster = only(
        pool(
            tcp=TCPSettings(
                max_connections=7,
                connect_timeout=0.25,
                tcp_keepalive=keepalive,
                max_connection_duration=60.0,
            )
        )
    )
    limits = cluster.circuit_breakers.thresholds[0]
    assert limits.max_connections.value == 7
    assert limits.max_pending_requests.value == UNLIMITED
    assert cluster.connect_timeout.ToMilliseconds() == 250
    socket = cluster.upstream_connection_options.tcp_keepalive
    assert (socket.keepalive_probes.value, socket.keepalive_time.value) == (3, 600)
    assert socket.keepalive_interval.value == 75
    common = http_options(cluster).common_http_protocol_options
    assert common.max_connection_duration.seconds == 60
    assert http_options(cluster).explicit_http_config.HasField("http_protocol_options")
    # An empty keepalive turns keepalive on with the OS's timings.
    bare = only(pool(tcp=TCPSettings(tcp_keepalive=TcpKeepalive())))
    assert bare.upstream_connection_options.HasField("tcp_keepalive")
    assert not bare.upstream_connection_options.tcp_keepalive.HasField("keepalive_time")


def test_http_connection_pool() -> None:
    settings = HTTPSettings(
        http1_max_pending_requests=1,
        http2_max_requests=2,
        max_requests_per_connection=3,
        max_retries=4,
        idle_timeout=5.0,
        max_concurrent_streams=6,
    )
    cluster = only(pool(http=settings), GRPC)
    limits = cluster.circuit_breakers.thresholds[0]
    assert (limits.max_pending_requests.value, limits.max_requests.value) == (1, 2)
    assert limits.max_retries.value == 4
    assert limits.max_connections.value == UNLIMITED
    options = http_options(cluster)
    assert options.common_http_protocol_options.max_requests_per_connection.value == 3
    assert options.common_http_protocol_options.idle_timeout.seconds == 5
    assert options.explicit_http_config.http2_protocol_options.max_concurrent_streams.value == 6
    # HTTP/1.1 has no streams to limit.
    http1 = http_options(only(pool(http=settings)))
    assert http1.explicit_http_config.HasField("http_protocol_options")


def test_zero_limits_stay_unlimited_and_tcp_clusters_get_no_http_options() -> None:
    zeros = pool(TCPSettings(max_connections=0), HTTPSettings(http1_max_pending_requests=0))
    assert only(zeros) == clusters.outbound_cluster(REVIEWS, HTTP, SUFFIX)
    tcp = only(pool(http=HTTPSettings(idle_timeout=5.0, max_retries=2)), TCP)
    assert HTTP_PROTOCOL_OPTIONS not in tcp.typed_extension_protocol_options
    assert tcp.circuit_breakers.thresholds[0].max_retries.value == 2


def test_h2_upgrade_of_http1_ports_only() -> None:
    upgrade = pool(http=HTTPSettings(h2_upgrade_policy=H2UpgradePolicy.UPGRADE))
    assert http_options(only(upgrade)).explicit_http_config.HasField("http2_protocol_options")
    upgraded_mtls = only(upgrade, mtls=MTLS).transport_socket_matches[0]
    assert b"istio-h2" in upgraded_mtls.transport_socket.typed_config.value
    for policy in (H2UpgradePolicy.DEFAULT, H2UpgradePolicy.DO_NOT_UPGRADE):
        kept = only(pool(http=HTTPSettings(h2_upgrade_policy=policy)))
        assert HTTP_PROTOCOL_OPTIONS not in kept.typed_extension_protocol_options
    assert HTTP_PROTOCOL_OPTIONS not in only(upgrade, TCP).typed_extension_protocol_options


def test_outlier_detection_as_istio_maps_it() -> None:
    cluster = only(
        TrafficPolicy(
            outlier_detection=OutlierDetection(
                consecutive_5xx_errors=3,
                consecutive_gateway_errors=0,
                interval=2.0,
                base_ejection_time=60.0,
                max_ejection_percent=40,
                min_health_percent=25,
            )
        )
    )
    out = cluster.outlier_detection
    assert (out.consecutive_5xx.value, out.enforcing_consecutive_5xx.value) == (3, 100)
    assert out.HasField("consecutive_gateway_failure")
    assert out.enforcing_consecutive_gateway_failure.value == 0  # a 0 threshold is off
    assert out.HasField("enforcing_success_rate") and out.enforcing_success_rate.value == 0
    assert (out.interval.seconds, out.base_ejection_time.seconds) == (2, 60)
    assert out.max_ejection_percent.value == 40
    assert cluster.common_lb_config.healthy_panic_threshold.value == 25.0
    # Without minHealthPercent, panic mode is off (Envoy's default would be 50%).
    bare = only(TrafficPolicy(outlier_detection=OutlierDetection()))
    assert bare.common_lb_config.HasField("healthy_panic_threshold")
    assert bare.common_lb_config.healthy_panic_threshold.value == 0.0
    assert not bare.outlier_detection.HasField("consecutive_5xx")  # Envoy's 5 stays


def test_deprecated_consecutive_errors_count_gateway_errors() -> None:
    out = only(
        TrafficPolicy(outlier_detection=OutlierDetection(consecutive_errors=4))
    ).outlier_detection
    assert out.consecutive_gateway_failure.value == 4
    assert out.enforcing_consecutive_gateway_failure.value == 100
    assert out.HasField("enforcing_consecutive_5xx") and out.enforcing_consecutive_5xx.value == 0


def test_local_origin_failures_count_only_when_split() -> None:
    split = OutlierDetection(
        split_external_local_origin_errors=True, consecutive_local_origin_failures=2
    )
    out = only(TrafficPolicy(outlier_detection=split)).outlier_detection
    assert out.split_external_local_origin_errors
    assert out.consecutive_local_origin_failure.value == 2
    assert out.enforcing_consecutive_local_origin_failure.value == 100
    assert out.HasField("enforcing_local_origin_success_rate")


def tls_policy(mode: TLSMode) -> TrafficPolicy:
    return TrafficPolicy(tls=ClientTLSSettings(mode=mode))


def test_tls_disable_wins_over_auto_mtls() -> None:
    cluster = only(tls_policy(TLSMode.DISABLE), mtls=MTLS)
    assert not cluster.transport_socket_matches
    assert not cluster.HasField("transport_socket")
    assert only(TrafficPolicy(), mtls=MTLS).transport_socket_matches  # no tls: auto-mTLS


def test_istio_mutual_uses_mesh_mtls_for_every_endpoint() -> None:
    cluster = only(tls_policy(TLSMode.ISTIO_MUTUAL), mtls=MTLS)
    assert not cluster.transport_socket_matches
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    assert MTLS.peer_ids[0].encode() in cluster.transport_socket.typed_config.value
    # Without auto-mTLS (no sidecar seen), the service's identities come from peer_ids.
    (alone,) = outbound_clusters(
        REVIEWS, HTTP, SUFFIX, rule(policy=tls_policy(TLSMode.ISTIO_MUTUAL)), None, ("spiffe://x",)
    )
    assert b"spiffe://x" in alone.transport_socket.typed_config.value


# --- subsets ------------------------------------------------------------------------------------


def test_a_cluster_per_subset_with_its_merged_policy() -> None:
    with_subsets = rule(
        policy=TrafficPolicy(
            load_balancer=LoadBalancerSettings(simple=SimpleLB.RANDOM),
            port_level_settings=(
                PortTrafficPolicy(80, connection_pool=ConnectionPoolSettings(TCPSettings(9))),
            ),
        ),
        subsets=(
            Subset("v1", (("version", "v1"),)),
            Subset("v2", (("version", "v2"),), lb(simple=SimpleLB.ROUND_ROBIN)),
        ),
    )
    main, v1, v2 = outbound_clusters(REVIEWS, HTTP, SUFFIX, with_subsets, MTLS)
    assert [main.name, v1.name, v2.name] == [
        f"outbound|80||{REVIEWS_FQDN}",
        f"outbound|80|v1|{REVIEWS_FQDN}",
        f"outbound|80|v2|{REVIEWS_FQDN}",
    ]
    assert [c.lb_policy for c in (main, v1, v2)] == [
        cluster_pb2.Cluster.RANDOM,
        cluster_pb2.Cluster.RANDOM,
        cluster_pb2.Cluster.ROUND_ROBIN,
    ]
    assert all(c.circuit_breakers.thresholds[0].max_connections.value == 9 for c in (main, v2))
    sni = v1.transport_socket_matches[0].transport_socket.typed_config.value
    assert f"outbound_.80_.v1_.{REVIEWS_FQDN}".encode() in sni
    # Port-level settings are for their port only.
    (_, tcp_v1, _) = outbound_clusters(REVIEWS, TCP, SUFFIX, with_subsets)
    assert tcp_v1.circuit_breakers.thresholds[0].max_connections.value == UNLIMITED


def test_subset_load_assignments_keep_the_endpoints_whose_pods_match() -> None:
    slices = (
        EndpointSlice(
            "reviews-1",
            "bookinfo",
            "reviews",
            (("http", 9080), ("tcp", 5432), ("grpc", 9000)),
            (
                Endpoint("10.0.0.1", pod_name="v1"),
                Endpoint("10.0.0.2", pod_name="v2"),
                Endpoint("10.0.0.3"),  # no pod known
            ),
        ),
    )
    labels = {"10.0.0.1": {"version": "v1", "app": "reviews"}, "10.0.0.2": {"version": "v2"}}
    with_subsets = rule(subsets=(Subset("v1", (("version", "v1"),)), Subset("all", ())))
    assignments = subset_load_assignments(
        REVIEWS, with_subsets, SUFFIX, slices, lambda e: labels.get(e.address), {("10.0.0.1", 9080)}
    )
    by_name = {
        a.cluster_name: [
            (e.endpoint.address.socket_address.address, bool(e.metadata.filter_metadata))
            for group in a.endpoints
            for e in group.lb_endpoints
        ]
        for a in assignments
    }
    assert by_name[f"outbound|80|v1|{REVIEWS_FQDN}"] == [("10.0.0.1", True)]
    assert by_name[f"outbound|5432|v1|{REVIEWS_FQDN}"] == [("10.0.0.1", False)]
    assert len(by_name[f"outbound|80|all|{REVIEWS_FQDN}"]) == 3
    assert len(assignments) == 6
    headless = Service("db", "bookinfo", ServiceKind.HEADLESS, (TCP,))
    assert subset_load_assignments(headless, with_subsets, SUFFIX, slices, labels.get) == ()


# --- TLS origination ----------------------------------------------------------------------------


def upstream_tls(cluster: cluster_pb2.Cluster) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    return context


def test_simple_tls_origination() -> None:
    settings = ClientTLSSettings(
        mode=TLSMode.SIMPLE,
        sni="api.example.com",
        subject_alt_names=("api.example.com", "spiffe://example.com/api", "192.0.2.1"),
    )
    cluster = only(TrafficPolicy(tls=settings), GRPC, mtls=MTLS)
    assert not cluster.transport_socket_matches  # origination replaces auto-mTLS
    context = upstream_tls(cluster)
    assert context.sni == "api.example.com"
    common = context.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    assert not common.tls_certificates  # SIMPLE: no client certificate
    validation = common.validation_context
    assert validation.trusted_ca.filename == SYSTEM_TRUST_BUNDLE  # no CA given: the system's
    assert [
        (san.san_type, san.matcher.exact) for san in validation.match_typed_subject_alt_names
    ] == [
        (SAN.DNS, "api.example.com"),
        (SAN.URI, "spiffe://example.com/api"),
        (SAN.IP_ADDRESS, "192.0.2.1"),
    ]
    assert (
        HTTP_PROTOCOL_OPTIONS
        not in only(TrafficPolicy(tls=settings)).typed_extension_protocol_options
    )
    insecure = ClientTLSSettings(mode=TLSMode.SIMPLE, insecure_skip_verify=True)
    unverified_cluster = only(TrafficPolicy(tls=insecure))
    unverified = upstream_tls(unverified_cluster).common_tls_context
    assert not unverified.HasField("validation_context")
    assert not unverified.alpn_protocols
    # No SNI given: each request's host is the SNI (not verified against, insecure).
    upstream = http_options(unverified_cluster).upstream_http_protocol_options
    assert upstream.auto_sni and not upstream.auto_san_validation


def test_without_sni_or_sans_the_request_host_is_sent_and_verified() -> None:
    plain = ClientTLSSettings(mode=TLSMode.SIMPLE)
    options = http_options(only(TrafficPolicy(tls=plain)))
    assert options.upstream_http_protocol_options.auto_sni
    assert options.upstream_http_protocol_options.auto_san_validation
    assert options.explicit_http_config.HasField("http_protocol_options")
    tcp = only(TrafficPolicy(tls=plain), TCP)
    assert HTTP_PROTOCOL_OPTIONS not in tcp.typed_extension_protocol_options


def test_origination_with_a_credential_name_is_not_translated_yet() -> None:
    secret = ClientTLSSettings(mode=TLSMode.MUTUAL, credential_name="client-credential")
    assert only(TrafficPolicy(tls=secret), mtls=MTLS) == only(None, mtls=MTLS)


def mutual_settings(tmp_path: Path) -> ClientTLSSettings:
    files = CAMaterial.self_signed().to_files()
    (tmp_path / "cert.pem").write_bytes(files[CA_CERT])
    (tmp_path / "key.pem").write_bytes(files[CA_KEY])
    return ClientTLSSettings(
        mode=TLSMode.MUTUAL,
        client_certificate=str(tmp_path / "cert.pem"),
        private_key=str(tmp_path / "key.pem"),
        ca_certificates=str(tmp_path / "cert.pem"),
    )


def mutual_cluster(tmp_path: Path) -> cluster_pb2.Cluster:
    """What origination from files makes (not wired yet, see the next test)."""
    cluster = only(None)
    tls_origination.originate_tls(cluster, mutual_settings(tmp_path), Protocol.HTTP)
    return cluster


def test_origination_naming_files_is_not_translated_until_sds_serves_them(
    tmp_path: Path,
) -> None:
    settings = mutual_settings(tmp_path)
    assert only(TrafficPolicy(tls=settings), mtls=MTLS) == only(None, mtls=MTLS)
    custom_ca = ClientTLSSettings(mode=TLSMode.SIMPLE, ca_certificates="/etc/ca.pem")
    assert only(TrafficPolicy(tls=custom_ca), mtls=MTLS) == only(None, mtls=MTLS)
    system = ClientTLSSettings(mode=TLSMode.SIMPLE, ca_certificates=SYSTEM_TRUST_BUNDLE)
    assert only(TrafficPolicy(tls=system), mtls=MTLS) != only(None, mtls=MTLS)


def test_mutual_tls_origination_presents_the_client_certificate(tmp_path: Path) -> None:
    context = upstream_tls(mutual_cluster(tmp_path)).common_tls_context
    assert context.tls_certificates[0].certificate_chain.filename == str(tmp_path / "cert.pem")
    assert context.tls_certificates[0].private_key.filename == str(tmp_path / "key.pem")
    assert context.validation_context.trusted_ca.filename == str(tmp_path / "cert.pem")


@pytest.mark.envoy
def test_mutual_tls_origination_from_files_passes_envoy_validate(tmp_path: Path) -> None:
    cluster = mutual_cluster(tmp_path)
    resources = ProxyResources(
        {
            CLUSTER: ResourceSet.of(CLUSTER, [make_resource(cluster.name, cluster)]),
            **{kind: ResourceSet.of(kind, []) for kind in (ENDPOINT, LISTENER, ROUTE)},
        }
    )
    result = validate_with_envoy(resources)
    assert result.ok, result.output
