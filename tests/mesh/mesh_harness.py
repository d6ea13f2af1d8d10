"""Helpers of the mesh end-to-end tests (the fixture is in conftest.py).

The mesh, end to end on this machine: real API server, injector, control plane and Envoys.

Pods run as network namespaces on one harness node (:mod:`testbed.pods`): the stored Pod,
as the injector wrote it, decides every process's command, environment, user, capabilities
and mounts. The control plane is ``remora discovery --kubeconfig`` (a subprocess on the root
namespace's loopback), reached by the pods at ``10.77.0.1:15010`` on the node's bridge, the
discovery address this run's injector config gives them. Every fixture removes what it
created, also when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from injector.config import InjectorConfig
from meshlib.certs import new_ca
from testbed.launcher import TestBed, free_port
from testbed.pods import Image, Node

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).with_name("apps")
VENV_BIN = REPO / ".venv" / "bin"
XDS_PORT_ON_NODE = 15010  # plaintext xDS, as the sidecar expects on 15010
SECURE_PORT_ON_NODE = 15012  # the mesh CA (and ADS) over TLS, Istio's port
RUN_LABEL = "remora-mesh-e2e"


def remora_image_workdir() -> str:
    """The WORKDIR of Remora's image, read from the Dockerfile so the harness cannot drift.

    ``REMORA_E2E_IMAGE_WORKDIR`` overrides it, to try a fix before the image has it.
    """
    if os.environ.get("REMORA_E2E_IMAGE_WORKDIR"):
        return os.environ["REMORA_E2E_IMAGE_WORKDIR"]
    workdir = "/"
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("WORKDIR "):
            workdir = line.split(maxsplit=1)[1].strip()
    return workdir


def images(proxy_image: str) -> dict[str, Image]:
    """Image -> local program: Remora's image runs the venv's ``remora``; the apps are ours."""
    path = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    python_env = {"PATH": path, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return {
        proxy_image: Image(
            entrypoint=(str(VENV_BIN / "remora"),),
            cmd=("--help",),
            workdir=remora_image_workdir(),
            env=python_env,
            user=(1337, 1337),
        ),
        "remora-e2e/echo": Image(
            entrypoint=(sys.executable, str(APPS / "echo_server.py")), env=python_env
        ),
        "remora-e2e/client": Image(
            entrypoint=(sys.executable, str(APPS / "client.py")), cmd=("idle",), env=python_env
        ),
    }


@dataclasses.dataclass
class Mesh:
    bed: TestBed
    node: Node
    namespace: str
    injector: InjectorConfig
    discovery_log: Path

    @property
    def images(self) -> dict[str, Image]:
        proxy = self.injector.proxy
        return images(f"{proxy.hub}/{proxy.image}")


def mesh_ca(directory: Path) -> Path:
    """A mesh root in Istio's ``cacerts`` layout for ``remora discovery --ca-dir``.

    Only the control plane reads it: the agents get their certificates from the CA at
    ``CA_ADDR`` with their projected tokens, and trust the root it publishes.
    """
    ca = new_ca("remora mesh e2e root")
    directory.mkdir(mode=0o700)
    for name, data in (
        ("ca-cert.pem", ca.cert_pem),
        ("root-cert.pem", ca.cert_pem),
        ("cert-chain.pem", ca.cert_pem),
        ("ca-key.pem", ca.key_pem),
    ):
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)
    return directory


@contextlib.contextmanager
def discovery(
    bed: TestBed, mesh_namespace: str, ca_dir: Path, log_path: Path
) -> Iterator[tuple[int, int]]:
    """``remora discovery --kubeconfig`` with its CA on loopback; (xDS, CA) ports once /ready.

    xDS in plaintext, the CA over TLS (``--secure-xds-port``, a serving certificate for
    ``istiod.<mesh namespace>.svc`` from the mesh CA). The CA also publishes its root as the ``istio-ca-root-cert`` ConfigMap that injected pods
    mount. ``mesh_namespace`` (this run's own, instead of ``istio-system``) holds its CA Secret
    and would hold the mesh ConfigMap.
    """
    xds_port, monitoring_port, ca_port = free_port(), free_port(), free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(VENV_BIN / "remora"),
                "discovery",
                f"--kubeconfig={bed.kubeconfig}",
                f"--xds-port={xds_port}",
                f"--monitoring-port={monitoring_port}",
                f"--secure-xds-port={ca_port}",
                f"--mesh-namespace={mesh_namespace}",
                f"--ca-dir={ca_dir}",
                "--listen-address=127.0.0.1",
                "--log-format=text",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60  # seconds; the shared machine can be slow
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"remora discovery exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{monitoring_port}/ready").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"remora discovery not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield xds_port, ca_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
