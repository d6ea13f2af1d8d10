"""Fixtures of the mesh end-to-end tests: a node, the control plane, the injector, two pods.

See docs/e2e.md; the helpers are in ``mesh_harness.py`` (not here: two ``conftest`` modules
in one run cannot be imported by name). A test module changes how ``remora discovery`` runs
by overriding ``mesh_discovery_args`` and the mesh's trust domain by overriding
``mesh_trust_domain`` (both module scope).
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from mesh_harness import (
    RUN_LABEL,
    SECURE_PORT_ON_NODE,
    XDS_PORT_ON_NODE,
    Discovery,
    Mesh,
    Pods,
    mesh_ca,
    peer_authentication_crd,
    server_and_client,
)

from injector.config import default_config
from injector.registration import wait_until_injecting, webhook_configuration
from injector.server import WebhookServer
from meshlib.meshconfig import parse_mesh_config
from testbed.launcher import TestBed
from testbed.pods import Node


@pytest.fixture(scope="session")
def peer_authentication_kind(testbed: TestBed) -> Iterator[None]:
    """PeerAuthentication served by the API server for the whole run (removed at its end)."""
    with peer_authentication_crd(testbed):
        yield


@pytest.fixture(scope="module")
def mesh_discovery_args() -> tuple[str, ...]:
    """Extra ``remora discovery`` flags for this module's mesh."""
    return ()


@pytest.fixture(scope="module")
def mesh_trust_domain() -> str:
    """The mesh's trust domain: ``remora discovery --trust-domain`` and the injector's."""
    return "cluster.local"


@pytest.fixture(scope="module")
def mesh(
    testbed: TestBed,
    tmp_path_factory: pytest.TempPathFactory,
    peer_authentication_kind: None,
    mesh_discovery_args: tuple[str, ...],
    mesh_trust_domain: str,
) -> Iterator[Mesh]:
    """A node, the control plane, the webhook registered for a fresh injected namespace."""
    from kubernetes import client

    run = uuid.uuid4().hex[:8]
    namespace = f"mesh-{run}"
    log_dir = tmp_path_factory.mktemp("mesh")
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(Node())
        api = stack.enter_context(testbed.api_client())
        core = client.CoreV1Api(api)
        mesh_namespace = f"mesh-system-{run}"
        testbed.create_namespace(mesh_namespace)
        stack.callback(core.delete_namespace, mesh_namespace)
        # This run's mesh config: its own root namespace, so a mesh-wide policy stays ours.
        core.create_namespaced_config_map(
            mesh_namespace,
            {
                "metadata": {"name": "istio"},
                "data": {"mesh": f"rootNamespace: {mesh_namespace}\n"},
            },
        )
        ca_dir = mesh_ca(log_dir / "cacerts")
        control = Discovery(
            testbed,
            mesh_namespace,
            ca_dir,
            log_dir / "discovery.log",
            (f"--trust-domain={mesh_trust_domain}", *mesh_discovery_args),
        )
        stack.callback(control.stop)
        control.start()
        discovery_address = node.forward(XDS_PORT_ON_NODE, ("127.0.0.1", control.xds_port))
        # Pods reach the CA by the name in its serving certificate, as in a cluster.
        ca_host = f"istiod.{mesh_namespace}.svc"
        node.add_host(
            ca_host,
            node.forward(SECURE_PORT_ON_NODE, ("127.0.0.1", control.ca_port)).split(":")[0],
        )
        ca_address = f"{ca_host}:{SECURE_PORT_ON_NODE}"
        config = dataclasses.replace(
            default_config(),
            ca_address=ca_address,
            mesh_namespace=mesh_namespace,
            mesh=parse_mesh_config(
                {
                    "trustDomain": mesh_trust_domain,
                    "defaultConfig": {"discoveryAddress": discovery_address},
                }
            ),
        )
        webhook = stack.enter_context(WebhookServer(config))
        admission = client.AdmissionregistrationV1Api(api)
        name = f"remora-mesh-e2e-{run}"
        admission.create_mutating_webhook_configuration(
            webhook_configuration(
                name, webhook.url, webhook.ca_bundle or "", namespace_labels={RUN_LABEL: run}
            )
        )
        stack.callback(admission.delete_mutating_webhook_configuration, name)
        testbed.create_namespace(namespace, labels={"istio-injection": "enabled", RUN_LABEL: run})
        stack.callback(core.delete_namespace, namespace)
        wait_until_injecting(core, namespace)
        yield Mesh(
            testbed,
            node,
            namespace,
            config,
            log_dir / "discovery.log",
            control,
            mesh_namespace,
        )


@pytest.fixture(scope="module")
def pods(mesh: Mesh) -> Iterator[Pods]:
    """The server (from a Deployment) and the client, running; the server's ClusterIP."""
    with server_and_client(mesh) as running:
        yield running
