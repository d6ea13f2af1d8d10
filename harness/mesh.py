"""The mesh, end to end on this machine: real API server, injector, control plane and Envoys.

:func:`open_mesh` stands it up, for the mesh end-to-end tests' ``mesh`` fixture
(``tests/mesh/conftest.py``) and ``bench/mesh_latency.py`` alike. Pods run as network
namespaces on one harness node (:mod:`testbed.kubelet`): the stored Pod, as the injector wrote
it, decides every process's command, environment, user, capabilities and mounts. The control
plane is ``remora discovery --kubeconfig`` (a subprocess on the root namespace's loopback),
reached by the pods at ``10.77.0.1:15010`` on the node's bridge, the discovery address this
run's injector config gives them. Everything is removed on exit, also when a test fails.

The workloads are in :mod:`harness.mesh_workloads`, the ways to ask them in
:mod:`harness.mesh_traffic` and :mod:`harness.pod_envoy`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from injector.config import InjectorConfig, default_config
from injector.in_process import WebhookServer
from injector.registration import wait_until_injecting, webhook_configuration
from meshlib.certs import new_ca
from meshlib.meshconfig import parse_mesh_config
from meshlib.ports import free_port
from testbed.images import Image
from testbed.launcher import TestBed
from testbed.node import Node

REPO = Path(__file__).resolve().parents[1]
APPS = Path(__file__).with_name("mesh_apps")
VENV_BIN = REPO / ".venv" / "bin"
XDS_PORT_ON_NODE = 15010  # plaintext xDS, as the sidecar expects on 15010
SECURE_PORT_ON_NODE = 15012  # the mesh CA (and ADS) over TLS, Istio's port
RUN_LABEL = "remora-mesh-e2e"
CHARTS_CRDS = REPO / "charts" / "remora" / "crds"


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
    discovery: Discovery
    mesh_namespace: str  # also the mesh config's rootNamespace: mesh-wide policies go here

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


class Discovery:
    """``remora discovery --kubeconfig`` with its CA, on loopback ports that survive a restart.

    xDS in plaintext, the CA over TLS (``--secure-xds-port``, a serving certificate for
    ``istiod.<mesh namespace>.svc`` from the mesh CA). The CA also publishes its root as the
    ``istio-ca-root-cert`` ConfigMap that injected pods mount. ``mesh_namespace`` (this run's
    own, instead of ``istio-system``) holds its CA Secret and the mesh ConfigMap. The ports
    are chosen once: :meth:`start` after :meth:`kill` serves the same addresses, as a
    restarted istiod behind its Service does.
    """

    def __init__(
        self,
        bed: TestBed,
        mesh_namespace: str,
        ca_dir: Path,
        log_path: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.xds_port, self.monitoring_port, self.ca_port = free_port(), free_port(), free_port()
        self.log_path = log_path
        self.argv = [
            str(VENV_BIN / "remora"),
            "discovery",
            f"--kubeconfig={bed.kubeconfig}",
            f"--xds-port={self.xds_port}",
            f"--monitoring-port={self.monitoring_port}",
            f"--secure-xds-port={self.ca_port}",
            f"--mesh-namespace={mesh_namespace}",
            f"--ca-dir={ca_dir}",
            "--listen-address=127.0.0.1",
            "--log-format=text",
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.monitoring_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait for ``/ready`` (the first complete view of the cluster)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout  # the shared machine can be slow
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"remora discovery exited:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"remora discovery not ready:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Stop it with ``sig`` (SIGKILL: a crash, nothing is said to the proxies); its code."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def syncz(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/debug/syncz", timeout=5).json())

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def chart_crds(bed: TestBed) -> Iterator[None]:
    """Every CRD of the chart (``charts/remora/crds/``), installed and Established; those we
    installed are removed after (they are cluster-wide, and so are their objects). Install
    them before ``remora discovery`` starts: a missing kind is only looked for again every
    30 s."""
    added = []
    for path in sorted(CHARTS_CRDS.glob("*.yaml")):
        name = path.name.removesuffix(".yaml")
        if bed.kubectl("get", "crd", name, check=False).returncode != 0:
            bed.kubectl("apply", "-f", str(path))
            added.append(name)
    try:
        for path in sorted(CHARTS_CRDS.glob("*.yaml")):
            name = path.name.removesuffix(".yaml")
            bed.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        yield
    finally:
        for name in added:
            bed.kubectl("delete", "crd", name, "--ignore-not-found", check=False)


@contextlib.contextmanager
def open_mesh(
    bed: TestBed,
    log_dir: Path,
    *,
    prefix: str = "mesh",
    discovery_args: Sequence[str] = (),
    trust_domain: str = "cluster.local",
) -> Iterator[Mesh]:
    """A node, the control plane + CA, the webhook registered for a fresh injected namespace.

    The ``mesh`` fixture and ``bench/mesh_latency.py`` both stand on this. Names start with
    ``prefix`` and a random run id; everything is removed on exit, also after a failure.
    """
    run = uuid.uuid4().hex[:8]
    namespace = f"{prefix}-{run}"
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(Node())
        api = stack.enter_context(bed.api_client())
        core = client.CoreV1Api(api)
        mesh_namespace = f"{prefix}-system-{run}"
        bed.create_namespace(mesh_namespace)
        stack.callback(core.delete_namespace, mesh_namespace)
        # This run's mesh config: its own root namespace, so a mesh-wide policy stays ours.
        core.create_namespaced_config_map(
            mesh_namespace,
            {
                "metadata": {"name": "istio"},
                "data": {"mesh": f"rootNamespace: {mesh_namespace}\n"},
            },
        )
        ca_dir = mesh_ca(log_dir / "cacerts")
        control = Discovery(
            bed,
            mesh_namespace,
            ca_dir,
            log_dir / "discovery.log",
            (f"--trust-domain={trust_domain}", *discovery_args),
        )
        stack.callback(control.stop)
        control.start()
        discovery_address = node.forward(XDS_PORT_ON_NODE, ("127.0.0.1", control.xds_port))
        # Pods reach the CA by the name in its serving certificate, as in a cluster.
        ca_host = f"istiod.{mesh_namespace}.svc"
        node.add_host(
            ca_host,
            node.forward(SECURE_PORT_ON_NODE, ("127.0.0.1", control.ca_port)).split(":")[0],
        )
        config = dataclasses.replace(
            default_config(),
            ca_address=f"{ca_host}:{SECURE_PORT_ON_NODE}",
            mesh_namespace=mesh_namespace,
            mesh=parse_mesh_config(
                {
                    "trustDomain": trust_domain,
                    "defaultConfig": {"discoveryAddress": discovery_address},
                }
            ),
        )
        webhook = stack.enter_context(WebhookServer(config))
        admission = client.AdmissionregistrationV1Api(api)
        name = f"remora-{prefix}-{run}"
        admission.create_mutating_webhook_configuration(
            webhook_configuration(
                name, webhook.url, webhook.ca_bundle or "", namespace_labels={RUN_LABEL: run}
            )
        )
        stack.callback(admission.delete_mutating_webhook_configuration, name)
        bed.create_namespace(namespace, labels={"istio-injection": "enabled", RUN_LABEL: run})
        stack.callback(core.delete_namespace, namespace)
        wait_until_injecting(core, namespace)
        yield Mesh(bed, node, namespace, config, log_dir / "discovery.log", control, mesh_namespace)
