"""A pod the stand-in kubelet started: its containers' processes, and what a test does with it.

:class:`RunningPod` is what :func:`testbed.kubelet.run_pod` returns: the pod's network
namespace, address and directory, and each container's main process. A test asks it like
``kubectl`` would: :meth:`RunningPod.exec` and :meth:`RunningPod.spawn` a command with the
container's user and environment in the pod's network, :meth:`RunningPod.http` to a port
inside it (also a loopback-only one). :meth:`RunningPod.stop` stops and removes everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.errors import PodError
from testbed.netns import http_in_netns, ip
from testbed.node import Node

SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


@dataclass
class ContainerProcess:
    """A started container: its main process, log file, and the user and env it runs with."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    uid: int
    gid: int
    env: dict[str, str]

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@dataclass
class RunningPod:
    """One pod on a :class:`Node`: its namespace, directory, processes and address."""

    node: Node
    name: str
    namespace: str
    netns: str
    ip: str
    directory: Path
    containers: dict[str, ContainerProcess] = field(default_factory=dict)

    def __enter__(self) -> RunningPod:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {self.name}/{name} (exit {c.process.poll()}):\n{c.log()}"
            for name, c in self.containers.items()
        )

    def _exec_argv(self, container: str, argv: Sequence[str]) -> list[str]:
        target = self.containers[container]
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            SETPRIV,
            f"--reuid={target.uid}",
            f"--regid={target.gid}",
            "--clear-groups",
            *argv,
        ]

    def exec(
        self, container: str, argv: Sequence[str], timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """Like ``kubectl exec``: ``argv`` in the pod's network with the container's user and env.

        Not in the container's mount namespace: the volumes are not mounted for it.
        """
        return subprocess.run(
            self._exec_argv(container, argv),
            check=False,
            env=self.containers[container].env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, container: str, argv: Sequence[str]) -> subprocess.Popen[str]:
        """:meth:`exec` in the background: the caller waits (``communicate``) or signals it.

        ``ip netns exec`` and ``setpriv`` exec in place, so the process's pid is ``argv``'s.
        """
        return subprocess.Popen(
            self._exec_argv(container, argv),
            env=self.containers[container].env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def http(
        self,
        method: str,
        port: int,
        path: str,
        host: str = "127.0.0.1",
        timeout: float = 3.0,
    ) -> tuple[int, str]:
        """An HTTP request inside the pod's network (e.g. to a loopback-only port); status and
        body. Raises OSError when the connection fails or is closed."""
        return http_in_netns(self.netns, method, host, port, path, timeout=timeout)

    def http_get(self, port: int, path: str, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
        """GET inside the pod's network (e.g. Envoy's loopback-only admin); the body."""
        status, body = self.http("GET", port, path, host, timeout)
        if status != 200:
            raise PodError(f"GET {path} on {self.name}:{port}: {status} {body[:200]}")
        return body

    def pids_of(self, command: str) -> list[int]:
        """The pod's processes whose command name (``/proc/<pid>/comm``) is ``command``."""
        found = []
        for pid in ip("netns", "pids", self.netns, check=False).stdout.split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == command:
                    found.append(int(pid))
        return found

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every container, SIGKILL what is left after ``grace``, remove everything."""
        for container in self.containers.values():
            if container.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in self.containers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Whatever still runs in the pod's network namespace was started for this pod.
        pids = ip("netns", "pids", self.netns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for container in self.containers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=5)
        ip("netns", "del", self.netns, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
