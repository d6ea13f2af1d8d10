"""The harness node's host-side mount points are shared by every node on the machine.

A directory created on the host as a mount point may be in use by another node's pods (in
this process or another: a benchmark next to a test run). Removing it while they run
silently detaches their bind mounts (the kernel allows rmdir of a mount point in another
mount namespace), which once made an agent lose its projected token mid-test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbed import pods
from testbed.pods import Node

pytestmark = [pytest.mark.netns]


def test_a_mount_point_lives_until_the_last_node_using_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pods, "MOUNT_POINT_REGISTRY", tmp_path / "registry.json")
    target = tmp_path / "var" / "run" / "secrets" / "tokens"
    with Node() as first:
        first.ensure_mount_point(target)
        with Node() as second:
            second.ensure_mount_point(target)  # exists already: second relies on it too
            first.close()
            assert target.is_dir()
            users = json.loads((tmp_path / "registry.json").read_text())[str(target)]
            assert users == [f"{os.getpid()}:{second.netns}"]
        assert not (tmp_path / "var").exists()  # the last user removed what was created
    assert json.loads((tmp_path / "registry.json").read_text()) == {}


def test_a_crashed_user_does_not_keep_a_mount_point_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pods, "MOUNT_POINT_REGISTRY", tmp_path / "registry.json")
    target = tmp_path / "etc" / "istio" / "pod"
    target.mkdir(parents=True)
    dead = 2**22 + 12345  # above the largest possible pid_max (2**22): no such process
    (tmp_path / "registry.json").write_text(json.dumps({str(target): [f"{dead}:rmnode-gone"]}))
    with Node() as node:
        node.ensure_mount_point(target)
    assert not target.exists()
    assert (tmp_path / "etc" / "istio").is_dir()  # not created by a node: never removed
