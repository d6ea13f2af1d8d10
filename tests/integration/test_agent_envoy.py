"""The real agent (``remora proxy sidecar``, a subprocess) running the real Envoy against a
tiny in-test delta-ADS server and a test app, all on loopback.

Covers what the kubelet, Prometheus and Kubernetes' lifecycle see: readiness flipping when
the first config arrives (and never without a control plane), ``remora proxy wait``, app
probes from 127.0.0.6, merged metrics, SIGTERM drain, ``/quitquitquit``, Envoy dying, TLS
to the control plane verified against the mesh root, and SDS rotation picked up by Envoy
without a restart.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - Any registry
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401 - Any registry
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format
from prometheus_client.parser import text_string_to_metric_families

from meshlib.certs import KeyPair, issue, new_ca
from meshlib.hostport import host_port
from meshlib.ports import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

REMORA = str(Path(sys.executable).parent / "remora")
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


# -- the test application ------------------------------------------------------------------


class AppHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[str] = []
    slow_s = 1.5

    def do_GET(self) -> None:
        AppHandler.peers.append(self.client_address[0])
        body = b"ok\n"
        status = 200
        if self.path == "/metrics":
            body = b"# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total 42\n"
        elif self.path == "/sick":
            status = 503
        elif self.path == "/slow":
            time.sleep(AppHandler.slow_s)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the proxy quit
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    AppHandler.peers.clear()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# -- a minimal delta ADS server ------------------------------------------------------------


def _hcm(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "app",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
        },
    }


def _sds(name: str, api_type: str = "GRPC") -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            },
            "resource_api_version": "V3",
        },
    }


def mesh_config(app_port: int, plain_port: int, tls_port: int) -> dict[str, list[Any]]:
    """One cluster (the app) and inbound listeners: plain HTTP, and TLS with SDS certificates
    (one listener per SDS flavour)."""
    cluster = json_format.ParseDict(
        {
            "name": "inbound|app",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "inbound|app",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": app_port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        },
        cluster_pb2.Cluster(),
    )
    plain = json_format.ParseDict(
        {
            "name": "inbound-plain",
            "traffic_direction": "INBOUND",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": plain_port}},
            "filter_chains": [{"filters": [_hcm("inbound_plain", "inbound|app")]}],
        },
        listener_pb2.Listener(),
    )

    def tls_listener(name: str, port: int, sds_api: str) -> listener_pb2.Listener:
        return json_format.ParseDict(
            {
                "name": name,
                "traffic_direction": "INBOUND",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [
                    {
                        "filters": [_hcm(name.replace("-", "_"), "inbound|app")],
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                                "common_tls_context": {
                                    "tls_certificate_sds_secret_configs": [
                                        _sds("default", sds_api)
                                    ],
                                    "validation_context_sds_secret_config": _sds("ROOTCA", sds_api),
                                },
                            },
                        },
                    }
                ],
            },
            listener_pb2.Listener(),
        )

    # Istio's SDS flavour (state of the world) and the incremental one, both served.
    tls = tls_listener("inbound-tls", tls_port, "GRPC")
    tls_delta = tls_listener("inbound-tls-delta", free_port(), "DELTA_GRPC")
    return {CLUSTER_TYPE: [cluster], LISTENER_TYPE: [plain, tls, tls_delta]}


class TinyAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Answers each first delta subscription with every resource of that type, once
    ``release`` is set; ACKs need no answer. Records the nodes and peer identities it saw."""

    def __init__(self, resources: dict[str, list[Any]]) -> None:
        self.resources = resources
        self.release = threading.Event()
        self.nodes: list[str] = []
        self.peer_sans: list[str] = []

    def DeltaAggregatedResources(self, request_iterator: Any, context: Any) -> Any:
        auth = context.auth_context()
        self.peer_sans += [v.decode() for v in auth.get("x509_subject_alternative_name", [])]
        for request in request_iterator:
            if request.node.id:
                self.nodes.append(request.node.id)
            if request.response_nonce:
                continue  # ACK or NACK
            while not self.release.wait(0.05):
                if not context.is_active():
                    return
            items = []
            for i, message in enumerate(self.resources.get(request.type_url, [])):
                packed = any_pb2.Any()
                packed.Pack(message)
                items.append(
                    discovery_pb2.Resource(name=message.name, version=f"v{i}", resource=packed)
                )
            yield discovery_pb2.DeltaDiscoveryResponse(
                type_url=request.type_url,
                resources=items,
                nonce=f"{request.type_url}-1",
                system_version_info="1",
            )


@dataclass
class AdsServer:
    servicer: TinyAds
    port: int
    stop: Callable[[], None]


