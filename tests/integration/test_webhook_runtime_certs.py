"""Runtime certificates against the real API server: Secret, files, caBundle, renewal, the CLI."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from injector.runtime_certs import RuntimeCertificates, RuntimeCertOptions
from testbed.launcher import TestBed, free_port

pytestmark = pytest.mark.testbed


@pytest.fixture
def webhook_configuration(testbed: TestBed) -> Iterator[str]:
    """A MutatingWebhookConfiguration that intercepts nothing (its selector matches no namespace)."""
    name = f"remora-runtime-certs-{uuid.uuid4().hex[:8]}"
    hook = {
        "clientConfig": {"url": "https://127.0.0.1:1/inject"},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }
        ],
        "namespaceSelector": {"matchLabels": {"remora-never": name}},
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "admissionReviewVersions": ["v1"],
    }
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {**hook, "name": f"{n}.sidecar-injector.remora.test"} for n in ("namespace", "object")
        ],
    }
    with testbed.api_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        admission.create_mutating_webhook_configuration(body)
        try:
            yield name
        finally:
            admission.delete_mutating_webhook_configuration(name)


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def _bundles(testbed: TestBed, name: str) -> set[Any]:
    with testbed.api_client() as api:
        mwc = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(name)
    return {h.client_config.ca_bundle for h in mwc.webhooks}


def test_secret_files_and_ca_bundle_are_kept_in_step(
    testbed: TestBed, unique_name: str, webhook_configuration: str, tmp_path: Path
) -> None:
    testbed.create_namespace(unique_name)
    options = RuntimeCertOptions(
        secret_name="injector-tls",
        namespace=unique_name,
        cert_file=str(tmp_path / "a" / "tls.crt"),
        key_file=str(tmp_path / "a" / "tls.key"),
        sans=("remora-injector.remora-system.svc", "127.0.0.1"),
        webhook_configuration=webhook_configuration,
    )
    with testbed.api_client() as api:
        first = RuntimeCertificates(api, options).ensure()
        stored = client.CoreV1Api(api).read_namespaced_secret("injector-tls", unique_name)
    assert set(stored.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert Path(options.cert_file).read_bytes() == first.serving.cert_pem
    assert Path(options.key_file).stat().st_mode & 0o777 == 0o600
    assert _bundles(testbed, webhook_configuration) == {
        base64.b64encode(first.ca.cert_pem).decode()
    }
    cert = x509.load_pem_x509_certificate(first.serving.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["remora-injector.remora-system.svc"]

    # A second replica adopts the stored pair instead of issuing its own.
    other = dataclasses.replace(
        options, cert_file=str(tmp_path / "b" / "tls.crt"), key_file=str(tmp_path / "b" / "tls.key")
    )
    with testbed.api_client() as api:
        second = RuntimeCertificates(api, other).ensure()
    assert _serial(second.serving.cert_pem) == _serial(first.serving.cert_pem)
    assert Path(other.cert_file).read_bytes() == first.serving.cert_pem

    # Due for renewal: a new serving certificate from the same CA, so the caBundle stays.
    due = dataclasses.replace(options, renew_before=dt.timedelta(days=365))
    with testbed.api_client() as api:
        renewed = RuntimeCertificates(api, due).ensure()
    assert _serial(renewed.serving.cert_pem) != _serial(first.serving.cert_pem)
    assert renewed.ca.cert_pem == first.ca.cert_pem
    assert Path(options.cert_file).read_bytes() == renewed.serving.cert_pem
    assert _bundles(testbed, webhook_configuration) == {
        base64.b64encode(first.ca.cert_pem).decode()
    }

    # A new name to serve (e.g. another --san) re-issues too.
    more = dataclasses.replace(options, sans=(*options.sans, "localhost"))
    with testbed.api_client() as api:
        widened = RuntimeCertificates(api, more).ensure()
    assert _serial(widened.serving.cert_pem) != _serial(renewed.serving.cert_pem)


def test_cli_runtime_mode_serves_with_the_stored_certificate(
    testbed: TestBed, unique_name: str, webhook_configuration: str, tmp_path: Path
) -> None:
    testbed.create_namespace(unique_name)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "remora", "webhook", "--host", "127.0.0.1", "--port", str(port),
            "--tls-cert", str(tmp_path / "certs" / "tls.crt"), "--tls-key", str(tmp_path / "certs" / "tls.key"),
            "--cert-secret", "injector-tls", "--webhook-configuration", webhook_configuration,
            "--san", "127.0.0.1", "--kubeconfig", str(testbed.kubeconfig),
            "--kubernetes-version", "config", "--log-level", "warning",
        ],
        env={**os.environ, "POD_NAMESPACE": unique_name},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        bundle: set[Any] = set()
        while time.monotonic() < deadline and not bundle - {None}:
            bundle = _bundles(testbed, webhook_configuration)
            time.sleep(0.2)
        (ca_b64,) = bundle
        ca = ssl.create_default_context(cadata=base64.b64decode(ca_b64).decode())
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), 1) as raw,
                    ca.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
                ):
                    tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    assert tls.recv(100).startswith(b"HTTP/1.1 200")
                break
            except (ConnectionRefusedError, ssl.SSLError):
                assert time.monotonic() < deadline, (
                    "the webhook never served the runtime certificate"
                )
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_cli_runtime_mode_explains_missing_namespace(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "POD_NAMESPACE"}
    result = subprocess.run(
        [sys.executable, "-m", "remora", "webhook", "--tls-cert", str(tmp_path / "c"), "--tls-key",
         str(tmp_path / "k"), "--cert-secret", "x"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--cert-secret needs --namespace (or $POD_NAMESPACE)" in result.stderr
