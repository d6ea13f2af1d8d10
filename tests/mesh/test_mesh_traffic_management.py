"""Traffic management end to end: VirtualService and DestinationRule, counted at real Envoys.

The real parts of ``test_mesh_e2e.py`` (API server, injector, ``remora init``, ``remora proxy
sidecar``, Envoy, ``remora discovery``) with bookinfo's ``reviews`` in two versions behind one
Service (:mod:`harness.mesh_versions`) and Istio's traffic-management tasks applied to it as
``networking.istio.io/v1`` YAML: request routing by header, traffic shifting, fault
injection, request timeouts and retries, mirroring, the DestinationRule's consistent-hash load
balancing, connection-pool limits (circuit breaking) and outlier detection, and gRPC routed by
method (a gRPC server in the same pods, :mod:`harness.mesh_apps.grpc_echo`, behind a Service
port named ``grpc``). Each test waits until the client's Envoy holds its
routes and their clusters (``/config_dump``), then sends requests from the client pod and
counts answers by status and by the version that answered. Shares are asserted within bounds
of more than three standard deviations of the binomial count, so a correct mesh passes.
"""

from __future__ import annotations

import collections
import json
import logging
import statistics
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from harness.mesh import APPS, Mesh
from harness.mesh_traffic import TrafficLoop, burst
from harness.mesh_versions import IstioConfig, Versions, service_for, versions_and_client
from harness.mesh_workloads import SERVER_PORT, SERVICE_PORT, Pods
from harness.pod_envoy import active_clusters, stat, virtual_host
from harness.polling import wait_until

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.netns,
    pytest.mark.envoy,
    pytest.mark.slow,
]

log = logging.getLogger(__name__)  # figures for the report: pytest --log-cli-level=INFO
Route = dict[str, Any]

SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""


@pytest.fixture(scope="module")
def reviews(mesh: Mesh) -> Iterator[Versions]:
    """``reviews`` v1 and v2 behind one Service, and the client pod; shared by the module."""
    with versions_and_client(mesh) as running:
        yield running


@pytest.fixture
def istio(mesh: Mesh) -> Iterator[IstioConfig]:
    """Applies a test's Istio YAML; deletes it after the test."""
    config = IstioConfig(mesh)
    yield config
    config.clear()


