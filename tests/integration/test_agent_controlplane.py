"""The agent against Remora's real control plane (``harness.control_plane.ControlPlaneThread``,
delta and state-of-the-world ADS, plaintext, empty mesh): the first full config makes the proxy ready, and the
agent drains and exits cleanly. Interop, not features: those are in test_agent_envoy.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.control_plane import ControlPlaneThread
from meshlib import certs
from meshlib.ports import free_port
from sidecar.readiness import parse_stats

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]

REMORA = str(Path(sys.executable).parent / "remora")


@pytest.mark.parametrize("xds_api", ["delta", "sotw"])
def test_real_control_plane_makes_the_proxy_ready(tmp_path: Path, xds_api: str) -> None:
    # The control plane's listeners use mTLS, so Envoy warms only once the agent serves it a
    # workload certificate over SDS: sign locally, as a sidecar with a CA would.
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca = certs.new_ca("test-mesh-root")
    (ca_dir / "ca-cert.pem").write_bytes(ca.cert_pem)
    (ca_dir / "ca-key.pem").write_bytes(ca.key_pem)
    with ControlPlaneThread() as control_plane:
        ports = {name: free_port() for name in ("admin", "status", "health", "prometheus")}
        argv = [
            REMORA, "proxy", "sidecar", "--xds-plaintext", "--log-as-text", "--xds-api", xds_api,
            "--discovery-address", f"127.0.0.1:{control_plane.xds_port}",
            "--bind-address", "127.0.0.1", "--config-dir", str(tmp_path),
            "--pod-info-dir", str(tmp_path), "--concurrency", "1", "--ca-dir", str(ca_dir),
            "--admin-port", str(ports["admin"]), "--status-port", str(ports["status"]),
            "--health-port", str(ports["health"]), "--prometheus-port", str(ports["prometheus"]),
        ]  # fmt: skip
        env = {
            "PATH": os.environ.get("PATH", ""),
            "POD_NAME": "web-0",
            "POD_NAMESPACE": "default",
            "INSTANCE_IP": "10.1.0.5",
            "ISTIO_META_APP_CONTAINERS": "web",
        }
        log = tmp_path / "agent.log"
        with log.open("wb") as out:
            agent = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            ready = False
            while time.monotonic() < deadline and agent.poll() is None:
                try:
                    url = f"http://127.0.0.1:{ports['health']}/healthz/ready"
                    if httpx.get(url, timeout=1).status_code == 200:
                        ready = True
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            assert ready, log.read_text()[-3000:]
            stats = parse_stats(
                httpx.get(f"http://127.0.0.1:{ports['admin']}/stats", timeout=5).text
            )
            assert stats["cluster_manager.cds.update_success"] >= 1
            assert stats["listener_manager.lds.update_success"] >= 1
            assert stats["control_plane.connected_state"] == 1
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(20) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