def start_ads(
    servicer: TinyAds, tls: KeyPair | None = None, client_ca: bytes | None = None
) -> AdsServer:
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(servicer, server)
    if tls is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        creds = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()

    def stop() -> None:
        servicer.release.set()
        server.stop(0).wait(5)

    return AdsServer(servicer, port, stop)


# -- the agent under test ------------------------------------------------------------------


@dataclass
class AgentUnderTest:
    proc: subprocess.Popen[bytes]
    admin: int
    status: int
    health: int
    prometheus: int
    workdir: Path
    envoy_pid: int | None = None
    log_path: Path = field(default_factory=Path)
    host: str = "127.0.0.1"

    def url(self, port: int, path: str) -> str:
        return f"http://{host_port(self.host, port)}{path}"

    def get(self, port: int, path: str, timeout: float = 3.0) -> httpx.Response:
        return httpx.get(self.url(port, path), timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def find_envoy(self) -> int:
        """The agent's child once it *is* Envoy (exec done: setpriv has armed the
        parent-death signal, and the binary is Envoy's, not the forked Python)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for pid in children.read_text().split():
                    if os.readlink(f"/proc/{pid}/exe").endswith("/envoy"):
                        self.envoy_pid = int(pid)
                        return self.envoy_pid
            time.sleep(0.02)
        raise AssertionError("Envoy did not start:\n" + self.log())

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen within {timeout}s\n{self.log()}")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentUnderTest]]:
    started: list[AgentUnderTest] = []

    def start(
        discovery_port: int,
        *extra: str,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> AgentUnderTest:
        workdir = tmp_path / f"agent{len(started)}"
        workdir.mkdir()
        ports = {name: free_port() for name in ("admin", "status", "health", "prometheus")}
        log_path = workdir / "agent.log"
        argv = [
            REMORA,
            "proxy",
            "sidecar",
            "--discovery-address",
            f"127.0.0.1:{discovery_port}",
            "--bind-address",
            host,
            "--config-dir",
            str(workdir),
            "--admin-port",
            str(ports["admin"]),
            "--status-port",
            str(ports["status"]),
            "--health-port",
            str(ports["health"]),
            "--prometheus-port",
            str(ports["prometheus"]),
            "--concurrency",
            "1",
            "--pod-info-dir",
            str(workdir / "podinfo"),
            "--log-as-text",
            # Quick exits where the test is not about the drain (tests may override).
            "--minimum-drain-duration",
            "0.2",
            "--drain-poll-interval",
            "0.1",
            *extra,
        ]
        base_env = {
            "PATH": os.environ.get("PATH", ""),
            "POD_NAME": "web-0",
            "POD_NAMESPACE": "default",
            "INSTANCE_IP": "127.0.0.1",
            "SERVICE_ACCOUNT": "web",
            "ISTIO_META_APP_CONTAINERS": "app",
        }
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                argv, env={**base_env, **(env or {})}, stdout=log_file, stderr=subprocess.STDOUT
            )
        agent = AgentUnderTest(proc, workdir=workdir, log_path=log_path, host=host, **ports)
        started.append(agent)
        agent.find_envoy()
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait(10)
        if agent.envoy_pid and _alive(agent.envoy_pid):
            os.kill(agent.envoy_pid, signal.SIGKILL)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    ca = new_ca("remora-test-mesh-root")
    directory = tmp_path / "ca"
    directory.mkdir()
    (directory / "ca-cert.pem").write_bytes(ca.cert_pem)
    (directory / "ca-key.pem").write_bytes(ca.key_pem)
    return directory


def probers_env(app_port: int) -> dict[str, str]:
    return {
        "ISTIO_KUBE_APP_PROBERS": json.dumps(
            {
                "/app-health/app/readyz": {"httpGet": {"path": "/ok", "port": app_port}},
                "/app-health/app/livez": {"tcpSocket": {"port": app_port}},
                "/app-health/app/startupz": {"httpGet": {"path": "/sick", "port": app_port}},
            }
        ),
        "ISTIO_PROMETHEUS_ANNOTATIONS": json.dumps(
            {"scrape": "true", "port": str(app_port), "path": "/metrics"}
        ),
    }


# -- tests ---------------------------------------------------------------------------------


def test_without_a_control_plane_the_proxy_never_becomes_ready(start_agent: Any) -> None:
    agent = start_agent(free_port(), "--xds-plaintext")
    time.sleep(1.5)
    response = agent.get(agent.status, "/healthz/ready")
    assert response.status_code == 503
    # Envoy is still initializing, or live with nothing: either way the reason is given.
    assert "not LIVE" in response.text or "no CDS and LDS config" in response.text
    # The kubelet's view (Envoy's health listener) is not ready either: refused or 503.
    try:
        health = agent.get(agent.health, "/healthz/ready", timeout=1).status_code
    except httpx.HTTPError:
        health = None
    assert health != 200
    waited = subprocess.run(
        [
            REMORA,
            "proxy",
            "wait",
            "--health-port",
            str(agent.health),
            "--timeoutSeconds",
            "1",
            "--periodMillis",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert waited.returncode == 1
    assert "was not ready after 1s" in waited.stderr
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0
    assert not _alive(agent.envoy_pid)


def test_ready_probes_metrics_and_quitquitquit(start_agent: Any, app: int, ca_dir: Path) -> None:
    plain, tls = free_port(), free_port()
    ads = start_ads(TinyAds(mesh_config(app, plain, tls)))
    try:
        agent = start_agent(
            ads.port, "--xds-plaintext", "--ca-dir", str(ca_dir), env=probers_env(app)
        )
        # Held back by the control plane: Envoy runs, but the proxy is not ready.
        time.sleep(0.7)
        assert agent.get(agent.status, "/healthz/ready").status_code == 503
        ads.servicer.release.set()
        flipped = agent.wait_until(
            lambda: agent.get(agent.health, "/healthz/ready").status_code == 200,
            10,
            "readiness through Envoy's health listener",
        )
        assert flipped < 10
        assert ads.servicer.nodes[0] == "sidecar~127.0.0.1~web-0.default~default.svc.cluster.local"
        waited = subprocess.run(
            [REMORA, "proxy", "wait", "--health-port", str(agent.health), "--timeoutSeconds", "5"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert waited.returncode == 0, waited.stderr

        # Traffic flows through the config the control plane sent.
        assert httpx.get(f"http://127.0.0.1:{plain}/ok", timeout=5).text == "ok\n"

        # App probes, on the kubelet's behalf, from 127.0.0.6.
        AppHandler.peers.clear()
        assert agent.get(agent.status, "/app-health/app/readyz").status_code == 200
        assert agent.get(agent.status, "/app-health/app/livez").status_code == 200
        assert agent.get(agent.status, "/app-health/app/startupz").status_code == 503
        assert agent.get(agent.status, "/app-health/other/readyz").status_code == 404
        assert AppHandler.peers == ["127.0.0.6", "127.0.0.6"]

        # Merged metrics: Envoy's, the app's, the agent's, parseable as one exposition.
        text = agent.get(agent.status, "/stats/prometheus").text
        families = {f.name for f in text_string_to_metric_families(text)}
        assert "envoy_server_live" in families
        assert "app_requests" in families
        assert {"remora_agent_ready", "remora_agent_app_probes"} <= families
        # Envoy's own stats port goes through Envoy to the admin endpoint.
        assert "envoy_server_live" in agent.get(agent.prometheus, "/stats/prometheus").text

        # What `remora proxy-config --from-pod` runs inside the sidecar: Envoy's config dump.
        dump = subprocess.run(
            [
                REMORA, "proxy", "request", f"--debug-port={agent.admin}",
                "GET", "config_dump?resource=dynamic_active_clusters&include_eds",
            ],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert dump.returncode == 0, dump.stderr
        assert "inbound|app" in json.dumps(json.loads(dump.stdout))

        # /quitquitquit: loopback only; stops the proxy with exit code 0.
        response = httpx.post(agent.url(agent.status, "/quitquitquit"), timeout=5)
        assert response.status_code == 200
        assert agent.proc.wait(15) == 0
        assert not _alive(agent.envoy_pid)
    finally:
        ads.stop()


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_ipv6_pod(start_agent: Any, ca_dir: Path) -> None:
    """An IPv6 pod on ::1: the proxy's ports and admin on IPv6, probes and metrics to the app
    over IPv6 (from the default source address: a plain loopback has no ::6)."""
    app_server = _V6Server(("::1", 0), AppHandler)
    app_server.daemon_threads = True
    threading.Thread(target=app_server.serve_forever, daemon=True).start()
    app_port = int(app_server.server_address[1])
    ads = start_ads(TinyAds(mesh_config(app_port, free_port(), free_port())))
    ads.servicer.release.set()
    try:
        agent = start_agent(
            ads.port,
            "--xds-plaintext",
            "--ca-dir",
            str(ca_dir),
            env={**probers_env(app_port), "INSTANCE_IP": "::1"},
            host="::1",
        )
        agent.wait_until(
            lambda: agent.get(agent.health, "/healthz/ready").status_code == 200, 15, "ready"
        )
        bootstrap = json.loads((agent.workdir / "envoy-rev.json").read_text())
        assert bootstrap["admin"]["address"]["socket_address"]["address"] == "::1"
        AppHandler.peers.clear()
        assert agent.get(agent.status, "/app-health/app/readyz").status_code == 200
        assert AppHandler.peers == ["::1"]
        text = agent.get(agent.status, "/stats/prometheus").text
        assert "app_requests_total 42" in text
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(15) == 0
    finally:
        ads.stop()
        app_server.shutdown()
        app_server.server_close()


def test_sigterm_drains_until_the_last_request_is_done(
    start_agent: Any, app: int, ca_dir: Path
) -> None:
    plain, tls = free_port(), free_port()
    ads = start_ads(TinyAds(mesh_config(app, plain, tls)))
    ads.servicer.release.set()
    try:
        agent = start_agent(
            ads.port,
            "--xds-plaintext",
            "--ca-dir",
            str(ca_dir),
            "--termination-drain-duration",
            "20s",
            "--minimum-drain-duration",
            "0.2",
            "--drain-poll-interval",
            "0.1",
        )
        agent.wait_until(
            lambda: agent.get(agent.status, "/healthz/ready").status_code == 200, 10, "ready"
        )
        AppHandler.slow_s = 2.0
        result: dict[str, Any] = {}

        def slow_request() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
            conn.request("GET", "/slow")
            response = conn.getresponse()
            result["status"] = response.status
            result["body"] = response.read()
            conn.close()

        client = threading.Thread(target=slow_request)
        client.start()
        agent.wait_until(lambda: bool(AppHandler.peers), 5, "the slow request to reach the app")
        sent = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Draining: not ready any more, but still running for the request in flight.
        assert agent.get(agent.status, "/healthz/ready").status_code == 503
        assert agent.proc.poll() is None
        code = agent.proc.wait(15)
        took = time.monotonic() - sent
        client.join(5)
        assert code == 0
        assert result.get("status") == 200, result
        # Exited early (well before the 20 s limit) once the request was done.
        assert 1.2 <= took < 10, took
        assert not _alive(agent.envoy_pid)
    finally:
        AppHandler.slow_s = 1.5
        ads.stop()


def test_drain_endpoint_then_quit_cuts_a_long_drain_short(
    start_agent: Any, app: int, ca_dir: Path
) -> None:
    """A native sidecar's preStop (``remora proxy request --debug-port=<status> POST drain``)
    drains without exiting; later, /quitquitquit ends a SIGTERM drain that would otherwise
    wait 20 s for a slow request."""
    plain, tls = free_port(), free_port()
    ads = start_ads(TinyAds(mesh_config(app, plain, tls)))
    ads.servicer.release.set()
    try:
        agent = start_agent(
            ads.port,
            "--xds-plaintext",
            "--ca-dir",
            str(ca_dir),
            "--termination-drain-duration",
            "20s",
            "--drain-poll-interval",
            "0.1",
        )
        agent.wait_until(
            lambda: agent.get(agent.status, "/healthz/ready").status_code == 200, 10, "ready"
        )
        drained = subprocess.run(
            [REMORA, "proxy", "request", f"--debug-port={agent.status}", "POST", "drain"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert drained.returncode == 0, drained.stderr
        assert agent.get(agent.status, "/healthz/ready").status_code == 503
        assert agent.get(agent.admin, "/ready").text.strip() == "DRAINING"
        time.sleep(0.3)
        assert agent.proc.poll() is None  # drain alone does not stop the proxy

        AppHandler.slow_s = 12.0
        outcome: list[str] = []

        def slow_request() -> None:
            try:
                httpx.get(f"http://127.0.0.1:{plain}/slow", timeout=15)
                outcome.append("answered")
            except httpx.HTTPError as exc:  # expected: quitting cuts the connection
                outcome.append(type(exc).__name__)

        client = threading.Thread(target=slow_request, daemon=True)
        client.start()
        agent.wait_until(lambda: "127.0.0.1" in AppHandler.peers, 5, "the slow request")
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert agent.proc.poll() is None  # still waiting for the slow request
        quit_sent = time.monotonic()
        assert httpx.post(agent.url(agent.status, "/quitquitquit"), timeout=5).status_code == 200
        assert agent.proc.wait(15) == 0
        assert time.monotonic() - quit_sent < 6  # the request would have held it ~10 s more
        client.join(5)
        assert outcome and outcome[0] != "answered"  # quit does not wait for the request
    finally:
        AppHandler.slow_s = 1.5
        ads.stop()


def test_envoy_dying_ends_the_agent_with_its_exit_code(start_agent: Any) -> None:
    agent = start_agent(free_port(), "--xds-plaintext")
    os.kill(agent.envoy_pid, signal.SIGKILL)
    assert agent.proc.wait(15) == 128 + signal.SIGKILL
    assert "Envoy exited on its own" in agent.log()


def test_envoy_does_not_outlive_a_killed_agent(start_agent: Any) -> None:
    """SIGKILL leaves the agent no chance to stop Envoy: the kernel must."""
    agent = start_agent(free_port(), "--xds-plaintext")
    envoy = agent.envoy_pid
    agent.proc.kill()
    agent.proc.wait(10)
    deadline = time.monotonic() + 5
    while _alive(envoy) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(envoy)


def test_ports_in_use_fail_fast_with_the_reason(tmp_path: Path) -> None:
    """A busy status port stops the agent before Envoy starts; a busy health port makes
    Envoy exit, and the agent with it, with Envoy's reason in the log."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        base = [
            REMORA, "proxy", "sidecar", "--xds-plaintext", "--log-as-text",
            "--discovery-address", f"127.0.0.1:{free_port()}",
            "--bind-address", "127.0.0.1", "--config-dir", str(tmp_path),
            "--admin-port", str(free_port()), "--prometheus-port", str(free_port()),
        ]  # fmt: skip
        env = {"PATH": os.environ.get("PATH", ""), "POD_NAME": "p", "POD_NAMESPACE": "n"}
        status_busy = subprocess.run(
            [*base, "--status-port", str(taken), "--health-port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status_busy.returncode == 1
        assert f"could not listen on 127.0.0.1:{taken}" in status_busy.stderr
        assert "--status-port" in status_busy.stderr
        health_busy = subprocess.run(
            [*base, "--status-port", str(free_port()), "--health-port", str(taken)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert health_busy.returncode == 1
        output = health_busy.stdout + health_busy.stderr
        assert "Address already in use" in output
        assert "Envoy exited on its own" in output


def _cert_serials(agent: AgentUnderTest) -> list[str]:
    certs = agent.get(agent.admin, "/certs").json()["certificates"]
    return [c["serial_number"] for entry in certs for c in entry.get("cert_chain", [])]


def test_tls_control_plane_and_sds_rotation_without_restart(
    start_agent: Any, app: int, ca_dir: Path
) -> None:
    """xDS over TLS verified against the mesh root, with the workload certificate as the
    client certificate; then the 4 s workload certificate rotates and Envoy's /certs shows
    the new one while the same Envoy process keeps running."""
    root = KeyPair((ca_dir / "ca-cert.pem").read_bytes(), (ca_dir / "ca-key.pem").read_bytes())
    server_cert = issue(root, "", ip_addresses=("127.0.0.1",), server=True)
    plain, tls = free_port(), free_port()
    servicer = TinyAds(mesh_config(app, plain, tls))
    servicer.release.set()
    ads = start_ads(servicer, tls=server_cert, client_ca=root.cert_pem)
    try:
        agent = start_agent(
            ads.port,
            "--xds-tls",
            "--xds-root-cert",
            str(ca_dir / "ca-cert.pem"),
            "--xds-server-name",
            "127.0.0.1",
            "--ca-dir",
            str(ca_dir),
            "--cert-ttl",
            "4s",
        )
        agent.wait_until(
            lambda: agent.get(agent.status, "/healthz/ready").status_code == 200,
            15,
            "ready over TLS",
        )
        assert "spiffe://cluster.local/ns/default/sa/web" in servicer.peer_sans
        # Three TLS contexts hold the workload certificate: the xDS client and the two
        # listeners (state-of-the-world and delta SDS); no listener is left warming.
        agent.wait_until(
            lambda: len(_cert_serials(agent)) >= 3, 10, "Envoy to load the SDS certificates"
        )
        warming = agent.get(agent.admin, "/stats?filter=total_listeners_warming").text
        assert warming.strip().endswith(": 0"), warming
        first = set(_cert_serials(agent))
        envoy_pid = agent.envoy_pid
        agent.wait_until(
            lambda: not (set(_cert_serials(agent)) & first),
            15,
            "every TLS context in Envoy to show the rotated certificate",
        )
        assert agent.envoy_pid == envoy_pid and _alive(envoy_pid)
        assert agent.proc.poll() is None
        sans = [
            san["uri"]
            for entry in agent.get(agent.admin, "/certs").json()["certificates"]
            for c in entry.get("cert_chain", [])
            for san in c.get("subject_alt_names", [])
            if "uri" in san
        ]
        assert "spiffe://cluster.local/ns/default/sa/web" in sans
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(15) == 0
    finally:
        ads.stop()
