"""The mesh CA end to end against the real test bed apiserver: real tokens, real TokenReview.

Each test runs a real ``grpc.aio`` server with :class:`CertificateService` on loopback and
calls it over the wire, either with a raw gRPC stub (to see the status codes) or with the
agent's own :class:`GrpcCAProvider`.

Expired tokens: the TokenRequest API will not mint a token shorter than 10 minutes, so the
expired token is a real one re-signed with the test bed's own service-account signing key and
its times moved into the past; the apiserver itself is shown to accept the re-signed token
with its original times and to refuse the expired one. Tokens that were valid once are
refused too: one bound to a Secret that was then deleted, one whose ServiceAccount was deleted.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from kubernetes import client

from controlplane.ca.authn import TokenReviewAuthenticator
from controlplane.ca.authority import CAMaterial, issue_serving
from controlplane.ca.service import CAOptions, CertificateService
from meshlib import ca_api
from sidecar.ca_client import CARefused, GrpcCAProvider
from sidecar.identity import CertificateManager, make_csr

pytestmark = pytest.mark.testbed

TD = "cluster.local"


@pytest.fixture(scope="module")
def material() -> CAMaterial:
    return CAMaterial.self_signed(TD)


@pytest.fixture
def namespace(testbed: Any, unique_name: str) -> Iterator[str]:
    testbed.create_namespace(unique_name)
    core = client.CoreV1Api(testbed.api_client())
    for sa in ("alpha", "beta"):
        core.create_namespaced_service_account(
            unique_name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa))
        )
    yield unique_name
    core.delete_namespace(unique_name)


def request_token(
    testbed: Any,
    namespace: str,
    sa: str,
    audience: str = "istio-ca",
    bound_secret: str | None = None,
) -> str:
    core = client.CoreV1Api(testbed.api_client())
    spec = client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600)
    if bound_secret:
        secret = core.read_namespaced_secret(bound_secret, namespace)
        spec.bound_object_ref = client.V1BoundObjectReference(
            api_version="v1", kind="Secret", name=bound_secret, uid=secret.metadata.uid
        )
    result = core.create_namespaced_service_account_token(
        sa, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    token: str = result.status.token
    return token


async def with_server(
    testbed: Any,
    material: CAMaterial,
    body: Callable[[str, CertificateService], Awaitable[None]],
    *,
    tls: bool = False,
) -> None:
    service = CertificateService(
        material,
        TokenReviewAuthenticator(testbed.api_client()),
        options=CAOptions(trust_domain=TD, default_ttl=dt.timedelta(hours=24)),
    )
    server = grpc.aio.server()
    service.add_to(server)
    if tls:
        pair, _ = issue_serving(material, ("istiod.istio-system.svc", "localhost"))
        creds = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await body(f"127.0.0.1:{port}", service)
    finally:
        await server.stop(0)


async def call(address: str, token: str | None, csr: bytes, validity: int = 0) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel.unary_unary(
            ca_api.CREATE_CERTIFICATE_PATH,
            request_serializer=ca_api.serialize,
            response_deserializer=ca_api.parse_response,
        )
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        request = ca_api.IstioCertificateRequest(csr=csr.decode(), validity_duration=validity)
        return await stub(request, metadata=metadata, timeout=10)


async def refused(address: str, token: str | None, csr: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(address, token, csr)
    return info.value


def spiffe(ns: str, sa: str) -> str:
    return f"spiffe://{TD}/ns/{ns}/sa/{sa}"


def test_own_identity_is_signed(testbed: Any, namespace: str, material: CAMaterial) -> None:
    token = request_token(testbed, namespace, "alpha")
    _, csr = make_csr(spiffe(namespace, "alpha"))

    async def body(address: str, service: CertificateService) -> None:
        response = await call(address, token, csr, validity=3600)
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in response.cert_chain]
        leaf, root = chain[0], chain[-1]
        assert root == material.root
        leaf.verify_directly_issued_by(root)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.critical
        assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
            spiffe(namespace, "alpha")
        ]
        lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
        assert dt.timedelta(minutes=58) < lifetime <= dt.timedelta(hours=1)
        assert service.metrics.issued._value.get() == 1

    asyncio.run(with_server(testbed, material, body))


def test_refusals_say_what_was_wrong(testbed: Any, namespace: str, material: CAMaterial) -> None:
    alpha = request_token(testbed, namespace, "alpha")
    wrong_aud = request_token(testbed, namespace, "alpha", audience="not-the-ca")
    _, csr_beta = make_csr(spiffe(namespace, "beta"))
    _, csr_alpha = make_csr(spiffe(namespace, "alpha"))

    async def body(address: str, service: CertificateService) -> None:
        other = await refused(address, alpha, csr_beta)
        assert other.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"asks for {spiffe(namespace, 'beta')}" in (other.details() or "")
        assert spiffe(namespace, "alpha") in (other.details() or "")

        aud = await refused(address, wrong_aud, csr_alpha)
        assert aud.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "audience" in (aud.details() or "") and "istio-ca" in (aud.details() or "")

        missing = await refused(address, None, csr_alpha)
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in (missing.details() or "")

        forged = alpha[:-8] + ("A" * 8 if not alpha.endswith("A" * 8) else "B" * 8)
        bad = await refused(address, forged, csr_alpha)
        assert bad.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "apiserver rejected the token" in (bad.details() or "")

        refused_by = {
            s.labels["reason"]: s.value
            for m in service.metrics.refused.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }
        assert refused_by == {
            "identity_mismatch": 1,
            "wrong_audience": 1,
            "no_token": 1,
            "invalid_token": 1,
        }

    asyncio.run(with_server(testbed, material, body))


def resign(testbed: Any, token: str, **claims: Any) -> str:
    """``token`` with ``claims`` changed, signed again with the test bed's service-account key."""
    header, payload, _ = token.split(".")

    def decode(part: str) -> Any:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    def encode(data: Any) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    assert decode(header)["alg"] == "ES256"  # the test bed's key is EC P-256
    key = serialization.load_pem_private_key(
        (Path(testbed.state.workdir) / "pki" / "sa.key").read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signed = f"{header}.{encode({**decode(payload), **claims})}"
    r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{signed}.{signature.rstrip(b'=').decode()}"


def token_review(testbed: Any, token: str) -> Any:
    review = client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=token, audiences=["istio-ca"])
    )
    return client.AuthenticationV1Api(testbed.api_client()).create_token_review(review).status


