"""The mesh tests' workloads: an echo server from a Deployment, a client Pod, a Service.

Both are ordinary pods in the mesh's injected namespace (the webhook adds their sidecars);
:func:`server_and_client` runs them on the mesh's node and gives the server a selector-less
Service whose EndpointSlice the test writes (there are no controllers for pod addresses).
The apps themselves are ``harness/mesh_apps/*.py``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from kubernetes import client

from harness.mesh import Mesh
from testbed.kubelet import run_pod
from testbed.running_pod import RunningPod

APP_UID = 1000
SERVER_PORT = 8080
SERVICE_PORT = 80
# The Envoy stats the tests read beyond the default inclusion list (Istio's annotation): the
# inbound listener's TLS and refusal counters, the clusters' connection and TLS counters.
STATS_ANNOTATIONS = {
    "sidecar.istio.io/statsInclusionPrefixes": "listener.0.0.0.0_15006,cluster.outbound|,"
    "cluster.inbound|"
}


def app_security() -> dict[str, Any]:
    return {"runAsUser": APP_UID, "runAsGroup": APP_UID, "allowPrivilegeEscalation": False}


def server_deployment() -> dict[str, Any]:
    """The echo server, from a Deployment (the ReplicaSet controller makes the Pod)."""
    return echo_deployment("server", {"app": "server"})


def echo_deployment(
    name: str, labels: dict[str, str], env: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """A Deployment of one echo server pod carrying ``labels``, with ``env`` added to its own
    (its pod name, which it reports back)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": STATS_ANNOTATIONS},
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
                                },
                                *env,
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": SERVER_PORT}},
                            "securityContext": app_security(),
                        }
                    ]
                },
            },
        },
    }


def client_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "client",
            "labels": {"app": "client"},
            "annotations": STATS_ANNOTATIONS,
        },
        "spec": {
            "containers": [
                {
                    "name": "client",
                    "image": "remora-e2e/client:1",
                    "securityContext": app_security(),
                }
            ]
        },
    }


def wait_for_pod(
    core: client.CoreV1Api, namespace: str, selector: str, timeout: float = 45.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if pods:
            return dict(core.api_client.sanitize_for_serialization(pods[0]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pod with {selector} in {namespace}")
        time.sleep(0.1)


def service_and_slice(
    core: client.CoreV1Api,
    discovery_api: client.DiscoveryV1Api,
    namespace: str,
    server: RunningPod,
    name: str = "server",
) -> str:
    """A Service without selector and its EndpointSlice at the server pod; the ClusterIP.

    The slice names the pod, so the control plane knows whether it has a sidecar (its
    ``security.istio.io/tlsMode`` label) and speaks mTLS to it only then.
    """
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT}]},
        },
    )
    discovery_api.create_namespaced_endpoint_slice(
        namespace,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
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


class Pods(NamedTuple):
    server: RunningPod
    client: RunningPod
    cluster_ip: str

    @property
    def url(self) -> str:
        return f"http://{self.cluster_ip}:{SERVICE_PORT}"


@contextlib.contextmanager
def server_and_client(mesh: Mesh) -> Iterator[Pods]:
    """The server (from a Deployment) and the client, running; the server's ClusterIP."""
    with mesh.bed.api_client() as api:
        core = client.CoreV1Api(api)
        client.AppsV1Api(api).create_namespaced_deployment(mesh.namespace, server_deployment())
        core.create_namespaced_pod(mesh.namespace, client_pod())
        server_spec = wait_for_pod(core, mesh.namespace, "app=server")
        client_spec = wait_for_pod(core, mesh.namespace, "app=client")
        with run_pod_in(mesh, server_spec, api) as server:
            cluster_ip = service_and_slice(core, client.DiscoveryV1Api(api), mesh.namespace, server)
            with run_pod_in(mesh, client_spec, api) as client_pod_:
                yield Pods(server, client_pod_, cluster_ip)


def run_pod_in(mesh: Mesh, spec: dict[str, Any], api: client.ApiClient) -> RunningPod:
    return run_pod(mesh.node, spec, api, mesh.images, ready_timeout=60.0)
