"""The webhook's HTTPS server: FastAPI on uvicorn, with certificate and config hot reload.

The behaviour lives in :func:`injector.admission.review`; this module only moves bytes, counts,
logs and watches files:

* ``POST /inject`` (and ``/inject/``): AdmissionReview in, AdmissionReview out;
* ``GET /healthz`` (the process is up), ``GET /readyz`` (a certificate and a config are loaded),
  ``GET /metrics`` (Prometheus text);
* the serving certificate and key are re-read when their bytes change (a rotated Secret, as
  cert-manager writes it) and swapped into the live ``SSLContext``: new connections get the new
  certificate, no restart, nothing dropped. The injection config and mesh config files are
  re-read the same way; a broken file is logged and counted, and the last good config stays.

Mounted Secrets and ConfigMaps change through symlink swaps that inotify often misses, so the
watcher simply hashes the files every ``reload_interval`` seconds (cheap: a few KiB).

:func:`serve` runs it in the foreground with one or more worker processes;
:class:`injector.in_process.WebhookServer` runs it in a background thread for tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from injector.admission import Outcome, PatchCache, review
from injector.config import InjectorConfig, load_config
from injector.errors import ConfigError
from meshlib import certs
from meshlib.ports import tcp_server_socket

log = logging.getLogger("remora.injector")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    """The webhook's Prometheus metrics, in a registry of its own (one per server)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "remora_injector_requests",
            "Admission requests received, by result",
            ["result"],
            registry=r,
        )
        self.injected = Counter("remora_injector_injections", "Pods injected", registry=r)
        self.skipped = Counter(
            "remora_injector_skips", "Pods not injected, by reason", ["reason"], registry=r
        )
        self.rejected = Counter(
            "remora_injector_rejections", "Pods refused, by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "remora_injector_admission_duration_seconds",
            "Time to answer one admission request (parse, decide, inject, diff, encode)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cert_expiry = Gauge(
            "remora_injector_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires (Unix time)",
            registry=r,
            multiprocess_mode="max",  # with workers: all serve the same certificate
        )
        self.cache_hits = Counter(
            "remora_injector_patch_cache_hits",
            "Injections answered with the patch of an identical earlier pod",
            registry=r,
        )
        self.reloads = Counter(
            "remora_injector_reloads",
            "File reloads, by what was reloaded and whether it worked",
            ["what", "result"],
            registry=r,
        )

    def record(self, outcome: Outcome, seconds: float) -> None:
        self.requests.labels(outcome.result).inc()
        self.latency.observe(seconds)
        if outcome.result == "injected":
            self.injected.inc()
            if outcome.cached:
                self.cache_hits.inc()
        elif outcome.result == "skipped":
            self.skipped.labels(outcome.code).inc()
        elif outcome.result == "rejected":
            self.rejected.labels(outcome.code).inc()


# -- files and reload ------------------------------------------------------------------------


def _digest(*paths: str | None) -> str:
    h = hashlib.sha256()
    for path in paths:
        if path:
            try:
                h.update(Path(path).read_bytes())
            except OSError:
                h.update(b"<missing>")
        h.update(b"\0")
    return h.hexdigest()


