"""``remora discovery`` end to end: the file source, the monitoring port, proxy-status and
proxy-config, with a real Envoy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from controlplane.cli import proxy_config, proxy_status
from harness.envoy import EnvoyProcess
from harness.kube_objects import endpoint_slice_object, service_object
from harness.polling import wait_for
from meshlib.ports import free_port

pytestmark = [pytest.mark.envoy]

SERVICE = service_object(
    "web", "shop", "10.96.0.10", {"http": 80}, target_ports={"http": 8080}, with_api_version=True
)


ISTIO_CONFIG = [
    {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web"],
            "tls": [
                {
                    "match": [{"port": 443, "sniHosts": ["web.example.com"]}],
                    "route": [{"destination": {"host": "web"}}],
                }
            ],
        },
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web-plain", "namespace": "shop"},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
    },
    {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"host": ""},
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": "shop"},
        "spec": {"egress": [{"hosts": ["./*"]}]},
    },
    {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "shop"},
        "spec": {"servers": []},
    },
]


def slice_with(*addresses: str) -> dict[str, object]:
    return endpoint_slice_object(
        "web",
        "shop",
        {"http": 8080},
        addresses,
        name="web-1",
        address_type="IPv4",
        with_api_version=True,
    )


@pytest.fixture
def discovery(tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(SERVICE))
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump(slice_with("10.1.0.1")))
    xds_port, monitoring_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "remora",
            "discovery",
            "--config-dir",
            str(tmp_path),
            "--listen-address",
            "127.0.0.1",
            "--xds-port",
            str(xds_port),
            "--monitoring-port",
            str(monitoring_port),
            "--poll-interval",
            "50ms",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{monitoring_port}"
    try:
        wait_for(
            lambda: process.poll() is None and httpx.get(f"{url}/ready").status_code == 200,
            timeout=30,
            what="ready",
        )
        yield tmp_path, xds_port, url
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr[-2000:]
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(entry["msg"] == "proxy connected" for entry in lines)  # structured JSON logs


def test_discovery_serves_a_config_dir_and_the_cli_reports_it(
    discovery: tuple[Path, int, str],
) -> None:
    directory, xds_port, url = discovery
    runner = CliRunner()
    with EnvoyProcess("web-1", "shop", "10.1.0.1", xds_port) as envoy:
        wait_for(
            lambda: "SYNCED" in runner.invoke(proxy_status, ["--discovery", url]).output,
            what="SYNCED",
        )
        status = runner.invoke(proxy_status, ["--discovery", url])
        assert status.exit_code == 0
        header, row = status.output.splitlines()[:2]
        assert header.split() == ["NAME", "MODE", "CDS", "LDS", "EDS", "RDS", "LAST", "NACK"]
        assert row.split() == ["web-1.shop", "delta", "SYNCED", "SYNCED", "SYNCED", "SYNCED", "-"]

        clusters = runner.invoke(proxy_config, ["web-1.shop", "clusters", "--discovery", url])
        assert clusters.exit_code == 0
        assert any(
            line.split()[:4] == ["web.shop.svc.cluster.local", "80", "-", "OUTBOUND"]
            for line in clusters.output.splitlines()
        )
        endpoints = runner.invoke(
            proxy_config, ["web-1", "endpoints", "-n", "shop", "--discovery", url, "-o", "json"]
        )
        assert (
            json.loads(endpoints.output)[0]["endpoints"][0]["lbEndpoints"][0]["healthStatus"]
            == "HEALTHY"
        )

        # Editing a file reaches Envoy, and Envoy's own view says so too.
        (directory / "slice.yaml").write_text(yaml.safe_dump(slice_with("10.1.0.2", "10.1.0.3")))
        cluster = "outbound|80||web.shop.svc.cluster.local"
        wait_for(
            lambda: (
                envoy.endpoints().get(cluster)
                == ["10.1.0.2:8080 (HEALTHY)", "10.1.0.3:8080 (HEALTHY)"]
            ),
            what="the edit",
        )
        admin = runner.invoke(
            proxy_config,
            ["web-1.shop", "endpoints", "--envoy-admin", f"http://127.0.0.1:{envoy.admin_port}"],
        )
        assert "10.1.0.3:8080  HEALTHY" in admin.output

        missing = runner.invoke(proxy_config, ["nope.shop", "clusters", "--discovery", url])
        assert missing.exit_code != 0 and "connected: web-1.shop" in missing.output

        metrics = httpx.get(f"{url}/metrics").text
        assert 'remora_xds_connected_proxies{mode="delta"} 1.0' in metrics
        assert "remora_proxy_convergence_seconds_count" in metrics

        # Istio config it cannot honour is counted, never dropped in silence; VirtualServices
        # are translated, so only the field they cannot have (a TLS route) is counted.
        (directory / "istio.yaml").write_text(yaml.safe_dump_all(ISTIO_CONFIG))
        wanted = (
            'remora_config_unsupported{field="spec.tls[]",kind="VirtualService"} 1.0',
            'remora_config_unsupported{field="*",kind="Sidecar"} 1.0',
            'remora_config_unsupported{field="*",kind="Gateway"} 1.0',
            'remora_config_invalid{kind="DestinationRule"} 1.0',
        )
        wait_for(
            lambda: all(line in httpx.get(f"{url}/metrics").text for line in wanted),
            what="the gauges",
        )
        counted = [
            line
            for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith("remora_config_unsupported{") and not line.endswith(" 0.0")
        ]
        assert not [line for line in counted if 'field="*",kind="VirtualService"' in line]
        (directory / "istio.yaml").unlink()
        wait_for(
            lambda: (
                'remora_config_invalid{kind="DestinationRule"} 0.0'
                in httpx.get(f"{url}/metrics").text
            ),
            what="the gauges back down",
        )


def test_discovery_explains_bad_flags(tmp_path: Path) -> None:
    both = subprocess.run(
        [sys.executable, "-m", "remora", "discovery", "--config-dir", "/tmp", "--kubeconfig", "/x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert both.returncode != 0 and "choose one source" in both.stderr
    debounce = subprocess.run(
        [
            sys.executable,
            "-m",
            "remora",
            "discovery",
            "--debounce-after",
            "2s",
            "--debounce-max",
            "1s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert debounce.returncode != 0 and "--debounce-max" in debounce.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for flag, other in (
            ("--xds-port", "--monitoring-port"),
            ("--monitoring-port", "--xds-port"),
        ):
            busy = subprocess.run(
                [sys.executable, "-m", "remora", "discovery", "--config-dir", str(tmp_path),
                 "--listen-address", "127.0.0.1", flag, port, other, str(free_port())],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert busy.returncode == 1 and f"choose another with {flag}" in busy.stderr
    unreachable = CliRunner().invoke(
        proxy_status, ["--discovery", f"http://127.0.0.1:{free_port()}"]
    )
    assert unreachable.exit_code != 0 and "Is 'remora discovery' running?" in unreachable.output
