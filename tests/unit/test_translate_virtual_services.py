"""VirtualService translation, one field at a time: each case fails a wrong translation.

Selection (which VirtualService routes a host for a sidecar) first, then each part of an
HTTP rule as Envoy route fields. The Istio doc samples are the golden cases in
``test_translate_virtual_services_golden.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from controlplane.model import Protocol, Service, ServiceKind, ServicePort
from controlplane.networking.model import (
    ConsistentHash,
    Destination,
    HTTPCookie,
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
    VirtualService,
)
from controlplane.networking.parse import virtual_service_from_object
from controlplane.translate import routes as default_routes
from controlplane.translate import virtual_service_extras as extras
from controlplane.translate.virtual_service_selection import (
    binds_mesh,
    host_matches,
    mesh_virtual_services,
    resolve_host,
    virtual_services_for_host,
    visible_in,
)
from controlplane.translate.virtual_services import (
    Client,
    RouteContext,
    http_routes,
    outbound_route_configs,
    service_virtual_host,
)

SUFFIX = "cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"
CLIENT = Client("default", (("app", "productpage"), ("version", "v1")))
CONTEXT = RouteContext(port=9080, client=CLIENT, domain_suffix=SUFFIX)


def vs(
    spec: dict[str, Any], name: str = "r", namespace: str = "default", created: str = ""
) -> VirtualService:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    return virtual_service_from_object(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": metadata,
            "spec": spec,
        }
    )


def rules(text: str, context: RouteContext = CONTEXT) -> list[rc.Route]:
    """The routes of a VirtualService for ``reviews`` whose ``http`` is ``text`` (YAML)."""
    return http_routes(vs({"hosts": ["reviews"], "http": yaml.safe_load(text)}), context)


def one(text: str, context: RouteContext = CONTEXT) -> rc.Route:
    (route,) = rules(text, context)
    return route


TO_V1 = "route: [{destination: {host: reviews, subset: v1}}]"


# --- selection ------------------------------------------------------------------------------


def test_a_virtual_service_binds_sidecars_without_gateways_or_with_mesh() -> None:
    assert binds_mesh(VirtualService("a", "default", ("reviews",)))
    assert binds_mesh(VirtualService("a", "default", ("reviews",), gateways=("gw", "mesh")))
    assert not binds_mesh(VirtualService("a", "default", ("reviews",), gateways=("gw",)))


@pytest.mark.parametrize(
    ("export_to", "namespace", "visible"),
    [
        ((), "other", True),
        (("*",), "other", True),
        ((".",), "default", True),
        ((".",), "other", False),
        (("other",), "other", True),
        (("other",), "default", False),
    ],
)
def test_export_to_decides_visibility(
    export_to: tuple[str, ...], namespace: str, visible: bool
) -> None:
    assert (
        visible_in(VirtualService("a", "default", ("r",), export_to=export_to), namespace)
        is visible
    )


def test_hosts_resolve_in_the_virtual_services_namespace() -> None:
    assert resolve_host("reviews", "default", SUFFIX) == REVIEWS
    assert resolve_host("reviews.default", "other", SUFFIX) == "reviews.default"
    assert resolve_host("Example.COM", "default", SUFFIX) == "example.com"
    assert resolve_host("*.example.com", "default", SUFFIX) == "*.example.com"


def test_wildcards_match_subdomains_only() -> None:
    assert host_matches("*.example.com", "a.example.com")
    assert host_matches("*.example.com", "a.b.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything.svc")


def test_istio_order_own_namespace_private_then_exported_by_name_then_public_by_age() -> None:
    public_old = vs({"hosts": ["reviews"]}, "z-old", "default", "2024-01-01T00:00:00Z")
    public_new = vs({"hosts": [REVIEWS]}, "a-new", "team-a", "2024-02-01T00:00:00Z")
    by_name = vs(
        {"hosts": [REVIEWS], "exportTo": ["default"]}, "n", "team-b", "2024-03-01T00:00:00Z"
    )
    private = vs({"hosts": ["reviews"], "exportTo": ["."]}, "p", "default", "2024-04-01T00:00:00Z")
    hidden = vs({"hosts": [REVIEWS], "exportTo": ["."]}, "h", "team-c")
    gateway = vs({"hosts": [REVIEWS], "gateways": ["gw"]}, "g", "default")
    ordered = mesh_virtual_services(
        [public_new, hidden, gateway, by_name, public_old, private], "default"
    )
    assert [v.name for v in ordered] == ["p", "n", "z-old", "a-new"]


def test_same_creation_time_orders_by_name_then_namespace() -> None:
    b = vs({"hosts": [REVIEWS]}, "b", "ns1", "2024-01-01T00:00:00Z")
    a2 = vs({"hosts": [REVIEWS]}, "a", "ns2", "2024-01-01T00:00:00Z")
    a1 = vs({"hosts": [REVIEWS]}, "a", "ns1", "2024-01-01T00:00:00Z")
    assert [v.key for v in mesh_virtual_services([b, a2, a1], "x")] == [
        ("ns1", "a"),
        ("ns2", "a"),
        ("ns1", "b"),
    ]


def test_exact_hosts_beat_wildcards_and_the_most_specific_wildcard_wins() -> None:
    broad = vs({"hosts": ["*.svc.cluster.local"]}, "broad")
    narrow = vs({"hosts": ["*.default.svc.cluster.local"]}, "narrow")
    exact = vs({"hosts": ["reviews"]}, "exact")
    assert virtual_services_for_host(REVIEWS, (broad, narrow), SUFFIX) == (narrow,)
    assert virtual_services_for_host(REVIEWS, (broad, narrow, exact), SUFFIX) == (exact,)
    assert virtual_services_for_host("x.other.svc.cluster.local", (broad, narrow), SUFFIX) == (
        broad,
    )
    assert virtual_services_for_host("ratings.default.svc.cluster.local", (exact,), SUFFIX) == ()


def _service(*ports: int) -> Service:
    return Service(
        "reviews",
        "default",
        ServiceKind.CLUSTER_IP,
        tuple(ServicePort(f"http-{p}", p, Protocol.HTTP) for p in ports),
        cluster_ips=("10.96.0.21",),
    )


def test_the_first_virtual_service_with_routes_for_the_port_wins_and_none_keeps_the_default() -> (
    None
):
    service = _service(9080)
    other_port = vs(
        {"hosts": ["reviews"], "http": [{"match": [{"port": 8080}], **yaml.safe_load(TO_V1)}]}, "a"
    )
    to_v2 = vs(
        {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}],
        },
        "b",
    )
    to_v3 = vs(
        {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}],
        },
        "c",
    )
    vhost = service_virtual_host(service, service.ports[0], (other_port, to_v2, to_v3), CONTEXT)
    assert [r.route.cluster for r in vhost.routes] == [f"outbound|9080|v2|{REVIEWS}"]
    default = service_virtual_host(service, service.ports[0], (other_port,), CONTEXT)
    assert [r.route.cluster for r in default.routes] == [f"outbound|9080||{REVIEWS}"]
    assert f"{REVIEWS}:9080" in default.domains


def test_without_virtual_services_the_route_configs_are_todays_byte_for_byte() -> None:
    services = [
        _service(9080, 8080),
        Service(
            "ratings",
            "other",
            ServiceKind.CLUSTER_IP,
            (ServicePort("http", 9080, Protocol.HTTP),),
            ("10.96.0.22",),
        ),
    ]
    unrelated = vs({"hosts": ["details"], "http": [yaml.safe_load(TO_V1)]})
    for allow_any in (True, False):
        today = default_routes.outbound_route_configs(services, "default", SUFFIX, allow_any)
        ours = outbound_route_configs(services, [unrelated], CLIENT, SUFFIX, allow_any)
        assert [c.SerializeToString(deterministic=True) for c in ours] == [
            c.SerializeToString(deterministic=True) for c in today
        ]


def test_route_configs_carry_the_virtual_service_routes_per_port() -> None:
    service = _service(9080, 8080)
    only_8080 = vs(
        {"hosts": ["reviews"], "http": [{"match": [{"port": 8080}], **yaml.safe_load(TO_V1)}]}
    )
    by_port = {
        c.name: c for c in outbound_route_configs([service], [only_8080], CLIENT, SUFFIX, True)
    }
    assert by_port["8080"].virtual_hosts[0].routes[0].route.cluster == f"outbound|8080|v1|{REVIEWS}"
    assert by_port["9080"].virtual_hosts[0].routes[0].route.cluster == f"outbound|9080||{REVIEWS}"


# --- matches --------------------------------------------------------------------------------


def test_each_match_is_one_route_in_order_and_no_match_is_everything() -> None:
    routes = rules(f"""
