"""Helpers of the mesh end-to-end tests (the fixture is in conftest.py).

The mesh, end to end on this machine: real API server, injector, control plane and Envoys.

Pods run as network namespaces on one harness node (:mod:`testbed.kubelet`): the stored Pod,
as the injector wrote it, decides every process's command, environment, user, capabilities
and mounts. The control plane is ``remora discovery --kubeconfig`` (a subprocess on the root
namespace's loopback), reached by the pods at ``10.77.0.1:15010`` on the node's bridge, the
discovery address this run's injector config gives them. Every fixture removes what it
created, also when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx

from injector.config import InjectorConfig
from meshlib.certs import new_ca
from testbed.images import Image
from testbed.launcher import TestBed, free_port
from testbed.node import Node
from testbed.running_pod import RunningPod

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).with_name("apps")
VENV_BIN = REPO / ".venv" / "bin"
XDS_PORT_ON_NODE = 15010  # plaintext xDS, as the sidecar expects on 15010
SECURE_PORT_ON_NODE = 15012  # the mesh CA (and ADS) over TLS, Istio's port
RUN_LABEL = "remora-mesh-e2e"
CHARTS_CRDS = REPO / "charts" / "remora" / "crds"
PA_CRD = "peerauthentications.security.istio.io"
APP_UID = 1000
SERVER_PORT = 8080
SERVICE_PORT = 80
# How long a bounded wait gives the shared 2-core machine; the assertions after it are strict.
CONVERGE_S = 30.0

T = TypeVar("T")
# The Envoy stats the tests read beyond the default inclusion list (Istio's annotation): the
# inbound listener's TLS and refusal counters, the clusters' connection and TLS counters.
STATS_ANNOTATIONS = {
    "sidecar.istio.io/statsInclusionPrefixes": "listener.0.0.0.0_15006,cluster.outbound|,"
    "cluster.inbound|"
}


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
def peer_authentication_crd(bed: TestBed) -> Iterator[None]:
    """The chart's PeerAuthentication CRD, installed and Established; removed after, if we
    installed it (it is cluster-wide). Install it before ``remora discovery`` starts: a
    missing kind is only looked for again every 30 s."""
    had = bed.kubectl("get", "crd", PA_CRD, check=False).returncode == 0
    if not had:
        bed.kubectl("apply", "-f", str(CHARTS_CRDS / f"{PA_CRD}.yaml"))
    try:
        bed.kubectl("wait", "--for=condition=Established", f"crd/{PA_CRD}", "--timeout=60s")
        yield
    finally:
        if not had:
            bed.kubectl("delete", "crd", PA_CRD, "--ignore-not-found", check=False)


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
    import uuid

    from kubernetes import client

    from injector.config import default_config
    from injector.registration import wait_until_injecting, webhook_configuration
    from injector.server import WebhookServer
    from meshlib.meshconfig import parse_mesh_config

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


# -- the workloads ---------------------------------------------------------------------------


def app_security() -> dict[str, Any]:
    return {"runAsUser": APP_UID, "runAsGroup": APP_UID, "allowPrivilegeEscalation": False}


def server_deployment() -> dict[str, Any]:
    """The echo server, from a Deployment (the ReplicaSet controller makes the Pod)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "server"}},
            "template": {
                "metadata": {"labels": {"app": "server"}, "annotations": STATS_ANNOTATIONS},
                "spec": {
                    "containers": [
                        {
                            "name": "echo",
                            "image": "remora-e2e/echo:1",
                            "args": [str(SERVER_PORT)],
                            "ports": [{"name": "http", "containerPort": SERVER_PORT}],
                            "env": [
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                }
                            ],
                            "readinessProbe": {"httpGet": {"path": "/", "port": SERVER_PORT}},
                            "securityContext": app_security(),
                        }
                    ]
                },
            },
        },
    }


def client_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "client",
            "labels": {"app": "client"},
            "annotations": STATS_ANNOTATIONS,
        },
        "spec": {
            "containers": [
                {
                    "name": "client",
                    "image": "remora-e2e/client:1",
                    "securityContext": app_security(),
                }
            ]
        },
    }


def wait_for_pod(core: Any, namespace: str, selector: str, timeout: float = 45.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if pods:
            return dict(core.api_client.sanitize_for_serialization(pods[0]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pod with {selector} in {namespace}")
        time.sleep(0.1)


def service_and_slice(
    core: Any, discovery_api: Any, namespace: str, server: RunningPod, name: str = "server"
) -> str:
    """A Service without selector and its EndpointSlice at the server pod; the ClusterIP.

    The slice names the pod, so the control plane knows whether it has a sidecar (its
    ``security.istio.io/tlsMode`` label) and speaks mTLS to it only then.
    """
    service = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVER_PORT}]},
        },
    )
    discovery_api.create_namespaced_endpoint_slice(
        namespace,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": SERVER_PORT, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [server.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": server.name, "namespace": namespace},
                }
            ],
        },
    )
    return str(service.spec.cluster_ip)


