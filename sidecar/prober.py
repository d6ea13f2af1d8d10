"""Running the application's rewritten probes on the kubelet's behalf.

Connections leave from ``127.0.0.6`` (``::6`` for IPv6), the address Istio's capture rules
let through untouched, so a probe reaches the application directly instead of looping
through Envoy's inbound listener (where mTLS would reject it: the kubelet has no mesh
certificate). Results follow the kubelet's rules: HTTP 200-399 passes, a TCP connect passes,
gRPC ``SERVING`` passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass

import grpc
import httpx

from sidecar.probes import AppProbe, GrpcProbe, HttpProbe, TcpProbe

log = logging.getLogger(__name__)

PROBE_SOURCE_V4 = "127.0.0.6"
PROBE_SOURCE_V6 = "::6"
_GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_GRPC_SERVING = 1


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int  # what the agent answers the kubelet with
    detail: str


def _source_for(host: str) -> str:
    try:
        return PROBE_SOURCE_V6 if ipaddress.ip_address(host).version == 6 else PROBE_SOURCE_V4
    except ValueError:
        return PROBE_SOURCE_V4  # a name: the kubelet's host field; resolved as IPv4 first


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _encode_health_request(service: str) -> bytes:
    """``grpc.health.v1.HealthCheckRequest{service}``, field 1 (length-delimited)."""
    data = service.encode()
    if not data:
        return b""
    length, varint = len(data), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(varint) + data


def _decode_health_status(data: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, varint); 0 (UNKNOWN) when absent."""
    if len(data) >= 2 and data[0] == 0x08:
        return data[1] & 0x7F
    return 0


class Prober:
    """Runs :class:`AppProbe` s against the application at ``default_host``."""

    def __init__(self, default_host: str) -> None:
        self.default_host = default_host
        source = _source_for(default_host)
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address=source, verify=False, retries=0),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, probe: AppProbe) -> ProbeResult:
        action = probe.action
        try:
            if isinstance(action, HttpProbe):
                return await self._http_probe(action, probe.timeout_s)
            if isinstance(action, TcpProbe):
                return await self._tcp_probe(action, probe.timeout_s)
            return await self._grpc_probe(action, probe.timeout_s)
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(False, 500, f"timed out after {probe.timeout_s:g}s")
        except (OSError, httpx.HTTPError, grpc.RpcError) as exc:
            return ProbeResult(False, 500, f"{type(exc).__name__}: {exc}")

    async def _http_probe(self, action: HttpProbe, timeout_s: float) -> ProbeResult:
        host = action.host or self.default_host
        url = f"{action.scheme.lower()}://{_url_host(host)}:{action.port}{action.path}"
        headers = {"User-Agent": "kube-probe/remora"}
        headers.update(dict(action.headers))
        response = await self._http.get(url, headers=headers, timeout=timeout_s)
        if 200 <= response.status_code < 400:
            return ProbeResult(True, 200, f"HTTP {response.status_code}")
        return ProbeResult(False, response.status_code, f"HTTP {response.status_code}")

    async def _tcp_probe(self, action: TcpProbe, timeout_s: float) -> ProbeResult:
        host = action.host or self.default_host
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, action.port, local_addr=(_source_for(host), 0)),
            timeout_s,
        )
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeResult(True, 200, "connected")

    async def _grpc_probe(self, action: GrpcProbe, timeout_s: float) -> ProbeResult:
        target = f"{_url_host(self.default_host)}:{action.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            check = channel.unary_unary(
                _GRPC_HEALTH_CHECK,
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            reply = await check(_encode_health_request(action.service), timeout=timeout_s)
        status = _decode_health_status(reply)
        if status == _GRPC_SERVING:
            return ProbeResult(True, 200, "SERVING")
        return ProbeResult(False, 500, f"gRPC health status {status}, not SERVING")