- match: [{{uri: {{prefix: /a}}}}, {{uri: {{exact: /b}}}}]
  {TO_V1}
- {TO_V1}
""")
    assert [r.match.WhichOneof("path_specifier") for r in routes] == ["prefix", "path", "prefix"]
    assert (routes[0].match.prefix, routes[1].match.path, routes[2].match.prefix) == (
        "/a",
        "/b",
        "/",
    )


def test_a_catch_all_hides_every_later_rule() -> None:
    routes = rules(f"""
- match: [{{uri: {{prefix: /}}}}, {{uri: {{prefix: /never}}}}]
  {TO_V1}
- {TO_V1}
""")
    assert len(routes) == 1


def test_uri_regex_is_re2_safe_regex_and_ignore_uri_case_turns_case_off() -> None:
    route = one(f"- match: [{{uri: {{regex: '/r/[0-9]+'}}, ignoreUriCase: true}}]\n  {TO_V1}")
    assert route.match.safe_regex.regex == "/r/[0-9]+"
    assert route.match.case_sensitive.value is False


def test_grpc_methods_are_paths() -> None:
    routes = rules(f"""
- match: [{{uri: {{exact: /helloworld.Greeter/SayHello}}}}]
  {TO_V1}
- match: [{{uri: {{prefix: /helloworld.Greeter/}}}}]
  {TO_V1}
