"""Running the application's rewritten probes on the kubelet's behalf.

Connections leave from ``127.0.0.6`` (``::6`` for IPv6), the address Istio's capture rules
let through untouched, so a probe reaches the application directly instead of looping
through Envoy's inbound listener (where mTLS would reject it: the kubelet has no mesh
certificate). Results follow the kubelet's rules: HTTP 200-399 passes, a TCP connect passes,
gRPC ``SERVING`` passes. All three leave from the probe source address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
from dataclasses import dataclass

import httpx

from meshlib.hostport import host_port
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


def _bindable(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


@functools.cache
def _source_for(host: str) -> str | None:
    """The probe source address for ``host``, or None (the kernel picks) when this network
    namespace cannot use it: ``::6`` exists only where the capture set-up added it to ``lo``,
    unlike ``127.0.0.6``, which every Linux loopback already answers to."""
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False  # a name (the probe's host field): connected over IPv4 first
    source = PROBE_SOURCE_V6 if v6 else PROBE_SOURCE_V4
    if _bindable(source):
        return source
    log.warning(
        "probe source address unavailable; probes leave from the default address",
        extra={"source": source, "hint": "add it to lo (ip addr add ::6/128 dev lo)"},
    )
    return None


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
        # One client per source address (a probe's host may be of the other IP family).
        self._clients: dict[tuple[str | None, bool], httpx.AsyncClient] = {}

    def _client_for(self, host: str, *, http2: bool = False) -> httpx.AsyncClient:
        source = _source_for(host)
        client = self._clients.get((source, http2))
        if client is None:
            client = self._clients[(source, http2)] = httpx.AsyncClient(
                # The kubelet does not verify HTTPS probe certificates; neither do we.
                # gRPC needs HTTP/2 with prior knowledge (no HTTP/1.1 upgrade dance).
                transport=httpx.AsyncHTTPTransport(
                    local_address=source, verify=False, retries=0, http1=not http2, http2=http2
                ),
                follow_redirects=False,  # a 3xx already passes, as for the kubelet
            )
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

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
        except (OSError, httpx.HTTPError) as exc:
            return ProbeResult(False, 500, f"{type(exc).__name__}: {exc}")

    async def _http_probe(self, action: HttpProbe, timeout_s: float) -> ProbeResult:
        host = action.host or self.default_host
        url = f"{action.scheme.lower()}://{host_port(host, action.port)}{action.path}"
        headers = {"User-Agent": "kube-probe/remora"}
        headers.update(dict(action.headers))
        response = await self._client_for(host).get(url, headers=headers, timeout=timeout_s)
        if 200 <= response.status_code < 400:
            return ProbeResult(True, 200, f"HTTP {response.status_code}")
        return ProbeResult(False, response.status_code, f"HTTP {response.status_code}")

    async def _tcp_probe(self, action: TcpProbe, timeout_s: float) -> ProbeResult:
        host = action.host or self.default_host
        source = _source_for(host)
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, action.port, local_addr=(source, 0) if source else None),
            timeout_s,
        )
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return ProbeResult(True, 200, "connected")

    async def _grpc_probe(self, action: GrpcProbe, timeout_s: float) -> ProbeResult:
        """``grpc.health.v1.Health/Check`` over cleartext HTTP/2, spoken directly so that it
        too leaves from the probe source address (grpcio cannot bind one).

        A unary gRPC answer is a 5-byte-framed message in DATA and ``grpc-status`` in the
        trailers; an error comes "trailers-only", i.e. ``grpc-status`` in the headers.
        """
        host = self.default_host
        body = _encode_health_request(action.service)
        response = await self._client_for(host, http2=True).post(
            f"http://{host_port(host, action.port)}{_GRPC_HEALTH_CHECK}",
            content=b"\x00" + len(body).to_bytes(4, "big") + body,
            headers={"content-type": "application/grpc", "te": "trailers"},
            timeout=timeout_s,
        )
        grpc_status = response.headers.get("grpc-status")
        if response.status_code != 200 or grpc_status not in (None, "0"):
            message = response.headers.get("grpc-message", "")
            return ProbeResult(
                False, 500, f"gRPC health check failed: status {grpc_status} {message}".strip()
            )
        data = response.content
        status = _decode_health_status(data[5 : 5 + int.from_bytes(data[1:5], "big")])
        if status == _GRPC_SERVING:
            return ProbeResult(True, 200, "SERVING")
        return ProbeResult(False, 500, f"gRPC health status {status}, not SERVING")
