"""Istio's documentation samples parse into the values translation will read.

Each sample is the YAML of Istio's traffic management tasks (bookinfo's reviews routing, the
90/10 canary, fault injection, circuit breaking, egress to an external service, a Sidecar
limiting egress), compared with the whole expected value, so a field dropped or read from
the wrong place fails here. The envelope (apiVersion, kind, metadata) and ``unsupported()``
are pinned at the end. The refusals are in ``test_networking_validation.py``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml

from controlplane.errors import InvalidConfig, ObjectError
from controlplane.model import Protocol
from controlplane.networking.model import (
    CaptureMode,
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHash,
    CorsPolicy,
    Destination,
    DestinationRule,
    EgressHost,
    EgressListener,
    FaultAbort,
    FaultDelay,
    HeaderMatch,
    HeaderOperations,
    Headers,
    HTTPCookie,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPMirrorPolicy,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    HTTPSettings,
    L4MatchAttributes,
    LoadBalancerSettings,
    Location,
    MatchKind,
    OutboundTrafficMode,
    OutlierDetection,
    PortTrafficPolicy,
    Resolution,
    RouteDestination,
    ServiceEntry,
    ServiceEntryPort,
    Sidecar,
    SidecarPort,
    SimpleLB,
    StringMatch,
    Subset,
    TCPRoute,
    TCPSettings,
    TLSMode,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
)
from controlplane.networking.parse import (
    destination_rule_from_object,
    service_entry_from_object,
    sidecar_from_object,
    virtual_service_from_object,
)
from controlplane.networking.unsupported import unsupported


def load(text: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(text)
    return obj


# --- VirtualService -----------------------------------------------------------------------------

REVIEWS_JASON = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
"""


def test_bookinfo_reviews_routes_jason_to_v2_and_everyone_else_to_v1() -> None:
    assert virtual_service_from_object(load(REVIEWS_JASON)) == VirtualService(
        name="reviews",
        namespace="bookinfo",
        hosts=("reviews",),
        http=(
            HTTPRoute(
                match=(
                    HTTPMatchRequest(
                        headers=(HeaderMatch("end-user", StringMatch(MatchKind.EXACT, "jason")),)
                    ),
                ),
                route=(HTTPRouteDestination(Destination("reviews", subset="v2")),),
            ),
            HTTPRoute(route=(HTTPRouteDestination(Destination("reviews", subset="v1")),)),
        ),
        created="2024-05-01T10:00:00+00:00",
    )


def test_the_90_10_canary_keeps_both_weights() -> None:
    vs = virtual_service_from_object(
        load("""
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v3}
      weight: 10
""")
    )
    assert vs.http == (
        HTTPRoute(
            route=(
                HTTPRouteDestination(Destination("reviews", subset="v1"), weight=90),
                HTTPRouteDestination(Destination("reviews", subset="v3"), weight=10),
            )
        ),
    )
    assert vs.gateways == ()  # Istio's default: mesh
    assert vs.export_to == ()  # Istio's default: every namespace


def test_fault_injection_delay_for_jason_and_abort_with_the_deprecated_percent() -> None:
    vs = virtual_service_from_object(
        load("""
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        percentage: {value: 100.0}
        fixedDelay: 7s
      abort:
        httpStatus: 500
        percentage: {value: 0.1}
    route:
    - destination: {host: ratings, subset: v1}
  - fault:
      delay: {fixedDelay: 0.5s, percent: 50}
    route:
    - destination: {host: ratings, subset: v1}
""")
    )
    assert vs.http[0].fault == HTTPFaultInjection(
        delay=FaultDelay(fixed_delay=7.0, percentage=100.0),
        abort=FaultAbort(http_status=500, percentage=0.1),
    )
    assert vs.http[1].fault == HTTPFaultInjection(delay=FaultDelay(0.5, percentage=50.0))


def test_timeouts_retries_rewrites_cors_headers_and_mirrors() -> None:
    vs = virtual_service_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: web}
