"""Traffic through the mesh: the client app's requests, and requests from outside the mesh.

Every request is made by the client app in the client pod (``harness/mesh_apps/client.py``,
run like ``kubectl exec``), through its sidecar, or from the node itself, outside the mesh.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from harness.mesh import APPS, Mesh
from harness.mesh_workloads import SERVER_PORT, Pods
from harness.pod_envoy import stat
from harness.polling import wait_until
from testbed.running_pod import RunningPod


def call(client_pod: RunningPod, url: str, attempts: int = 50) -> dict[str, Any]:
    """GET ``url`` from the client app (through its sidecar), retried while routes arrive."""
    result = client_pod.exec(
        "client",
        ["python3", str(APPS / "client.py"), "get", url, "--attempts", str(attempts)],
        timeout=30,
    )
    assert result.returncode in (0, 1), result.stderr
    return dict(json.loads(result.stdout))


def xfcc(answer: dict[str, Any]) -> str | None:
    """The ``x-forwarded-client-cert`` the echo app received, None when there was none."""
    headers: dict[str, str] = json.loads(answer["body"])["headers"]
    return headers.get("x-forwarded-client-cert")


def from_outside(mesh: Mesh, pod: RunningPod, port: int, path: str = "/") -> int | None:
    """A plaintext GET from the node (no sidecar) to ``pod``'s address: status, or None when
    the connection was refused, reset or closed without an answer."""
    try:
        status, _ = mesh.node.http("GET", pod.ip, port, path, timeout=3.0)
    except OSError:
        return None
    return status


class TrafficLoop:
    """The client app sending GET after GET through both sidecars, in the background.

    Every failure counts: the loop never retries (Envoy's own retries are the mesh's).
    """

    def __init__(self, pods: Pods, path: str = "/loop", max_seconds: float = 120.0) -> None:
        self.pods = pods
        self._inbound = f"cluster.inbound|{SERVER_PORT}||.upstream_rq_total"
        self._process = pods.client.spawn(
            "client",
            [
                "python3",
                str(APPS / "client.py"),
                "loop",
                pods.url + path,
                "--max-seconds",
                str(max_seconds),
            ],
        )

    def served(self, *, missing_ok: bool = False) -> int:
        """Requests the server's sidecar has delivered so far (all sources).

        ``missing_ok`` before the first request: the counter is created by it (deferred).
        """
        return stat(self.pods.server, self._inbound, missing_ok=missing_ok)

    def wait_flowing(self, requests: int = 10) -> None:
        # The first looped request may not have arrived yet (the counter does not exist
        # then); the wait cannot pass on a missing counter, which reads 0 < start + requests.
        start = self.served(missing_ok=True)
        wait_until(
            f"{requests} looped requests reach the server",
            lambda: (
                self._process.poll() is None and self.served(missing_ok=True) >= start + requests
            ),
        )

    def stop(self) -> dict[str, Any]:
        """Stop after the request in flight; the loop's summary (ok, failed, failures)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        out, err = self._process.communicate(timeout=30)
        assert out.strip(), f"the client loop printed nothing: {err}"
        return dict(json.loads(out.strip().splitlines()[-1]))


def start_calls(client_pod: RunningPod, urls: Sequence[str]) -> list[subprocess.Popen[str]]:
    """One GET per URL from the client app, all at once and never retried (see :func:`answers`).

    With ``/delay`` URLs they overlap, so the client's Envoy must open new connections to the
    server's: each one a fresh TLS handshake, or none with plaintext.
    """
    return [
        client_pod.spawn(
            "client", ["python3", str(APPS / "client.py"), "get", url, "--attempts", "1"]
        )
        for url in urls
    ]


def answers(calls: Sequence[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for process in calls:
        stdout, stderr = process.communicate(timeout=30)
        assert stdout.strip(), f"the client printed nothing: {stderr}"
        out.append(dict(json.loads(stdout)))
    return out


def burst(
    client_pod: RunningPod,
    url: str,
    requests: int,
    *,
    concurrency: int = 4,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``requests`` GETs of ``url`` from the client app, ``concurrency`` at a time, never
    retried: ``{"statuses": {status: n}, "versions": {version: n}, "results": [[status,
    version, seconds], ...]}`` (the echo server's version; status ``error`` without answer)."""
    argv = ["python3", str(APPS / "client.py"), "burst", url, "--requests", str(requests)]
    argv += ["--concurrency", str(concurrency)]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    result = client_pod.exec("client", argv, timeout=120)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))