def canary(v1: int, v2: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: {v1}
    - destination:
        host: reviews
        subset: v2
      weight: {v2}
"""


def reviews_route(http: str) -> str:
    """A VirtualService for ``reviews`` whose one HTTP route has ``http`` besides its
    destination (YAML indented for the route)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
{http}
"""


def cluster(versions: Versions, subset: str = "") -> str:
    return f"outbound|{SERVICE_PORT}|{subset}|{versions.host}"


def wait_for_routes(
    versions: Versions,
    what: str,
    check: Callable[[list[Route]], bool],
    clusters_check: Callable[[dict[str, Any]], bool] = lambda _: True,
    port: int = SERVICE_PORT,
) -> None:
    """Wait until the client's Envoy routes ``reviews`` as ``check`` wants, and holds every
    cluster those routes name (a weighted cluster not yet warm answers 503 NC), as
    ``clusters_check`` wants them (by name); on timeout the failure shows the virtual host
    and the clusters Envoy had."""
    seen: dict[str, Any] = {}

    def routes_and_clusters() -> bool:
        host = virtual_host(versions.client, str(port), versions.host)
        routes: list[Route] = host.get("routes", []) if host else []
        seen["virtual host"] = host
        if not routes or not check(routes):
            return False
        seen["clusters"] = clusters = active_clusters(versions.client)
        return named_clusters(routes) <= clusters.keys() and clusters_check(clusters)

    try:
        wait_until(f"the client's Envoy has {what}", routes_and_clusters)
    except AssertionError as error:
        raise AssertionError(f"{error}; it had {json.dumps(seen)}") from None


def named_clusters(routes: list[Route]) -> set[str]:
    names = set()
    for route in routes:
        action = route.get("route", {})
        if "cluster" in action:
            names.add(action["cluster"])
        names.update(c["name"] for c in action.get("weighted_clusters", {}).get("clusters", []))
    return names


def weights(route: Route) -> dict[str, int]:
    clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
    return {c["name"]: int(c.get("weight", 0)) for c in clusters}


def _fault(route: Route) -> set[str]:
    """What the route's fault filter config injects: ``abort``, ``delay``, both or neither."""
    config = route.get("typed_per_filter_config", {}).get("envoy.filters.http.fault", {})
    return {kind for kind in ("abort", "delay") if kind in config}


def share(counts: dict[str, int], key: str) -> float:
    return 100.0 * counts.get(key, 0) / sum(counts.values())


def test_without_rules_both_versions_serve_and_a_500_is_not_retried(reviews: Versions) -> None:
    """The baseline the rules below change: the Service's default route spreads requests
    over both versions, and Istio's default retries (503 and connection failures only)
    leave half of ``/flaky``'s answers failed."""
    counted = burst(reviews.client, reviews.url + "/baseline", 400)
    log.info("no rules, 400 requests: %s, versions %s", counted["statuses"], counted["versions"])
    assert counted["statuses"] == {"200": 400}
    assert 25 <= share(counted["versions"], "v2") <= 75, counted["versions"]
    before = _flaky_counts(reviews)
    flaky = burst(reviews.client, reviews.url + "/flaky", 40, concurrency=1)
    after = _flaky_counts(reviews)
    answered, failed = after[0] - before[0], after[1] - before[1]
    log.info("/flaky without retries: %s; the servers answered %d", flaky["statuses"], answered)
    assert answered == 40  # nothing was retried
    assert flaky["statuses"].get("500", 0) == failed >= 10, flaky["statuses"]


def test_canary_weights_shift_traffic_and_moving_them_fails_nothing(
    reviews: Versions, istio: IstioConfig
) -> None:
    v1, v2 = cluster(reviews, "v1"), cluster(reviews, "v2")
    istio.apply(SUBSETS + "---" + canary(90, 10))
    wait_for_routes(reviews, "90/10", lambda r: weights(r[-1]) == {v1: 90, v2: 10})
    counted = burst(reviews.client, reviews.url + "/canary", 1000)
    log.info("90/10 over 1000: %s, versions %s", counted["statuses"], counted["versions"])
    assert counted["statuses"] == {"200": 1000}
    assert abs(share(counted["versions"], "v2") - 10) <= 3, counted["versions"]

    loop = TrafficLoop(Pods(reviews.pods["v1"], reviews.client, reviews.cluster_ip))
    try:
        loop.wait_flowing()
        istio.apply(canary(50, 50))
        wait_for_routes(reviews, "50/50", lambda r: weights(r[-1]) == {v1: 50, v2: 50})
        loop.wait_flowing()
    finally:
        summary = loop.stop()
    log.info("weights moved under traffic: %s", summary)
    assert summary["failed"] == 0, summary
    # 3,000 requests: the ±3 points are 3.3 standard deviations of the 50/50 count.
    counted = burst(reviews.client, reviews.url + "/canary", 3000)
    log.info("50/50 over 3000: %s, versions %s", counted["statuses"], counted["versions"])
    assert counted["statuses"] == {"200": 3000}
    assert abs(share(counted["versions"], "v2") - 50) <= 3, counted["versions"]


def test_end_user_jason_goes_to_v2_everyone_else_to_v1(
    reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(
        SUBSETS
        + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
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
    )
    v1, v2 = cluster(reviews, "v1"), cluster(reviews, "v2")
    wait_for_routes(
        reviews,
        "the end-user route",
        lambda r: [x.get("route", {}).get("cluster") for x in r[-2:]] == [v2, v1],
    )
    for headers, version in (
        ({"end-user": "jason"}, "v2"),
        ({}, "v1"),
        ({"end-user": "ann"}, "v1"),
    ):
        counted = burst(reviews.client, reviews.url + "/user", 100, headers=headers)
        log.info("%s: %s", headers or "no end-user", counted["versions"])
        assert counted["statuses"] == {"200": 100}, headers
        assert counted["versions"] == {version: 100}, headers


def test_abort_fault_fails_its_share_with_503(reviews: Versions, istio: IstioConfig) -> None:
    istio.apply(
        reviews_route(
            """    fault:
      abort:
        percentage:
          value: 30
        httpStatus: 503"""
        )
    )
    wait_for_routes(reviews, "the abort fault", lambda r: _fault(r[-1]) == {"abort"})
    counted = burst(reviews.client, reviews.url + "/abort", 1000)
    log.info("abort 30%% over 1000: %s", counted["statuses"])
    assert set(counted["statuses"]) == {"200", "503"}, counted["statuses"]
    assert abs(share(counted["statuses"], "503") - 30) <= 5, counted["statuses"]


def test_delay_fault_slows_its_share_by_two_seconds(reviews: Versions, istio: IstioConfig) -> None:
    istio.apply(
        reviews_route(
            """    fault:
      delay:
        percentage:
          value: 50
        fixedDelay: 2s"""
        )
    )
    wait_for_routes(reviews, "the delay fault", lambda r: _fault(r[-1]) == {"delay"})
    counted = burst(reviews.client, reviews.url + "/delayed", 40, concurrency=10)
    seconds = sorted(result[2] for result in counted["results"])
    # A delayed request takes the 2 s (Envoy's timer may fire a millisecond or two early).
    slow = [s for s in seconds if s >= 1.9]
    fast = [s for s in seconds if s < 1.9]
    log.info("delay 2 s on 50%% of 40: %d slow, %d fast; seconds %s", len(slow), len(fast), seconds)
    assert counted["statuses"] == {"200": 40}
    assert 10 <= len(slow) <= 30, seconds  # 50 % of 40 is 20 ± 3.2 standard deviations
    # The others were not delayed: most answer in milliseconds (a loaded 2-core host may
    # stall a few, so the median, not the maximum).
    assert statistics.median(fast) < 0.5, seconds


def test_route_timeout_answers_504_before_a_slow_server(
    reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(reviews_route("    timeout: 0.5s"))
    wait_for_routes(
        reviews, "the 0.5 s timeout", lambda r: r[-1]["route"].get("timeout") == "0.500s"
    )
    slow = burst(reviews.client, reviews.url + "/delay?seconds=2", 4, concurrency=4)
    fast = burst(reviews.client, reviews.url + "/fast", 4, concurrency=4)
    seconds = [result[2] for result in slow["results"]]
    log.info("0.5 s timeout, server sleeps 2 s: %s in %s s", slow["statuses"], seconds)
    assert slow["statuses"] == {"504": 4}, slow
    assert all(0.4 <= s < 1.5 for s in seconds), seconds
    assert fast["statuses"] == {"200": 4}, fast


def test_retries_hide_a_server_that_fails_every_other_request(
    reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(
        reviews_route(
            """    retries:
      attempts: 3
      retryOn: 5xx"""
        )
    )
    wait_for_routes(
        reviews,
        "the retry policy",
        lambda r: r[-1]["route"].get("retry_policy", {}).get("num_retries") == 3,
    )
    retried = f"cluster.{cluster(reviews)}.upstream_rq_retry"
    before = _flaky_counts(reviews), stat(reviews.client, retried, missing_ok=True)
    counted = burst(reviews.client, reviews.url + "/flaky", 100, concurrency=1)
    after = _flaky_counts(reviews), stat(reviews.client, retried, missing_ok=True)
    answered, failed = (after[0][i] - before[0][i] for i in (0, 1))
    log.info(
        "retries on /flaky: client saw %s; the servers answered %d, failed %d; Envoy retried %d",
        counted["statuses"],
        answered,
        failed,
        after[1] - before[1],
    )
    assert counted["statuses"] == {"200": 100}, counted
    assert answered - failed == 100  # one success per request
    assert failed >= 50, (answered, failed)  # every other try failed: the retries happened
    assert after[1] - before[1] == failed


def _flaky_counts(versions: Versions) -> tuple[int, int]:
    """Requests to ``/flaky`` answered and failed by all versions, by their own count."""
    answered = failed = 0
    for pod in versions.pods.values():
        counts = json.loads(pod.http_get(SERVER_PORT, "/counts"))
        answered += counts["answered"].get("/flaky", 0)
        failed += counts["failed"].get("/flaky", 0)
    return answered, failed


def traffic_policy(policy: str) -> str:
    """A DestinationRule for ``reviews`` with ``policy`` (YAML indented for trafficPolicy)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
{policy}
"""


def test_consistent_hash_on_a_header_keeps_each_user_on_one_endpoint(
    reviews: Versions, istio: IstioConfig
) -> None:
    # The DestinationRule alone, as in Istio: the Service's default route carries its hash.
    istio.apply(
        traffic_policy(
            """    loadBalancer:
      consistentHash:
        httpHeaderName: x-user"""
        )
    )
    name = cluster(reviews)
    wait_for_routes(
        reviews,
        "the header hash policy on a ring-hash cluster",
        lambda r: "hash_policy" in r[-1].get("route", {}),
        lambda clusters: clusters[name].get("lb_policy") in ("RING_HASH", "MAGLEV"),
    )
    seen = {}
    for user in range(12):
        counted = burst(reviews.client, reviews.url + "/hash", 20, headers={"x-user": f"u{user}"})
        assert counted["statuses"] == {"200": 20}, counted
        seen[f"u{user}"] = counted["versions"]
    log.info("consistent hash on x-user, 20 requests each: %s", seen)
    assert all(len(versions) == 1 for versions in seen.values()), seen
    # Twelve users all on one of two endpoints would mean the header is not what is hashed.
    assert {v for versions in seen.values() for v in versions} == {"v1", "v2"}, seen


def test_connection_pool_of_one_overflows_with_503(reviews: Versions, istio: IstioConfig) -> None:
    istio.apply(
        traffic_policy(
            """    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1"""
        )
    )
    name = cluster(reviews)

    def limited(clusters: dict[str, Any]) -> bool:
        thresholds = clusters[name].get("circuit_breakers", {}).get("thresholds", [{}])
        return bool(
            thresholds[0].get("max_connections") == 1
            and thresholds[0].get("max_pending_requests") == 1
        )

    wait_for_routes(reviews, "the connection-pool limits", lambda r: True, limited)
    overflow = f"cluster.{name}.upstream_rq_pending_overflow"
    before = stat(reviews.client, overflow, missing_ok=True)
    counted = burst(reviews.client, reviews.url + "/delay?seconds=0.3", 18, concurrency=3)
    overflowed = stat(reviews.client, overflow, missing_ok=True) - before
    log.info("pool of 1, 3 at a time: %s; pending overflows %d", counted["statuses"], overflowed)
    assert set(counted["statuses"]) == {"200", "503"}, counted["statuses"]
    assert overflowed >= counted["statuses"]["503"], (overflowed, counted["statuses"])


def test_outlier_detection_ejects_the_endpoint_that_fails(
    reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(
        traffic_policy(
            """    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 100"""
        )
    )
    name = cluster(reviews)
    wait_for_routes(
        reviews,
        "outlier detection",
        lambda r: True,
        lambda clusters: "outlier_detection" in clusters[name],
    )
    ejected = f"cluster.{name}.outlier_detection.ejections_enforced_total"
    before = stat(reviews.client, ejected, missing_ok=True)
    bad = reviews.pods["v2"]
    bad.http_get(SERVER_PORT, "/failing?on=1")
    try:
        counted = burst(reviews.client, reviews.url + "/outlier", 100, concurrency=1)
    finally:
        bad.http_get(SERVER_PORT, "/failing?on=0")
    statuses = [result[0] for result in counted["results"]]
    log.info(
        "v2 failing, outlier detection: %s, versions %s; first failures at %s",
        counted["statuses"],
        counted["versions"],
        [i for i, status in enumerate(statuses) if status != 200],
    )
    assert stat(reviews.client, ejected, missing_ok=True) - before == 1
    # Three in a row eject it; Envoy's main thread ejects, so a request may slip in before.
    assert 3 <= counted["statuses"].get("500", 0) <= 5, counted["statuses"]
    assert set(statuses[-80:]) == {200}, statuses


def _hosts_seen(versions: Versions, version: str, path: str) -> collections.Counter[str]:
    """The ``Host`` headers of the requests to ``path`` that ``version`` answered, by the
    server's own count."""
    counts = json.loads(versions.pods[version].http_get(SERVER_PORT, "/counts"))
    return collections.Counter(counts["hosts"].get(path, {}))


def test_mirroring_copies_every_request_to_v2_and_answers_from_v1(
    reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(
        SUBSETS
        + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 100
    mirror:
      host: reviews
      subset: v2
    mirrorPercentage:
      value: 100
"""
    )
    v1, v2 = cluster(reviews, "v1"), cluster(reviews, "v2")

    def mirrored_to_v2(routes: list[Route]) -> bool:
        mirrors = routes[-1].get("route", {}).get("request_mirror_policies", [])
        return [m.get("cluster") for m in mirrors] == [v2]

    wait_for_routes(
        reviews, "the route to v1 mirrored to v2", mirrored_to_v2, lambda c: {v1, v2} <= c.keys()
    )
    before = {v: _hosts_seen(reviews, v, "/mirrored") for v in ("v1", "v2")}
    counted = burst(reviews.client, reviews.url + "/mirrored", 50)
    # Envoy sends the copy without waiting for it: it may land just after the answer.
    wait_until(
        "v2 has every mirrored copy",
        lambda: (_hosts_seen(reviews, "v2", "/mirrored") - before["v2"]).total() >= 50,
    )
    got = {v: dict(_hosts_seen(reviews, v, "/mirrored") - before[v]) for v in before}
    log.info(
        "mirror to v2, 50 requests: client saw %s, versions %s; the servers got Hosts %s",
        counted["statuses"],
        counted["versions"],
        got,
    )
    assert counted["statuses"] == {"200": 50}, counted
    assert counted["versions"] == {"v1": 50}, counted["versions"]
    # Envoy marks the copies: ``-shadow`` on the host, before the port.
    address = f"{reviews.cluster_ip}:{SERVICE_PORT}"
    shadow = f"{reviews.cluster_ip}-shadow:{SERVICE_PORT}"
    assert got == {"v1": {address: 50}, "v2": {shadow: 50}}, got


GRPC_PORT = 9090


@pytest.fixture(scope="module")
def grpc_reviews(mesh: Mesh, reviews: Versions) -> Iterator[Versions]:
    """A gRPC server beside the echo server in each ``reviews`` pod, behind ``reviews-grpc``
    whose port is named ``grpc``: the pods' labels, so the same subsets, over HTTP/2."""
    servers = [
        pod.spawn("echo", [sys.executable, str(APPS / "grpc_echo.py"), "serve", str(GRPC_PORT)])
        for pod in reviews.pods.values()
    ]
    try:
        with mesh.bed.api_client() as api:
            cluster_ip = service_for(
                client.CoreV1Api(api),
                client.DiscoveryV1Api(api),
                mesh.namespace,
                "reviews-grpc",
                list(reviews.pods.values()),
                port=("grpc", GRPC_PORT, GRPC_PORT),
            )
        yield reviews._replace(name="reviews-grpc", cluster_ip=cluster_ip)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.communicate(timeout=10)


def grpc_calls(versions: Versions, method: str, requests: int) -> dict[str, dict[str, int]]:
    """``requests`` unary calls of ``method`` from the client pod, through its sidecar:
    ``{"codes": {code: n}, "versions": {version: n}}``."""
    target = f"{versions.cluster_ip}:{GRPC_PORT}"
    # The venv's Python, as the apps' images run: it has grpcio.
    argv = [sys.executable, str(APPS / "grpc_echo.py"), "call", target, method]
    result = versions.client.exec("client", [*argv, "--requests", str(requests)], timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_grpc_method_hello_goes_to_v2_every_other_method_to_v1(
    grpc_reviews: Versions, istio: IstioConfig
) -> None:
    istio.apply(
        SUBSETS.replace("name: reviews", "name: reviews-grpc").replace(
            "host: reviews", "host: reviews-grpc"
        )
        + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-grpc
spec:
  hosts:
  - reviews-grpc
  http:
  - match:
    - uri:
        exact: /remora.Echo/Hello
    route:
    - destination:
        host: reviews-grpc
        subset: v2
  - route:
    - destination:
        host: reviews-grpc
        subset: v1
"""
    )
    v1, v2 = (f"outbound|{GRPC_PORT}|{v}|{grpc_reviews.host}" for v in ("v1", "v2"))
    wait_for_routes(
        grpc_reviews,
        "the gRPC method route",
        lambda r: [x.get("route", {}).get("cluster") for x in r[-2:]] == [v2, v1],
        port=GRPC_PORT,
    )
    for method, version in (("/remora.Echo/Hello", "v2"), ("/remora.Echo/Other", "v1")):
        counted = grpc_calls(grpc_reviews, method, 50)
        log.info("gRPC %s, 50 calls: %s", method, counted)
        assert counted == {"codes": {"OK": 50}, "versions": {version: 50}}, method
