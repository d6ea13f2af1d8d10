"""PeerAuthentication, certificate rotation and the sidecar's lifecycle, end to end.

The same real parts as ``test_mesh_e2e.py`` (API server, injector, ``remora discovery`` with
its CA over TLS, ``remora init``, ``remora proxy sidecar``, Envoy), in a mesh whose CA signs
workload certificates for 8 s only (``--max-workload-cert-ttl``), so every sidecar renews
every ~4 s during all of these tests, and whose trust domain is not ``cluster.local``. A client *outside* the mesh is the node itself: a
plaintext connection from the node's network namespace to the server pod's address, captured
by the pod's rules into its Envoy like any inbound connection. Tests that stop a sidecar
come last (the pods are shared by the module).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.mesh import Mesh
from harness.mesh_traffic import TrafficLoop, answers, call, from_outside, start_calls, xfcc
from harness.mesh_workloads import SERVER_PORT, SERVICE_PORT, Pods
from harness.pod_envoy import served_serials, stat, stat_names
from harness.polling import wait_until

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.netns,
    pytest.mark.envoy,
    pytest.mark.slow,
]

CERT_TTL_S = 8
TRUST_DOMAIN = "e2e.remora.test"
ATTEMPTS = 50  # plaintext connections from outside the mesh, per assertion
INBOUND = "listener.0.0.0.0_15006"
ApplyPolicy = Callable[[str, str, dict[str, Any]], None]
log = logging.getLogger(__name__)  # figures for the report: pytest --log-cli-level=INFO


@pytest.fixture(scope="module")
def mesh_discovery_args() -> tuple[str, ...]:
    # The cap shortens what the agents ask for (24h); the default must fit under it too.
    return (f"--max-workload-cert-ttl={CERT_TTL_S}s", f"--workload-cert-ttl={CERT_TTL_S}s")


@pytest.fixture(scope="module")
def mesh_trust_domain() -> str:
    """Not cluster.local: the CA signs it and the listeners accept it only if ``--trust-domain``
    reaches both (it once reached only the CA, and every mTLS handshake failed)."""
    return TRUST_DOMAIN


@pytest.fixture
def policies(mesh: Mesh) -> Iterator[ApplyPolicy]:
    """``apply(name, namespace, spec)`` creates a PeerAuthentication; all are deleted after."""
    from kubernetes import client

    created: list[tuple[str, str]] = []
    with mesh.bed.api_client() as api:
        custom = client.CustomObjectsApi(api)

        def apply(name: str, namespace: str, spec: dict[str, Any]) -> None:
            custom.create_namespaced_custom_object(
                "security.istio.io",
                "v1",
                namespace,
                "peerauthentications",
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "PeerAuthentication",
                    "metadata": {"name": name},
                    "spec": spec,
                },
            )
            created.append((namespace, name))

        yield apply
        for namespace, name in created:
            custom.delete_namespaced_custom_object(
                "security.istio.io", "v1", namespace, "peerauthentications", name
            )


def _outside(mesh: Mesh, pods: Pods) -> int | None:
    return from_outside(mesh, pods.server, SERVER_PORT, "/from-outside")


def _outside_many(mesh: Mesh, pods: Pods) -> list[int | None]:
    return [_outside(mesh, pods) for _ in range(ATTEMPTS)]


def _client_cluster(mesh: Mesh) -> str:
    """The stats prefix of the client Envoy's cluster for the server's Service."""
    return f"cluster.outbound|{SERVICE_PORT}||server.{mesh.namespace}.svc.cluster.local"


def _client_stat(mesh: Mesh, pods: Pods, suffix: str, *, missing_ok: bool = False) -> int:
    return stat(pods.client, f"{_client_cluster(mesh)}.{suffix}", missing_ok=missing_ok)


def _handshakes(mesh: Mesh, pods: Pods) -> tuple[int, int]:
    """TLS handshakes so far: the client's Envoy to the server (upstream), and the server's
    inbound listener (downstream)."""
    return _client_stat(mesh, pods, "ssl.handshake"), stat(pods.server, f"{INBOUND}.ssl.handshake")


def _overlapping_calls(pods: Pods, count: int = 3) -> list[dict[str, Any]]:
    """``count`` concurrent slow calls: the client's Envoy needs new upstream connections."""
    return answers(start_calls(pods.client, [f"{pods.url}/delay?seconds=1.5"] * count))


# -- PeerAuthentication ----------------------------------------------------------------------


def test_strict_namespace_policy_refuses_plaintext_from_outside_the_mesh(
    mesh: Mesh, pods: Pods, policies: ApplyPolicy
) -> None:
    policies("default", mesh.namespace, {"mtls": {"mode": "STRICT"}})
    wait_until("STRICT refuses plaintext", lambda: _outside(mesh, pods) is None)

    refused_before = stat(pods.server, f"{INBOUND}.no_filter_chain_match")
    outcomes = _outside_many(mesh, pods)
    assert outcomes == [None] * ATTEMPTS, outcomes
    # Refused by the server's Envoy (no chain takes plaintext), not lost on the way.
    refused = stat(pods.server, f"{INBOUND}.no_filter_chain_match") - refused_before
    assert refused >= ATTEMPTS

    # The mesh client still gets through, over mTLS, as itself.
    handshakes = _handshakes(mesh, pods)
    for answer in _overlapping_calls(pods):
        assert answer["status"] == 200, answer
        identity = f"URI=spiffe://{TRUST_DOMAIN}/ns/{mesh.namespace}/sa/default"
        assert identity in (xfcc(answer) or "")
    after = _handshakes(mesh, pods)
    assert after[0] > handshakes[0] and after[1] > handshakes[1], (handshakes, after)