class TlsFiles:
    """A server ``SSLContext`` whose certificate follows the files on disk."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.digest = ""
        self.not_after = 0.0
        if not self.reload():
            raise ConfigError(f"cannot load the serving certificate {cert_file} / key {key_file}")

    def reload(self) -> bool:
        """Load the files into the live context if they changed; False if they are unusable."""
        digest = _digest(self.cert_file, self.key_file)
        if digest == self.digest:
            return True
        try:
            # Validate in a scratch context first: a half-written pair must not break serving.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_file, self.key_file)
            self.context.load_cert_chain(self.cert_file, self.key_file)
            self.not_after = certs.not_after(Path(self.cert_file).read_bytes()).timestamp()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning(
                "serving certificate not (re)loaded: %s", exc, extra={"cert": self.cert_file}
            )
            return False
        self.digest = digest
        return True


class ConfigFiles:
    """The injection config, re-read when its file (or the mesh config file) changes."""

    def __init__(
        self,
        config_file: str | None,
        mesh_config_file: str | None,
        kubernetes_version: tuple[int, int] | None = None,
    ) -> None:
        self.config_file, self.mesh_config_file = config_file, mesh_config_file
        self.kubernetes_version = kubernetes_version  # learnt at start-up; kept across reloads
        self.digest = _digest(config_file, mesh_config_file)
        self.config = self._load()

    def _load(self) -> InjectorConfig:
        config = load_config(self.config_file, self.mesh_config_file)
        if self.kubernetes_version is not None:
            config = replace(config, kubernetes_version=self.kubernetes_version)
        return config

    @property
    def watched(self) -> bool:
        return bool(self.config_file or self.mesh_config_file)

    def reload(self) -> InjectorConfig | None:
        """The new config if the files changed and parse; ``None`` otherwise."""
        digest = _digest(self.config_file, self.mesh_config_file)
        if digest == self.digest:
            return None
        self.digest = digest  # a broken file is reported once, not every interval
        return self._load()


# -- the app ---------------------------------------------------------------------------------


class WebhookState:
    """What the running app reads: the current config (swapped atomically) and the metrics."""

    def __init__(self, config: InjectorConfig, tls: TlsFiles | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.tls = tls
        self.cache = PatchCache()
        if tls is not None:
            self.metrics.cert_expiry.set(tls.not_after)


def _log_outcome(outcome: Outcome, seconds: float) -> None:
    fields: dict[str, Any] = {
        "result": outcome.result,
        "reason_code": outcome.code,
        "pod": outcome.pod,
        "uid": outcome.uid,
        "duration_ms": round(seconds * 1000, 3),
    }
    if outcome.error is not None:
        log.error("admission failed: %s", outcome.reason, extra=fields, exc_info=outcome.error)
    elif outcome.result in {"rejected", "bad_request", "unsupported"}:
        log.warning("%s: %s", outcome.result, outcome.reason, extra=fields)
    elif outcome.result == "ignored":
        log.debug("%s", outcome.reason, extra=fields)
    else:
        log.info("%s: %s", outcome.result, outcome.reason, extra=fields)


def create_app(state: WebhookState) -> FastAPI:
    app = FastAPI(
        title="Remora sidecar injector",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.webhook = state

    async def inject(request: Request) -> Response:
        started = time.perf_counter()
        body = await request.body()
        outcome = review(body, request.headers.get("content-type"), state.config, state.cache)
        seconds = time.perf_counter() - started
        state.metrics.record(outcome, seconds)
        _log_outcome(outcome, seconds)
        return Response(
            outcome.body, status_code=outcome.status_code, media_type="application/json"
        )

    app.add_api_route("/inject", inject, methods=["POST"], include_in_schema=False)
    app.add_api_route("/inject/", inject, methods=["POST"], include_in_schema=False)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if state.tls is not None and state.tls.not_after < time.time():
            return Response(
                "serving certificate expired\n", status_code=503, media_type="text/plain"
            )
        return Response("ok\n", media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        registry = state.metrics.registry
        if os.environ.get(MULTIPROC_ENV):  # workers: add up every worker's series
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _watch(
    state: WebhookState,
    config_files: ConfigFiles | None,
    interval: float,
    stopped: Callable[[], bool],
) -> None:
    """Poll the certificate and config files; apply changes without a restart."""
    while not stopped():
        await asyncio.sleep(interval)
        tls = state.tls
        if tls is not None:
            before = tls.digest
            if tls.reload() and tls.digest != before:
                state.metrics.cert_expiry.set(tls.not_after)
                state.metrics.reloads.labels("certificate", "ok").inc()
                log.info("serving certificate reloaded", extra={"not_after": tls.not_after})
            elif tls.digest != _digest(tls.cert_file, tls.key_file):
                state.metrics.reloads.labels("certificate", "error").inc()
        if config_files is not None and config_files.watched:
            try:
                new = config_files.reload()
            except ConfigError as exc:
                state.metrics.reloads.labels("config", "error").inc()
                log.error("injection config not reloaded, keeping the previous one: %s", exc)
                continue
            if new is not None:
                state.config = new
                state.metrics.reloads.labels("config", "ok").inc()
                log.info("injection config reloaded", extra={"file": config_files.config_file})


# -- running it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeOptions:
    """How to run the webhook (the CLI's flags, picklable for worker processes)."""

    cert_file: str
    key_file: str
    host: str = "0.0.0.0"
    port: int = 9443
    config_file: str | None = None
    mesh_config_file: str | None = None
    reload_interval: float = 2.0
    kubernetes_version: tuple[int, int] | None = None  # overrides the config's, if set


def uvicorn_server(app: FastAPI, tls: TlsFiles) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        ssl_context_factory=lambda _config, _default: tls.context,
        log_config=None,
        access_log=False,
        lifespan="off",
        http="auto",  # httptools when installed (C parser), else h11
        loop="asyncio",
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def _load(options: ServeOptions) -> tuple[WebhookState, ConfigFiles]:
    config_files = ConfigFiles(
        options.config_file, options.mesh_config_file, options.kubernetes_version
    )
    tls = TlsFiles(options.cert_file, options.key_file)
    return WebhookState(config_files.config, tls), config_files


async def serve_async(
    server: uvicorn.Server,
    sock: socket.socket,
    state: WebhookState,
    config_files: ConfigFiles | None,
    interval: float,
) -> None:
    watcher = asyncio.create_task(_watch(state, config_files, interval, lambda: server.should_exit))
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for uvicorn (bound here so that workers can share it and port 0 works)."""
    sock = tcp_server_socket(host, port)
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _worker(options: ServeOptions, sock: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    state, config_files = _load(options)
    server = uvicorn_server(create_app(state), state.tls)  # type: ignore[arg-type]
    asyncio.run(serve_async(server, sock, state, config_files, options.reload_interval))


def serve(
    options: ServeOptions, workers: int = 1, on_started: Callable[[], object] | None = None
) -> None:
    """Run the webhook in the foreground until SIGINT/SIGTERM.

    With several workers, each is a fresh interpreter (``spawn``) that receives the listening
    socket and writes its metrics to a shared directory (prometheus_client's multiprocess mode,
    which must be chosen before the library is imported), so ``/metrics`` from any worker adds
    up all of them. ``on_started`` runs once the workers exist.
    """
    sock = bind(options.host, options.port)
    log.info(
        "sidecar injector listening",
        extra={
            "address": f"https://{options.host}:{sock.getsockname()[1]}/inject",
            "workers": workers,
        },
    )
    if workers <= 1:
        state, config_files = _load(options)
        server = uvicorn_server(create_app(state), state.tls)  # type: ignore[arg-type]
        if on_started is not None:
            on_started()
        asyncio.run(serve_async(server, sock, state, config_files, options.reload_interval))
        return
    _load(options)  # fail fast in the parent on a bad config or certificate
    metrics_dir = tempfile.TemporaryDirectory(prefix="remora-webhook-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir.name  # inherited by the spawned workers
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(options, sock), daemon=True) for _ in range(workers)]
    try:
        for proc in procs:
            proc.start()
        if on_started is not None:
            on_started()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and any(p.is_alive() for p in procs):
            stop.wait(0.5)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(timeout=10)
        del os.environ[MULTIPROC_ENV]
        metrics_dir.cleanup()
