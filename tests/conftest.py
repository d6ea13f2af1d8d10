"""Fixtures shared by the whole suite.

``testbed``: one real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) on loopback for the whole run, started on first use and always stopped.
Tests that use it share it: each creates its own namespaces (``unique_name``) and removes any
cluster-scoped object it creates.

``docker_engine``: a reachable Docker engine for the run (the running one, or a ``dockerd``
started on first use and stopped at the end), or why there is none, for the image tests and
the kind suite to skip with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from meshlib.processes import stop_process
from testbed.binaries import Binaries
from testbed.errors import BinariesMissing
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


def _docker_engine_error() -> str | None:
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    return None if info.returncode == 0 else info.stderr.strip()[-300:]


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """None when a Docker engine is reachable (started here if need be), else why not."""
    if shutil.which("docker") is None:
        yield "docker is not installed (apt-get install docker.io)"
        return
    if _docker_engine_error() is None:
        yield None
        return
    if shutil.which("dockerd") is None:
        yield f"the Docker engine is not reachable ({_docker_engine_error()}) and dockerd is not installed"
        return
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while _docker_engine_error() is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                yield f"dockerd could not start: {log.read_text()[-500:]}"
                return
            time.sleep(0.5)
        yield None
    finally:
        stop_process(proc, grace=30)