def test_an_expired_token_is_refused(testbed: Any, namespace: str, material: CAMaterial) -> None:
    real = request_token(testbed, namespace, "alpha")
    # The re-signing is sound: the apiserver accepts a re-signed copy with the same times ...
    assert token_review(testbed, resign(testbed, real)).authenticated is True
    now = int(time.time())
    expired = resign(testbed, real, iat=now - 3600, nbf=now - 3600, exp=now - 1200)
    # ... and refuses it once expired (beyond any clock-skew leeway).
    status = token_review(testbed, expired)
    assert status.authenticated is not True and "expired" in (status.error or "")
    _, csr = make_csr(spiffe(namespace, "alpha"))

    async def body(address: str, service: CertificateService) -> None:
        error = await refused(address, expired, csr)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token expired" in (error.details() or ""), error.details()
        assert "read the token file again" in (error.details() or "")
        assert (await call(address, real, csr)).cert_chain  # the same caller, unexpired: signed

    asyncio.run(with_server(testbed, material, body))


def test_dead_tokens_are_refused(testbed: Any, namespace: str, material: CAMaterial) -> None:
    """Tokens that were valid once: bound object deleted; service account deleted."""
    core = client.CoreV1Api(testbed.api_client())
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="binding"))
    )
    bound = request_token(testbed, namespace, "alpha", bound_secret="binding")
    beta = request_token(testbed, namespace, "beta")
    _, csr_alpha = make_csr(spiffe(namespace, "alpha"))
    _, csr_beta = make_csr(spiffe(namespace, "beta"))

    async def body(address: str, service: CertificateService) -> None:
        # Both work while their objects live ...
        assert (await call(address, bound, csr_alpha)).cert_chain
        assert (await call(address, beta, csr_beta)).cert_chain
        core.delete_namespaced_secret("binding", namespace)
        core.delete_namespaced_service_account("beta", namespace)
        # ... and not after. kube-apiserver caches a successful token authentication for
        # 10 s, so a deleted bound Secret takes up to that long to count (measured: 10.05 s);
        # a deleted ServiceAccount counts at once.
        for token, csr in ((bound, csr_alpha), (beta, csr_beta)):
            deadline = time.monotonic() + 20
            while True:
                try:
                    await call(address, token, csr)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "apiserver rejected the token" in (exc.details() or "")
                    break
                assert time.monotonic() < deadline, "a token of a deleted object still works"
                await asyncio.sleep(0.2)

    asyncio.run(with_server(testbed, material, body))


def test_agent_client_gets_certificate_over_tls(
    testbed: Any, namespace: str, material: CAMaterial, tmp_path: Path
) -> None:
    token_file = tmp_path / "istio-token"
    root_file = tmp_path / "root-cert.pem"
    root_file.write_text(material.root_pem)

    async def body(address: str, service: CertificateService) -> None:
        provider = GrpcCAProvider(
            address,
            token_path=token_file,
            root_cert_path=root_file,
            server_name="istiod.istio-system.svc",
        )
        manager = CertificateManager(provider, spiffe(namespace, "alpha"))
        try:
            token_file.write_text(request_token(testbed, namespace, "alpha"))
            cert = await manager.fetch_once()
            assert cert.root_pem.decode() == material.root_pem
            assert cert.not_after - cert.not_before > dt.timedelta(hours=23)
            # The token file is read on every call: a token of another account is refused.
            token_file.write_text(request_token(testbed, namespace, "beta"))
            with pytest.raises(CARefused) as info:
                await manager.fetch_once()
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "refused the certificate request: PERMISSION_DENIED" in str(info.value)
        finally:
            await provider.close()

    asyncio.run(with_server(testbed, material, body, tls=True))


def test_agent_client_refuses_an_unknown_ca(
    testbed: Any, namespace: str, material: CAMaterial, tmp_path: Path
) -> None:
    """TLS is verified: a CA served with another root's certificate is not trusted."""
    token_file = tmp_path / "istio-token"
    token_file.write_text(request_token(testbed, namespace, "alpha"))
    other_root = tmp_path / "root-cert.pem"
    other_root.write_text(CAMaterial.self_signed(TD).root_pem)

    async def body(address: str, service: CertificateService) -> None:
        provider = GrpcCAProvider(
            address,
            token_path=token_file,
            root_cert_path=other_root,
            server_name="istiod.istio-system.svc",
            timeout_s=3,
        )
        try:
            with pytest.raises(CARefused) as info:
                await provider.sign(make_csr(spiffe(namespace, "alpha"))[1])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
        finally:
            await provider.close()
        assert service.metrics.issued._value.get() == 0

    asyncio.run(with_server(testbed, material, body, tls=True))
