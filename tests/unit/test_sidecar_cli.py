"""``remora proxy`` as a user meets it: help with examples, dry runs, and errors that say
what to do (no tracebacks)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
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
        ((), {**POD, "SECRET_TTL": "-5"}, "'--cert-ttl': '-5' is missing a unit"),
        ((), {**POD, "SECRET_TTL": "0"}, "'--cert-ttl': '0' is shorter than 1s"),
        ((), {**POD, "SECRET_TTL": "500ms"}, "'--cert-ttl': '500ms' is shorter than 1s"),
        ((), {**POD, "SECRET_TTL": "a day"}, "(use e.g. 500ms, 45s or 1m30s), from SECRET_TTL"),
        (("--cert-ttl", "0"), POD, "'--cert-ttl': '0' is shorter than 1s\n"),
        (("--minimum-drain-duration", "-1s"), POD, "'-1s' is negative"),
        (
            (),
            {**POD, "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "yes"},
            "EXIT_ON_ZERO_ACTIVE_CONNECTIONS: ",
        ),
        (
            (),
            {**POD, "MINIMUM_DRAIN_DURATION": "5"},
            "MINIMUM_DRAIN_DURATION: '5' is missing a unit",
        ),
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


@pytest.fixture
def ready_port() -> Iterator[int]:
    """A port whose /healthz/ready answers 200, as a ready proxy's health listener does."""

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz/ready" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.parametrize("timeout", ["1m", "60", "1m30s", "2.5"])
def test_wait_takes_a_duration_or_seconds(timeout: str, ready_port: int) -> None:
    """``--timeout 1m`` is a duration like every other flag's, not "not a valid float"."""
    code, out = invoke(
        "proxy",
        "wait",
        "--health-port",
        str(ready_port),
        "--url",
        f"http://127.0.0.1:{ready_port}/healthz/ready",
        "--timeout",
        timeout,
    )
    assert code == 0, out
    assert "proxy ready" in out


def test_wait_reports_its_timeout_in_seconds() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = invoke(
        "proxy", "wait", "--health-port", str(port), "--timeout", "300ms", "--periodMillis", "100"
    )
    assert code == 1
    assert "not ready after 0.3s" in out


@pytest.mark.parametrize(
    ("command", "flag"),
    [(("proxy", "wait"), "--timeout"), (("proxy", "request", "GET", "ready"), "--timeout")],
)
def test_a_bad_timeout_is_a_usage_error_naming_the_flag(
    command: tuple[str, ...], flag: str
) -> None:
    result = CliRunner().invoke(cli, [*command[:2], flag, "soon", *command[2:]])
    assert result.exit_code == 2
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: Invalid value for ") and f"'{flag}'" in error
    assert "'soon' is not a duration" in result.output