spec:
  hosts: [shop.example.com, "*.shop.svc.cluster.local"]
  exportTo: ["."]
  http:
  - name: api
    match:
    - uri: {prefix: /api/}
      method: {exact: GET}
      ignoreUriCase: true
      queryParams:
        Debug: {regex: "^(1|true)$"}
      withoutHeaders:
        x-canary: {}
      port: 8080
      sourceLabels: {app: web}
    rewrite: {uri: /}
    timeout: 1m30s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure,503"}
    corsPolicy:
      allowOrigin: [https://old.example.com]
      allowOrigins: [{exact: https://example.com}]
      allowMethods: [GET, POST]
      allowHeaders: [X-Custom]
      maxAge: 24h
      allowCredentials: false
    headers:
      request:
        set: {x-api: "1"}
        remove: [x-internal]
    mirror: {host: shop-shadow}
    mirrorPercentage: {value: 5.5}
    route:
    - destination: {host: shop, port: {number: 8080}}
      headers:
        response:
          add: {x-served-by: shop}
  - directResponse:
      status: 503
      body: {string: sorry}
""")
    )
    api, fallback = vs.http
    assert api.match == (
        HTTPMatchRequest(
            uri=StringMatch(MatchKind.PREFIX, "/api/"),
            method=StringMatch(MatchKind.EXACT, "GET"),
            ignore_uri_case=True,
            query_params=(HeaderMatch("Debug", StringMatch(MatchKind.REGEX, "^(1|true)$")),),
            without_headers=(HeaderMatch("x-canary", None),),
            port=8080,
            source_labels=(("app", "web"),),
        ),
    )
    assert api.name == "api"
    assert api.rewrite is not None and api.rewrite.uri == "/"
    assert api.timeout == 90.0
    assert api.retries == HTTPRetry(
        attempts=3, per_try_timeout=2.0, retry_on=("5xx", "connect-failure", "503")
    )
    assert api.cors_policy == CorsPolicy(
        allow_origins=(
            StringMatch(MatchKind.EXACT, "https://old.example.com"),  # deprecated allowOrigin
            StringMatch(MatchKind.EXACT, "https://example.com"),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("X-Custom",),
        max_age=86400.0,
        allow_credentials=False,
    )
    assert api.headers == Headers(
        request=HeaderOperations(set=(("x-api", "1"),), remove=("x-internal",))
    )
    assert api.mirrors == (HTTPMirrorPolicy(Destination("shop-shadow"), percentage=5.5),)
    assert api.route == (
        HTTPRouteDestination(
            Destination("shop", port=8080),
            headers=Headers(response=HeaderOperations(add=(("x-served-by", "shop"),))),
        ),
    )
    assert fallback.direct_response == HTTPDirectResponse(status=503, body=b"sorry")
    assert vs.export_to == (".",)


def test_tcp_routes_with_subnets_and_weights() -> None:
    vs = virtual_service_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo, namespace: db}
spec:
  hosts: [mongo.prod.svc.cluster.local]
  tcp:
  - match:
    - port: 27017
      destinationSubnets: [10.1.0.0/16, 10.2.0.7]
    route:
    - destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}
      weight: 80
    - destination: {host: mongo.prod.svc.cluster.local}
      weight: 20
""")
    )
    assert vs.tcp == (
        TCPRoute(
            match=(
                L4MatchAttributes(
                    destination_subnets=(
                        ipaddress.ip_network("10.1.0.0/16"),
                        ipaddress.ip_network("10.2.0.7/32"),
                    ),
                    port=27017,
                ),
            ),
            route=(
                RouteDestination(Destination("mongo.backup.svc.cluster.local", port=5555), 80),
                RouteDestination(Destination("mongo.prod.svc.cluster.local"), 20),
            ),
        ),
    )


# --- DestinationRule ----------------------------------------------------------------------------


def test_circuit_breaking_httpbin() -> None:
    dr = destination_rule_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
""")
    )
    assert dr == DestinationRule(
        name="httpbin",
        namespace="default",
        host="httpbin",
        traffic_policy=TrafficPolicy(
            connection_pool=ConnectionPoolSettings(
                tcp=TCPSettings(max_connections=1),
                http=HTTPSettings(http1_max_pending_requests=1, max_requests_per_connection=1),
            ),
            outlier_detection=OutlierDetection(
                consecutive_5xx_errors=1,
                interval=1.0,
                base_ejection_time=180.0,
                max_ejection_percent=100,
            ),
        ),
    )


def test_bookinfo_reviews_subsets_with_their_own_policies() -> None:
    dr = destination_rule_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        consistentHash:
          httpCookie: {name: user, ttl: 0s}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
  - name: all
""")
    )
    assert dr.traffic_policy == TrafficPolicy(
        load_balancer=LoadBalancerSettings(simple=SimpleLB.RANDOM),
        tls=ClientTLSSettings(mode=TLSMode.ISTIO_MUTUAL),
        port_level_settings=(
            PortTrafficPolicy(
                port=9080,
                load_balancer=LoadBalancerSettings(
                    consistent_hash=ConsistentHash(http_cookie=HTTPCookie("user", ttl=0.0))
                ),
            ),
        ),
    )
    assert dr.subsets == (
        Subset("v1", (("version", "v1"),)),
        Subset(
            "v2",
            (("version", "v2"),),
            TrafficPolicy(load_balancer=LoadBalancerSettings(simple=SimpleLB.ROUND_ROBIN)),
        ),
        Subset("all", ()),  # istiod admits a subset without labels: every endpoint
    )