""")
    assert routes[0].match.path == "/helloworld.Greeter/SayHello"
    assert routes[1].match.prefix == "/helloworld.Greeter/"


def test_header_matches_exact_prefix_regex_and_presence_sorted_by_name() -> None:
    route = one(f"""
- match:
  - headers:
      x-c: {{exact: c}}
      x-a: {{prefix: a}}
      x-b: {{regex: 'b+'}}
      x-d: {{}}
  {TO_V1}
""")
    assert [h.name for h in route.match.headers] == ["x-a", "x-b", "x-c", "x-d"]
    a, b, c, d = route.match.headers
    assert a.string_match.prefix == "a"
    assert b.string_match.safe_regex.regex == "b+"
    assert c.string_match.exact == "c"
    assert d.present_match and not d.invert_match


def test_without_headers_are_inverted_and_a_missing_header_counts_as_empty() -> None:
    route = one(f"""
- match:
  - withoutHeaders:
      x-a: {{exact: a}}
      x-b: {{regex: '*'}}
  {TO_V1}
""")
    a, b = route.match.headers
    assert a.invert_match and a.treat_missing_header_as_empty and a.string_match.exact == "a"
    assert b.invert_match and b.present_match and not b.treat_missing_header_as_empty


def test_method_authority_scheme_are_pseudo_headers_and_query_params_match() -> None:
    route = one(f"""
- match:
  - method: {{exact: POST}}
    authority: {{prefix: api.}}
    scheme: {{exact: https}}
    queryParams:
      v: {{exact: '2'}}
      debug: {{}}
  {TO_V1}
""")
    assert [(h.name, h.string_match.WhichOneof("match_pattern")) for h in route.match.headers] == [
        (":method", "exact"),
        (":authority", "prefix"),
        (":scheme", "exact"),
    ]
    params = {q.name: q for q in route.match.query_parameters}
    assert params["v"].string_match.exact == "2"
    assert params["debug"].present_match


def test_a_match_on_another_port_is_left_out() -> None:
    routes = rules(
        f"- match: [{{port: 8080, uri: {{prefix: /x}}}}, {{port: 9080, uri: {{prefix: /y}}}}]\n  {TO_V1}"
    )
    assert [r.match.prefix for r in routes] == ["/y"]


def test_source_labels_and_namespace_are_decided_for_this_proxy() -> None:
    text = f"""
- match: [{{sourceLabels: {{app: reviews}}, uri: {{prefix: /a}}}}]
  {TO_V1}
- match: [{{sourceLabels: {{app: productpage}}, uri: {{prefix: /b}}}}]
  {TO_V1}
- match: [{{sourceNamespace: other, uri: {{prefix: /c}}}}]
  {TO_V1}
- match: [{{sourceNamespace: default, uri: {{prefix: /d}}}}]
  {TO_V1}
- match: [{{gateways: [gw], uri: {{prefix: /e}}}}, {{gateways: [mesh], uri: {{prefix: /f}}}}]
  {TO_V1}
