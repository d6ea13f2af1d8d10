"""The webhook server over real HTTPS on loopback: endpoints, metrics, hot reload, the CLI."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from injector.config import default_config
from injector.in_process import WebhookServer
from injector.patch import apply_patch, decode_patch
from injector.runtime_certs import write_self_signed
from meshlib import certs
from meshlib.ports import free_port as _free_port


def review_body(pod: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "demo",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


def a_pod(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "demo", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }


def client_for(ca_pem: bytes) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cadata=ca_pem.decode()), timeout=5)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def peer_serial(host: str, port: int, ca_pem: bytes) -> int:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture(scope="module")
def server() -> Iterator[WebhookServer]:
    with WebhookServer(default_config()) as running:
        yield running


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_injects_over_https_and_counts(server: WebhookServer) -> None:
    assert server.url.startswith("https://127.0.0.1:") and server.url.endswith("/inject")
    assert (
        server.ca_pem is not None and server.ca_bundle == base64.b64encode(server.ca_pem).decode()
    )
    with client_for(server.ca_pem) as http:
        ok = http.post(
            server.url, content=review_body(a_pod()), headers={"content-type": "application/json"}
        )
        assert ok.status_code == 200
        assert ok.json()["response"]["allowed"] is True
        assert any(op["path"] == "/spec/initContainers" for op in decode_patch(ok.json()))

        skipped = http.post(
            server.url,
            content=review_body(a_pod(**{"sidecar.istio.io/inject": "false"})),
            headers={"content-type": "application/json"},
        )
        assert "not injected" in skipped.json()["response"]["warnings"][0]
        refused = http.post(
            server.url + "/",
            content=review_body(a_pod(**{"status.sidecar.istio.io/port": "http"})),
            headers={"content-type": "application/json"},
        )
        assert refused.json()["response"]["allowed"] is False
        assert "status.sidecar.istio.io/port" in refused.json()["response"]["status"]["message"]
        bad = http.post(server.url, content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]

        assert http.get(server.base_url + "/healthz").text == "ok\n"
        assert http.get(server.base_url + "/readyz").status_code == 200
        text = http.get(server.base_url + "/metrics").text
    assert metric(text, "remora_injector_injections_total") >= 1
    assert 'remora_injector_skips_total{reason="explicit_false"}' in text
    assert 'remora_injector_rejections_total{reason="invalid_annotation"}' in text
    assert 'remora_injector_requests_total{result="bad_request"}' in text
    assert metric(text, "remora_injector_admission_duration_seconds_count") >= 4
    assert metric(text, "remora_injector_certificate_expiry_timestamp_seconds") > time.time()


def test_certificate_and_config_reload_without_restart(tmp_path: Path) -> None:
    pair = write_self_signed(tmp_path / "tls", ("127.0.0.1",))
    ca = certs.KeyPair(pair.ca_pem, b"")  # only the CA certificate is needed to verify
    config_file = tmp_path / "config.yaml"
    config_file.write_text("injectedAnnotations: {generation: one}\n")
    running = WebhookServer(
        cert_file=pair.cert_file,
        key_file=pair.key_file,
        config_file=str(config_file),
        reload_interval=0.1,
    ).start()
    try:
        first = peer_serial("127.0.0.1", running.port, ca.cert_pem)

        # Rotate: a new leaf from a new CA, written over the same files (as a Secret update does).
        rotated = write_self_signed(tmp_path / "rotated", ("127.0.0.1",))
        Path(pair.key_file).write_bytes(Path(rotated.key_file).read_bytes())
        Path(pair.cert_file).write_bytes(Path(rotated.cert_file).read_bytes())
        second = wait_for(lambda: _serial_or_none(running.port, rotated.ca_pem))
        assert second != first

        def generation() -> str:
            with client_for(rotated.ca_pem) as http:
                reply = http.post(
                    running.url,
                    content=review_body(a_pod()),
                    headers={"content-type": "application/json"},
                )
            injected = apply_patch(a_pod(), decode_patch(reply.json()))
            return str(injected["metadata"]["annotations"]["generation"])

        assert generation() == "one"
        config_file.write_text("injectedAnnotations: {generation: two}\n")
        wait_for(lambda: generation() == "two")

        # A broken config is refused and the last good one stays in force.
        config_file.write_text("policy: sometimes\n")
        wait_for(
            lambda: (
                'remora_injector_reloads_total{result="error",what="config"} 1.0'
                in _metrics(running, rotated.ca_pem)
            )
        )
        assert generation() == "two"
        assert 'remora_injector_reloads_total{result="ok",what="certificate"} 1.0' in _metrics(
            running, rotated.ca_pem
        )
    finally:
        running.stop()


def _serial_or_none(port: int, ca_pem: bytes) -> int | None:
    try:
        return peer_serial("127.0.0.1", port, ca_pem)
    except ssl.SSLError:
        return None  # still the old certificate (not signed by the new CA)


def _metrics(server: WebhookServer, ca_pem: bytes) -> str:
    with client_for(ca_pem) as http:
        return http.get(server.base_url + "/metrics").text


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_self_signed_prints_the_ca_bundle_and_serves(tmp_path: Path, workers: int) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "remora", "webhook",
            "--self-signed", str(tmp_path / "certs"),
            "--host", "127.0.0.1", "--port", str(port),
            "--kubernetes-version", "1.34", "--workers", str(workers), "--log-level", "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        bundle = proc.stdout.readline().strip()
        ca_pem = (tmp_path / "certs" / "ca.crt").read_bytes()
        assert base64.b64decode(bundle) == ca_pem

        def healthy() -> bool:
            try:
                with client_for(ca_pem) as http:
                    return http.get(f"https://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=20)
        with client_for(ca_pem) as http:
            for _ in range(4):  # spread over the workers
                reply = http.post(
                    f"https://127.0.0.1:{port}/inject",
                    content=review_body(a_pod()),
                    headers={"content-type": "application/json"},
                )
                # --kubernetes-version 1.34: native sidecars, the proxy is an init container
                ops = decode_patch(reply.json())
                inits = next(op["value"] for op in ops if op["path"] == "/spec/initContainers")
                assert [c["name"] for c in inits] == ["istio-init", "istio-proxy"]
        # Whichever worker answers /metrics, it counts every worker's injections.
        for _ in range(3):
            with client_for(ca_pem) as http:  # a new connection: possibly another worker
                text = http.get(f"https://127.0.0.1:{port}/metrics").text
            assert metric(text, "remora_injector_injections_total") == 4.0
            assert (
                metric(text, "remora_injector_certificate_expiry_timestamp_seconds") > time.time()
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode in (0, -signal.SIGTERM)


def test_cli_refuses_a_bad_config_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("proxy: {uid: 0}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "remora",
            "webhook",
            "--self-signed",
            str(tmp_path),
            "--config",
            str(config),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "never runs as root" in result.stderr
    assert "Traceback" not in result.stderr
