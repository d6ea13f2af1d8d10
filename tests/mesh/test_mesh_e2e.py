"""A client pod calls a server Service by its ClusterIP, through both sidecars.

Everything but the kubelet is real: the API server stores the Pods as Remora's injection
webhook mutated them, ``remora init`` installs the capture rules in each pod's network
namespace, ``remora proxy sidecar`` runs Envoy as uid 1337 with the injected environment,
and ``remora discovery`` serves both Envoys from the cluster's Services and EndpointSlices.
There is no kube-proxy: only the client's Envoy knows what the ClusterIP means.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import time

import pytest

from harness.mesh import Mesh
from harness.mesh_traffic import TrafficLoop, call, from_outside
from harness.mesh_workloads import SERVER_PORT, SERVICE_PORT, Pods
from harness.pod_envoy import stat
from harness.polling import wait_until
from testbed.running_pod import RunningPod

log = logging.getLogger(__name__)  # figures for the report: pytest --log-cli-level=INFO

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.netns,
    pytest.mark.envoy,
    pytest.mark.slow,
]


def test_pods_were_injected_captured_and_reported(mesh: Mesh, pods: Pods) -> None:
    from kubernetes import client

    server, client_pod, _ = pods
    with mesh.bed.api_client() as api:
        core = client.CoreV1Api(api)
        for pod in (server, client_pod):
            status = core.read_namespaced_pod_status(pod.name, pod.namespace).status
            assert status.pod_ip == pod.ip
            assert status.host_ip == mesh.node.address
            ready = {c.type: c.status for c in status.conditions or []}.get("Ready")
            assert ready == "True", status.conditions
    for pod in (server, client_pod):
        assert "istio-init" in pod.containers and "istio-proxy" in pod.containers
        assert pod.containers["istio-init"].process.returncode == 0
        rules = subprocess.run(
            ["ip", "netns", "exec", pod.netns, "iptables-save", "-t", "nat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "-j REDIRECT --to-ports 15001" in rules
        assert "-j REDIRECT --to-ports 15006" in rules
        # The sidecar's projected token came from the TokenRequest API, for the CA's audience.
        token = (pod.directory / "volumes" / "istio-token" / "istio-token").read_text()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["aud"] == ["istio-ca"]
        assert claims["kubernetes.io"]["pod"]["name"] == pod.name
        root = pod.directory / "volumes" / "istiod-ca-cert" / "root-cert.pem"
        assert root.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_client_calls_server_cluster_ip_through_both_sidecars(mesh: Mesh, pods: Pods) -> None:
    server, client_pod, cluster_ip = pods
    fqdn = f"server.{mesh.namespace}.svc.cluster.local"
    outbound = f"cluster.outbound|{SERVICE_PORT}||{fqdn}.upstream_rq_total"
    inbound = f"cluster.inbound|{SERVER_PORT}||.upstream_rq_total"
    # Missing before the clusters' first requests (deferred creation): zero so far.
    before = (stat(client_pod, outbound, missing_ok=True), stat(server, inbound, missing_ok=True))
    # The request metrics every pod has by default (the HTTP connection managers').
    sent = f"http.outbound_0.0.0.0_{SERVICE_PORT}.downstream_rq_2xx"
    served = f"http.inbound_0.0.0.0_{SERVER_PORT}.downstream_rq_2xx"
    before_default = (stat(client_pod, sent), stat(server, served))

    answer = call(client_pod, f"http://{cluster_ip}:{SERVICE_PORT}/hello")

    assert answer["status"] == 200, answer
    body = json.loads(answer["body"])
    assert body["pod"] == server.name
    assert body["path"] == "/hello"
    # The server's sidecar delivered it: inbound connections reach the app from 127.0.0.6.
    assert body["peer"] == "127.0.0.6", body
    after = (stat(client_pod, outbound), stat(server, inbound))
    assert after[0] > before[0], f"client Envoy {outbound}: {before[0]} -> {after[0]}"
    assert after[1] > before[1], f"server Envoy {inbound}: {before[1]} -> {after[1]}"
    assert stat(client_pod, sent) > before_default[0]
    assert stat(server, served) > before_default[1]


def test_a_connection_to_the_inbound_capture_port_is_refused_not_looped(
    mesh: Mesh, pods: Pods
) -> None:
    """Passed through, a connection to 15006 itself would reach the pod's 15006, be captured
    again, and so on until the sidecar runs out of sockets."""
    server = pods[0]
    accepted = "listener.0.0.0.0_15006.downstream_cx_total"
    before = stat(server, accepted)
    assert from_outside(mesh, server, 15006, "/loop") is None  # closed without an answer
    time.sleep(0.5)
    assert stat(server, accepted) - before == 1  # that one connection, nothing after it


def test_mtls_carries_the_client_identity(mesh: Mesh, pods: Pods) -> None:
    """With mTLS between the sidecars the server's Envoy forwards the client's SPIFFE id."""
    _, client_pod, cluster_ip = pods
    answer = call(client_pod, f"http://{cluster_ip}:{SERVICE_PORT}/identity")
    assert answer["status"] == 200, answer
    xfcc = json.loads(answer["body"])["headers"].get("x-forwarded-client-cert", "")
    assert f"URI=spiffe://cluster.local/ns/{mesh.namespace}/sa/default" in xfcc, xfcc


def _dynamic_config(pod: RunningPod) -> set[tuple[str, str, str]]:
    """What the pod's Envoy got over xDS: (kind, name, version) of every cluster and listener."""
    held = set()
    for kind in ("dynamic_active_clusters", "dynamic_listeners"):
        dump = json.loads(pod.http_get(15000, f"/config_dump?resource={kind}"))
        for entry in dump.get("configs", []):
            if kind == "dynamic_listeners":
                state = entry.get("active_state") or {}
                held.add(("listener", entry["name"], state.get("version_info", "")))
            else:
                held.add(("cluster", entry["cluster"]["name"], entry.get("version_info", "")))
    return held


