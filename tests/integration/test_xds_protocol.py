"""xDS protocol tests against real Envoy 1.40 processes on loopback, delta and SotW.

The mesh has one HTTP service whose virtual IP:port is 127.0.0.1:15001 — the outbound
capture listener's own address. Without iptables, Envoy's original_dst filter sees the
connection's real destination, so a plain request to 127.0.0.1:15001 travels the same
path a captured one would: filter chain -> HCM -> RDS route -> EDS cluster -> backend.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from controlplane.app import DiscoveryOptions
from controlplane.model import MeshSnapshot
from controlplane.proxy import ProxyIdentity
from controlplane.resources import CLUSTER, ProxyResources, ResourceSet, make_resource
from controlplane.store import Kind
from controlplane.translate.common import duration
from controlplane.translate.generate import ConfigGenerator
from harness.control_plane import ControlPlaneThread
from harness.envoy import EnvoyProcess
from harness.kube_objects import endpoint_slice_object, service_object
from harness.polling import wait_for
from meshlib.ports import free_port

pytestmark = [pytest.mark.envoy]

WEB_CLUSTER = "outbound|15001||web.shop.svc.cluster.local"
DB_CLUSTER = "outbound|5432||db.shop.svc.cluster.local"


class _Backend(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"backend {self.server.server_address[1]}\n".encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def endpoint_slice(service: str, port_name: str, port: int, *addresses: str) -> dict[str, Any]:
    """A slice of ready IPv4 endpoints in ``shop``, as the endpoint controller writes one."""
    return endpoint_slice_object(
        service,
        "shop",
        {port_name: port},
        addresses,
        name=f"{service}-1",
        ready=True,
        address_type="IPv4",
    )


def seed(cp: ControlPlaneThread, backend_port: int) -> None:
    def apply() -> None:
        cp.store.upsert(Kind.SERVICE, service_object("web", "shop", "127.0.0.1", {"http": 15001}))
        cp.store.upsert(
            Kind.ENDPOINT_SLICE, endpoint_slice("web", "http", backend_port, "127.0.0.1")
        )
        cp.store.upsert(Kind.SERVICE, service_object("db", "shop", "10.96.0.20", {"tcp": 5432}))
        cp.store.upsert(
            Kind.ENDPOINT_SLICE, endpoint_slice("db", "tcp", 5432, "10.1.0.1", "10.1.0.2")
        )

    cp.call(apply)


def synced(cp: ControlPlaneThread) -> bool:
    statuses = cp.call(lambda: [c.status() for c in cp.server.hub.connections])
    return len(statuses) == 1 and all(
        t["status"] == "SYNCED" for t in statuses[0]["types"].values()
    )


def get_through_envoy() -> httpx.Response:
    return httpx.get("http://127.0.0.1:15001/", timeout=2.0)


@pytest.fixture(params=["delta", "sotw"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def control_plane() -> Iterator[ControlPlaneThread]:
    options = DiscoveryOptions(
        xds_address="127.0.0.1:0", monitoring_address=None, debounce_quiet=0.05, debounce_max=0.5
    )
    cp = ControlPlaneThread(options)
    yield cp
    cp.stop()


def test_initial_sync_serves_traffic(
    control_plane: ControlPlaneThread, backend: int, mode: str
) -> None:
    seed(control_plane, backend)
    with EnvoyProcess(
        "client-1", "shop", "10.1.0.50", control_plane.xds_port, delta=mode == "delta"
    ) as envoy:
        wait_for(lambda: synced(control_plane), what="every type ACKed")
        assert {
            WEB_CLUSTER,
            DB_CLUSTER,
            "PassthroughCluster",
            "BlackHoleCluster",
        } <= envoy.active_clusters().keys()
        assert envoy.endpoints()[DB_CLUSTER] == [
            "10.1.0.1:5432 (HEALTHY)",
            "10.1.0.2:5432 (HEALTHY)",
        ]
        assert envoy.listener_names() == {"virtualOutbound", "virtualInbound"}
        assert "web.shop.svc.cluster.local:15001" in {
            v["name"] for v in envoy.route_configs()["15001"]["virtual_hosts"]
        }
        response = wait_for(get_through_envoy, what="a request through Envoy")
        assert response.status_code == 200 and response.text == f"backend {backend}\n"
        status = control_plane.call(
            lambda: next(iter(control_plane.server.hub.connections)).status()
        )
        assert status["proxy"] == "client-1.shop" and status["mode"] == mode


def test_endpoint_change_applied_within_the_debounce_window(
    control_plane: ControlPlaneThread, backend: int, mode: str
) -> None:
    seed(control_plane, backend)
    with EnvoyProcess(
        "client-1", "shop", "10.1.0.50", control_plane.xds_port, delta=mode == "delta"
    ) as envoy:
        wait_for(lambda: synced(control_plane), what="initial sync")
        started = time.monotonic()
        control_plane.call(
            lambda: control_plane.store.upsert(
                Kind.ENDPOINT_SLICE, endpoint_slice("db", "tcp", 5432, "10.1.0.3")
            )
        )
        wait_for(
            lambda: envoy.endpoints()[DB_CLUSTER] == ["10.1.0.3:5432 (HEALTHY)"],
            timeout=5,
            interval=0.005,
        )
        elapsed = time.monotonic() - started
        # quiet 50 ms, max 500 ms: the push must land well inside the maximum delay.
        assert elapsed < 0.5, f"endpoint change took {elapsed:.3f}s"
        wait_for(lambda: synced(control_plane), what="ACK of the endpoint change")
        histogram = next(iter(control_plane.server.metrics.convergence_seconds.collect()))
        count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
        assert count >= 1


class BreakableGenerator(ConfigGenerator):
    """Replaces the web cluster by an invalid one (negative connect timeout) while ``broken``."""

    broken = False

    def generate(self, snapshot: MeshSnapshot, proxy: ProxyIdentity) -> ProxyResources:
        good = super().generate(snapshot, proxy)
        if not self.broken:
            return good
        cluster = type(good[CLUSTER].by_name[WEB_CLUSTER].message)()
        cluster.CopyFrom(good[CLUSTER].by_name[WEB_CLUSTER].message)
        cluster.connect_timeout.CopyFrom(duration(-1))
        clusters = {**good[CLUSTER].by_name, WEB_CLUSTER: make_resource(WEB_CLUSTER, cluster)}
        return ProxyResources({**good.sets, CLUSTER: ResourceSet.of(CLUSTER, clusters.values())})


def test_nack_keeps_the_last_good_config_serving(
    control_plane: ControlPlaneThread, backend: int, mode: str
) -> None:
    generator = BreakableGenerator()
    control_plane.server.hub.generator = generator
    seed(control_plane, backend)
    with EnvoyProcess(
        "client-1", "shop", "10.1.0.50", control_plane.xds_port, delta=mode == "delta"
    ) as envoy:
        wait_for(lambda: synced(control_plane), what="initial sync")
        good_version = envoy.active_clusters()[WEB_CLUSTER]["version_info"]

        generator.broken = True
        control_plane.call(lambda: control_plane.server.hub.publish(control_plane.store.snapshot()))

        def nacked() -> dict[str, Any] | None:
            conn = control_plane.call(
                lambda: next(iter(control_plane.server.hub.connections)).status()
            )
            nack: dict[str, Any] | None = conn["types"]["CDS"]["last_nack"]
            return nack

        nack = wait_for(nacked, what="a NACK for the invalid cluster")
        assert "Invalid duration" in nack["error"] or "duration" in nack["error"].lower()
        status = control_plane.call(
            lambda: next(iter(control_plane.server.hub.connections)).status()
        )
        assert status["types"]["CDS"]["status"] == "STALE"
        assert envoy.stat("cluster_manager.cds.update_rejected") >= 1
        assert envoy.active_clusters()[WEB_CLUSTER]["version_info"] == good_version
        assert get_through_envoy().status_code == 200  # the old config keeps serving
        nacks = control_plane.server.metrics.nacks.labels("CDS")._value.get()
        time.sleep(0.3)  # the rejected content must not be re-sent in a loop
        assert control_plane.server.metrics.nacks.labels("CDS")._value.get() == nacks

        generator.broken = False
        control_plane.call(lambda: control_plane.server.hub.publish(control_plane.store.snapshot()))
        wait_for(lambda: synced(control_plane), what="the fixed config ACKed")
        assert get_through_envoy().status_code == 200


def test_a_modified_cluster_does_not_stall_in_warming(
    control_plane: ControlPlaneThread, backend: int, mode: str
) -> None:
    """The warming trap: Envoy re-creates a modified cluster and waits for its endpoints.

    Delta must re-send the load assignment unasked; SotW must answer Envoy's re-request
    that repeats an already-ACKed nonce. Otherwise the cluster warms for 15 s.
    """
    seed(control_plane, backend)
    with EnvoyProcess(
        "client-1", "shop", "10.1.0.50", control_plane.xds_port, delta=mode == "delta"
    ) as envoy:
        wait_for(lambda: synced(control_plane), what="initial sync")
        started = time.monotonic()
        # appProtocol grpc makes the cluster HTTP/2: a modified cluster, unchanged endpoints.
        grpc_db = service_object("db", "shop", "10.96.0.20", {"tcp": 5432})
        grpc_db["spec"]["ports"][0]["appProtocol"] = "grpc"
        control_plane.call(lambda: control_plane.store.upsert(Kind.SERVICE, grpc_db))

        def upgraded() -> bool:
            cluster = envoy.active_clusters()[DB_CLUSTER]["cluster"]
            return "typed_extension_protocol_options" in cluster

        wait_for(upgraded, timeout=10, interval=0.01, what="the modified cluster active")
        wait_for(lambda: synced(control_plane), timeout=10, interval=0.01, what="the CDS ACK")
        assert time.monotonic() - started < 2.0  # far from the 15 s initial fetch timeout
        assert envoy.stat(f"cluster.{DB_CLUSTER}.init_fetch_timeout") == 0
        assert envoy.endpoints()[DB_CLUSTER] == [
            "10.1.0.1:5432 (HEALTHY)",
            "10.1.0.2:5432 (HEALTHY)",
        ]


def test_removals_reach_envoy(control_plane: ControlPlaneThread, backend: int, mode: str) -> None:
    seed(control_plane, backend)
    with EnvoyProcess(
        "client-1", "shop", "10.1.0.50", control_plane.xds_port, delta=mode == "delta"
    ) as envoy:
        wait_for(lambda: synced(control_plane), what="initial sync")
        assert DB_CLUSTER in envoy.active_clusters()

        def remove() -> None:
            control_plane.store.delete(Kind.SERVICE, "shop", "db")
            control_plane.store.delete(Kind.ENDPOINT_SLICE, "shop", "db-1")

        control_plane.call(remove)
        wait_for(lambda: DB_CLUSTER not in envoy.active_clusters(), what="the db cluster removed")
        wait_for(lambda: DB_CLUSTER not in envoy.endpoints(), what="the db endpoints removed")
        wait_for(lambda: synced(control_plane), what="removal ACKed")
        outbound = next(
            entry
            for entry in envoy.config_dump("dynamic_listeners")
            if entry["name"] == "virtualOutbound"
        )
        chains = outbound["active_state"]["listener"]["filter_chains"]
        assert DB_CLUSTER not in {c.get("name") for c in chains}
        assert WEB_CLUSTER in envoy.active_clusters()  # what was not removed stays


def test_reconnect_after_control_plane_restart_keeps_config_and_versions(
    backend: int, mode: str
) -> None:
    port = free_port()
    options = DiscoveryOptions(
        xds_address=f"127.0.0.1:{port}", monitoring_address=None, debounce_quiet=0.05
    )
    first = ControlPlaneThread(options)
    envoy = EnvoyProcess(
        "client-1", "shop", "10.1.0.50", port, delta=mode == "delta", reconnect_backoff=(0.05, 0.25)
    )
    try:
        seed(first, backend)
        wait_for(lambda: synced(first), what="initial sync")
        before = {name: c["version_info"] for name, c in envoy.active_clusters().items()}
        first.stop()
        assert get_through_envoy().status_code == 200  # Envoy keeps serving without a control plane

        # Like a real restart: nothing is served before the source's first complete view.
        second = ControlPlaneThread(options, synced=False)
        try:
            seed(second, backend)
            second.call(second.server.mark_synced)
            wait_for(lambda: synced(second), timeout=20, what="the proxy to reconnect and sync")
            after = {name: c["version_info"] for name, c in envoy.active_clusters().items()}
            assert after == before  # same content, same versions: nothing was lost or churned
            if mode == "delta":
                # Envoy reported what it had; the new server had nothing to re-send.
                assert second.server.metrics.pushed_resources.labels("CDS")._value.get() == 0
            assert get_through_envoy().status_code == 200
            second.call(
                lambda: second.store.upsert(
                    Kind.ENDPOINT_SLICE, endpoint_slice("db", "tcp", 5432, "10.1.0.9")
                )
            )
            wait_for(
                lambda: envoy.endpoints()[DB_CLUSTER] == ["10.1.0.9:5432 (HEALTHY)"],
                what="a change after reconnect",
            )
        finally:
            second.stop()
    finally:
        envoy.stop()


def _raw_exchange(ip: str, data: bytes, timeout: float = 3.0) -> tuple[bytes, float]:
    """Connect to ``ip``:15001, send ``data`` (maybe nothing), and read until the other side
    closes or resets: what came back, and how long the connection lived."""
    started = time.monotonic()
    received = b""
    with socket.create_connection((ip, 15001), timeout=timeout) as conn:
        if data:
            conn.sendall(data)
        try:
            while chunk := conn.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: still an answer of nothing
    return received, time.monotonic() - started


@contextlib.contextmanager
def synced_envoy(
    cp: ControlPlaneThread, *objects: tuple[Kind, dict[str, Any]]
) -> Iterator[EnvoyProcess]:
    """``objects`` in the control plane's store, then an Envoy connected and fully ACKed."""

    def apply() -> None:
        for kind, obj in objects:
            cp.store.upsert(kind, obj)

    cp.call(apply)
    with EnvoyProcess("client-1", "shop", "10.1.0.50", cp.xds_port, delta=True) as envoy:
        wait_for(lambda: synced(cp), what="every type ACKed")
        yield envoy