class Pods(NamedTuple):
    server: RunningPod
    client: RunningPod
    cluster_ip: str

    @property
    def url(self) -> str:
        return f"http://{self.cluster_ip}:{SERVICE_PORT}"


@contextlib.contextmanager
def server_and_client(mesh: Mesh) -> Iterator[Pods]:
    """The server (from a Deployment) and the client, running; the server's ClusterIP."""
    from kubernetes import client

    with mesh.bed.api_client() as api:
        core = client.CoreV1Api(api)
        client.AppsV1Api(api).create_namespaced_deployment(mesh.namespace, server_deployment())
        core.create_namespaced_pod(mesh.namespace, client_pod())
        server_spec = wait_for_pod(core, mesh.namespace, "app=server")
        client_spec = wait_for_pod(core, mesh.namespace, "app=client")
        with run_pod_in(mesh, server_spec, api) as server:
            cluster_ip = service_and_slice(core, client.DiscoveryV1Api(api), mesh.namespace, server)
            with run_pod_in(mesh, client_spec, api) as client_pod_:
                yield Pods(server, client_pod_, cluster_ip)


def run_pod_in(mesh: Mesh, spec: dict[str, Any], api: Any) -> RunningPod:
    from testbed.kubelet import run_pod

    return run_pod(mesh.node, spec, api, mesh.images, ready_timeout=60.0)


# -- asking the pods -------------------------------------------------------------------------


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


class MissingStat(AssertionError):
    """An Envoy stat a test reads does not exist in the pod's Envoy."""


def stat(pod: RunningPod, name: str, *, missing_ok: bool = False) -> int:
    """A counter or gauge from the pod's Envoy admin (loopback-only: asked inside the pod).

    A stat that does not exist raises :class:`MissingStat`: with the stats inclusion list
    (:data:`STATS_ANNOTATIONS`) a misspelled or filtered-out name would otherwise read 0
    forever, and an assertion that nothing changed would pass without measuring anything.
    ``missing_ok=True`` reads absence as 0, and is right only where absence means zero:
    a cluster's traffic stats (``upstream_rq_*``, ``upstream_cx_*``) are created on its first
    request (``enable_deferred_creation_stats`` in :mod:`sidecar.bootstrap`), so before
    traffic they are legitimately missing.
    """
    exact = urllib.parse.quote(f"^{re.escape(name)}$")
    stats = json.loads(pod.http_get(15000, f"/stats?format=json&filter={exact}"))
    values = [int(s.get("value", 0)) for s in stats.get("stats", []) if s.get("name") == name]
    if values:
        return values[0]
    if missing_ok:
        return 0
    raise MissingStat(_missing_stat_message(pod, name))


def stat_names(pod: RunningPod, prefix: str) -> list[str]:
    """The names of the counters and gauges of the pod's Envoy that begin with ``prefix``."""
    starts = urllib.parse.quote(f"^{re.escape(prefix)}")
    stats = json.loads(pod.http_get(15000, f"/stats?format=json&filter={starts}"))
    return sorted(s["name"] for s in stats.get("stats", []) if "name" in s)


def _missing_stat_message(pod: RunningPod, name: str) -> str:
    """Why ``name`` may be missing, and the names that exist near it (spelling, family)."""
    every = [
        s["name"]
        for s in json.loads(pod.http_get(15000, "/stats?format=json")).get("stats", [])
        if "name" in s
    ]
    similar = difflib.get_close_matches(name, every, n=8, cutoff=0.6)
    family = name.rsplit(".", 1)[0] + "."
    similar += [n for n in every if n.startswith(family) and n not in similar][:12]
    return (
        f"Envoy stat {name!r} does not exist in {pod.name}'s Envoy: misspelled, left out by "
        f"the stats inclusion list (add its prefix to STATS_ANNOTATIONS), or a cluster "
        f"traffic stat created only on the cluster's first request (then pass "
        f"missing_ok=True where that means 0). Similar names: "
        f"{', '.join(similar) if similar else f'none among {len(every)} stats'}"
    )


def served_serials(pod: RunningPod) -> set[str]:
    """Serial numbers of the workload certificates Envoy holds (``/certs``, SDS ``default``)."""
    certs = json.loads(pod.http_get(15000, "/certs"))
    serials = set()
    for entry in certs.get("certificates", []):
        for cert in entry.get("cert_chain", []):
            if any(
                san.get("uri", "").startswith("spiffe://")
                for san in cert.get("subject_alt_names", [])
            ):
                serials.add(cert["serial_number"])
    return serials


def from_outside(mesh: Mesh, pod: RunningPod, port: int, path: str = "/") -> int | None:
    """A plaintext GET from the node (no sidecar) to ``pod``'s address: status, or None when
    the connection was refused, reset or closed without an answer."""
    try:
        status, _ = mesh.node.http("GET", pod.ip, port, path, timeout=3.0)
    except OSError:
        return None
    return status


def wait_until(what: str, check: Callable[[], T], timeout: float = CONVERGE_S) -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f} s: {what} (last: {value!r})")
        time.sleep(0.2)


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
