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
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mesh_harness import APPS, Mesh

from testbed.pods import RunningPod, run_pod

pytestmark = [
    pytest.mark.testbed,
    pytest.mark.netns,
    pytest.mark.envoy,
    pytest.mark.slow,
]

APP_UID = 1000
SERVER_PORT = 8080
SERVICE_PORT = 80


def _app_security() -> dict[str, Any]:
    return {"runAsUser": APP_UID, "runAsGroup": APP_UID, "allowPrivilegeEscalation": False}


def _server_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "server"}},
            "template": {
                "metadata": {"labels": {"app": "server"}},
                "spec": {
                    "containers": [
                        {
                            "name": "echo",
                            "image": "remora-e2e/echo:1",
                            "args": [str(SERVER_PORT)],
                            "ports": [{"name": "http", "containerPort": SERVER_PORT}],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": SERVER_PORT}},
                            "securityContext": _app_security(),
                        }
                    ]
                },
            },
        },
    }


def _client_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "labels": {"app": "client"}},
        "spec": {
            "containers": [
                {
                    "name": "client",
                    "image": "remora-e2e/client:1",
                    "securityContext": _app_security(),
                }
            ]
        },
    }


def _wait_for_pod(
    core: Any, namespace: str, selector: str, timeout: float = 45.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if pods:
            return dict(core.api_client.sanitize_for_serialization(pods[0]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pod with {selector} in {namespace}")
        time.sleep(0.1)


def _service_and_slice(core: Any, discovery: Any, namespace: str, server: RunningPod) -> str:
    """A Service without selector and its EndpointSlice at the server pod; the ClusterIP."""
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "server"},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT}]},
        },
    )
    discovery.create_namespaced_endpoint_slice(
        namespace,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "server-1", "labels": {"kubernetes.io/service-name": "server"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": SERVER_PORT, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [server.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": server.name, "namespace": namespace},
                }
            ],
        },
    )
    return str(service.spec.cluster_ip)


def _stat(pod: RunningPod, name: str) -> int:
    """A counter from the pod's Envoy admin (loopback-only, so asked from inside the pod)."""
    stats = json.loads(pod.http_get(15000, f"/stats?format=json&filter=^{name}$"))
    values = [int(s.get("value", 0)) for s in stats.get("stats", []) if s.get("name") == name]
    return values[0] if values else 0


@pytest.fixture(scope="module")
def pods(mesh: Mesh) -> Iterator[tuple[RunningPod, RunningPod, str]]:
    """The server (from a Deployment) and the client, running; the server's ClusterIP."""
    from kubernetes import client

    with mesh.bed.api_client() as api:
        core = client.CoreV1Api(api)
        client.AppsV1Api(api).create_namespaced_deployment(mesh.namespace, _server_deployment())
        core.create_namespaced_pod(mesh.namespace, _client_pod())
        server_spec = _wait_for_pod(core, mesh.namespace, "app=server")
        client_spec = _wait_for_pod(core, mesh.namespace, "app=client")
        with run_pod(mesh.node, server_spec, api, mesh.images) as server:
            cluster_ip = _service_and_slice(
                core, client.DiscoveryV1Api(api), mesh.namespace, server
            )
            with run_pod(mesh.node, client_spec, api, mesh.images) as client_pod:
                yield server, client_pod, cluster_ip


def _call(client_pod: RunningPod, url: str) -> dict[str, Any]:
    result = client_pod.exec(
        "client",
        ["python3", str(APPS / "client.py"), "get", url, "--attempts", "50"],
        timeout=30,
    )
    assert result.returncode in (0, 1), result.stderr
    return dict(json.loads(result.stdout))


def test_pods_were_injected_captured_and_reported(
    mesh: Mesh, pods: tuple[RunningPod, RunningPod, str]
) -> None:
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


def test_client_calls_server_cluster_ip_through_both_sidecars(
    mesh: Mesh, pods: tuple[RunningPod, RunningPod, str]
) -> None:
    server, client_pod, cluster_ip = pods
    fqdn = f"server.{mesh.namespace}.svc.cluster.local"
    outbound = f"cluster.outbound|{SERVICE_PORT}||{fqdn}.upstream_rq_total"
    inbound = f"cluster.inbound|{SERVER_PORT}||.upstream_rq_total"
    before = (_stat(client_pod, outbound), _stat(server, inbound))

    answer = _call(client_pod, f"http://{cluster_ip}:{SERVICE_PORT}/hello")

    assert answer["status"] == 200, answer
    body = json.loads(answer["body"])
    assert body["pod"] == server.name
    assert body["path"] == "/hello"
    # The server's sidecar delivered it: inbound connections reach the app from 127.0.0.6.
    assert body["peer"] == "127.0.0.6", body
    after = (_stat(client_pod, outbound), _stat(server, inbound))
    assert after[0] > before[0], f"client Envoy {outbound}: {before[0]} -> {after[0]}"
    assert after[1] > before[1], f"server Envoy {inbound}: {before[1]} -> {after[1]}"


def test_mtls_carries_the_client_identity(
    mesh: Mesh, pods: tuple[RunningPod, RunningPod, str]
) -> None:
    """With mTLS between the sidecars the server's Envoy forwards the client's SPIFFE id."""
    _, client_pod, cluster_ip = pods
    answer = _call(client_pod, f"http://{cluster_ip}:{SERVICE_PORT}/identity")
    assert answer["status"] == 200, answer
    xfcc = json.loads(answer["body"])["headers"].get("x-forwarded-client-cert", "")
    assert f"URI=spiffe://cluster.local/ns/{mesh.namespace}/sa/default" in xfcc, xfcc