"""
    assert [r.match.prefix for r in rules(text)] == ["/b", "/d", "/f"]


def test_a_rule_applying_to_no_match_here_yields_nothing() -> None:
    assert rules(f"- match: [{{port: 1}}]\n  {TO_V1}") == []


# --- destinations ---------------------------------------------------------------------------


def test_weights_become_weighted_clusters_without_the_zero_ones() -> None:
    route = one("""
- route:
  - {destination: {host: reviews, subset: v1}, weight: 90}
  - {destination: {host: reviews, subset: v3}, weight: 10}
  - {destination: {host: reviews, subset: v4}, weight: 0}
""")
    assert [(c.name, c.weight.value) for c in route.route.weighted_clusters.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 90),
        (f"outbound|9080|v3|{REVIEWS}", 10),
    ]


def test_destination_port_explicit_else_the_routed_port_as_istio_does() -> None:
    routes = rules("""
- match: [{uri: {prefix: /a}}]
  route: [{destination: {host: details, port: {number: 7000}}}]
- route: [{destination: {host: reviews.other.svc.cluster.local}}]
""")
    assert [r.route.cluster for r in routes] == [
        "outbound|7000||details.default.svc.cluster.local",
        "outbound|9080||reviews.other.svc.cluster.local",
    ]


def test_delegate_rules_are_left_out_and_a_rule_without_match_ends_the_list() -> None:
    routes = rules(f"""
- match: [{{uri: {{prefix: /d}}}}]
  delegate: {{name: reviews-delegate}}
- redirect: {{uri: /x, redirectCode: 305}}
- {TO_V1}
""")
    assert routes == []


def test_per_destination_headers_go_on_the_weighted_cluster_or_the_route() -> None:
    weighted = one("""
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
    headers: {request: {set: {x-v: '1', host: v1.internal}}, response: {remove: [x-internal]}}
  - {destination: {host: reviews, subset: v2}, weight: 50}
""")
    first = weighted.route.weighted_clusters.clusters[0]
    assert [(h.header.key, h.header.value) for h in first.request_headers_to_add] == [("x-v", "1")]
    assert first.host_rewrite_literal == "v1.internal"
    assert list(first.response_headers_to_remove) == ["x-internal"]
    single = one("""
- route:
  - destination: {host: reviews, subset: v1}
    headers: {request: {add: {x-v: '1'}}}
""")
    (option,) = single.request_headers_to_add
    assert option.append_action == base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def test_rule_headers_set_add_remove_and_the_authority_rewrite() -> None:
    route = one(f"""
- headers:
    request:
      set: {{x-b: b, ':authority': api.internal}}
      add: {{x-a: a}}
      remove: [x-gone]
    response:
      set: {{x-r: r}}
      remove: [server]
  {TO_V1}
""")
    assert [(h.header.key, h.append_action) for h in route.request_headers_to_add] == [
        ("x-b", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-a", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ]
    assert list(route.request_headers_to_remove) == ["x-gone"]
    assert [h.header.key for h in route.response_headers_to_add] == ["x-r"]
    assert list(route.response_headers_to_remove) == ["server"]
    assert route.route.host_rewrite_literal == "api.internal"


# --- timeout, retries, rewrite --------------------------------------------------------------


def test_timeout_unset_is_none_at_all() -> None:
    assert one(f"- {TO_V1}").route.timeout.ToNanoseconds() == 0
    assert one(f"- timeout: 1.5s\n  {TO_V1}").route.timeout.ToNanoseconds() == 1_500_000_000


def test_retries_unset_keep_the_default_policy_and_attempts_zero_disables() -> None:
    default = one(f"- {TO_V1}").route.retry_policy
    assert (default.num_retries.value, list(default.retriable_status_codes)) == (2, [503])
    assert not one(f"- retries: {{attempts: 0}}\n  {TO_V1}").route.HasField("retry_policy")


def test_retry_on_names_and_grpc_codes_stay_and_status_codes_move() -> None:
    policy = one(f"""
- retries:
    attempts: 4
    perTryTimeout: 250ms
    retryOn: 5xx,retriable-4xx,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable,502,504
    retryRemoteLocalities: true
  {TO_V1}