LAYERED_POLICIES = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 100}}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 10}}
      portLevelSettings:
      - port: {number: 9080}
        tls: {mode: ISTIO_MUTUAL}
"""


@pytest.mark.parametrize(
    ("subset", "port", "simple", "max_connections", "tls"),
    [
        ("", None, SimpleLB.RANDOM, 100, None),
        ("", 9080, SimpleLB.LEAST_REQUEST, 100, None),  # the rule's port-level part wins
        ("v1", 9080, SimpleLB.LEAST_REQUEST, 100, None),  # a subset without policy inherits
        ("v2", 8080, SimpleLB.RANDOM, 10, None),  # the subset replaces the connection pool
        ("v2", 9080, SimpleLB.LEAST_REQUEST, 10, TLSMode.ISTIO_MUTUAL),
        ("v9", 9080, SimpleLB.LEAST_REQUEST, 100, None),  # an unknown subset: the rule's
    ],
)
def test_policy_for_merges_rule_port_subset_and_subset_port_as_istio_does(
    subset: str, port: int | None, simple: SimpleLB, max_connections: int, tls: TLSMode | None
) -> None:
    policy = destination_rule_from_object(load(LAYERED_POLICIES)).policy_for(subset, port)
    assert policy is not None
    assert policy.load_balancer == LoadBalancerSettings(simple=simple)
    assert policy.connection_pool == ConnectionPoolSettings(
        tcp=TCPSettings(max_connections=max_connections)
    )
    assert (policy.tls.mode if policy.tls else None) == tls
    assert policy.port_level_settings == ()


def test_policy_for_is_none_without_any_policy() -> None:
    dr = destination_rule_from_object(
        load(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: r, namespace: n}\nspec: {host: r, subsets: [{name: v1}]}"
        )
    )
    assert dr.policy_for("v1", 80) is None
    assert dr.subset("v1") == Subset("v1", ())
    assert dr.subset("v2") is None


# --- ServiceEntry -------------------------------------------------------------------------------


def test_external_https_service_resolved_by_dns() -> None:
    se = service_entry_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc-https, namespace: egress}
spec:
  hosts: [api.dropboxapi.com, www.googleapis.com]
  location: MESH_EXTERNAL
  ports:
  - number: 443
    name: https
    protocol: TLS
  resolution: DNS
""")
    )
    assert se == ServiceEntry(
        name="external-svc-https",
        namespace="egress",
        hosts=("api.dropboxapi.com", "www.googleapis.com"),
        ports=(ServiceEntryPort(443, Protocol.TLS, "https"),),
        location=Location.MESH_EXTERNAL,
        resolution=Resolution.DNS,
    )


