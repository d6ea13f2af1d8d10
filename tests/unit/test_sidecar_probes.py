"""Rewritten app probes: parsing ``ISTIO_KUBE_APP_PROBERS`` (golden) and running them
against a real local app, from the probe source address 127.0.0.6."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.golden import assert_golden
from meshlib.ports import free_port as _free_port
from sidecar.prober import Prober, _decode_health_status, _encode_health_request
from sidecar.probes import (
    AppProbe,
    GrpcProbe,
    HttpProbe,
    ProbeConfigError,
    TcpProbe,
    describe,
    parse_app_probers,
)

GOLDEN = Path(__file__).parent.parent / "golden" / "sidecar" / "probers"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))


@pytest.mark.parametrize("case", CASES)
def test_probers_golden(case: str) -> None:
    raw = (GOLDEN / f"{case}.input.json").read_text()
    got = json.dumps({k: describe(v) for k, v in parse_app_probers(raw).items()}, indent=2) + "\n"
    expected = GOLDEN / f"{case}.parsed.json"
    assert_golden(expected, got, f"the parsed probers of {case}")


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"/healthz": {"httpGet": {"port": 80}}}', "the key must look like"),
        (
            '{"/app-health/a/livez": {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}}',
            "exactly one",
        ),
        ('{"/app-health/a/livez": {"httpGet": {"port": "http"}}}', "named port"),
        ('{"/app-health/a/livez": {"tcpSocket": {"port": 70000}}}', "outside 1-65535"),
        (
            '{"/app-health/a/livez": {"httpGet": {"port": 80, "scheme": "FTP"}}}',
            "not HTTP or HTTPS",
        ),
        ('{"/app-health/a/livez": {"grpc": {"port": 80}, "timeoutSeconds": -1}}', "timeoutSeconds"),
        ('["/app-health/a/livez"]', "must be an object"),
    ],
)
def test_bad_probers_are_rejected_with_the_entry_named(raw: str, message: str) -> None:
    with pytest.raises(ProbeConfigError, match=message):
        parse_app_probers(raw)


def test_empty_means_no_probes() -> None:
    assert parse_app_probers(None) == {}
    assert parse_app_probers("  ") == {}


def test_grpc_health_wire_format() -> None:
    assert _encode_health_request("") == b""
    assert _encode_health_request("svc") == b"\x0a\x03svc"
    long_name = "x" * 200
    assert _encode_health_request(long_name)[:3] == b"\x0a\xc8\x01"
    assert _decode_health_status(b"\x08\x01") == 1
    assert _decode_health_status(b"") == 0


class _App(BaseHTTPRequestHandler):
    peers: list[str] = []

    def do_GET(self) -> None:
        _App.peers.append(self.client_address[0])
        status = {"/ok": 200, "/redirect": 302, "/sick": 503}.get(self.path, 404)
        if self.path == "/slow":
            threading.Event().wait(0.5)
            status = 200
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probes_run_like_the_kubelet_and_come_from_127_0_0_6(app: int) -> None:
    async def scenario() -> dict[str, tuple[bool, int]]:
        prober = Prober("127.0.0.1")
        try:
            cases = {
                "ok": AppProbe(HttpProbe(port=app, path="/ok")),
                "redirect": AppProbe(HttpProbe(port=app, path="/redirect")),
                "sick": AppProbe(HttpProbe(port=app, path="/sick")),
                "slow": AppProbe(HttpProbe(port=app, path="/slow"), timeout_s=0.1),
                "tcp": AppProbe(TcpProbe(port=app)),
                "tcp-closed": AppProbe(TcpProbe(port=_free_port())),
                "grpc-closed": AppProbe(GrpcProbe(port=_free_port()), timeout_s=0.5),
            }
            results = {}
            for name, probe in cases.items():
                result = await prober.run(probe)
                results[name] = (result.ok, result.status)
            return results
        finally:
            await prober.aclose()

    _App.peers.clear()
    results = asyncio.run(scenario())
    assert results["ok"] == (True, 200)
    assert results["redirect"] == (True, 200)  # 3xx passes, as for the kubelet
    assert results["sick"] == (False, 503)  # the app's own failure code goes back
    assert results["slow"] == (False, 500)
    assert results["tcp"] == (True, 200)
    assert results["tcp-closed"] == (False, 500)
    assert results["grpc-closed"] == (False, 500)
    assert _App.peers and set(_App.peers) == {"127.0.0.6"}


def test_ipv6_probes_fall_back_when_the_source_address_is_missing() -> None:
    """``::6`` is not on a plain loopback (only ``::1`` is): probes must still work."""
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        async def scenario() -> tuple[bool, int]:
            prober = Prober("::1")
            try:
                result = await prober.run(AppProbe(TcpProbe(port=port)))
                return result.ok, result.status
            finally:
                await prober.aclose()

        assert asyncio.run(scenario()) == (True, 200)


def test_grpc_probes_speak_the_health_protocol_from_127_0_0_6() -> None:
    """A real grpc.aio server implementing grpc.health.v1.Health/Check on raw bytes."""
    import grpc

    peers: list[str] = []
    statuses = {"": 1, "db": 2}  # SERVING, NOT_SERVING; anything else is NOT_FOUND

    async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peers.append(context.peer())
        service = request[2:].decode() if request else ""
        if service not in statuses:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service}")
        return bytes([0x08, statuses[service]])

    async def scenario() -> dict[str, tuple[bool, str]]:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(check)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        prober = Prober("127.0.0.1")
        try:
            results = {}
            for name in ("", "db", "cache"):
                result = await prober.run(AppProbe(GrpcProbe(port=port, service=name)))
                results[name] = (result.ok, result.detail)
            return results
        finally:
            await prober.aclose()
            await server.stop(0)

    results = asyncio.run(scenario())
    assert results[""] == (True, "SERVING")
    assert results["db"] == (False, "gRPC health status 2, not SERVING")
    assert results["cache"][0] is False and "status 5" in results["cache"][1]
    assert len(peers) == 3 and all(p.startswith("ipv4:127.0.0.6:") for p in peers), peers
