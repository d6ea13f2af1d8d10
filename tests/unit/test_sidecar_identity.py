"""Workload identity: CSR signing by the local CA, renewal timing and retries, and the SDS
server pushing rotations to a real gRPC client over a unix socket."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from meshlib.certs import new_ca
from sidecar.identity import (
    CertificateError,
    CertificateManager,
    LocalCAProvider,
    RenewalPolicy,
    make_csr,
    renewal_delay,
    retry_delay,
)
from sidecar.sds import SECRET_TYPE, SecretDiscoveryServer, start_sds_server

SPIFFE = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    ca = new_ca("test-mesh-root")
    (tmp_path / "ca-cert.pem").write_bytes(ca.cert_pem)
    (tmp_path / "ca-key.pem").write_bytes(ca.key_pem)
    return tmp_path


def test_renewal_at_half_life_with_bounded_jitter() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=24)
    hours = [renewal_delay(start, end, start, sample=s) / 3600 for s in (0.0, 0.5, 1.0)]
    assert hours == pytest.approx([11.76, 12.0, 12.24])
    # Already past the renewal point (e.g. the agent was suspended): renew now.
    assert renewal_delay(start, end, start + dt.timedelta(hours=20)) == 0.0


def test_retry_backoff_doubles_up_to_the_cap() -> None:
    assert [retry_delay(a, base=1, cap=10) for a in range(6)] == [1, 2, 4, 8, 10, 10]
    assert retry_delay(3, base=1, cap=10, sample=0.5) == 4


def test_local_ca_signs_exactly_the_requested_spiffe_id(ca_dir: Path) -> None:
    provider = LocalCAProvider(ca_dir, ttl=dt.timedelta(hours=24))
    key, csr = make_csr(SPIFFE)
    chain, root = asyncio.run(provider.sign(csr))
    leaf = x509.load_pem_x509_certificates(chain)[0]
    ca_cert = x509.load_pem_x509_certificate(root)
    leaf.verify_directly_issued_by(ca_cert)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.critical
    assert sans.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE]
    assert leaf.subject == x509.Name([])
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(hours=24) <= lifetime <= dt.timedelta(hours=24, minutes=2)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


def test_local_ca_refuses_what_it_should_not_sign(ca_dir: Path, tmp_path: Path) -> None:
    provider = LocalCAProvider(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import hashes, serialization

    dns_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CertificateError, match="SPIFFE"):
        provider.sign_now(dns_csr)
    with pytest.raises(CertificateError, match="not a PEM"):
        provider.sign_now(b"garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CertificateError, match="--ca-dir"):
        LocalCAProvider(empty)


class _WrongKeyProvider:
    """A CA that answers with a certificate for a key the agent does not hold."""

    def __init__(self, inner: LocalCAProvider) -> None:
        self.inner = inner

    async def sign(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        _, other_csr = make_csr(SPIFFE)
        return await self.inner.sign(other_csr)


class _FlakyProvider:
    def __init__(self, inner: LocalCAProvider, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    async def sign(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("CA unavailable")
        return await self.inner.sign(csr_pem)


def test_manager_rejects_a_certificate_for_another_key(ca_dir: Path) -> None:
    manager = CertificateManager(_WrongKeyProvider(LocalCAProvider(ca_dir)), SPIFFE)
    with pytest.raises(CertificateError, match="another key"):
        asyncio.run(manager.fetch_once())
    assert manager.current is None


def test_manager_retries_then_renews_before_expiry(ca_dir: Path) -> None:
    flaky = _FlakyProvider(LocalCAProvider(ca_dir, ttl=dt.timedelta(seconds=2)), failures=2)
    failures: list[BaseException] = []
    manager = CertificateManager(
        flaky,
        SPIFFE,
        policy=RenewalPolicy(retry_base_s=0.01),
        rng=random.Random(7),
        on_failure=failures.append,
    )

    async def scenario() -> tuple[int, int, float]:
        task = asyncio.create_task(manager.run())
        try:
            first = await asyncio.wait_for(manager.wait_for_change(0), 2)
            calls_after_first = flaky.calls
            # A 2 s certificate (back-dated by a minute; X.509 times have whole seconds, so
            # it lives 1-2 s from now) is renewed at half of that, not at once, not in a loop.
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(manager.wait_for_change(1), 3)
            return first, calls_after_first, loop.time() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    first, calls, renewed_after = asyncio.run(scenario())
    assert first == 1
    assert calls == 3
    assert len(failures) == 2
    assert 0.3 <= renewed_after <= 3.0
    assert flaky.calls == 4


def test_manager_renews_at_the_configured_fraction_of_life(ca_dir: Path) -> None:
    """A 24 h certificate renewed at 2e-6 of its life: the next one comes ~0.17 s later."""
    provider = LocalCAProvider(ca_dir, ttl=dt.timedelta(hours=24))
    manager = CertificateManager(provider, SPIFFE, policy=RenewalPolicy(ratio=2e-6, jitter=0.0))

    async def scenario() -> tuple[list[int], float]:
        task = asyncio.create_task(manager.run())
        try:
            await asyncio.wait_for(manager.wait_for_change(0), 2)
            first = manager.current.serial  # type: ignore[union-attr]
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(manager.wait_for_change(1), 2)
            took = asyncio.get_running_loop().time() - started
            return [first, manager.current.serial], took  # type: ignore[union-attr]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    serials, took = asyncio.run(scenario())
    assert serials[0] != serials[1]
    assert 0.1 <= took <= 3.0


def test_sds_serves_and_pushes_rotations_over_a_unix_socket(ca_dir: Path, tmp_path: Path) -> None:
    manager = CertificateManager(LocalCAProvider(ca_dir), SPIFFE)
    pushed: list[str] = []
    socket_path = str(tmp_path / "sds" / "SDS")

    async def scenario() -> None:
        server = await start_sds_server(
            SecretDiscoveryServer(manager, on_push=pushed.append), socket_path
        )
        assert Path(socket_path).stat().st_mode & 0o777 == 0o600
        try:
            async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
                stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
                requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

                async def outgoing():  # type: ignore[no-untyped-def]
                    while (item := await requests.get()) is not None:
                        yield item

                call = stub.StreamSecrets(outgoing())
                responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()

                async def pump() -> None:
                    async for response in call:
                        await responses.put(response)

                pump_task = asyncio.create_task(pump())
                await requests.put(
                    discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=["default"])
                )
                # No certificate yet: nothing comes until the first one exists.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(responses.get(), 0.3)
                await manager.fetch_once()
                first = await asyncio.wait_for(responses.get(), 2)
                secret = secret_pb2.Secret()
                first.resources[0].Unpack(secret)
                assert secret.name == "default"
                assert b"BEGIN CERTIFICATE" in secret.tls_certificate.certificate_chain.inline_bytes
                assert b"PRIVATE KEY" in secret.tls_certificate.private_key.inline_bytes
                # ACK: no answer.
                await requests.put(
                    discovery_pb2.DiscoveryRequest(
                        type_url=SECRET_TYPE,
                        resource_names=["default"],
                        version_info=first.version_info,
                        response_nonce=first.nonce,
                    )
                )
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(responses.get(), 0.3)
                # Rotation: pushed without being asked.
                await manager.fetch_once()
                second = await asyncio.wait_for(responses.get(), 2)
                rotated = secret_pb2.Secret()
                second.resources[0].Unpack(rotated)
                assert second.version_info != first.version_info
                assert (
                    rotated.tls_certificate.certificate_chain.inline_bytes
                    != secret.tls_certificate.certificate_chain.inline_bytes
                )
                # ROOTCA on a second stream carries the mesh root.
                root_call = stub.FetchSecrets(
                    discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE, resource_names=["ROOTCA"])
                )
                root_response = await root_call
                root = secret_pb2.Secret()
                root_response.resources[0].Unpack(root)
                assert (
                    root.validation_context.trusted_ca.inline_bytes
                    == (ca_dir / "ca-cert.pem").read_bytes()
                )
                await requests.put(None)
                call.cancel()
                await asyncio.gather(pump_task, return_exceptions=True)
        finally:
            await server.stop(grace=0)

    asyncio.run(scenario())
    assert pushed == ["default", "default"]


def test_delta_sds_sends_new_subscriptions_and_changes_only(ca_dir: Path, tmp_path: Path) -> None:
    manager = CertificateManager(LocalCAProvider(ca_dir), SPIFFE)
    socket_path = str(tmp_path / "SDS")

    def names_of(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
        return sorted(r.name for r in response.resources)

    async def scenario() -> None:
        await manager.fetch_once()
        server = await start_sds_server(SecretDiscoveryServer(manager), socket_path)
        try:
            async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
                stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
                requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = (
                    asyncio.Queue()
                )

                async def outgoing():  # type: ignore[no-untyped-def]
                    while (item := await requests.get()) is not None:
                        yield item

                call = stub.DeltaSecrets(outgoing())
                responses: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()

                async def pump() -> None:
                    async for response in call:
                        await responses.put(response)

                pump_task = asyncio.create_task(pump())
                await requests.put(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=SECRET_TYPE, resource_names_subscribe=["default", "ROOTCA"]
                    )
                )
                first = await asyncio.wait_for(responses.get(), 2)
                assert names_of(first) == ["ROOTCA", "default"]
                # ACK, and a new subscription to an already-sent name: nothing to send.
                await requests.put(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=SECRET_TYPE, response_nonce=first.nonce
                    )
                )
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(responses.get(), 0.3)
                await requests.put(
                    discovery_pb2.DeltaDiscoveryRequest(
                        type_url=SECRET_TYPE, resource_names_unsubscribe=["ROOTCA"]
                    )
                )
                await asyncio.sleep(0.1)
                await manager.fetch_once()
                rotated = await asyncio.wait_for(responses.get(), 2)
                assert names_of(rotated) == ["default"]
                assert rotated.resources[0].version != first.resources[0].version
                await requests.put(None)
                call.cancel()
                await asyncio.gather(pump_task, return_exceptions=True)
        finally:
            await server.stop(grace=0)

    asyncio.run(scenario())


def _reachable_sockets(root: Path) -> list[tuple[Path, int]]:
    """Unix sockets under ``root`` that another uid could open: every directory on the way
    lets others through and the socket lets them write (connect needs write permission)."""
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            candidate = Path(directory) / name
            mode = candidate.lstat().st_mode
            if not stat.S_ISSOCK(mode):
                continue
            chain = [candidate.parent, *candidate.parent.parents]
            dirs_open = all(
                d.stat().st_mode & 0o011 for d in chain if d == root or root in d.parents
            )
            if dirs_open and mode & 0o022:
                found.append((candidate, mode & 0o777))
    return found


def test_sds_socket_is_never_reachable_by_others(
    ca_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with umask 0 (sockets bound 0777 in a 0777 volume), no instant between the bind
    and serving lets another uid connect to the socket that hands out the private key."""
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o777)
    volume.chmod(0o777)
    socket_path = volume / "SDS"
    socket_path.write_text("stale socket from a previous run")
    exposed: list[list[tuple[Path, int]]] = []
    real_start = grpc.aio._server.Server.start

    async def observed_start(self: Any) -> None:
        exposed.append(_reachable_sockets(volume))  # bound, not yet serving
        await real_start(self)
        exposed.append(_reachable_sockets(volume))  # serving

    monkeypatch.setattr(grpc.aio._server.Server, "start", observed_start)
    manager = CertificateManager(LocalCAProvider(ca_dir), SPIFFE)

    async def scenario() -> None:
        await manager.fetch_once()
        server = await start_sds_server(SecretDiscoveryServer(manager), str(socket_path))
        try:
            assert socket_path.stat().st_mode & 0o777 == 0o600
            assert stat.S_ISSOCK(socket_path.stat().st_mode)
            assert sorted(p.name for p in volume.iterdir()) == ["SDS"]  # no leftovers
            async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
                stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
                response = await stub.FetchSecrets(
                    discovery_pb2.DiscoveryRequest(resource_names=["ROOTCA"]), timeout=5
                )
                assert len(response.resources) == 1
        finally:
            await server.stop(grace=0)

    old_umask = os.umask(0)
    try:
        asyncio.run(scenario())
    finally:
        os.umask(old_umask)
    assert exposed == [[], []]