def test_static_endpoints_with_named_ports_and_a_port_without_protocol() -> None:
    se = service_entry_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.internal]
  addresses: [192.168.0.0/24]
  location: MESH_INTERNAL
  ports:
  - {number: 80, name: http-web, targetPort: 8080}
  - {number: 5432, name: db, protocol: tcp}
  resolution: STATIC
  endpoints:
  - address: 192.168.0.10
    ports: {http-web: 8081}
    labels: {app: legacy}
    locality: us-east1/b
    weight: 3
  - address: 192.168.0.11
""")
    )
    # Istio sniffs an unset protocol; Remora takes it from the port name, as for Services.
    assert se.ports == (
        ServiceEntryPort(80, Protocol.HTTP, "http-web", target_port=8080),
        ServiceEntryPort(5432, Protocol.TCP, "db"),
    )
    assert se.addresses == (ipaddress.ip_network("192.168.0.0/24"),)
    assert se.endpoints == (
        WorkloadEntry(
            "192.168.0.10",
            ports=(("http-web", 8081),),
            labels=(("app", "legacy"),),
            locality="us-east1/b",
            weight=3,
        ),
        WorkloadEntry("192.168.0.11"),
    )
    assert se.location is Location.MESH_INTERNAL


def test_service_entry_defaults_are_istios() -> None:
    se = service_entry_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: any, namespace: egress}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
""")
    )
    assert (se.location, se.resolution) == (Location.MESH_EXTERNAL, Resolution.NONE)


# --- Sidecar ------------------------------------------------------------------------------------


def test_sidecar_limits_egress_to_its_namespace_and_istio_system() -> None:
    sidecar = sidecar_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
""")
    )
    assert sidecar == Sidecar(
        name="default",
        namespace="bookinfo",
        egress=(EgressListener(hosts=(EgressHost(".", "*"), EgressHost("istio-system", "*"))),),
    )


def test_sidecar_with_selector_port_listener_and_registry_only() -> None:
    sidecar = sidecar_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings, namespace: prod-us1}
spec:
  workloadSelector:
    labels: {app: ratings}
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: [prod-us1/*]
    captureMode: IPTABLES
  - hosts: ["*/*.example.com", "~/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    )
    assert sidecar.workload_selector == (("app", "ratings"),)
    assert sidecar.egress == (
        EgressListener(
            hosts=(EgressHost("prod-us1", "*"),),
            port=SidecarPort(9080, Protocol.HTTP, "egresshttp"),
            capture_mode=CaptureMode.IPTABLES,
        ),
        EgressListener(hosts=(EgressHost("*", "*.example.com"), EgressHost("~", "*"))),
    )
    assert sidecar.outbound_traffic_policy is OutboundTrafficMode.REGISTRY_ONLY


def test_an_outbound_policy_without_mode_is_registry_only_as_in_istio() -> None:
    obj = load(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        "metadata: {name: s, namespace: n}\nspec: {outboundTrafficPolicy: {}}"
    )
    assert sidecar_from_object(obj).outbound_traffic_policy is OutboundTrafficMode.REGISTRY_ONLY


# --- workload selectors -------------------------------------------------------------------------


def test_destination_rules_select_with_match_labels_service_entries_and_sidecars_with_labels() -> (
    None
):
    dr = destination_rule_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: n}
spec: {host: r, workloadSelector: {matchLabels: {app: client}}}
""")
    )
    se = service_entry_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: n}
spec:
  hosts: [vm.example.com]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
