"""Fixtures: two "pods" in network namespaces of their own, joined by a veth pair.

Everything happens inside namespaces these fixtures create (``rmcap-a-<random>``,
``rmcap-b-<random>``) and always delete, also when a test fails: the root namespace's rules
are never touched. Helpers are in ``netns_pods.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from netns_pods import A_V4, A_V6, B_V4, B_V4_EXTRA, B_V6, Pod, run_host


@pytest.fixture
def pods() -> Iterator[tuple[Pod, Pod]]:
    """Pods A (10.240.0.1, fd00:240::1) and B (10.240.0.2 + .3, fd00:240::2) on a veth pair."""
    suffix = secrets.token_hex(3)
    a, b = Pod(f"rmcap-a-{suffix}"), Pod(f"rmcap-b-{suffix}")
    created: list[Pod] = []
    try:
        for pod in (a, b):
            run_host("ip", "netns", "add", pod.name)
            created.append(pod)
            pod.run("ip", "link", "set", "lo", "up")
        run_host(
            "ip",
            "-n",
            a.name,
            "link",
            "add",
            "va",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            b.name,
        )
        for pod, nic, v4, v6, peer4, peer6 in (
            (a, "va", A_V4, A_V6, B_V4, B_V6),
            (b, "vb", B_V4, B_V6, A_V4, A_V6),
        ):
            pod.run("ip", "addr", "add", f"{v4}/24", "dev", nic)
            pod.run("ip", "-6", "addr", "add", f"{v6}/64", "dev", nic, "nodad")
            pod.run("ip", "link", "set", nic, "up")
            # A default route, as pods have: the validation probe dials a documentation address.
            pod.run("ip", "route", "add", "default", "via", peer4)
            pod.run("ip", "-6", "route", "add", "default", "via", peer6)
        b.run("ip", "addr", "add", f"{B_V4_EXTRA}/32", "dev", "vb")
        yield a, b
    finally:
        for pod in created:
            pod.stop()
            run_host("ip", "netns", "del", pod.name, check=False)


@pytest.fixture
def pod(pods: tuple[Pod, Pod]) -> Pod:
    """A single pod (A of the pair) for tests that need no peer."""
    return pods[0]
