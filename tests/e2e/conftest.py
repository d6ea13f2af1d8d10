"""The ``kind`` fixture: the cluster ``make kind-up`` made, or a skip that says why not."""

from __future__ import annotations

import pytest
from kindlib import CLUSTER, Kind, missing_prerequisites


@pytest.fixture(scope="session")
def kind(docker_engine: str | None) -> Kind:
    # docker_engine starts dockerd when it can, so the reason below is the real blocker.
    reason = missing_prerequisites()
    if reason:
        pytest.skip(f"kind suite cannot run here: {reason}")
    return Kind(context=f"kind-{CLUSTER}")