def test_http_ports_are_matched_by_port_and_detected_protocol(
    control_plane: ControlPlaneThread, backend: int
) -> None:
    """An HTTP port's chain names no IP: HTTP to any address on it is routed by Host, a TCP
    service's VIP on the same port keeps its own chain, and what is not HTTP (or says nothing
    within ``protocolDetectionTimeout``) takes the default chain. REGISTRY_ONLY keeps every
    path on loopback: unknown hosts get a 502, unknown bytes the black hole."""
    mesh = "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\nprotocolDetectionTimeout: 300ms\n"
    meshconfig = {
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {"mesh": mesh},
    }
    with synced_envoy(
        control_plane,
        (Kind.MESH_CONFIG, meshconfig),
        # Neither VIP is 127.0.0.1, where the requests go.
        (Kind.SERVICE, service_object("web", "shop", "10.96.0.30", {"http": 15001})),
        (Kind.ENDPOINT_SLICE, endpoint_slice("web", "http", backend, "127.0.0.1")),
        (Kind.SERVICE, service_object("raw", "shop", "127.0.0.2", {"tcp": 15001})),
        (Kind.ENDPOINT_SLICE, endpoint_slice("raw", "tcp", backend, "127.0.0.1")),
    ):
        web = wait_for(
            lambda: httpx.get("http://127.0.0.1:15001/", headers={"host": "web.shop"}, timeout=2.0),
            what="HTTP routed by Host",
        )
        assert web.status_code == 200 and web.text == f"backend {backend}\n"
        assert "x-envoy-upstream-service-time" in web.headers  # through the HCM

        unknown = httpx.get("http://127.0.0.1:15001/", headers={"host": "elsewhere.example"})
        assert unknown.status_code == 502  # block_all: the HTTP chain took it

        # The TCP service's VIP wins over the port-wide HTTP chain: bytes pass untouched.
        raw, _ = _raw_exchange("127.0.0.2", b"GET / HTTP/1.0\r\nhost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.0 200") and b"x-envoy" not in raw

        # Not HTTP: the default chain (the black hole closes it; the HCM would answer 400).
        garbage, _ = _raw_exchange("127.0.0.1", b"\x00\x01binary protocol\r\n\r\n")
        assert garbage == b""

        # A server-first client says nothing: after the detection timeout it goes on to
        # the default chain instead of waiting for ever.
        silent, lived = _raw_exchange("127.0.0.1", b"")
        assert silent == b"" and 0.25 <= lived < 2.5


