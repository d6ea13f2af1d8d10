"""The harness node's host-side mount points are shared by every node on the machine.

A directory created on the host as a mount point may be in use by another node's pods (in
this process or another: a benchmark next to a test run). Removing it while they run
silently detaches their bind mounts (the kernel allows rmdir of a mount point in another
mount namespace), which once made an agent lose its projected token mid-test.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import testbed.netns
from testbed import mount_points
from testbed.netns import http_in_netns, in_netns
from testbed.node import NODE_ADDRESS, Node

pytestmark = [pytest.mark.netns]


def test_a_mount_point_lives_until_the_last_node_using_it_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mount_points, "MOUNT_POINT_REGISTRY", tmp_path / "registry.json")
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
    monkeypatch.setattr(mount_points, "MOUNT_POINT_REGISTRY", tmp_path / "registry.json")
    target = tmp_path / "etc" / "istio" / "pod"
    target.mkdir(parents=True)
    dead = 2**22 + 12345  # above the largest possible pid_max (2**22): no such process
    (tmp_path / "registry.json").write_text(json.dumps({str(target): [f"{dead}:rmnode-gone"]}))
    with Node() as node:
        node.ensure_mount_point(target)
    assert not target.exists()
    assert (tmp_path / "etc" / "istio").is_dir()  # not created by a node: never removed


def test_a_mkdir_failing_half_way_still_records_the_directories_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What was created before the failure is registered as the node's, and removed by it."""
    monkeypatch.setattr(mount_points, "MOUNT_POINT_REGISTRY", tmp_path / "registry.json")
    target = tmp_path / "made" / "also-made" / "refused"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "refused":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        real_mkdir(self, *args, **kwargs)

    with Node() as node:
        monkeypatch.setattr(Path, "mkdir", mkdir)
        with pytest.raises(OSError, match="No space left"):
            node.ensure_mount_point(target)
        monkeypatch.setattr(Path, "mkdir", real_mkdir)
        registry = json.loads((tmp_path / "registry.json").read_text())
        owner = [f"{os.getpid()}:{node.netns}"]
        assert registry == {str(target.parent.parent): owner, str(target.parent): owner}
    assert not (tmp_path / "made").exists()
    assert json.loads((tmp_path / "registry.json").read_text()) == {}


def test_the_registry_survives_a_crash_between_writing_and_replacing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is replaced whole or not at all: a crash before the rename keeps every
    entry it had, and leaves no temporary file next to it."""
    registry_path = tmp_path / "registry.json"
    monkeypatch.setattr(mount_points, "MOUNT_POINT_REGISTRY", registry_path)
    before = {str(tmp_path / "kept"): ["1:rmnode-other"]}
    registry_path.write_text(json.dumps(before))
    written: list[str] = []

    def crash(source: Path, destination: Path) -> None:
        written.append(Path(source).read_text())  # the new registry was fully written...
        raise KeyboardInterrupt  # ...and the process dies before the rename

    monkeypatch.setattr(mount_points.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt), mount_points.locked_registry() as registry:
        registry[str(tmp_path / "new")] = ["2:rmnode-new"]
    assert json.loads(written[0]) == {**before, str(tmp_path / "new"): ["2:rmnode-new"]}
    assert json.loads(registry_path.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.json", "registry.lock"]


# -- HTTP from inside a network namespace -----------------------------------------------------


def _sockets_open() -> int:
    return sum(
        os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        for fd in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


@contextlib.contextmanager
def _server(netns: str, answer: bytes) -> Iterator[int]:
    """A one-shot TCP server in ``netns`` on NODE_ADDRESS that sends ``answer`` and closes."""
    with in_netns(netns):
        listener = socket.create_server((NODE_ADDRESS, 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):  # the client may be gone: that is for it to tell
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(2)
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def test_http_in_netns_answers_from_inside_the_namespace_whatever_the_bytes() -> None:
    body = b"caf\xe9 \xff"  # not UTF-8
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
        len(body),
        body,
    )
    with Node() as node, _server(node.netns, answer) as port:
        status, text = http_in_netns(node.netns, "GET", NODE_ADDRESS, port, "/x")
    assert (status, text) == (200, "caf\ufffd \ufffd")


def test_http_in_netns_turns_a_connection_closed_before_answering_into_an_oserror() -> None:
    with Node() as node, _server(node.netns, b"") as port:
        where = f"GET {NODE_ADDRESS}:{port}/x in {node.netns}"
        with pytest.raises(ConnectionError, match=where):
            http_in_netns(node.netns, "GET", NODE_ADDRESS, port, "/x")


def test_http_in_netns_closes_its_socket_whenever_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused (nothing listens: the address exists only inside the namespace), and
    connected but failing before the request (leaving the namespace fails): no socket is
    left open either way."""
    with Node() as node:
        open_before = _sockets_open()
        with pytest.raises(ConnectionRefusedError):
            http_in_netns(node.netns, "GET", NODE_ADDRESS, 9, "/")
        assert _sockets_open() == open_before

        real_in_netns = testbed.netns.in_netns

        @contextlib.contextmanager
        def failing_on_the_way_out(name: str) -> Iterator[None]:
            with real_in_netns(name):
                yield
            raise OSError(errno.EPERM, "setns back to the test's namespace")

        monkeypatch.setattr(testbed.netns, "in_netns", failing_on_the_way_out)
        answer = b"HTTP/1.1 204 No Content\r\n\r\n"
        with (
            _server(node.netns, answer) as port,
            pytest.raises(PermissionError, match="setns back") as failure,
        ):
            http_in_netns(node.netns, "GET", NODE_ADDRESS, port, "/")
        # Counted with the server gone and the failure (its traceback, its frames) still
        # held, so a socket left open cannot have been closed by the garbage collector.
        assert _sockets_open() == open_before
        assert failure.value.errno == errno.EPERM
