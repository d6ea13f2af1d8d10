"""Fixture of the mesh end-to-end tests: a node, the control plane and the injector.

See docs/e2e.md; the helpers are in ``mesh_harness.py`` (not here: two ``conftest`` modules
in one run cannot be imported by name).
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
    Mesh,
    discovery,
    mesh_ca,
)

from injector.config import default_config
from injector.registration import wait_until_injecting, webhook_configuration
from injector.server import WebhookServer
from meshlib.meshconfig import parse_mesh_config
from testbed.launcher import TestBed
from testbed.pods import Node


@pytest.fixture(scope="module")
def mesh(testbed: TestBed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
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
        ca_dir = mesh_ca(log_dir / "cacerts")
        xds_port, ca_port = stack.enter_context(
            discovery(testbed, mesh_namespace, ca_dir, log_dir / "discovery.log")
        )
        discovery_address = node.forward(XDS_PORT_ON_NODE, ("127.0.0.1", xds_port))
        # Pods reach the CA by the name in its serving certificate, as in a cluster.
        ca_host = f"istiod.{mesh_namespace}.svc"
        node.add_host(
            ca_host, node.forward(SECURE_PORT_ON_NODE, ("127.0.0.1", ca_port)).split(":")[0]
        )
        ca_address = f"{ca_host}:{SECURE_PORT_ON_NODE}"
        config = dataclasses.replace(
            default_config(),
            ca_address=ca_address,
            mesh_namespace=mesh_namespace,
            mesh=parse_mesh_config({"defaultConfig": {"discoveryAddress": discovery_address}}),
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
        yield Mesh(testbed, node, namespace, config, log_dir / "discovery.log")