def test_permissive_by_default_serves_plaintext_from_outside_the_mesh(
    mesh: Mesh, pods: Pods
) -> None:
    wait_until("PERMISSIVE serves plaintext", lambda: _outside(mesh, pods) == 200)
    assert _outside_many(mesh, pods) == [200] * ATTEMPTS

    status, body = mesh.node.http("GET", pods.server.ip, SERVER_PORT, "/from-outside")
    assert status == 200
    seen = json.loads(body)
    assert seen["peer"] == "127.0.0.6", seen  # delivered by the server's sidecar
    assert "x-forwarded-client-cert" not in seen["headers"]  # no peer certificate
    # ... while sidecars still talk mTLS to it.
    assert f"URI=spiffe://{TRUST_DOMAIN}/" in (xfcc(call(pods.client, f"{pods.url}/mesh")) or "")


def test_mesh_wide_strict_applies_until_a_workload_policy_overrides_it(
    mesh: Mesh, pods: Pods, policies: ApplyPolicy
) -> None:
    policies("default", mesh.mesh_namespace, {"mtls": {"mode": "STRICT"}})  # the root namespace
    wait_until("mesh-wide STRICT refuses plaintext", lambda: _outside(mesh, pods) is None)
    assert _outside_many(mesh, pods) == [None] * ATTEMPTS

    policies(
        "server-permissive",
        mesh.namespace,
        {"selector": {"matchLabels": {"app": "server"}}, "mtls": {"mode": "PERMISSIVE"}},
    )
    wait_until("the workload's PERMISSIVE serves plaintext", lambda: _outside(mesh, pods) == 200)
    assert _outside_many(mesh, pods) == [200] * ATTEMPTS


