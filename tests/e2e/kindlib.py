"""The kind suite's helpers: its prerequisites, found by trying them, and the cluster.

The suite runs against the cluster ``make kind-up`` made (kind cluster ``remora``, the chart
installed in istio-system, the demo app of ``manifests/demo.yaml``). When something it needs
is missing, every test skips with what was tried and what it answered; nothing is assumed.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = os.environ.get("KIND_CLUSTER", "remora")


def _pinned(tool_path: list[str]) -> str | None:
    """Where the project's pinned build of a tool is, if it is built (``--print`` builds nothing)."""
    try:
        out = subprocess.run(tool_path, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[-1] if lines and os.access(lines[-1], os.X_OK) else None


@functools.cache
def kind_binary() -> str:
    """$KIND, else the kind `make kind-up` builds (hack/tools/kind/go.mod), else ``kind``."""
    if os.environ.get("KIND"):
        return os.environ["KIND"]
    return _pinned([str(ROOT / "hack" / "tools" / "build.sh"), "--print", "kind"]) or "kind"


@functools.cache
def kubectl_binary() -> str:
    """$KUBECTL, else the test bed's kubectl (the Kubernetes line of the node image)."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    directory = _pinned([str(ROOT / "hack" / "testbed" / "build.sh"), "--print"])
    pinned = f"{directory}/kubectl" if directory else ""
    return pinned if pinned and os.access(pinned, os.X_OK) else "kubectl"


MESH_NAMESPACE = os.environ.get("MESH_NAMESPACE", "istio-system")
DEMO = "remora-demo"
_VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
IMAGE = os.environ.get(
    "REMORA_IMAGE", f"docker.io/remora/remora:{_VERSION.group(1) if _VERSION else 'latest'}"
)


def _try(*argv: str, timeout: float = 60) -> tuple[bool, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return out.returncode == 0, (out.stderr or out.stdout).strip()[-400:]


def kind_node_image() -> str:
    """The node image kind-config.yaml pins (kind pulls it on create)."""
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    return str(config["nodes"][0]["image"])


@functools.cache
def missing_prerequisites() -> str | None:
    """Why the suite cannot run here (every failed check, in order), or None."""
    problems: list[str] = []
    if shutil.which("docker") is None:
        problems.append("docker is not installed")
    else:
        ok, said = _try("docker", "info")
        if not ok:
            problems.append(f"the Docker engine is not reachable ({said})")
        else:
            ok, said = _try("docker", "image", "inspect", IMAGE)
            if not ok:
                problems.append(f"image {IMAGE} is not built (make images)")
            else:
                # kind's nodes are privileged containers: try one.
                ok, said = _try("docker", "run", "--rm", "--privileged", IMAGE, "version")
                if not ok:
                    problems.append(f"privileged containers fail: docker run --privileged: {said}")
        node = kind_node_image()
        ok, said = _try("docker", "image", "inspect", node)
        if not ok:
            ok, said = _try("docker", "pull", node, timeout=300)
            if not ok:
                problems.append(f"kind's node image cannot be pulled: {said}")
    kind, kubectl = kind_binary(), kubectl_binary()
    if shutil.which(kind) is None:
        problems.append(f"kind is not installed ({kind} not on PATH; make kind-up builds it)")
    else:
        ok, said = _try(kind, "get", "clusters")
        if not ok or CLUSTER not in said.split():
            problems.append(f"no kind cluster named {CLUSTER!r} (make kind-up): {said}")
    if shutil.which(kubectl) is None:
        problems.append(f"kubectl is not installed ({kubectl} not on PATH)")
    elif not problems:
        ok, said = _try(kubectl, "--context", f"kind-{CLUSTER}", "get", "ns", DEMO)
        if not ok:
            problems.append(f"the demo app is not deployed (make kind-up): {said}")
    return "; ".join(problems) or None


@dataclass(frozen=True)
class Kind:
    context: str

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [kubectl_binary(), "--context", self.context, *args],
            capture_output=True, text=True, input=input, timeout=timeout, check=False,
        )  # fmt: skip
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def pod(self, app: str, namespace: str = DEMO) -> dict[str, Any]:
        items = [
            p
            for p in self.get("pods", "-n", namespace, "-l", f"app={app}")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        assert items, f"no running pod app={app} in {namespace}"
        return items[0]

    def http_get(
        self, app: str, url: str, container: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """GET url from inside a pod of ``app`` with the image's Python; prints the body."""
        found = self.pod(app)
        pod = found["metadata"]["name"]
        if container is None:  # the app's own container, not the injected ones
            container = next(
                c["name"] for c in found["spec"]["containers"] if not c["name"].startswith("istio-")
            )
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
        return self.kubectl(
            "exec", "-n", DEMO, pod, "-c", container, "--",
            "/opt/remora/bin/python", "-c", code, check=False,
        )  # fmt: skip


def eventually(
    check: Callable[[], bool], what: str, timeout: float = 120, every: float = 2
) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
