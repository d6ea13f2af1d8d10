"""Remora's control plane in this process, on its own event loop in a thread.

:class:`ControlPlaneThread` runs a :class:`~controlplane.app.DiscoveryServer` on loopback so
that synchronous test code can change the model (:meth:`ControlPlaneThread.call`, on the
server's loop: the store is not thread-safe) and poll the Envoys it configures. Always stop it
(use it as a context manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from controlplane.app import DiscoveryOptions, DiscoveryServer
from controlplane.store import MeshStore

T = TypeVar("T")


class ControlPlaneThread:
    """A :class:`DiscoveryServer` on its own loop in a thread, fed by the caller."""

    def __init__(
        self,
        options: DiscoveryOptions | None = None,
        synced: bool = True,
        store: MeshStore | None = None,
        source_name: str = "test",
    ) -> None:
        self.options = options or DiscoveryOptions(
            xds_address="127.0.0.1:0", monitoring_address=None
        )
        self.store = store or MeshStore()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="controlplane", daemon=True
        )
        self._thread.start()
        self.server = self.call(lambda: DiscoveryServer(self.store, self.options, source_name))
        self._run(self.server.start())
        if synced:
            self.call(self.server.mark_synced)

    @property
    def xds_port(self) -> int:
        return self.server.xds_port

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the control plane's loop (the store is not thread-safe) and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self.server.stop(grace=0.2))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ControlPlaneThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
