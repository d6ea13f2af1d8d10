"""``remora proxy`` as a user meets it: help with examples, dry runs, and errors that say
what to do (no tracebacks)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from remora.cli import cli

POD = {"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "INSTANCE_IP": "10.0.0.9"}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def test_help_teaches_with_examples() -> None:
    code, out = invoke("proxy", "sidecar", "--help")
    assert code == 0
    assert "Examples:" in out and "--dry-run" in out and "ISTIO_KUBE_APP_PROBERS" in out
    code, out = invoke("proxy", "--help")
    assert code == 0
    for sub in ("sidecar", "wait", "request"):
        assert sub in out


def test_dry_run_prints_bootstrap_and_command_line(tmp_path: Path) -> None:
    code, out = invoke(
        "proxy",
        "sidecar",
        "--dry-run",
        "--domain",
        "shop.svc.corp.internal",
        "--proxyLogLevel=debug",
        "--config-dir",
        str(tmp_path),
        env={
            **POD,
            "ISTIO_CPU_LIMIT": "1",
            "ISTIO_KUBE_APP_PROBERS": '{"/app-health/web/livez":{"tcpSocket":{"port":8080}}}',
        },
    )
    assert code == 0, out
    plan = json.loads(out)
    assert plan["bootstrap"]["node"]["id"] == "sidecar~10.0.0.9~web-0.shop~shop.svc.corp.internal"
    args = plan["envoy_args"]
    assert args[args.index("--concurrency") + 1] == "1"
    assert args[args.index("--log-level") + 1] == "debug"
    sds = plan["bootstrap"]["static_resources"]["clusters"][2]
    assert sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": f"{tmp_path}/SDS"}
    }
    assert plan["app_probes"] == {
        "/app-health/web/livez": {"tcp": {"port": 8080}, "timeoutSeconds": 1.0}
    }
    assert plan["probe_destination"] == "10.0.0.9"
    assert plan["app_metrics"] is None
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"POD_NAMESPACE": "x"}, "POD_NAME is not set"),
        (("--discovery-address", "cp:15012"), POD, "needs the mesh root at"),
        (("--xds-plaintext", "--ca-dir", "/nonexistent"), POD, "point --ca-dir at"),
        (("--minimum-drain-duration", "soon"), POD, "is not a duration"),
        ((), {**POD, "SECRET_TTL": "a day"}, "'--cert-ttl': 'a day' is not a duration"),
        ((), {**POD, "SECRET_TTL": "nan"}, "'--cert-ttl': 'nan' is not a duration"),
        ((), {**POD, "SECRET_TTL": "inf"}, "'--cert-ttl': 'inf' is not a duration"),
        ((), {**POD, "SECRET_TTL": "-5"}, "'--cert-ttl': '-5' is shorter than 1s"),
        ((), {**POD, "SECRET_TTL": "500ms"}, "'--cert-ttl': '500ms' is shorter than 1s"),
        (("--minimum-drain-duration", "-1s"), POD, "'-1s' is not a duration"),
        (
            ("--xds-plaintext", "--ca-root-cert", "/nonexistent/ca-root.pem"),
            {**POD, "CA_ADDR": "istiod.istio-system.svc:15012"},
            "the mesh CA at istiod.istio-system.svc:15012 is verified against /nonexistent/ca-root.pem",
        ),
    ],
)
def test_errors_say_what_to_do(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    code, out = invoke(
        "proxy", "sidecar", "--xds-root-cert", "/nonexistent/root.pem", *args, env=env
    )
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_wait_and_request_fail_clearly_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = invoke(
        "proxy",
        "wait",
        "--health-port",
        str(port),
        "--timeoutSeconds",
        "0.3",
        "--periodMillis",
        "100",
    )
    assert code == 1
    assert "not ready after 0.3s" in out
    code, out = invoke("proxy", "request", f"--debug-port={port}", "GET", "server_info")
    assert code == 1
    assert "is the proxy running?" in out


def test_bootstrap_override_file_is_merged_or_explained(tmp_path: Path) -> None:
    override = tmp_path / "custom_bootstrap.yaml"
    override.write_text("stats_flush_interval: 10s\n")
    env = {**POD, "ISTIO_BOOTSTRAP_OVERRIDE": str(override)}
    code, out = invoke("proxy", "sidecar", "--dry-run", env=env)
    assert code == 0, out
    assert json.loads(out)["bootstrap"]["stats_flush_interval"] == "10s"
    code, out = invoke(
        "proxy", "sidecar", "--dry-run", env={**env, "ISTIO_BOOTSTRAP_OVERRIDE": "/nope.json"}
    )
    assert code == 1 and "is the ConfigMap named in" in out
    override.write_text("- a list\n")
    code, out = invoke("proxy", "sidecar", "--dry-run", env=env)
    assert code == 1 and "must hold an object" in out
