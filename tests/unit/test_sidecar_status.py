"""The status server's HTTP contract, without Envoy: who may stop the proxy, unknown probes,
and a merged scrape that survives its sources being down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sidecar.envoy import EnvoyAdmin
from sidecar.metrics import AgentMetrics
from sidecar.prober import Prober
from sidecar.probes import AppProbe, TcpProbe
from sidecar.promtext import AppScrape
from sidecar.readiness import Readiness
from sidecar.status import build_status_app


class FakeControl:
    def __init__(self) -> None:
        self.drains: list[str] = []
        self.quits: list[str] = []

    async def readiness(self) -> Readiness:
        return Readiness(False, "no CDS config received from the control plane yet")

    def request_drain(self, reason: str) -> None:
        self.drains.append(reason)

    def request_quit(self, reason: str) -> None:
        self.quits.append(reason)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Scenario = Callable[[httpx.AsyncClient, FakeControl, AgentMetrics], Awaitable[None]]


def run(scenario: Scenario, *, client_ip: str) -> None:
    """Serve the status app in-process to a caller at ``client_ip`` (Envoy and app down)."""

    async def main() -> None:
        control, metrics = FakeControl(), AgentMetrics()
        dead = closed_port()
        prober = Prober("127.0.0.1")
        admin = EnvoyAdmin(dead)
        async with httpx.AsyncClient() as scrape:
            app = build_status_app(
                control=control,
                admin=admin,
                prober=prober,
                probers={"/app-health/web/livez": AppProbe(TcpProbe(port=dead), timeout_s=0.5)},
                metrics=metrics,
                app_scrape=AppScrape(port=dead),
                app_host="127.0.0.1",
                scrape_client=scrape,
            )
            transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
                await scenario(client, control, metrics)
        await prober.aclose()
        await admin.aclose()

    asyncio.run(main())


def test_stopping_the_proxy_is_refused_to_remote_callers() -> None:
    async def scenario(client: httpx.AsyncClient, control: FakeControl, _: AgentMetrics) -> None:
        assert (await client.post("/quitquitquit")).status_code == 403
        assert (await client.post("/drain")).status_code == 403
        assert (await client.get("/quitquitquit")).status_code == 405
        assert control.quits == [] and control.drains == []

    run(scenario, client_ip="10.1.2.3")


def test_loopback_callers_may_stop_the_proxy() -> None:
    async def scenario(client: httpx.AsyncClient, control: FakeControl, _: AgentMetrics) -> None:
        assert (await client.post("/drain")).status_code == 200
        assert (await client.post("/quitquitquit")).status_code == 200
        assert control.drains == ["POST /drain"]
        assert control.quits == ["POST /quitquitquit"]

    run(scenario, client_ip="127.0.0.1")
    run(scenario, client_ip="::1")


def test_readiness_reason_and_probe_routing() -> None:
    async def scenario(client: httpx.AsyncClient, _: FakeControl, metrics: AgentMetrics) -> None:
        ready = await client.get("/healthz/ready")
        assert ready.status_code == 503
        assert "no CDS config" in ready.text
        assert (await client.get("/app-health/other/livez")).status_code == 404
        failed = await client.get("/app-health/web/livez")
        assert failed.status_code == 500
        assert "ConnectionRefusedError" in failed.text
        sample = metrics.registry.get_sample_value(
            "remora_agent_app_probes_total", {"probe": "/app-health/web/livez", "result": "fail"}
        )
        assert sample == 1

    run(scenario, client_ip="10.1.2.3")


def test_scrape_survives_missing_sources() -> None:
    async def scenario(client: httpx.AsyncClient, _: FakeControl, metrics: AgentMetrics) -> None:
        response = await client.get("/stats/prometheus")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        names = {f.name for f in text_string_to_metric_families(response.text)}
        assert "remora_agent_ready" in names
        for source in ("envoy", "app"):
            failures = metrics.registry.get_sample_value(
                "remora_agent_scrape_failures_total", {"source": source}
            )
            assert failures == 1, source

    run(scenario, client_ip="10.1.2.3")


def test_a_status_server_that_dies_before_listening_stops_the_agent(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """The agent must not run without its readiness port: the kubelet would never see it ready."""
    import pytest

    from meshlib.ports import free_port
    from sidecar import agent as agent_module
    from sidecar.config import AgentOptions, build_config

    options = AgentOptions(
        status_port=free_port(), bind_address="127.0.0.1", config_dir=str(tmp_path)
    )
    config = build_config(
        {"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "INSTANCE_IP": "10.0.0.9"},
        options,
        host_cpus=1,
    )
    agent = agent_module.Agent(config, envoy_binary="/bin/false", provider=None)

    async def broken_serve(self: Any, sockets: Any = None) -> None:
        raise RuntimeError("uvicorn could not start")

    monkeypatch.setattr(agent_module._StatusServer, "serve", broken_serve)

    async def scenario() -> None:
        async with httpx.AsyncClient() as scrape:
            await agent._start_status_server(Prober(config.probe_host), scrape)

    with pytest.raises(agent_module.AgentError, match="did not start: uvicorn could not start"):
        asyncio.run(scenario())
