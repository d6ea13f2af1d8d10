"""Wiring of ``remora discovery``: source -> store -> debounce -> push hub -> ADS server.

The source fills the :class:`MeshStore`; every change wakes the :class:`Debouncer`, whose
push publishes the store's latest snapshot to the :class:`PushHub`. Nothing is published
before the source reports its first complete view (:meth:`DiscoveryServer.mark_synced`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import uvicorn

from controlplane.debounce import DEFAULT_MAX_DELAY, DEFAULT_QUIET, Debouncer
from controlplane.debug import create_debug_app
from controlplane.metrics import ControlPlaneMetrics
from controlplane.store import Kind, MeshStore
from controlplane.xds.server import PushHub, start_xds_server
from meshlib.ports import tcp_server_socket

log = logging.getLogger(__name__)


def settle_garbage_collector() -> None:
    """Keep the long-lived mesh model out of Python's full garbage collections.

    With a thousand services the model is a few hundred thousand tracked objects, and a
    full collection walking them stalls the loop for ~100 ms in the middle of a push.
    Freezing what exists after the initial sync (it lives for the whole run anyway) takes
    it out of every later collection; young objects are still collected as usual.
    """
    gc.collect()
    gc.freeze()


def _bind(host: str, port: int) -> socket.socket:
    try:
        sock = tcp_server_socket(host, port)
    except OSError as exc:
        raise OSError(
            f"cannot listen for monitoring on {host}:{port}: {exc.strerror}; "
            "choose another with --monitoring-port (0 disables it)"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _EmbeddedUvicorn(uvicorn.Server):
    """Uvicorn sharing our event loop: signals are the CLI's to handle, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class DiscoveryOptions:
    xds_address: str = "0.0.0.0:15010"
    monitoring_address: tuple[str, int] | None = ("0.0.0.0", 15014)
    debounce_quiet: float = DEFAULT_QUIET
    debounce_max: float = DEFAULT_MAX_DELAY


class DiscoveryServer:
    """The running control plane, minus the config source (which the caller runs)."""

    def __init__(
        self, store: MeshStore, options: DiscoveryOptions, source_name: str = "files"
    ) -> None:
        self.store = store
        self.options = options
        self.source_name = source_name
        self.metrics = ControlPlaneMetrics()
        self.metrics.report_config_status(store.status)
        self.hub = PushHub(self.metrics)
        self.debouncer = Debouncer(self._push, options.debounce_quiet, options.debounce_max)
        self.synced = False
        self.xds_port = 0
        self.monitoring_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._uvicorn: uvicorn.Server | None = None
        store.set_listener(self._on_change)

    def _on_change(self, kind: Kind) -> None:
        self.metrics.config_events.labels(self.source_name, kind.value).inc()
        if self.synced:
            self.debouncer.notify()

    async def _push(self, first_event: float) -> None:
        try:
            self.hub.publish(self.store.snapshot(), first_event)
        except Exception:
            # Keep the debouncer alive: proxies keep their last config, the next change retries.
            self.metrics.push_errors.inc()
            log.exception("push failed; proxies keep their last configuration")

    def mark_synced(self) -> None:
        """The source has a complete view: publish it now, then follow changes (debounced)."""
        if self.synced:
            return
        self.synced = True
        snapshot = self.store.snapshot()
        self.hub.publish(snapshot, time.monotonic())
        settle_garbage_collector()
        log.info(
            "mesh view complete, serving configuration", extra={"objects": self.store.counts()}
        )

    async def start(self) -> None:
        # Bind the monitoring port first: a port in use then fails before anything started.
        monitoring = (
            _bind(*self.options.monitoring_address) if self.options.monitoring_address else None
        )
        try:
            self._grpc, self.xds_port = await start_xds_server(self.hub, self.options.xds_address)
        except OSError:
            if monitoring is not None:
                monitoring.close()
            raise
        self._tasks.append(asyncio.create_task(self.debouncer.run(), name="debouncer"))
        if monitoring is not None:
            app = create_debug_app(self.hub, self.store, self.metrics, lambda: self.synced)
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            self._uvicorn = _EmbeddedUvicorn(config)
            self._tasks.append(
                asyncio.create_task(self._uvicorn.serve(sockets=[monitoring]), name="monitoring")
            )
            self.monitoring_port = monitoring.getsockname()[1]
        log.info(
            "discovery serving",
            extra={"xds_port": self.xds_port, "monitoring_port": self.monitoring_port or None},
        )

    async def stop(self, grace: float = 1.0) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