def test_control_plane_restart_under_traffic_fails_no_request_and_keeps_config(
    mesh: Mesh, pods: Pods
) -> None:
    """``remora discovery`` is killed and started again on the same address while the client
    sends request after request: not one fails, both Envoys notice the loss and reconnect,
    and they hold exactly the config they had (the versions are content hashes)."""
    connected = "control_plane.connected_state"
    envoys = (pods.server, pods.client)
    before = {pod.name: _dynamic_config(pod) for pod in envoys}
    assert all(before.values())
    assert [stat(pod, connected) for pod in envoys] == [1, 1]
    loop = TrafficLoop(pods)
    try:
        loop.wait_flowing()
        assert mesh.discovery.kill() == -9
        down = time.monotonic()
        # Both Envoys lost their control plane (the streams broke), and traffic goes on.
        wait_until(
            "both Envoys see the control plane gone",
            lambda: not any(stat(pod, connected) for pod in envoys),
        )
        noticed = time.monotonic()
        served_while_down = loop.served()
        time.sleep(1.0)
        assert loop.served() > served_while_down, "no request was served without a control plane"
        starting = time.monotonic()
        mesh.discovery.start()
        restarted = time.monotonic()
        wait_until(
            "both Envoys reconnected to the restarted control plane",
            lambda: all(stat(pod, connected) == 1 for pod in envoys),
            timeout=60,
        )
        log.info(
            "control plane down %.2f s (Envoys noticed after %.2f s, the new one took %.2f s "
            "to be ready); Envoys reconnected %.2f s after that",
            restarted - down,
            noticed - down,
            restarted - starting,
            time.monotonic() - restarted,
        )
        wait_until(
            "the restarted control plane lists both proxies",
            lambda: (
                {s["proxy"] for s in mesh.discovery.syncz()}
                >= {f"{pod.name}.{mesh.namespace}" for pod in envoys}
            ),
        )
        loop.wait_flowing()
    finally:
        summary = loop.stop()
    log.info("restart under traffic: %s", summary)
    assert summary["failed"] == 0, summary
    assert summary["ok"] >= 20, summary
    assert {pod.name: _dynamic_config(pod) for pod in envoys} == before
    nacks = [
        (s["proxy"], kind, t["last_nack"])
        for s in mesh.discovery.syncz()
        for kind, t in s["types"].items()
        if t.get("last_nack")
    ]
    assert not nacks
