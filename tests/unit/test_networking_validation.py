"""What istiod's validating webhook refuses is refused here, naming the object and the field.

Each case is a small spec and the whole message expected, so a check made on the wrong
field, or a path that points elsewhere, fails. Where a boundary matters, the value just
inside it is accepted (the ``accepted`` tables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from controlplane.errors import InvalidConfig
from controlplane.networking.parse import (
    destination_rule_from_object,
    service_entry_from_object,
    sidecar_from_object,
    virtual_service_from_object,
)

Parse = Callable[[dict[str, Any]], Any]


def obj(kind: str, spec: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": yaml.safe_load(spec),
    }


def refused(parse: Parse, kind: str, spec: str) -> str:
    with pytest.raises(InvalidConfig) as caught:
        parse(obj(kind, spec))
    return str(caught.value)


# --- VirtualService -----------------------------------------------------------------------------

ROUTE = "route: [{destination: {host: reviews}}]"

VS_REFUSED = [
    # weights
    (
        "{hosts: [r], http: [{route: [{destination: {host: a}, weight: 80}, {destination: {host: b}, weight: 10}]}]}",
        "spec.http[0].route[1].weight: weights must add up to 100, they add up to 90",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {host: a}, weight: 101}]}]}",
        "spec.http[0].route[0].weight: must be 100 or less, not 101",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {host: a}, weight: -1}, {destination: {host: b}, weight: 101}]}]}",
        "spec.http[0].route[0].weight: must be 0 or more, not -1",
    ),
    (
        "{hosts: [r], tcp: [{route: [{destination: {host: a}, weight: 50}, {destination: {host: b}}]}]}",
        "spec.tcp[0].route[1].weight: weights must add up to 100, they add up to 50",
    ),
    # route / redirect / directResponse / delegate
    (
        "{hosts: [r], http: [{match: [{uri: {exact: /}}]}]}",
        "spec.http[0]: an HTTP route needs exactly one of route, redirect, directResponse, delegate",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {host: a}}], redirect: {uri: /x}}]}",
        "spec.http[0]: an HTTP route has route and redirect; it needs exactly one of route, redirect, directResponse, delegate",
    ),
    (
        "{hosts: [r], http: [{route: []}]}",
        "spec.http[0].route: at least one destination is required",
    ),
    (
        "{hosts: [r], http: [{redirect: {}}]}",
        "spec.http[0].redirect: a redirect needs at least one of uri, authority, scheme, port",
    ),
    (
        "{hosts: [r], http: [{redirect: {uri: /, redirectCode: 200}}]}",
        "spec.http[0].redirect.redirectCode: must be 300 or more, not 200",
    ),
    (
        "{hosts: [r], http: [{redirect: {scheme: ftp}}]}",
        "spec.http[0].redirect.scheme: 'ftp' is not http or https",
    ),
    (
        "{hosts: [r], http: [{directResponse: {status: 600}}]}",
        "spec.http[0].directResponse.status: must be 599 or less, not 600",
    ),
    (
        "{hosts: [r], http: [{directResponse: {body: {string: x}}}]}",
        "spec.http[0].directResponse.status: a direct response needs a status",
    ),
    (
        "{hosts: [r], http: [{directResponse: {status: 200, body: {bytes: '*'}}}]}",
        "spec.http[0].directResponse.body.bytes: must be base64",
    ),
    (
        f"{{hosts: [r], http: [{{rewrite: {{}}, {ROUTE}}}]}}",
        "spec.http[0].rewrite: a rewrite needs uri, authority or uriRegexRewrite",
    ),
    (
        "{hosts: [r], http: [{redirect: {uri: /x}, fault: {abort: {httpStatus: 500}}}]}",
        "spec.http[0].fault: a route with redirect answers itself: it cannot have fault",
    ),
    (
        "{hosts: [r], http: [{directResponse: {status: 200}, rewrite: {uri: /}}]}",
        "spec.http[0].rewrite: a route with directResponse answers itself: it cannot have rewrite",
    ),
    (
        f"{{hosts: [r], http: [{{rewrite: {{authority: a}}, headers: {{request: {{set: {{host: b}}}}}}, {ROUTE}}}]}}",
        "spec.http[0].headers.request.set.host: the authority is already rewritten by rewrite.authority",
    ),
    (
        f"{{hosts: [r], http: [{{headers: {{response: {{set: {{':status': '200'}}}}}}, {ROUTE}}}]}}",
        "spec.http[0].headers.response.set.:status: ':status' is Envoy's own header: a route cannot set it",
    ),
    (
        f"{{hosts: [r], http: [{{headers: {{request: {{remove: [Host]}}}}, {ROUTE}}}]}}",
        "spec.http[0].headers.request.remove[0]: 'Host' is Envoy's own header: a route cannot remove it",
    ),
    # hosts
    (
        "{hosts: [10.0.0.1]}",
        "spec.hosts[0]: host '10.0.0.1': the last label is all digits (an IP address is not a host)",
    ),
    ("{http: [{" + ROUTE + "}]}", "spec.hosts: at least one host is required"),
    ("{hosts: []}", "spec.hosts: at least one host is required"),
    ("{hosts: ['reviews..shop']}", "spec.hosts[0]: host 'reviews..shop' has an empty label"),
    (
        "{hosts: ['a.*.com']}",
        "spec.hosts[0]: host 'a.*.com': a wildcard '*' may only be the whole first label, as in *.example.com",
    ),
    (
        "{hosts: ['*foo.com']}",
        "spec.hosts[0]: host '*foo.com': a wildcard '*' may only be the whole first label, as in *.example.com",
    ),
    (
        "{hosts: ['*']}",
        "spec.hosts: '*' is not allowed for a VirtualService of the mesh gateway (sidecars)",
    ),
    (
        "{hosts: [r], gateways: ['a/b/c']}",
        "spec.gateways[0]: 'a/b/c' is not mesh, a gateway name or namespace/name",
    ),
    (
        "{hosts: [r], gateways: ['*']}",
        "spec.gateways[0]: '*' is not mesh, a gateway name or namespace/name",
    ),
    (
        "{hosts: [r], gateways: ['/public']}",
        "spec.gateways[0]: '/public' is not mesh, a gateway name or namespace/name",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {host: '*'}}]}]}",
        "spec.http[0].route[0].destination.host: '*' is not a destination: name a service host",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {subset: v1}}]}]}",
        "spec.http[0].route[0].destination.host: a destination host is required",
    ),
    (
        "{hosts: [r], http: [{route: [{destination: {host: a, subset: V_1}}]}]}",
        "spec.http[0].route[0].destination.subset: subset name 'V_1' must be lower-case letters, digits and inner dashes (at most 63)",
    ),
    # matches
    (
        f"{{hosts: [r], http: [{{match: [{{headers: {{End-User: {{exact: jason}}}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].headers.End-User: header name 'End-User' must be a lower-case HTTP header name",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{uri: {{}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].uri: a string match needs exactly one of exact, prefix, regex",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{uri: {{exact: /a, prefix: /b}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].uri: a string match needs exactly one of exact, prefix, regex",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{uri: {{regex: '(unclosed'}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].uri.regex: '(unclosed' is not a regular expression (RE2, checked with Python re): missing ), unterminated subpattern at position 0",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{uri: {{regex: '/(?!admin).*'}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].uri.regex: '/(?!admin).*' uses a look-around or backreference, which RE2 does not have",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{headers: {{x-v: {{regex: '(a)\\1'}}}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].headers.x-v.regex: '(a)\\\\1' uses a look-around or backreference, which RE2 does not have",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{port: 0}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].port: must be 1 or more, not 0",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{method: {{exact: ''}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].method: an empty exact match is allowed on uri only",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{sourceNamespace: Prod_1}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].sourceNamespace: 'Prod_1' is not a namespace name",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{headers: {{x-a: {{regex: '*'}}}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].headers.x-a.regex: '*' is not a regular expression (RE2, checked with Python re): nothing to repeat at position 0",
    ),
    (
        f"{{hosts: [r], http: [{{match: [{{headers: {{x-a: null}}}}], {ROUTE}}}]}}",
        "spec.http[0].match[0].headers.x-a: must be an object, not null",
    ),
    # timeouts and retries
    (
        f"{{hosts: [r], http: [{{timeout: 0.5ms, {ROUTE}}}]}}",
        "spec.http[0].timeout: '0.5ms' is too short: a duration here must be at least 1ms",
    ),
    (
        f"{{hosts: [r], http: [{{timeout: 1500us, {ROUTE}}}]}}",
        "spec.http[0].timeout: '1500us' is finer than Istio takes: durations are whole milliseconds",
    ),
    (
        f"{{hosts: [r], http: [{{timeout: 5, {ROUTE}}}]}}",
        "spec.http[0].timeout: must be a string, not a number",
    ),
    (
        f"{{hosts: [r], http: [{{timeout: 5x, {ROUTE}}}]}}",
        "spec.http[0].timeout: '5x' has the unknown unit 'x' (units: ns, us, ms, s, m, h)",
    ),
    (
        f"{{hosts: [r], http: [{{retries: {{attempts: -1}}, {ROUTE}}}]}}",
        "spec.http[0].retries.attempts: must be 0 or more, not -1",
    ),
    (
        f"{{hosts: [r], http: [{{retries: {{attempts: 2, perTryTimeout: 0s}}, {ROUTE}}}]}}",
        "spec.http[0].retries.perTryTimeout: '0s' is too short: a duration here must be at least 1ms",
    ),
    (
        f"{{hosts: [r], http: [{{retries: {{attempts: 0, retryOn: 5xx}}, {ROUTE}}}]}}",
        "spec.http[0].retries.retryOn: retries with attempts 0 (off) cannot set anything else",
    ),
    (
        f"{{hosts: [r], http: [{{retries: {{attempts: 1, retryOn: '5xx,sometimes'}}, {ROUTE}}}]}}",
        "spec.http[0].retries.retryOn: 'sometimes' is not a retry condition or HTTP status code",
    ),
    # faults
    (
        f"{{hosts: [r], http: [{{fault: {{}}, {ROUTE}}}]}}",
        "spec.http[0].fault: a fault needs a delay or an abort",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{delay: {{percentage: {{value: 10}}}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.delay.fixedDelay: a delay needs fixedDelay",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 100.5}}}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.delay.percentage.value: must be between 0 and 100, not 100.5",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{delay: {{fixedDelay: 1s, percent: 101}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.delay.percent: must be 100 or less, not 101",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{delay: {{exponentialDelay: 1s}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.delay.exponentialDelay: Istio does not support exponential delays: use fixedDelay",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{abort: {{percentage: {{value: 1}}}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.abort: an abort needs exactly one of httpStatus, grpcStatus",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{abort: {{httpStatus: 199}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.abort.httpStatus: must be 200 or more, not 199",
    ),
    (
        f"{{hosts: [r], http: [{{fault: {{abort: {{httpStatus: 600}}}}, {ROUTE}}}]}}",
        "spec.http[0].fault.abort.httpStatus: must be 599 or less, not 600",
    ),
    # mirrors and CORS
    (
        f"{{hosts: [r], http: [{{mirror: {{host: m}}, mirrorPercentage: {{value: 101}}, {ROUTE}}}]}}",
        "spec.http[0].mirrorPercentage.value: must be between 0 and 100, not 101",
    ),
    (
        f"{{hosts: [r], http: [{{mirrorPercentage: {{value: 5}}, {ROUTE}}}]}}",
        "spec.http[0].mirrorPercentage: needs mirror",
    ),
    (
        f"{{hosts: [r], http: [{{mirror: {{host: m}}, mirrors: [{{destination: {{host: n}}}}], {ROUTE}}}]}}",
        "spec.http[0].mirrors: set mirror or mirrors, not both",
    ),
    (
        f"{{hosts: [r], http: [{{corsPolicy: {{allowMethods: [FETCH]}}, {ROUTE}}}]}}",
        "spec.http[0].corsPolicy.allowMethods[0]: 'FETCH' is not an HTTP method",
    ),
    (
        f"{{hosts: [r], http: [{{corsPolicy: {{maxAge: 1500ms}}, {ROUTE}}}]}}",
        "spec.http[0].corsPolicy.maxAge: browsers cache preflights in whole seconds: use e.g. 24h or 30s",
    ),
    (
        f"{{hosts: [r], http: [{{corsPolicy: {{allowOrigins: [{{exact: ''}}]}}, {ROUTE}}}]}}",
        "spec.http[0].corsPolicy.allowOrigins[0]: an allowed origin needs a non-empty exact, prefix or regex",
    ),
    # tls and tcp
    (
        "{hosts: [r], tls: [{route: [{destination: {host: a}}]}]}",
        "spec.tls[0].match: a TLS route needs at least one match",
    ),
    (
        "{hosts: [r], tls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]}",
        "spec.tls[0].match[0].sniHosts: a TLS match needs at least one SNI host",
    ),
    (
        "{hosts: [r], tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a}}]}]}",
        "spec.tcp[0].match[0].destinationSubnets[0]: '10.0.0.0/33' is not an IP address or CIDR (e.g. 10.0.0.1 or 10.0.0.0/8)",
    ),
    # the schema: unknown fields and wrong types
    ("{hosts: [r], htpp: []}", "spec.htpp: unknown field (Istio's API has no such field)"),
    (
        f"{{hosts: [r], http: [{{{ROUTE}, retries: {{attempts: 1, retryOnn: 5xx}}}}]}}",
        "spec.http[0].retries.retryOnn: unknown field (Istio's API has no such field)",
    ),
    ("{hosts: reviews}", "spec.hosts: must be a list, not a string"),
    (
        "{hosts: [r], http: [{route: [{destination: {host: a}, weight: '50'}]}]}",
        "spec.http[0].route[0].weight: must be an integer, not a string",
    ),
    (
        "{hosts: [r], exportTo: ['*', '.']}",
        "spec.exportTo: '*' cannot be combined with other values",
    ),
    (
        "{hosts: [r], exportTo: [Bad_NS]}",
        "spec.exportTo[0]: 'Bad_NS' is not '.', '*' or a namespace name",
    ),
    (
        "{hosts: [r], exportTo: ['~']}",
        "spec.exportTo[0]: '~' is not '.', '*' or a namespace name",
    ),
    (
        "{hosts: [r], exportTo: [., shop]}",
        "spec.exportTo[1]: 'shop' repeats namespace shop ('.' is this object's own)",
    ),
]


@pytest.mark.parametrize(("spec", "problem"), VS_REFUSED)
def test_virtual_service_refused(spec: str, problem: str) -> None:
    assert refused(virtual_service_from_object, "VirtualService", spec) == (
        f"VirtualService shop/reviews: {problem}"
    )


VS_ACCEPTED = [
    # a lone destination may omit its weight; several must add up to exactly 100
    "{hosts: [r], http: [{route: [{destination: {host: a}}]}]}",
    "{hosts: [r], http: [{route: [{destination: {host: a}, weight: 100}, {destination: {host: b}, weight: 0}]}]}",
    "{hosts: ['*.example.com', reviews.shop.svc.cluster.local, 'istio.io.']}",
    "{hosts: ['*'], gateways: [istio-system/public]}",
    "{hosts: [r], gateways: [mesh, public, public.istio-system.svc.cluster.local]}",
    "{hosts: [r], http: [{timeout: 1ms, directResponse: {status: 200}}, {directResponse: {status: 599}}]}",
    f"{{hosts: [r], http: [{{retries: {{attempts: 0}}, {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{fault: {{abort: {{httpStatus: 200, percentage: {{value: 0}}}}}}, {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{fault: {{delay: {{fixedDelay: 1ms, percentage: {{value: 100}}}}}}, {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{match: [{{headers: {{x-present: {{}}}}}}], {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{match: [{{withoutHeaders: {{x-debug: {{regex: '*'}}}}}}], {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{match: [{{headers: {{'@request.auth.claims.group': {{exact: admin}}}}}}], {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{match: [{{uri: {{prefix: ''}}}}], {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{headers: {{request: {{set: {{':authority': b}}}}}}, {ROUTE}}}]}}",
    f"{{hosts: [r], http: [{{match: [{{uri: {{regex: '/(?:v1|v2)/[^/]+\\.json'}}}}], {ROUTE}}}]}}",
    "{hosts: [r], http: [{redirect: {port: 8443, redirectCode: 308}}]}",
    "{hosts: [r], exportTo: [., other-ns]}",
]


@pytest.mark.parametrize("spec", VS_ACCEPTED)
def test_virtual_service_accepted(spec: str) -> None:
    virtual_service_from_object(obj("VirtualService", spec))


def test_a_direct_response_body_is_at_most_one_mebibyte() -> None:
    spec = "{hosts: [r], http: [{directResponse: {status: 200, body: {string: %s}}}]}"
    virtual_service_from_object(obj("VirtualService", spec % ("x" * 1024 * 1024)))
    assert refused(
        virtual_service_from_object, "VirtualService", spec % ("x" * (1024 * 1024 + 1))
    ) == (
        "VirtualService shop/reviews: spec.http[0].directResponse.body: "
        "1048577 bytes is too large (at most 1 MiB: it rides in every push)"
    )


# --- DestinationRule ----------------------------------------------------------------------------

DR_REFUSED = [
    (
        "{host: r, workloadSelector: {matchLabels: {app: a}}, exportTo: [other]}",
        "spec.exportTo: a rule with a workloadSelector applies in its own namespace only",
    ),
    (
        "{host: r, workloadSelector: {matchLabels: {app: '*'}}}",
        "spec.workloadSelector.matchLabels: app=*: selectors take exact labels (no empty key, no '*')",
    ),
    ("{}", "spec.host: a DestinationRule needs a host"),
    ("{host: 'r..s'}", "spec.host: host 'r..s' has an empty label"),
    (
        "{host: r, subsets: [{name: v1, labels: {v: '1'}}, {name: v1, labels: {v: '2'}}]}",
        "spec.subsets[1].name: subset 'v1' is defined twice",
    ),
    ("{host: r, subsets: [{labels: {v: '1'}}]}", "spec.subsets[0].name: a subset needs a name"),
    (
        "{host: r, subsets: [{name: v.1}]}",
        "spec.subsets[0].name: subset name 'v.1' must be lower-case letters, digits and inner dashes (at most 63)",
    ),
    (
        "{host: r, trafficPolicy: {}}",
        "spec.trafficPolicy: a traffic policy needs at least one setting",
    ),
    (
        "{host: r, trafficPolicy: {loadBalancer: {simple: FASTEST}}}",
        "spec.trafficPolicy.loadBalancer.simple: 'FASTEST' is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST",
    ),
    (
        "{host: r, trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash: a load balancer sets simple or consistentHash, not both",
    ),
    (
        "{host: r, trafficPolicy: {loadBalancer: {consistentHash: {}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash: a consistent hash needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
    ),
    (
        "{host: r, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash: a consistent hash needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
    ),
    (
        "{host: r, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 10s}}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: a hash cookie needs a name",
    ),
    (
        "{host: r, trafficPolicy: {connectionPool: {}}}",
        "spec.trafficPolicy.connectionPool: a connection pool needs tcp or http settings",
    ),
    (
        "{host: r, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}}",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections: must be 0 or more, not -1",
    ),
    (
        "{host: r, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}}",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout: '0s' is too short: a duration here must be at least 1ms",
    ),
    (
        "{host: r, trafficPolicy: {connectionPool: {http: {http2MaxRequests: -5}}}}",
        "spec.trafficPolicy.connectionPool.http.http2MaxRequests: must be 0 or more, not -5",
    ),
    (
        "{host: r, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}}",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol: cannot be true with h2UpgradePolicy UPGRADE",
    ),
    (
        "{host: r, trafficPolicy: {outlierDetection: {consecutive5xxErrors: -1}}}",
        "spec.trafficPolicy.outlierDetection.consecutive5xxErrors: must be 0 or more, not -1",
    ),
    (
        "{host: r, trafficPolicy: {outlierDetection: {interval: 0s}}}",
        "spec.trafficPolicy.outlierDetection.interval: '0s' is too short: a duration here must be at least 1ms",
    ),
    (
        "{host: r, trafficPolicy: {outlierDetection: {baseEjectionTime: -1s}}}",
        "spec.trafficPolicy.outlierDetection.baseEjectionTime: '-1s' is negative: a duration must be 0 or more",
    ),
    (
        "{host: r, trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}}",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be 100 or less, not 101",
    ),
    (
        "{host: r, trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}}",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: counts only with splitExternalLocalOriginErrors: true",
    ),
    (
        "{host: r, trafficPolicy: {tls: {mode: STRICT}}}",
        "spec.trafficPolicy.tls.mode: 'STRICT' is not one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
    ),
    (
        "{host: r, trafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}}",
        "spec.trafficPolicy.tls.clientCertificate: MUTUAL needs a client certificate and private key (or credentialName)",
    ),
    (
        "{host: r, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /ca}}}",
        "spec.trafficPolicy.tls.caCertificates: ISTIO_MUTUAL uses the mesh's certificates: leave certificates and credentialName unset",
    ),
    (
        "{host: r, trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca}}}",
        "spec.trafficPolicy.tls.caCertificates: credentialName brings the certificates: leave the files unset",
    ),
    (
        "{host: r, trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}}",
        "spec.trafficPolicy.portLevelSettings[0].port: a port-level setting needs port.number",
    ),
    (
        "{host: r, trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}}",
        "spec.trafficPolicy.portLevelSettings[0]: a port-level setting needs a policy besides its port",
    ),
    (
        "{host: r, trafficPolicy: {portLevelSettings: [{port: {number: 80}, portLevelSettings: []}]}}",
        "spec.trafficPolicy.portLevelSettings[0].portLevelSettings: unknown field (Istio's API has no such field)",
    ),
    (
        "{host: r, subsets: [{name: v1, trafficPolicy: {loadBalancer: {simple: random}}}]}",
        "spec.subsets[0].trafficPolicy.loadBalancer.simple: 'random' is not one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST",
    ),
    (
        "{host: r, workloadSelector: {labels: {app: a}}}",
        "spec.workloadSelector.labels: unknown field (Istio's API has no such field)",
    ),
]


@pytest.mark.parametrize(("spec", "problem"), DR_REFUSED)
def test_destination_rule_refused(spec: str, problem: str) -> None:
    assert refused(destination_rule_from_object, "DestinationRule", spec) == (
        f"DestinationRule shop/reviews: {problem}"
    )


DR_ACCEPTED = [
    "{host: '*.example.com'}",
    "{host: r, workloadSelector: {matchLabels: {app: a}}, exportTo: [.]}",
    "{host: r, workloadSelector: {matchLabels: {app: a}}, exportTo: [shop]}",
    "{host: r, trafficPolicy: {connectionPool: {tcp: {maxConnections: 0, connectTimeout: 1ms}}}}",
    "{host: r, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 0, maxEjectionPercent: 100, minHealthPercent: 0}}}",
    "{host: r, trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3, splitExternalLocalOriginErrors: true}}}",
    "{host: r, trafficPolicy: {tls: {mode: MUTUAL, credentialName: client-cred}}}",
    "{host: r, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c, privateKey: /k}}}",
    "{host: r, trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user, minimumRingSize: 1024}}}}",
]


@pytest.mark.parametrize("spec", DR_ACCEPTED)
def test_destination_rule_accepted(spec: str) -> None:
    destination_rule_from_object(obj("DestinationRule", spec))


# --- ServiceEntry -------------------------------------------------------------------------------

HTTP_PORT = "ports: [{number: 80, name: http, protocol: HTTP}]"

SE_REFUSED = [
    (
        "{hosts: [a.com], exportTo: ['~', '.']}",
        "spec.exportTo: '~' cannot be combined with other values",
    ),
    ("{" + HTTP_PORT + "}", "spec.hosts: at least one host is required"),
    ("{hosts: ['*']}", "spec.hosts: '*' is not allowed in a ServiceEntry: name the hosts"),
    (
        "{hosts: [a.com], resolution: MAGIC}",
        "spec.resolution: 'MAGIC' is not one of NONE, STATIC, DNS, DNS_ROUND_ROBIN",
    ),
    (
        "{hosts: [a.com], location: OUTSIDE}",
        "spec.location: 'OUTSIDE' is not one of MESH_EXTERNAL, MESH_INTERNAL",
    ),
    (
        "{hosts: [a.com], ports: [{name: http, protocol: HTTP}]}",
        "spec.ports[0].number: a port needs a number",
    ),
    (
        "{hosts: [a.com], ports: [{number: 70000, name: http}]}",
        "spec.ports[0].number: must be 65535 or less, not 70000",
    ),
    (
        "{hosts: [a.com], ports: [{number: 80, protocol: HTTP}]}",
        "spec.ports[0].name: a port needs a name",
    ),
    (
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP3}]}",
        "spec.ports[0].protocol: 'HTTP3' is not one of HTTP, HTTP2, GRPC, GRPC-Web, HTTPS, TLS, TCP, Mongo, MySQL, Redis, UDP",
    ),
    (
        "{hosts: [a.com], ports: [{number: 80, name: http}, {number: 80, name: web}]}",
        "spec.ports[1].number: port 80 is declared twice",
    ),
    (
        "{hosts: [a.com], ports: [{number: 80, name: http}, {number: 81, name: http}]}",
        "spec.ports[1].name: port name 'http' is declared twice",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, " + HTTP_PORT + "}",
        "spec.endpoints: resolution STATIC needs endpoints (or a workloadSelector)",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, "
        + HTTP_PORT
        + ", endpoints: [{address: db.example.com}]}",
        "spec.endpoints[0].address: 'db.example.com' is not an IP address (resolution STATIC)",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, " + HTTP_PORT + ", endpoints: [{ports: {http: 80}}]}",
        "spec.endpoints[0].address: an endpoint needs an address",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, "
        + HTTP_PORT
        + ", endpoints: [{address: 10.0.0.1, ports: {https: 443}}]}",
        "spec.endpoints[0].ports.https: the ServiceEntry declares no port named 'https'",
    ),
    (
        "{hosts: [a.com], resolution: NONE, " + HTTP_PORT + ", endpoints: [{address: 10.0.0.1}]}",
        "spec.endpoints: resolution NONE forwards to the original address: no endpoints",
    ),
    (
        "{hosts: [a.com], resolution: DNS, addresses: [10.0.0.0/24], " + HTTP_PORT + "}",
        "spec.addresses[0]: '10.0.0.0/24': CIDR addresses need resolution NONE or STATIC",
    ),
    (
        "{hosts: [a.com], addresses: [10.0.0.300], " + HTTP_PORT + "}",
        "spec.addresses[0]: '10.0.0.300' is not an IP address or CIDR (e.g. 10.0.0.1 or 10.0.0.0/8)",
    ),
    (
        "{hosts: ['*.a.com'], resolution: DNS, " + HTTP_PORT + "}",
        "spec.hosts[0]: '*.a.com' cannot be resolved by DNS: give endpoints or resolution NONE",
    ),
    (
        "{hosts: [a.com, b.com], resolution: DNS, ports: [{number: 5432, name: db, protocol: TCP}]}",
        "spec.ports[0]: TCP port 5432 cannot tell 2 hosts apart (only HTTP, HTTPS and TLS can): use one host or resolution NONE",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, "
        + HTTP_PORT
        + ", endpoints: [{address: 10.0.0.1}], workloadSelector: {labels: {app: a}}}",
        "spec.workloadSelector: a ServiceEntry has endpoints or a workloadSelector, not both",
    ),
    (
        "{hosts: [a.com], resolution: STATIC, ports: [{number: 80, name: a}, {number: 81, name: b}], endpoints: [{address: 'unix:///sock'}]}",
        "spec.endpoints[0].address: a unix:// endpoint needs a ServiceEntry with exactly one port",
    ),
]


@pytest.mark.parametrize(("spec", "problem"), SE_REFUSED)
def test_service_entry_refused(spec: str, problem: str) -> None:
    assert refused(service_entry_from_object, "ServiceEntry", spec) == (
        f"ServiceEntry shop/reviews: {problem}"
    )


SE_ACCEPTED = [
    "{hosts: [a.com], resolution: DNS, addresses: [10.0.0.1], " + HTTP_PORT + "}",
    "{hosts: [a.com], resolution: STATIC, addresses: [10.0.0.0/24], "
    + HTTP_PORT
    + ", endpoints: [{address: 10.0.0.1}, {address: 'fd00::1'}]}",
    "{hosts: [a.com], resolution: STATIC, "
    + HTTP_PORT
    + ", workloadSelector: {labels: {app: vm}}}",
    "{hosts: [a.com], resolution: DNS, "
    + HTTP_PORT
    + ", endpoints: [{address: a-1.example.com}, {address: 10.0.0.2}]}",
    "{hosts: [a.com, b.com], resolution: DNS, ports: [{number: 443, name: tls, protocol: TLS}]}",
    "{hosts: [a.com, b.com], resolution: NONE, ports: [{number: 5432, name: db, protocol: TCP}]}",
    "{hosts: [a.com], ports: [{number: 65535, name: top, protocol: tcp}]}",
    "{hosts: [a.com], exportTo: ['~']}",  # only its own proxies see it
]


@pytest.mark.parametrize("spec", SE_ACCEPTED)
def test_service_entry_accepted(spec: str) -> None:
    service_entry_from_object(obj("ServiceEntry", spec))


# --- Sidecar ------------------------------------------------------------------------------------

SIDECAR_REFUSED = [
    (
        "{egress: [{hosts: ['./reviews']}]}",
        "spec.egress[0].hosts[0]: 'reviews' is a short name: write the FQDN, e.g. reviews.<ns>.svc.cluster.local",
    ),
    ("{}", "spec: a Sidecar needs egress, ingress or outboundTrafficPolicy"),
    (
        "{egress: [{port: {number: 80}}]}",
        "spec.egress[0].hosts: an egress listener needs at least one host (namespace/dnsName)",
    ),
    (
        "{egress: [{hosts: ['reviews.shop.svc.cluster.local']}]}",
        "spec.egress[0].hosts[0]: 'reviews.shop.svc.cluster.local' is not namespace/dnsName (e.g. ./* or istio-system/*)",
    ),
    (
        "{egress: [{hosts: ['/*']}]}",
        "spec.egress[0].hosts[0]: '/*' is not namespace/dnsName (e.g. ./* or istio-system/*)",
    ),
    (
        "{egress: [{hosts: ['Bad_NS/*']}]}",
        "spec.egress[0].hosts[0]: 'Bad_NS' is not '.', '*', '~' or a namespace name",
    ),
    (
        "{egress: [{hosts: ['./a.*.com']}]}",
        "spec.egress[0].hosts[0]: host 'a.*.com': a wildcard '*' may only be the whole first label, as in *.example.com",
    ),
    (
        "{egress: [{hosts: ['./*']}, {port: {number: 80}, hosts: ['./*']}]}",
        "spec.egress[0].port: only the last egress listener may leave the port unset (it catches the rest)",
    ),
    (
        "{egress: [{port: {number: 80}, hosts: ['./*']}, {port: {number: 80}, hosts: ['*/*']}]}",
        "spec.egress[1].port: port 80 already has an egress listener",
    ),
    (
        "{egress: [{port: {number: 0}, hosts: ['./*']}]}",
        "spec.egress[0].port.number: a port needs a number 1-65535 (0 only with a unix:// bind)",
    ),
    (
        "{egress: [{port: {number: 80}, bind: localhost, hosts: ['./*']}]}",
        "spec.egress[0].bind: 'localhost' is not an IP address or unix:// path",
    ),
    (
        "{egress: [{port: {number: 0}, bind: 'unix:///s', captureMode: IPTABLES, hosts: ['./*']}]}",
        "spec.egress[0].captureMode: a unix:// listener cannot capture with IPTABLES",
    ),
    (
        "{egress: [{hosts: ['./*'], captureMode: TPROXY}]}",
        "spec.egress[0].captureMode: 'TPROXY' is not one of DEFAULT, IPTABLES, NONE",
    ),
    (
        "{outboundTrafficPolicy: {mode: DENY}}",
        "spec.outboundTrafficPolicy.mode: 'DENY' is not one of REGISTRY_ONLY, ALLOW_ANY",
    ),
    (
        "{outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: proxy}}}",
        "spec.outboundTrafficPolicy.egressProxy: an egress proxy needs mode ALLOW_ANY",
    ),
    (
        "{egress: [{hosts: ['./*']}], workloadSelector: {matchLabels: {app: a}}}",
        "spec.workloadSelector.matchLabels: unknown field (Istio's API has no such field)",
    ),
]


@pytest.mark.parametrize(("spec", "problem"), SIDECAR_REFUSED)
def test_sidecar_refused(spec: str, problem: str) -> None:
    assert refused(sidecar_from_object, "Sidecar", spec) == f"Sidecar shop/reviews: {problem}"


SIDECAR_ACCEPTED = [
    "{egress: [{hosts: ['~/*']}]}",
    "{egress: [{hosts: ['./reviews.shop.svc.cluster.local', 'istio-system/*.example.com']}]}",
    "{egress: [{port: {number: 80}, hosts: ['./*']}, {port: {number: 81}, hosts: ['./*']}, {hosts: ['*/*']}]}",
    "{egress: [{port: {number: 0}, bind: 'unix:///var/run/s', captureMode: NONE, hosts: ['./*']}]}",
    "{egress: [{port: {number: 80}, bind: 127.0.0.1, hosts: ['./*']}]}",
    "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy, port: {number: 443}}}}",
]


@pytest.mark.parametrize("spec", SIDECAR_ACCEPTED)
def test_sidecar_accepted(spec: str) -> None:
    sidecar_from_object(obj("Sidecar", spec))
