"""The running agent: Envoy, the status server, the SDS server and the certificate renewal,
tied to one lifecycle.

* Start: write the bootstrap, start SDS (when there is a certificate provider) and the status
  server, then Envoy.
* Envoy exits on its own: the agent stops everything and exits with Envoy's code, so the
  kubelet restarts the container (there is no in-place restart: hot restart is off).
* SIGTERM (or SIGINT): drain. Readiness fails at once, Envoy's health check fails and its
  (inbound) listeners drain; the agent waits until no connection is left (after at least
  the minimum drain duration) or the termination drain duration is over, then quits Envoy.
* ``POST /drain``: the same drain, without exiting (a native sidecar's preStop hook; SIGTERM
  follows).
* ``POST /quitquitquit``: quit Envoy now (a Job whose work is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any, Literal

import grpc
import httpx
import uvicorn

from meshlib.files import write_atomically
from meshlib.ports import tcp_server_socket
from sidecar.bootstrap import HEALTH_LISTENER, PROMETHEUS_LISTENER, build_bootstrap, envoy_args
from sidecar.config import AgentConfig
from sidecar.envoy import EnvoyAdmin, EnvoyProcess
from sidecar.errors import AgentError
from sidecar.identity import CertificateManager, CertificateProvider, WorkloadCertificate
from sidecar.metrics import AgentMetrics
from sidecar.prober import Prober
from sidecar.readiness import Readiness
from sidecar.sds import SecretDiscoveryServer, start_sds_server
from sidecar.status import build_status_app

log = logging.getLogger(__name__)

BOOTSTRAP_FILE = "envoy-rev.json"  # pilot-agent's name for it
QUIT_GRACE_S = 5.0
FAST_READINESS_POLL_S = 3.0  # poll readiness fast this long, so start-up time is precise


class _StatusServer(uvicorn.Server):
    """uvicorn without its signal handlers: the agent owns SIGTERM (it means "drain")."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        envoy_binary: str,
        provider: CertificateProvider | None,
        metrics: AgentMetrics | None = None,
        readiness_poll_s: float = 0.05,
    ) -> None:
        self.config = config
        self.metrics = metrics or AgentMetrics()
        self.admin = EnvoyAdmin(config.ports.admin, host=config.loopback)
        self.bootstrap_path = os.path.join(config.config_dir, BOOTSTRAP_FILE)
        self.envoy = EnvoyProcess(envoy_binary, envoy_args(config, self.bootstrap_path))
        self.certs = (
            CertificateManager(
                provider,
                config.spiffe_id,
                on_rotate=self._on_certificate,
                on_failure=lambda _: self.metrics.cert_renewals.labels("failure").inc(),
            )
            if provider is not None
            else None
        )
        self._readiness_poll_s = readiness_poll_s
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._exit: asyncio.Future[Literal["terminate", "quit"]] | None = None
        self._started = time.monotonic()
        self._status_task: asyncio.Task[None] | None = None
        self._quit = asyncio.Event()

    # -- AgentControl (used by the status server) --------------------------------------------

    async def readiness(self) -> Readiness:
        if self.envoy.returncode is not None or self.envoy.pid is None:
            state = Readiness(False, "Envoy is not running")
        else:
            state = await self.admin.readiness(draining=self._draining)
        self.metrics.ready.set(1 if state.ready else 0)
        return state

    def request_drain(self, reason: str) -> None:
        log.info("drain requested", extra={"by": reason})
        self._draining = True  # not ready from this moment, before Envoy hears of it
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._start_drain())

    def request_quit(self, reason: str) -> None:
        """Stop now; also cuts short a drain already under way."""
        log.info("quit requested", extra={"by": reason})
        self._quit.set()
        if self._exit is not None and not self._exit.done():
            self._exit.set_result("quit")

    def _request_terminate(self, signame: str) -> None:
        if self._exit is not None and self._exit.done():
            # A second signal (Ctrl-C twice) means "stop waiting".
            self.request_quit(f"second {signame}")
            return
        log.info("termination signal received: draining", extra={"signal": signame})
        if self._exit is not None:
            self._exit.set_result("terminate")

    # -- lifecycle -------------------------------------------------------------------------

    def _on_certificate(self, cert: WorkloadCertificate) -> None:
        self.metrics.cert_renewals.labels("success").inc()
        self.metrics.cert_expiry.set(cert.not_after.timestamp())

    async def _start_drain(self) -> None:
        """Fail Envoy's health checks and drain its inbound listeners."""
        try:
            await self.admin.post("/healthcheck/fail")
            await self.admin.post("/drain_listeners", graceful="", inboundonly="")
        except httpx.HTTPError as exc:
            log.warning("could not drain Envoy's listeners", extra={"error": str(exc)})

    async def _active_connections(self) -> int:
        """App connections Envoy still holds; -1 when its admin API does not answer."""
        try:
            return await self.admin.active_connections(
                ("admin", HEALTH_LISTENER, PROMETHEUS_LISTENER)
            )
        except httpx.HTTPError:
            return -1

    async def _wait_for_connections(self, envoy_exit: asyncio.Task[int]) -> None:
        """Wait until no app connection is left (not before the minimum drain), bounded by
        the termination drain duration; a quit request or Envoy's exit ends it at once."""
        cfg = self.config
        began = time.monotonic()
        deadline = began + cfg.termination_drain_duration_s
        earliest = began + cfg.minimum_drain_duration_s
        quit_task = asyncio.get_running_loop().create_task(self._quit.wait())
        try:
            while not (envoy_exit.done() or quit_task.done()):
                now = time.monotonic()
                if now >= deadline:
                    log.info(
                        "termination drain duration over",
                        extra={"seconds": cfg.termination_drain_duration_s},
                    )
                    return
                if cfg.exit_on_zero_active_connections:
                    if now >= earliest and await self._active_connections() == 0:
                        log.info(
                            "no active connections left",
                            extra={"drained_s": round(now - began, 3)},
                        )
                        return
                    wake = min(deadline, max(earliest, now + cfg.drain_poll_interval_s))
                else:
                    wake = deadline
                await asyncio.wait({envoy_exit, quit_task}, timeout=max(0.0, wake - now))
        finally:
            quit_task.cancel()

    async def _watch_first_ready(self) -> None:
        """Log and record the start-up time; poll fast for the first seconds, then back off to
        1 s so that a proxy waiting for an absent control plane does not spin."""
        interval = self._readiness_poll_s
        last_reason = ""
        while True:
            state = await self.readiness()
            if state.ready:
                took = time.monotonic() - self._started
                self.metrics.startup_seconds.set(took)
                log.info("proxy is ready", extra={"startup_s": round(took, 3)})
                return
            if state.reason != last_reason:
                log.info("proxy not ready yet", extra={"reason": state.reason})
                last_reason = state.reason
            await asyncio.sleep(interval)
            if time.monotonic() - self._started > FAST_READINESS_POLL_S:
                interval = min(1.0, interval * 1.5)

    async def _start_status_server(
        self, prober: Prober, scrape: httpx.AsyncClient
    ) -> _StatusServer:
        cfg = self.config
        app = build_status_app(
            control=self,
            admin=self.admin,
            prober=prober,
            probers=cfg.probers,
            metrics=self.metrics,
            app_scrape=cfg.app_scrape,
            app_host=cfg.loopback,
            scrape_client=scrape,
        )
        # Bind here, not in uvicorn: a busy port must become our error, not uvicorn's exit.
        try:
            sock = tcp_server_socket(cfg.bind_address, cfg.ports.status)
        except OSError as exc:
            raise AgentError(
                f"the status server could not listen on {cfg.bind_address}:{cfg.ports.status} "
                f"({exc.strerror}); is another agent running? (pick another port with "
                "--status-port)"
            ) from exc
        server = _StatusServer(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if not server.started:  # serve() ended before listening: say why, do not run blind
            error = task.exception() if not task.cancelled() else None
            raise AgentError(
                f"the status server on {cfg.bind_address}:{cfg.ports.status} did not start"
                + (f": {error}" if error else "")
            )
        self._status_task = task
        return server

    async def _supervise(self, envoy_exit: asyncio.Task[int]) -> int:
        """Wait for Envoy to exit or for a stop request; drain or quit; return Envoy's code."""
        assert self._exit is not None
        waiters: set[asyncio.Future[Any]] = {envoy_exit, self._exit}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if envoy_exit.done():
            code = envoy_exit.result()
            log.log(
                logging.ERROR if code else logging.INFO,
                "Envoy exited on its own; the agent exits with its code",
                extra={"code": code},
            )
            return code
        if self._exit.result() == "terminate":
            self.request_drain("SIGTERM")
            if self._drain_task is not None:
                await self._drain_task
            await self._wait_for_connections(envoy_exit)
        if not envoy_exit.done():
            with contextlib.suppress(httpx.HTTPError):
                await self.admin.post("/quitquitquit")
            done, _ = await asyncio.wait({envoy_exit}, timeout=QUIT_GRACE_S)
            if not done:
                await self.envoy.stop()
        code = await envoy_exit
        log.info("Envoy stopped", extra={"code": code})
        return code

    async def run(self) -> int:
        """Run until Envoy exits or the agent is told to stop; returns the exit code."""
        loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._exit = loop.create_future()
        cfg = self.config
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_terminate, signal.Signals(sig).name)

        bootstrap = build_bootstrap(cfg)
        try:
            write_atomically(self.bootstrap_path, json.dumps(bootstrap, indent=2).encode())
        except OSError as exc:
            raise AgentError(
                f"cannot write Envoy's bootstrap to {self.bootstrap_path}: {exc.strerror}. "
                "Point --config-dir at a writable directory (in a pod: the istio-envoy emptyDir "
                "mounted at /etc/istio/proxy)"
            ) from exc
        log.info(
            "agent starting",
            extra={
                "node_id": cfg.node_id,
                "discovery": cfg.xds.address,
                "xds_tls": cfg.xds.tls,
                "concurrency": cfg.concurrency,
                "spiffe_id": cfg.spiffe_id,
                "bootstrap": self.bootstrap_path,
            },
        )

        prober = Prober(cfg.probe_host)
        # Plain HTTP to the app on loopback: no TLS, so no CA bundle to load (~2 MB each).
        scrape = httpx.AsyncClient(timeout=5.0, verify=False)
        tasks: list[asyncio.Task[None]] = []
        sds_server: grpc.aio.Server | None = None
        status: _StatusServer | None = None
        try:
            if self.certs is not None:
                sds = SecretDiscoveryServer(
                    self.certs, on_push=lambda name: self.metrics.sds_pushes.labels(name).inc()
                )
                sds_server = await start_sds_server(sds, cfg.sds_socket)
                tasks.append(loop.create_task(self.certs.run()))
            else:
                log.warning(
                    "no certificate provider: Envoy gets no workload certificate over SDS, so "
                    "listeners that use mTLS never warm (set CA_ADDR / --ca-address for the mesh "
                    "CA, or --ca-dir to sign locally)"
                )
            status = await self._start_status_server(prober, scrape)
            await self.envoy.start()
            tasks.append(loop.create_task(self._watch_first_ready()))
            return await self._supervise(loop.create_task(self.envoy.wait()))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            for task in tasks:
                task.cancel()
            if self._drain_task is not None:
                tasks.append(self._drain_task)
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.envoy.stop(grace_s=2.0)
            if status is not None and self._status_task is not None:
                status.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._status_task, 3.0)
            if sds_server is not None:
                await sds_server.stop(grace=0.5)
            await asyncio.gather(prober.aclose(), scrape.aclose(), self.admin.aclose())