""").route.retry_policy
    assert policy.retry_on == (
        "5xx,retriable-4xx,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable,"
        "retriable-status-codes"
    )
    assert list(policy.retriable_status_codes) == [502, 504]
    assert policy.num_retries.value == 4
    assert policy.per_try_timeout.ToMilliseconds() == 250
    assert policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"


def test_retries_without_retry_on_use_istios_conditions() -> None:
    policy = one(f"- retries: {{attempts: 5}}\n  {TO_V1}").route.retry_policy
    assert policy.retry_on.startswith("connect-failure,refused-stream")
    assert policy.num_retries.value == 5


def test_rewrite_uri_is_a_prefix_rewrite_and_regex_rewrite_is_regex_rewrite() -> None:
    route = one(f"- match: [{{uri: {{prefix: /old}}}}]\n  rewrite: {{uri: /new}}\n  {TO_V1}")
    assert route.route.prefix_rewrite == "/new"
    route = one(
        f"- rewrite: {{uriRegexRewrite: {{match: '^/a(.*)', rewrite: '/b\\1'}}}}\n  {TO_V1}"
    )
    assert route.route.regex_rewrite.pattern.regex == "^/a(.*)"
    assert route.route.regex_rewrite.substitution == "/b\\1"


def test_rewrite_authority_wins_over_a_destination_header() -> None:
    route = one("""
- rewrite: {authority: a.internal}
  route:
  - destination: {host: reviews}
    headers: {request: {set: {host: b.internal}}}
""")
    assert route.route.host_rewrite_literal == "a.internal"


# --- redirect and direct response -----------------------------------------------------------


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (
            {"uri": "/new"},
            {"path_redirect": "/new", "response_code": rc.RedirectAction.MOVED_PERMANENTLY},
        ),
        (
            {"authority": "b", "redirectCode": 302},
            {"host_redirect": "b", "response_code": rc.RedirectAction.FOUND},
        ),
        ({"scheme": "https", "port": 443}, {"scheme_redirect": "https"}),
        ({"port": 80}, {}),
        (
            {"port": 8443, "redirectCode": 308},
            {"port_redirect": 8443, "response_code": rc.RedirectAction.PERMANENT_REDIRECT},
        ),
        (
            {"derivePort": "FROM_REQUEST_PORT", "uri": "/x"},
            {"port_redirect": 9080, "path_redirect": "/x"},
        ),
    ],
)
def test_redirects(redirect: dict[str, Any], expected: dict[str, Any]) -> None:
    route = http_routes(vs({"hosts": ["reviews"], "http": [{"redirect": redirect}]}), CONTEXT)[0]
    assert route.redirect == rc.RedirectAction(**expected)


def test_a_redirect_code_envoy_cannot_send_leaves_the_route_out() -> None:
    assert rules("- redirect: {uri: /x, redirectCode: 305}") == []


def test_direct_response_strings_and_bytes() -> None:
    text = one("- directResponse: {status: 418, body: {string: teapot}}").direct_response
    assert (text.status, text.body.inline_string) == (418, "teapot")
    raw = one("- directResponse: {status: 200, body: {bytes: '/w=='}}").direct_response
    assert raw.body.inline_bytes == b"\xff"
    assert not one("- directResponse: {status: 204}").direct_response.HasField("body")


# --- fault, mirrors, CORS, hash policy -------------------------------------------------------


def _fault(route: rc.Route) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    route.typed_per_filter_config[extras.FAULT_FILTER].Unpack(out)
    return out


def test_fault_delay_and_abort_percentages_in_millionths() -> None:
    fault = _fault(
        one(f"""
- fault:
    delay: {{fixedDelay: 7s, percentage: {{value: 0.5}}}}
    abort: {{httpStatus: 500, percentage: {{value: 12.25}}}}
  {TO_V1}
""")
    )
    assert fault.delay.fixed_delay.seconds == 7
    assert fault.delay.percentage.numerator == 5_000
    assert (fault.abort.http_status, fault.abort.percentage.numerator) == (500, 122_500)


def test_fault_deprecated_percent_grpc_status_and_unset_percentage() -> None:
    fault = _fault(
        one(f"""
- fault:
    delay: {{fixedDelay: 1s, percent: 30}}
    abort: {{grpcStatus: UNAVAILABLE}}
  {TO_V1}
""")
    )
    assert fault.delay.percentage.numerator == 300_000
    assert (fault.abort.grpc_status, fault.abort.percentage.numerator) == (14, 0)


def test_mirrors_with_their_percentage_and_zero_is_none() -> None:
    action = one("""
