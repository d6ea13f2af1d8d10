"""The agent's status server (``:15020``), Istio's pilot-agent status port.

==================================  =========================================================
``GET /healthz/ready``              200 when the proxy is ready (Envoy's ``:15021`` listener
                                    forwards the kubelet's readiness probe here), else 503
``GET /app-health/<c>/<kind>``      run the app probe the injector rewrote (livez, readyz,
                                    startupz) and answer like the app would have
``GET /stats/prometheus``           Envoy's + the app's (if scraped) + the agent's metrics
``POST /drain``                     start draining (a native sidecar's preStop hook)
``POST /quitquitquit``              stop the proxy now (a Job's last container is done)
==================================  =========================================================

The two POST endpoints only accept loopback callers: they stop the pod's networking.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from meshlib.hostport import host_port
from sidecar.envoy import EnvoyAdmin
from sidecar.metrics import AgentMetrics
from sidecar.prober import Prober
from sidecar.probes import AppProbe
from sidecar.promtext import PROMETHEUS_TEXT, AppScrape, merge_expositions
from sidecar.readiness import Readiness

log = logging.getLogger(__name__)


class AgentControl(Protocol):
    """What the status server needs from the running agent."""

    async def readiness(self) -> Readiness: ...

    def request_drain(self, reason: str) -> None: ...

    def request_quit(self, reason: str) -> None: ...


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_status_app(
    *,
    control: AgentControl,
    admin: EnvoyAdmin,
    prober: Prober,
    probers: Mapping[str, AppProbe],
    metrics: AgentMetrics,
    app_scrape: AppScrape | None,
    app_host: str,
    scrape_client: httpx.AsyncClient,
) -> Starlette:
    """The Starlette app behind ``:15020``; ``scrape_client`` fetches the app's metrics."""

    async def ready(_: Request) -> Response:
        state = await control.readiness()
        return PlainTextResponse(state.reason + "\n", status_code=200 if state.ready else 503)

    async def app_probe(request: Request) -> Response:
        probe = probers.get(request.url.path)
        if probe is None:
            return PlainTextResponse(
                f"no probe registered for {request.url.path} (see ISTIO_KUBE_APP_PROBERS)\n",
                status_code=404,
            )
        started = time.perf_counter()
        result = await prober.run(probe)
        metrics.probe_seconds.observe(time.perf_counter() - started)
        metrics.probes.labels(request.url.path, "pass" if result.ok else "fail").inc()
        if not result.ok:
            log.info("app probe failed", extra={"probe": request.url.path, "detail": result.detail})
        return PlainTextResponse(result.detail + "\n", status_code=result.status)

    async def scrape_app() -> str:
        assert app_scrape is not None
        response = await scrape_client.get(
            f"http://{host_port(app_host, app_scrape.port)}{app_scrape.path}",
            headers={"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"},
        )
        response.raise_for_status()
        return response.text

    async def collect(source: str, fetch: Callable[[], Awaitable[str]]) -> str:
        try:
            return await fetch()
        except (httpx.HTTPError, OSError) as exc:
            metrics.scrape_failures.labels(source).inc()
            log.warning("metrics scrape failed", extra={"source": source, "error": str(exc)})
            return ""

    async def prometheus(_: Request) -> Response:
        tasks = [collect("envoy", admin.prometheus)]
        if app_scrape is not None:
            tasks.append(collect("app", scrape_app))
        texts = await asyncio.gather(*tasks)
        agent_text = metrics.exposition()
        merged = merge_expositions([*texts, agent_text])
        if merged.dropped_families:
            metrics.dropped_families.inc(len(merged.dropped_families))
            log.warning(
                "dropped duplicate metric families while merging",
                extra={"families": list(merged.dropped_families)},
            )
        return Response(merged.text, media_type=PROMETHEUS_TEXT)

    def loopback_only(
        action: Callable[[str], None], what: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            if not _from_loopback(request):
                return PlainTextResponse(
                    f"{what} is only accepted from localhost\n", status_code=403
                )
            action(f"{request.method} {request.url.path}")
            return PlainTextResponse("OK\n")

        return handler

    return Starlette(
        routes=[
            Route("/healthz/ready", ready, methods=["GET"]),
            Route("/app-health/{container}/{kind}", app_probe, methods=["GET"]),
            Route("/app-lifecycle/{container}/{kind}", app_probe, methods=["GET", "POST"]),
            Route("/stats/prometheus", prometheus, methods=["GET"]),
            Route("/drain", loopback_only(control.request_drain, "drain"), methods=["POST"]),
            Route(
                "/quitquitquit",
                loopback_only(control.request_quit, "quitquitquit"),
                methods=["POST"],
            ),
        ]
    )