class _UpgradeEcho(socketserver.StreamRequestHandler):
    """Answers a WebSocket upgrade with 101, then echoes raw bytes (no frames needed: after
    the 101 both proxies only copy bytes)."""

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = self.rfile.read(1)
            if not byte:
                return
            head += byte
        if b"upgrade: websocket" not in head.lower():
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            return
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        )
        self.wfile.flush()
        while data := self.request.recv(4096):
            self.request.sendall(data)


def test_websocket_upgrades_pass_through_the_http_chain(control_plane: ControlPlaneThread) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _UpgradeEcho)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with synced_envoy(
            control_plane,
            (Kind.SERVICE, service_object("chat", "shop", "10.96.0.40", {"http": 15001})),
            (Kind.ENDPOINT_SLICE, endpoint_slice("chat", "http", port, "127.0.0.1")),
        ):
            # An ACKed listener may still be binding on the workers: retry the connect.
            connect = wait_for(
                lambda: socket.create_connection(("127.0.0.1", 15001), timeout=5),
                what="Envoy's outbound listener",
            )
            with connect as conn:
                conn.sendall(
                    b"GET /chat HTTP/1.1\r\nhost: chat.shop\r\nupgrade: websocket\r\n"
                    b"connection: upgrade\r\nsec-websocket-version: 13\r\n"
                    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += conn.recv(4096)
                assert answer.startswith(b"HTTP/1.1 101"), answer  # Envoy says 403 without it
                conn.sendall(b"\x81\x04ping")
                echoed = b""
                while len(echoed) < 6:
                    echoed += conn.recv(4096)
                assert echoed == b"\x81\x04ping"
    finally:
        server.shutdown()
        server.server_close()
