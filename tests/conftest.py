"""Fixtures shared by the whole suite.

``testbed``: one real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) on loopback for the whole run, started on first use and always stopped.
Tests that use it share it: each creates its own namespaces (``unique_name``) and removes any
cluster-scoped object it creates.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from testbed.binaries import Binaries, BinariesMissing
from testbed.launcher import TestBed


@pytest.fixture(scope="session")
def testbed_binaries() -> Binaries:
    try:
        return Binaries.locate()
    except BinariesMissing as exc:
        # A missing test bed is a broken setup, not a reason to skip: fail loudly.
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def testbed(testbed_binaries: Binaries) -> Iterator[TestBed]:
    bed = TestBed.start(binaries=testbed_binaries)
    try:
        yield bed
    finally:
        keep = os.environ.get("REMORA_KEEP_TESTBED_LOGS")
        bed.stop(remove_workdir=not keep)


@pytest.fixture
def unique_name() -> str:
    """A DNS-1123 name no other test uses, e.g. for a namespace: ``t-1a2b3c4d``."""
    return f"t-{uuid.uuid4().hex[:8]}"