- route: [{destination: {host: reviews, subset: v1}}]
  mirrors:
  - {destination: {host: reviews, subset: v2}}
  - {destination: {host: ratings}, percentage: {value: 25}}
  - {destination: {host: details}, percentage: {value: 0}}
""").route
    assert [
        (m.cluster, m.runtime_fraction.default_value.numerator)
        for m in action.request_mirror_policies
    ] == [
        (f"outbound|9080|v2|{REVIEWS}", 1_000_000),
        ("outbound|9080||ratings.default.svc.cluster.local", 250_000),
    ]


def test_the_deprecated_mirror_with_mirror_percentage() -> None:
    action = one(
        f"- mirror: {{host: reviews, subset: v2}}\n  mirrorPercentage: {{value: 10}}\n  {TO_V1}"
    ).route
    (mirror,) = action.request_mirror_policies
    assert mirror.runtime_fraction.default_value.numerator == 100_000


def test_cors_policy_per_route() -> None:
    route = one(f"""
- corsPolicy:
    allowOrigins: [{{exact: https://a.example}}, {{regex: 'https://.*\\.b\\.example'}}]
    allowMethods: [GET, POST]
    allowHeaders: [x-a, x-b]
    exposeHeaders: [x-c]
    maxAge: 24h
    allowCredentials: true
  {TO_V1}
""")
    policy = cors_pb2.CorsPolicy()
    route.typed_per_filter_config[extras.CORS_FILTER].Unpack(policy)
    assert [m.WhichOneof("match_pattern") for m in policy.allow_origin_string_match] == [
        "exact",
        "safe_regex",
    ]
    assert (policy.allow_methods, policy.allow_headers, policy.expose_headers) == (
        "GET,POST",
        "x-a,x-b",
        "x-c",
    )
    assert (policy.max_age, policy.allow_credentials.value) == ("86400", True)
    assert policy.filter_enabled.default_value.numerator == 100


def test_hash_policies_come_from_the_destination_clusters_consistent_hash() -> None:
    v1 = f"outbound|9080|v1|{REVIEWS}"
    v2 = f"outbound|9080|v2|{REVIEWS}"
    context = RouteContext(
        9080,
        CLIENT,
        SUFFIX,
        hashes={
            v1: ConsistentHash(http_header_name="x-user"),
            v2: ConsistentHash(http_cookie=HTTPCookie("session", "/", 60.0)),
        },
    )
    virtual_service = VirtualService(
        "r",
        "default",
        ("reviews",),
        http=(
            HTTPRoute(
                match=(HTTPMatchRequest(),),
                route=(
                    HTTPRouteDestination(Destination("reviews", "v1"), weight=50),
                    HTTPRouteDestination(Destination("reviews", "v2"), weight=50),
                ),
            ),
        ),
    )
    (route,) = http_routes(virtual_service, context)
    header, cookie = route.route.hash_policy
    assert header.header.header_name == "x-user"
    assert (cookie.cookie.name, cookie.cookie.path, cookie.cookie.ttl.seconds) == (
        "session",
        "/",
        60,
    )
    source_ip = extras.hash_policy(ConsistentHash(use_source_ip=True))
    assert source_ip is not None and source_ip.connection_properties.source_ip
    query = extras.hash_policy(ConsistentHash(http_query_parameter_name="u"))
    assert query is not None and query.query_parameter.name == "u"


def test_the_redirect_codes_translated_are_the_ones_not_listed_as_unsupported() -> None:
    from controlplane.networking.unsupported import REDIRECT_CODES
    from controlplane.translate import virtual_services

    assert frozenset(virtual_services._REDIRECT_CODES) == REDIRECT_CODES


def test_a_consistent_hash_reaches_the_default_route_without_a_virtual_service() -> None:
    """Istio hashes on the default route too: a DestinationRule's consistentHash alone works."""
    service = _service(9080)
    context = RouteContext(
        9080,
        CLIENT,
        SUFFIX,
        hashes={f"outbound|9080||{REVIEWS}": ConsistentHash(http_header_name="x-user")},
    )
    (route,) = service_virtual_host(service, service.ports[0], (), context).routes
    assert route.route.cluster == f"outbound|9080||{REVIEWS}"
    assert [p.header.header_name for p in route.route.hash_policy] == ["x-user"]
    (plain,) = service_virtual_host(service, service.ports[0], (), CONTEXT).routes
    assert not plain.route.hash_policy