""")
    )
    assert dr.workload_selector == (("app", "client"),)
    assert se.workload_selector == (("app", "vm"),)


def test_an_empty_selector_selects_every_workload_and_differs_from_none() -> None:
    sidecar = sidecar_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: n}
spec: {workloadSelector: {}, egress: [{hosts: ["./*"]}]}
""")
    )
    assert sidecar.workload_selector == ()


# --- the envelope -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_every_served_api_version_reads_the_same(version: str) -> None:
    obj = load(REVIEWS_JASON)
    obj["apiVersion"] = f"networking.istio.io/{version}"
    assert virtual_service_from_object(obj) == virtual_service_from_object(load(REVIEWS_JASON))


def test_an_unknown_api_version_is_refused_by_name() -> None:
    obj = load(REVIEWS_JASON)
    obj["apiVersion"] = "networking.istio.io/v2"
    with pytest.raises(InvalidConfig, match=r"^VirtualService bookinfo/reviews: apiVersion: "):
        virtual_service_from_object(obj)


def test_the_wrong_kind_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"kind: 'VirtualService' is not DestinationRule"):
        destination_rule_from_object(load(REVIEWS_JASON))


def test_a_missing_name_is_an_invalid_config_and_an_object_error() -> None:
    obj = load(REVIEWS_JASON)
    del obj["metadata"]["name"]
    with pytest.raises(InvalidConfig, match=r"metadata\.name is missing") as caught:
        virtual_service_from_object(obj)
    assert isinstance(caught.value, ObjectError)  # what the store already catches and logs


def test_a_missing_namespace_is_default_as_kubectl_applies_it() -> None:
    obj = load(REVIEWS_JASON)
    del obj["metadata"]["namespace"]
    assert virtual_service_from_object(obj).key == ("default", "reviews")


def test_values_are_hashable_and_equal_by_value() -> None:
    a = virtual_service_from_object(load(REVIEWS_JASON))
    b = virtual_service_from_object(load(REVIEWS_JASON))
    assert a == b and hash(a) == hash(b) and a is not b


# --- unsupported() ------------------------------------------------------------------------------


def test_a_plain_mesh_route_has_nothing_unsupported() -> None:
    assert unsupported(virtual_service_from_object(load(REVIEWS_JASON))) == ()


def test_unsupported_lists_gateways_delegates_tls_routes_and_unmodelled_fields() -> None:
    vs = virtual_service_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: web}
spec:
  hosts: [front.example.com]
  gateways: [mesh, istio-system/public]
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: a-routes, namespace: a}
  - match: [{statPrefix: front-api}]
    retries: {attempts: 2, retryIgnorePreviousHosts: true}
    corsPolicy:
      allowOrigins: [{exact: https://x.example}]
      unmatchedPreflights: IGNORE
    fault:
      abort: {grpcStatus: UNAVAILABLE}
    route:
    - destination: {host: front}
  tls:
  - match: [{sniHosts: [front.example.com], port: 443}]
    route:
    - destination: {host: front}
""")
    )
    assert unsupported(vs) == (
        "spec.gateways[1]",
        "spec.http[0].delegate",
        "spec.tls[0]",
        "spec.http[1].match[0].statPrefix",
        "spec.http[1].retries.retryIgnorePreviousHosts",
        "spec.http[1].corsPolicy.unmatchedPreflights",
    )


def test_unsupported_lists_destination_rule_and_sidecar_fields_not_modelled() -> None:
    dr = destination_rule_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: n}
spec:
  host: r
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true}
    tunnel: {protocol: CONNECT, targetHost: proxy, targetPort: 8080}
""")
    )
    assert unsupported(dr) == (
        "spec.trafficPolicy.tunnel",
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
    )
    sidecar = sidecar_from_object(
        load("""
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: n}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  egress:
  - hosts: ["./*"]
""")
    )
    assert unsupported(sidecar) == ("spec.ingress",)
