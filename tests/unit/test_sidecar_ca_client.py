"""The agent's CA client follows a root rotation: real certificates, a real gRPC CA over TLS.

The CA is :class:`CertificateService` on loopback, serving TLS with a certificate from its
own root. Rotating the root means what it means in a cluster: the CA restarts (same address)
with material from a new root and a serving certificate chained to it, and the mounted
``root-cert.pem`` (the istio-ca-root-cert ConfigMap) is replaced. Who the caller is, is not
under test here (TokenReview has its own tests against the test bed): the authenticator
below accepts every token as one fixed service account.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path

import grpc
import pytest

from controlplane.ca.authority import CAMaterial, issue_serving
from controlplane.ca.service import CAOptions, CertificateService
from meshlib.spiffe import WorkloadIdentity
from sidecar.ca_client import CARefused, GrpcCAProvider
from sidecar.identity import CertificateManager
from sidecar.sds import ROOT_SECRET, secret_for

TD = "cluster.local"
CALLER = WorkloadIdentity("shop", "cart")
SERVER_NAME = "istiod.istio-system.svc"


class EveryTokenIsCart:
    async def authenticate(self, token: str) -> WorkloadIdentity:
        return CALLER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve_ca(material: CAMaterial, port: int) -> grpc.aio.Server:
    """The CA on ``127.0.0.1:port``, its TLS certificate chained to ``material``'s root."""
    service = CertificateService(
        material,
        EveryTokenIsCart(),
        options=CAOptions(trust_domain=TD, default_ttl=dt.timedelta(hours=1)),
    )
    server = grpc.aio.server()
    service.add_to(server)
    pair, _ = issue_serving(material, (SERVER_NAME,))
    creds = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
    assert server.add_secure_port(f"127.0.0.1:{port}", creds) == port
    await server.start()
    return server


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "istio-token"
    path.write_text("opaque-token")
    return path


def _client(
    port: int, root_file: Path, token_file: Path
) -> tuple[GrpcCAProvider, CertificateManager]:
    """The agent's CA client to 127.0.0.1:``port``, trusting ``root_file``, and the manager
    that renews through it."""
    provider = GrpcCAProvider(
        f"127.0.0.1:{port}",
        token_path=token_file,
        root_cert_path=root_file,
        server_name=SERVER_NAME,
        timeout_s=5,
    )
    return provider, CertificateManager(provider, CALLER.spiffe_id(TD))


def test_renewal_after_a_root_rotation_uses_the_new_root(tmp_path: Path, token_file: Path) -> None:
    old, new = CAMaterial.self_signed(TD), CAMaterial.self_signed(TD)
    assert old.root_pem != new.root_pem
    root_file = tmp_path / "root-cert.pem"
    root_file.write_text(old.root_pem)
    port = free_port()

    async def scenario() -> None:
        provider, manager = _client(port, root_file, token_file)
        server = await serve_ca(old, port)
        try:
            first = await manager.fetch_once()
            assert first.root_pem.decode() == old.root_pem
            # The rotation: the CA comes back with the new root, the ConfigMap follows.
            await server.stop(grace=0)
            server = await serve_ca(new, port)
            root_file.write_text(new.root_pem)
            renewed = await manager.fetch_once()
            assert renewed.root_pem.decode() == new.root_pem
            assert renewed.serial != first.serial
            # What Envoy gets as ROOTCA over SDS is the new root too.
            served = secret_for(ROOT_SECRET, renewed).validation_context.trusted_ca.inline_bytes
            assert served.decode() == new.root_pem
        finally:
            await provider.close()
            await server.stop(grace=0)

    asyncio.run(scenario())


def test_a_failed_handshake_is_retried_on_a_fresh_channel(tmp_path: Path, token_file: Path) -> None:
    """The CA moved to the new root before the kubelet updated the file: the renewals fail
    (UNAVAILABLE, the handshake) until the file changes, and then the very next one works."""
    old, new = CAMaterial.self_signed(TD), CAMaterial.self_signed(TD)
    root_file = tmp_path / "root-cert.pem"
    root_file.write_text(old.root_pem)
    port = free_port()

    async def scenario() -> None:
        provider, manager = _client(port, root_file, token_file)
        server = await serve_ca(new, port)
        try:
            for _ in range(2):
                with pytest.raises(CARefused) as info:
                    await manager.fetch_once()
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
            root_file.write_text(new.root_pem)
            renewed = await manager.fetch_once()
            assert renewed.root_pem.decode() == new.root_pem
        finally:
            await provider.close()
            await server.stop(grace=0)

    asyncio.run(scenario())


def test_the_attempt_after_an_unreachable_ca_does_not_wait_out_a_reconnect_backoff(
    tmp_path: Path, token_file: Path
) -> None:
    """A channel that failed to connect backs off (gRPC: 1 s, doubling) and fails calls
    meanwhile; the client starts the next attempt on a fresh channel instead."""
    material = CAMaterial.self_signed(TD)
    root_file = tmp_path / "root-cert.pem"
    root_file.write_text(material.root_pem)
    port = free_port()

    async def scenario() -> None:
        provider, manager = _client(port, root_file, token_file)
        with pytest.raises(CARefused) as info:
            await manager.fetch_once()  # nothing listens yet
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        server = await serve_ca(material, port)
        try:
            cert = await manager.fetch_once()
            assert cert.root_pem.decode() == material.root_pem
        finally:
            await provider.close()
            await server.stop(grace=0)

    asyncio.run(scenario())
