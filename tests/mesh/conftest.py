"""Fixtures of the mesh end-to-end tests: a node, the control plane, the injector, two pods.

See docs/e2e.md; the helpers are in the ``harness`` package (:mod:`harness.mesh` and the
modules beside it), which ``bench/mesh_latency.py`` uses too. A test module changes how ``remora discovery`` runs
by overriding ``mesh_discovery_args`` and the mesh's trust domain by overriding
``mesh_trust_domain`` (both module scope).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.mesh import Mesh, chart_crds, open_mesh
from harness.mesh_workloads import Pods, server_and_client
from testbed.launcher import TestBed


@pytest.fixture(scope="session")
def peer_authentication_kind(testbed: TestBed) -> Iterator[None]:
    """PeerAuthentication served by the API server for the whole run (removed at its end)."""
    with chart_crds(testbed):
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
    log_dir = tmp_path_factory.mktemp("mesh")
    with open_mesh(
        testbed, log_dir, discovery_args=mesh_discovery_args, trust_domain=mesh_trust_domain
    ) as running:
        yield running


@pytest.fixture(scope="module")
def pods(mesh: Mesh) -> Iterator[Pods]:
    """The server (from a Deployment) and the client, running; the server's ClusterIP."""
    with server_and_client(mesh) as running:
        yield running
