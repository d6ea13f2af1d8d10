"""The CA as ``remora discovery`` runs it: TLS on its port, material from --ca-dir, root published."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client

from controlplane.ca.authority import CA_CERT, CA_KEY, CAMaterial
from controlplane.ca.rootcert import CONFIGMAP_NAME, ROOT_KEY
from controlplane.ca.runtime import MeshCA, MeshCAConfig
from sidecar.ca_client import GrpcCAProvider
from sidecar.identity import CertificateManager

pytestmark = pytest.mark.testbed


def test_ca_from_directory_serves_tls_publishes_and_shares_its_port(
    testbed: Any, tmp_path: Path
) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(testbed.api_client())
    testbed.create_namespace(ns)
    own = CAMaterial.self_signed("cluster.local")
    ca_dir = tmp_path / "cacerts"
    ca_dir.mkdir()
    files = own.to_files()
    (ca_dir / CA_CERT).write_bytes(files[CA_CERT])
    (ca_dir / CA_KEY).write_bytes(files[CA_KEY])
    token = core.create_namespaced_service_account_token(
        "default",
        ns,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=["istio-ca"], expiration_seconds=600)
        ),
    ).status.token
    (tmp_path / "istio-token").write_text(token)
    registered: list[grpc.aio.Server] = []

    async def body() -> None:
        ca = MeshCA(
            MeshCAConfig(secure_address="127.0.0.1:0", plain_address="127.0.0.1:0", ca_dir=ca_dir),
            testbed.api_client(),
        )
        await ca.start(extra_services=registered.append)
        try:
            assert registered, "extra services (ADS) are offered the CA's TLS server"
            # The sidecar mounts the published ConfigMap and uses it to verify the CA.
            deadline = time.monotonic() + 10
            while True:
                try:
                    cm = core.read_namespaced_config_map(CONFIGMAP_NAME, ns)
                    break
                except client.ApiException:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            (tmp_path / "root-cert.pem").write_text(cm.data[ROOT_KEY])
            provider = GrpcCAProvider(
                f"127.0.0.1:{ca.secure_port}",
                token_path=tmp_path / "istio-token",
                root_cert_path=tmp_path / "root-cert.pem",
                server_name="istiod.istio-system.svc",
            )
            manager = CertificateManager(provider, f"spiffe://cluster.local/ns/{ns}/sa/default")
            cert = await manager.fetch_once()
            await provider.close()
            assert cert.root_pem.decode() == own.root_pem
            # The plaintext port (local runs) serves the same CA.
            plain = GrpcCAProvider(
                f"127.0.0.1:{ca.plain_port}",
                token_path=tmp_path / "istio-token",
                root_cert_path=None,
            )
            manager.provider = plain
            assert (await manager.fetch_once()).root_pem == cert.root_pem
            await plain.close()
            assert ca.metrics.issued._value.get() == 2
        finally:
            await ca.stop()

    try:
        asyncio.run(body())
    finally:
        core.delete_namespace(ns)
