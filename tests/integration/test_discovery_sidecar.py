"""The contract with the sidecar agent: the real ``remora proxy sidecar`` (which writes the
production bootstrap) connects to ``remora discovery`` and gets its pod's configuration.

The pod exists only in the control plane's YAML (``web-1`` in ``shop``, labels ``app: web``,
container port ``http`` 8080); the agent says who it is through the node metadata it
derives from POD_NAME / POD_NAMESPACE / INSTANCE_IP / SERVICE_ACCOUNT. Getting the inbound
chain for 8080 proves the identity went through; SYNCED proves the stream works end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.polling import wait_for
from meshlib import certs
from meshlib.ports import free_port

pytestmark = [pytest.mark.envoy]

GOLDEN_HTTP = Path(__file__).resolve().parents[1] / "golden" / "controlplane" / "http.yaml"


def test_the_sidecar_agent_gets_its_pods_configuration(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    (mesh / "shop.yaml").write_text(
        yaml.safe_dump_all(yaml.safe_load(GOLDEN_HTTP.read_text())["objects"])
    )
    xds_port, monitoring_port = free_port(), free_port()
    ports = {name: free_port() for name in ("admin", "status", "health", "prometheus")}
    discovery = subprocess.Popen(
        [sys.executable, "-m", "remora", "discovery", "--config-dir", str(mesh), "--listen-address", "127.0.0.1",
         "--xds-port", str(xds_port), "--monitoring-port", str(monitoring_port)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{monitoring_port}"
    agent: subprocess.Popen[bytes] | None = None
    try:
        wait_for(
            lambda: httpx.get(f"{url}/ready").status_code == 200, timeout=30, what="discovery ready"
        )
        # The pod's inbound listener uses mTLS: Envoy warms once the agent serves it a
        # workload certificate, so the agent signs locally, as a sidecar with a CA would.
        ca_dir = tmp_path / "ca"
        ca_dir.mkdir()
        ca = certs.new_ca("test-mesh-root")
        (ca_dir / "ca-cert.pem").write_bytes(ca.cert_pem)
        (ca_dir / "ca-key.pem").write_bytes(ca.key_pem)
        env = {
            **{k: v for k, v in os.environ.items() if k != "CA_ADDR"},
            "POD_NAME": "web-1",
            "POD_NAMESPACE": "shop",
            "INSTANCE_IP": "10.1.0.11",
            "SERVICE_ACCOUNT": "web",
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "remora", "proxy", "sidecar", "--discovery-address", f"127.0.0.1:{xds_port}",
             "--xds-plaintext", "--config-dir", str(tmp_path / "proxy"), "--bind-address", "127.0.0.1",
             "--admin-port", str(ports["admin"]), "--status-port", str(ports["status"]),
             "--health-port", str(ports["health"]), "--prometheus-port", str(ports["prometheus"]),
             "--concurrency", "1", "--ca-dir", str(ca_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

        def synced() -> dict[str, Any] | None:
            statuses = httpx.get(f"{url}/debug/syncz").json()
            ok = statuses and all(t["status"] == "SYNCED" for t in statuses[0]["types"].values())
            return statuses[0] if ok else None

        status = wait_for(synced, timeout=30, interval=0.1, what="the agent's Envoy synced")
        assert status["proxy"] == "web-1.shop" and status["service_account"] == "web"
        assert status["node_id"] == "sidecar~10.1.0.11~web-1.shop~shop.svc.cluster.local"
        ready = httpx.get(f"http://127.0.0.1:{ports['health']}/healthz/ready")
        assert ready.status_code == 200  # the agent's readiness, through Envoy

        dump = httpx.get(
            f"http://127.0.0.1:{ports['admin']}/config_dump?resource=dynamic_listeners"
        ).json()
        inbound = next(c for c in dump["configs"] if c["name"] == "virtualInbound")
        chains = inbound["active_state"]["listener"]["filter_chains"]
        # First the 15006 black hole (a connection to the capture port itself would loop).
        assert chains[0]["name"] == "virtualInbound-blackhole"
        matches = [c.get("filter_chain_match", {}) for c in chains[1:]]
        # One workload port, 8080, PERMISSIVE by default: mesh mTLS and plaintext side by side.
        assert {m["destination_port"] for m in matches if "destination_port" in m} == {8080}
        on_8080 = [
            m.get("transport_protocol") for m in matches if m.get("destination_port") == 8080
        ]
        assert "tls" in on_8080 and "raw_buffer" in on_8080
        routes = json.dumps(
            httpx.get(
                f"http://127.0.0.1:{ports['admin']}/config_dump?resource=dynamic_route_configs"
            ).json()
        )
        assert '"web"' in routes  # the short name, for a client in the same namespace
    finally:
        if agent is not None:
            os.killpg(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait(timeout=5)
        discovery.terminate()
        discovery.wait(timeout=10)
