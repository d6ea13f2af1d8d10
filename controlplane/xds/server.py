"""The ADS gRPC server: a thin pump between Envoy streams and the protocol state machines.

:class:`PushHub` owns the current snapshot and the connected proxies. A push computes each
proxy's :class:`ProxyResources` (shared between proxies of the same shape) and wakes its
stream; the stream sends whatever its :class:`StreamProtocol` says differs. A proxy whose
configuration did not change sends nothing. Until the first snapshot arrives (all sources
synced), streams are accepted but nothing is sent, so no proxy ever sees a partial mesh.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from controlplane.metrics import ControlPlaneMetrics
from controlplane.model import MeshSnapshot
from controlplane.proxy import ProxyIdentity, ProxyIdentityError, parse_proxy_identity
from controlplane.resources import PUSH_ORDER, SHORT_NAMES, ProxyResources
from controlplane.translate.generate import ConfigGenerator
from controlplane.xds.protocol import DeltaProtocol, Request, Response, SotwProtocol, StreamProtocol

log = logging.getLogger(__name__)

_WAKE = object()
_END = object()


@dataclass(eq=False)
class ProxyConnection:
    """One connected proxy: identity, protocol state and what it should have."""

    identity: ProxyIdentity
    protocol: StreamProtocol
    peer: str
    connected_at: float = field(default_factory=time.time)
    desired: ProxyResources | None = None
    change_started: float | None = None  # monotonic time of the oldest change not yet ACKed
    last_convergence: float | None = None  # seconds, of the last change this proxy converged on
    sent_since_change: bool = False
    convergences: int = 0
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    _woken: bool = False

    def set_desired(self, desired: ProxyResources, changed_at: float) -> None:
        """Make ``desired`` this proxy's target and wake its stream.

        Whether anything actually differs is for the stream to find out (building the
        types lazily, clusters first); a proxy that turns out unaffected sends nothing and
        records no convergence.
        """
        previous, self.desired = self.desired, desired
        if previous is desired:
            return
        if previous is not None and self.change_started is None:
            self.change_started = changed_at
            self.sent_since_change = False
        if not self._woken:
            self._woken = True
            self.queue.put_nowait(_WAKE)

    def take_wake(self) -> None:
        self._woken = False

    def status(self) -> dict[str, Any]:
        types: dict[str, dict[str, Any]] = {}
        for type_url in PUSH_ORDER:
            state = self.protocol.types.get(type_url)
            desired = self.desired[type_url].version if self.desired is not None else None
            if state is None:
                types[SHORT_NAMES[type_url]] = {"status": "NOT SENT", "desired": desired}
                continue
            nack = state.last_nack
            types[SHORT_NAMES[type_url]] = {
                "status": state.status.value,
                "desired": desired,
                "sent": state.sent_version,
                "acked": state.acked_version,
                "in_flight_nonce": state.in_flight,
                "last_nack": None
                if nack is None
                else {
                    "nonce": nack.nonce,
                    "version": nack.version,
                    "error": nack.message,
                    "at": nack.at,
                },
            }
        return {
            "proxy": self.identity.pod_ref,
            "node_id": self.identity.node_id,
            "ips": list(self.identity.ips),
            "service_account": self.identity.service_account,
            "mode": self.protocol.mode,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "convergences": self.convergences,
            "last_convergence_seconds": self.last_convergence,
            "types": types,
        }


class PushHub:
    """The current snapshot, the connected proxies, and pushing one to the others."""

    def __init__(
        self, metrics: ControlPlaneMetrics, generator: ConfigGenerator | None = None
    ) -> None:
        self.metrics = metrics
        self.generator = generator or ConfigGenerator()
        self.snapshot: MeshSnapshot | None = None
        self.connections: set[ProxyConnection] = set()
        self.pushes = itertools.count(1)

    def register(self, conn: ProxyConnection) -> None:
        self.connections.add(conn)
        self.metrics.connected_proxies.labels(conn.protocol.mode).inc()
        if self.snapshot is not None:
            conn.set_desired(
                self.generator.generate(self.snapshot, conn.identity), time.monotonic()
            )

    def unregister(self, conn: ProxyConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.connected_proxies.labels(conn.protocol.mode).dec()

    def publish(self, snapshot: MeshSnapshot, changed_at: float | None = None) -> None:
        """Make ``snapshot`` current and wake every proxy whose configuration changed."""
        started = time.perf_counter()
        self.snapshot = snapshot
        changed = time.monotonic() if changed_at is None else changed_at
        for conn in list(self.connections):
            conn.set_desired(self.generator.generate(snapshot, conn.identity), changed)
        elapsed = time.perf_counter() - started
        self.metrics.push_build_seconds.observe(elapsed)
        log.debug(
            "pushed snapshot",
            extra={
                "generation": snapshot.generation,
                "proxies": len(self.connections),
                "seconds": round(elapsed, 4),
            },
        )

    def find(self, pod_ref: str) -> ProxyConnection | None:
        """The newest connection of ``<pod>.<namespace>`` (or of a node id)."""
        matches = [
            c for c in self.connections if pod_ref in (c.identity.pod_ref, c.identity.node_id)
        ]
        return max(matches, key=lambda c: c.connected_at, default=None)


def _metadata(node: Any) -> dict[str, Any]:
    return json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS, both state of the world and delta, over one :class:`PushHub`."""

    def __init__(self, hub: PushHub) -> None:
        self.hub = hub
        # Nonces are unique per server instance, so a reconnecting Envoy's old nonces never
        # match (they are stale by construction).
        self._instance = uuid.uuid4().hex[:8]

    async def StreamAggregatedResources(  # name fixed by the gRPC service
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._serve(request_iterator, context, SotwProtocol):
            yield response

    async def DeltaAggregatedResources(  # name fixed by the gRPC service
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._serve(request_iterator, context, DeltaProtocol):
            yield response

    async def _serve(
        self,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        protocol_type: Callable[[str], StreamProtocol],
    ) -> AsyncIterator[Response]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(_read_into(requests, queue))
        conn: ProxyConnection | None = None
        try:
            first = await queue.get()
            if first is _END:
                return
            assert isinstance(
                first, discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
            )
            try:
                identity = parse_proxy_identity(first.node.id, _metadata(first.node))
            except ProxyIdentityError as exc:
                log.warning(
                    "rejected a proxy that does not identify itself", extra={"error": str(exc)}
                )
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                return
            protocol = protocol_type(f"{self._instance}-")
            conn = ProxyConnection(
                identity=identity, protocol=protocol, peer=context.peer(), queue=queue
            )
            log.info(
                "proxy connected",
                extra={"proxy": identity.pod_ref, "mode": protocol.mode, "peer": conn.peer},
            )
            self._handle(conn, first)
            self.hub.register(conn)
            while True:
                sent = False
                for response in conn.protocol.iter_responses(conn.desired):
                    sent = True
                    self._count_push(response)
                    yield response
                if sent:
                    conn.sent_since_change = True
                elif conn.change_started is not None and conn.protocol.idle():
                    # Nothing left to send and nothing unacknowledged: the proxy converged
                    # (or, having been sent nothing, was not affected at all).
                    if conn.sent_since_change:
                        conn.last_convergence = time.monotonic() - conn.change_started
                        conn.convergences += 1
                        self.hub.metrics.convergence_seconds.observe(conn.last_convergence)
                    conn.change_started = None
                if queue.empty() and conn.desired is not None:
                    # While Envoy digests what was sent, build whatever is still lazy.
                    conn.desired.build_all()
                item = await queue.get()
                if item is _END:
                    return
                if item is _WAKE:
                    conn.take_wake()
                    continue
                self._handle(conn, item)
        except Exception:
            # A bug here must be loud: Envoy will reconnect and hit it again.
            log.exception(
                "xDS stream failed", extra={"proxy": conn.identity.pod_ref if conn else None}
            )
            raise
        finally:
            reader.cancel()
            if conn is not None:
                self.hub.unregister(conn)
                log.info(
                    "proxy disconnected",
                    extra={"proxy": conn.identity.pod_ref, "mode": conn.protocol.mode},
                )

    def _handle(self, conn: ProxyConnection, request: Request) -> None:
        for event in conn.protocol.on_request(request, time.time()):
            short = SHORT_NAMES.get(event.type_url, event.type_url)
            if event.kind == "nack":
                self.hub.metrics.nacks.labels(short).inc()
                log.warning(
                    "proxy rejected configuration (NACK); it keeps its last good config",
                    extra={
                        "proxy": conn.identity.pod_ref,
                        "type": short,
                        "nonce": event.nonce,
                        "error": event.message,
                    },
                )
            elif event.kind == "stale":
                self.hub.metrics.stale_requests.labels(short).inc()

    def _count_push(self, response: Response) -> None:
        short = SHORT_NAMES.get(response.type_url, response.type_url)
        self.hub.metrics.pushes.labels(short).inc()
        self.hub.metrics.pushed_resources.labels(short).inc(len(response.resources))


async def _read_into(requests: AsyncIterator[Any], queue: asyncio.Queue[object]) -> None:
    try:
        async for request in requests:
            queue.put_nowait(request)
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    finally:
        queue.put_nowait(_END)


async def start_xds_server(hub: PushHub, address: str) -> tuple[grpc.aio.Server, int]:
    """Serve ADS on ``address`` (``host:port``; port 0 picks one). Returns the server and port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # gRPC sets SO_REUSEPORT by default: a second control plane on the same port
            # would then silently share the proxies. Fail to bind instead.
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    )
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
        AggregatedDiscoveryService(hub), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpc raises when it cannot bind
        port = 0
    if port == 0:
        await server.stop(None)  # an unstarted aio server still needs stopping, or exit hangs
        raise OSError(
            f"cannot listen for xDS on {address}: is the port in use? choose another with --xds-port"
        )
    await server.start()
    return server, port
