"""Versions of one service, for the traffic-management tests: bookinfo's ``reviews`` v1 and v2.

Each version is a Deployment of the echo server (``harness/mesh_apps/echo_server.py``) whose
pods are labelled ``app: <name>, version: <v>`` and answer with their version, all behind one
Service, as in Istio's request-routing and traffic-shifting tasks; the client pod of
:mod:`harness.mesh_workloads` calls it. The Service has no selector (there are no controllers
for pod addresses): its EndpointSlice, written here, names every pod, so the control plane
knows each endpoint's labels and can put it in a DestinationRule's subsets.
:class:`IstioConfig` applies the Istio YAML of a test and removes it after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from kubernetes import client

from harness.mesh import Mesh
from harness.mesh_workloads import (
    SERVER_PORT,
    SERVICE_PORT,
    client_pod,
    echo_deployment,
    run_pod_in,
    wait_for_pod,
)
from testbed.running_pod import RunningPod


def version_deployment(app: str, version: str) -> dict[str, Any]:
    """``<app>-<version>``: one echo server pod labelled with the app and the version."""
    return echo_deployment(
        f"{app}-{version}",
        {"app": app, "version": version},
        ({"name": "VERSION", "value": version},),
    )


def service_for(
    core: client.CoreV1Api,
    discovery_api: client.DiscoveryV1Api,
    namespace: str,
    name: str,
    pods: Sequence[RunningPod],
    *,
    port: tuple[str, int, int] = ("http", SERVICE_PORT, SERVER_PORT),
) -> str:
    """A Service without selector and one EndpointSlice naming all ``pods``; the ClusterIP.

    ``port`` is the Service's one port: its name (the protocol Istio reads from it), its
    number and the pods' port it targets.
    """
    port_name, service_port, target_port = port
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "ports": [{"name": port_name, "port": service_port, "targetPort": target_port}]
            },
        },
    )
    discovery_api.create_namespaced_endpoint_slice(
        namespace,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": target_port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [pod.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
                }
                for pod in pods
            ],
        },
    )
    return str(service.spec.cluster_ip)


class Versions(NamedTuple):
    """The running versions of one service (version -> pod), the client pod, the Service."""

    name: str
    namespace: str
    pods: dict[str, RunningPod]
    client: RunningPod
    cluster_ip: str

    @property
    def host(self) -> str:
        """The Service's name as VirtualServices and DestinationRules write it (its FQDN)."""
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def url(self) -> str:
        return f"http://{self.cluster_ip}:{SERVICE_PORT}"


@contextlib.contextmanager
def versions_and_client(
    mesh: Mesh, name: str = "reviews", versions: Sequence[str] = ("v1", "v2")
) -> Iterator[Versions]:
    """One Deployment per version of ``name`` and the client pod, running; the Service."""
    with mesh.bed.api_client() as api, contextlib.ExitStack() as stack:
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        for version in versions:
            apps.create_namespaced_deployment(mesh.namespace, version_deployment(name, version))
        core.create_namespaced_pod(mesh.namespace, client_pod())
        running = {}
        for version in versions:
            spec = wait_for_pod(core, mesh.namespace, f"app={name},version={version}")
            running[version] = stack.enter_context(run_pod_in(mesh, spec, api))
        cluster_ip = service_for(
            core, client.DiscoveryV1Api(api), mesh.namespace, name, list(running.values())
        )
        client_spec = wait_for_pod(core, mesh.namespace, "app=client")
        client_ = stack.enter_context(run_pod_in(mesh, client_spec, api))
        yield Versions(name, mesh.namespace, running, client_, cluster_ip)


class IstioConfig:
    """Istio YAML applied with ``kubectl apply`` in the mesh's namespace; :meth:`clear` deletes
    every object applied (VirtualService, DestinationRule: ``networking.istio.io/v1``)."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.applied: set[tuple[str, str]] = set()

    def apply(self, yaml_text: str) -> None:
        result = self.mesh.bed.kubectl(
            "apply", "-n", self.mesh.namespace, "-f", "-", "-o", "name", input=yaml_text
        )
        for line in result.stdout.split():
            kind, _, name = line.partition("/")
            self.applied.add((kind, name))

    def clear(self) -> None:
        for kind, name in sorted(self.applied):
            self.mesh.bed.kubectl(
                "delete", "-n", self.mesh.namespace, kind, name, "--ignore-not-found"
            )
        self.applied.clear()