def test_port_level_disable_makes_the_sidecars_talk_plaintext(
    mesh: Mesh, pods: Pods, policies: ApplyPolicy
) -> None:
    """STRICT for the namespace, but DISABLE on the server's port 8080 (a port-level policy
    of a workload policy): the client's sidecar then sends plaintext, so the server sees no
    client certificate and no TLS handshake happens on either side, on new connections."""
    policies("default", mesh.namespace, {"mtls": {"mode": "STRICT"}})
    policies(
        "server-port-disable",
        mesh.namespace,
        {
            "selector": {"matchLabels": {"app": "server"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {str(SERVER_PORT): {"mode": "DISABLE"}},
        },
    )
    wait_until(
        "the client's sidecar calls without a certificate",
        lambda: (
            (answer := call(pods.client, f"{pods.url}/disable"))["status"] == 200
            and xfcc(answer) is None
        ),
    )
    # The server's inbound listener still terminates TLS (its other chains are STRICT), so
    # its handshake counter exists and would count any mTLS connection the client opened.
    inbound_handshakes = stat(pods.server, f"{INBOUND}.ssl.handshake")
    # Created by the cluster's first request, which a new version of the cluster has not had.
    connections = _client_stat(mesh, pods, "upstream_cx_total", missing_ok=True)
    results = _overlapping_calls(pods)
    assert [r["status"] for r in results] == [200] * len(results), results
    assert [xfcc(r) for r in results] == [None] * len(results)
    # New connections were opened to the server, and none of them did TLS.
    assert _client_stat(mesh, pods, "upstream_cx_total") >= connections + len(results) - 1
    assert stat(pods.server, f"{INBOUND}.ssl.handshake") == inbound_handshakes
    # The client's Envoy holds no TLS context for the cluster at all (under STRICT it does, and
    # its `ssl.handshake` counts: test_strict_namespace_policy_refuses_plaintext_from_outside).
    cluster_stats = stat_names(pods.client, _client_cluster(mesh) + ".")
    assert f"{_client_cluster(mesh)}.upstream_cx_total" in cluster_stats
    assert [name for name in cluster_stats if ".ssl." in name] == []
    # DISABLE takes plaintext from anyone, the namespace's STRICT notwithstanding.
    assert _outside(mesh, pods) == 200


# -- certificates ----------------------------------------------------------------------------


def _lifetime(pod: Any) -> dt.timedelta:
    """The lifetime of the workload certificate Envoy serves (``/certs``)."""
    certs = json.loads(pod.http_get(15000, "/certs"))["certificates"]
    chain = [
        c
        for entry in certs
        for c in entry.get("cert_chain", [])
        if any(s.get("uri", "").startswith("spiffe://") for s in c.get("subject_alt_names", []))
    ]
    newest = max(chain, key=lambda c: c["expiration_time"])
    expires = dt.datetime.fromisoformat(newest["expiration_time"].replace("Z", "+00:00"))
    begins = dt.datetime.fromisoformat(newest["valid_from"].replace("Z", "+00:00"))
    return expires - begins


def test_workload_certificates_rotate_under_traffic_without_a_failed_request(
    mesh: Mesh, pods: Pods
) -> None:
    envoys = (pods.server, pods.client)
    # The CA capped the lifetime (8 s, back-dated 1 min for clock skew).
    for pod in envoys:
        assert _lifetime(pod) <= dt.timedelta(seconds=CERT_TTL_S + 60), pod.name
    seen: dict[str, set[str]] = {pod.name: served_serials(pod) for pod in envoys}
    loop = TrafficLoop(pods)
    try:
        loop.wait_flowing()

        def rotated_twice() -> bool:
            for pod in envoys:
                seen[pod.name] |= served_serials(pod)
            return all(len(serials) >= 3 for serials in seen.values())

        wait_until("both sidecars' Envoys served three certificates", rotated_twice, 45)
        # New connections after the rotations handshake with the new certificates.
        handshakes = _handshakes(mesh, pods)
        assert [a["status"] for a in _overlapping_calls(pods)] == [200] * 3
        assert _handshakes(mesh, pods)[0] > handshakes[0]
        loop.wait_flowing()
    finally:
        summary = loop.stop()
    log.info("rotation under traffic: %s, serials %s", summary, seen)
    assert summary["failed"] == 0, summary
    assert summary["ok"] >= 20, summary
    assert all(len(serials) >= 3 for serials in seen.values()), seen


# -- the sidecar's lifecycle ---------------------------------------------------------------


def test_rewritten_readiness_probe_answers_through_15020_under_strict(
    mesh: Mesh, pods: Pods, policies: ApplyPolicy
) -> None:
    """The kubelet's probe of the app, rewritten by the injector to the agent's port, passes
    while STRICT refuses the kubelet's plaintext on the app's own port."""
    from kubernetes import client

    with mesh.bed.api_client() as api:
        stored = client.CoreV1Api(api).read_namespaced_pod(pods.server.name, mesh.namespace)
    echo = next(c for c in stored.spec.containers if c.name == "echo")
    probe = echo.readiness_probe.http_get
    assert (probe.port, probe.path) == (15020, "/app-health/echo/readyz")

    policies("default", mesh.namespace, {"mtls": {"mode": "STRICT"}})
    wait_until("STRICT refuses plaintext", lambda: _outside(mesh, pods) is None)
    for _ in range(20):
        status, body = mesh.node.http("GET", pods.server.ip, probe.port, probe.path)
        assert status == 200, body
    status, body = mesh.node.http("GET", pods.server.ip, 15021, "/healthz/ready")
    assert status == 200, body
    assert _outside(mesh, pods) is None  # and the app's port itself is still closed to it


def test_sigterm_drains_the_sidecar_without_failing_in_flight_requests(
    mesh: Mesh, pods: Pods
) -> None:
    agent = pods.server.containers["istio-proxy"].process
    assert pods.server.pids_of("envoy")
    active = f"cluster.inbound|{SERVER_PORT}||.upstream_rq_active"
    slow = start_calls(pods.client, [f"{pods.url}/delay?seconds=2"] * 3)
    wait_until(  # the gauge is created by the cluster's first request (deferred), hence missing_ok
        "three slow requests in flight at the server",
        lambda: stat(pods.server, active, missing_ok=True) >= 3,
    )

    began = time.monotonic()
    os.kill(agent.pid, signal.SIGTERM)
    # Not ready at once (the kubelet takes the pod out of the Service), still serving.
    wait_until(
        "the draining sidecar reports not ready",
        lambda: mesh.node.http("GET", pods.server.ip, 15021, "/healthz/ready")[0] == 503,
        timeout=2,
    )
    code = agent.wait(timeout=30)
    took = time.monotonic() - began
    log.info("SIGTERM to the agent's exit: %.2f s (code %s)", took, code)

    assert code == 0, pods.server.containers["istio-proxy"].log()
    assert [a["status"] for a in answers(slow)] == [200, 200, 200]
    # Within the drain time (terminationDrainDuration 5 s; Envoy's quit takes a moment).
    assert took < 5 + 3, took
    assert pods.server.pids_of("envoy") == []


def test_quitquitquit_stops_the_sidecar(mesh: Mesh, pods: Pods) -> None:
    agent = pods.client.containers["istio-proxy"].process
    assert pods.client.pids_of("envoy")
    # Only from inside the pod: from anywhere else it would stop the pod's networking.
    status, _ = mesh.node.http("POST", pods.client.ip, 15020, "/quitquitquit")
    assert status == 403
    assert agent.poll() is None

    status, _ = pods.client.http("POST", 15020, "/quitquitquit")
    assert status == 200
    assert agent.wait(timeout=15) == 0
    wait_until("the client's Envoy is gone", lambda: pods.client.pids_of("envoy") == [], 10)
    assert pods.client.containers["client"].process.poll() is None  # the app keeps running
