"""The workload's identity: its private key, its SPIFFE certificate, and keeping it fresh.

The agent generates a key (kept in memory only, never written to disk), sends a CSR for
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` to a
:class:`CertificateProvider`, and renews at about half the certificate's life, with jitter
so a fleet started together does not renew together, and with retries (exponential backoff)
while the old certificate is still valid. Every new certificate wakes the SDS server, which
pushes it to Envoy; Envoy uses it for new connections without a restart.

Providers: :class:`LocalCAProvider` signs with a CA key pair on disk (tests, local runs);
the mesh CA client (gRPC, authenticated by the pod's service-account token) plugs in later
through the same interface.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshlib import certs
from meshlib.certs import KeyPair, key_to_pem
from sidecar.errors import CertificateError

log = logging.getLogger(__name__)

DEFAULT_RENEW_RATIO = 0.5  # Istio's SECRET_GRACE_PERIOD_RATIO
DEFAULT_RENEW_JITTER = 0.01  # Istio's SECRET_GRACE_PERIOD_RATIO_JITTER
DEFAULT_WORKLOAD_TTL = dt.timedelta(hours=24)


class CertificateProvider(Protocol):
    """Signs a workload CSR; returns ``(certificate chain PEM, leaf first; mesh root PEM)``."""

    async def sign(self, csr_pem: bytes) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True)
class WorkloadCertificate:
    """What SDS serves: the chain and key (``default``) and the root (``ROOTCA``)."""

    chain_pem: bytes
    key_pem: bytes
    root_pem: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    received_at: dt.datetime  # CAs back-date not_before; renewal counts from here

    @property
    def usable_from(self) -> dt.datetime:
        return max(self.not_before, self.received_at)


def make_csr(spiffe_id: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh P-256 key and a CSR naming only ``spiffe_id`` (empty subject, like Istio)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def renewal_delay(
    not_before: dt.datetime,
    not_after: dt.datetime,
    now: dt.datetime,
    *,
    ratio: float = DEFAULT_RENEW_RATIO,
    jitter: float = DEFAULT_RENEW_JITTER,
    sample: float = 0.5,
) -> float:
    """Seconds until renewal: ``ratio`` of the lifetime, +- ``jitter`` of it (``sample`` in [0,1]).

    ``not_before`` should be when the certificate became usable to us (CAs back-date it to
    absorb clock skew; counting from the back-dated time would renew a short-lived
    certificate in a tight loop). Never negative: an already-stale certificate is renewed
    at once.
    """
    lifetime = (not_after - not_before).total_seconds()
    fraction = ratio + jitter * (2.0 * sample - 1.0)
    renew_at = not_before + dt.timedelta(seconds=lifetime * fraction)
    return max(0.0, (renew_at - now).total_seconds())


def retry_delay(
    attempt: int, *, base: float = 1.0, cap: float = 60.0, sample: float = 1.0
) -> float:
    """Exponential backoff with full jitter: attempt 0 waits up to ``base``, doubling to ``cap``."""
    return min(cap, base * (2**attempt)) * sample


def _chain_matches_key(
    chain_pem: bytes, key: ec.EllipticCurvePrivateKey, spiffe_id: str
) -> x509.Certificate:
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError as exc:
        raise CertificateError(f"the CA returned no readable certificate: {exc}") from exc
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise CertificateError("the CA returned a certificate for another key")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if spiffe_id not in uris:
        raise CertificateError(f"the CA returned a certificate for {uris}, not {spiffe_id}")
    return leaf


class LocalCAProvider:
    """Signs CSRs with a CA key pair on disk: for tests and for running without a mesh CA.

    ``ca_dir`` holds ``ca-cert.pem`` and ``ca-key.pem`` (the names of Istio's ``cacerts``
    secret), optionally ``cert-chain.pem`` (intermediates up to the root, appended to every
    chain) and ``root-cert.pem`` (the root; defaults to ``ca-cert.pem``). The files are read
    once; the signed certificate carries exactly the SPIFFE URIs of the CSR.
    """

    def __init__(self, ca_dir: Path, *, ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL) -> None:
        missing = [n for n in ("ca-cert.pem", "ca-key.pem") if not (ca_dir / n).is_file()]
        if missing:
            raise CertificateError(
                f"{ca_dir} has no {' or '.join(missing)}: point --ca-dir at a directory holding "
                "the CA certificate and key (e.g. from 'kubectl get secret cacerts')"
            )
        self._ca = KeyPair(
            (ca_dir / "ca-cert.pem").read_bytes(), (ca_dir / "ca-key.pem").read_bytes()
        )
        chain = ca_dir / "cert-chain.pem"
        root = ca_dir / "root-cert.pem"
        self._intermediates = chain.read_bytes() if chain.is_file() else b""
        self._root = root.read_bytes() if root.is_file() else self._ca.cert_pem
        self._ttl = ttl

    async def sign(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        return self.sign_now(csr_pem), self._root

    def sign_now(self, csr_pem: bytes, now: dt.datetime | None = None) -> bytes:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CertificateError(f"not a PEM certificate request: {exc}") from exc
        if not csr.is_signature_valid:
            raise CertificateError("the certificate request's signature does not verify")
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise CertificateError("the certificate request names no SPIFFE ID") from exc
        uris = list(sans.get_values_for_type(x509.UniformResourceIdentifier))
        if not uris or not all(u.startswith("spiffe://") for u in uris):
            raise CertificateError(f"the certificate request must name SPIFFE IDs only, not {uris}")
        ca_cert, ca_key = self._ca.cert, self._ca.key
        start = now or dt.datetime.now(dt.UTC)
        cert = certs.workload_certificate(
            ca_cert,
            ca_key,
            csr.public_key(),  # type: ignore[arg-type]
            uris,
            not_before=start - dt.timedelta(minutes=1),
            not_after=start + self._ttl,
        )
        leaf = cert.public_bytes(serialization.Encoding.PEM)
        return (
            leaf
            + (b"" if self._ca.cert_pem == self._root else self._ca.cert_pem)
            + self._intermediates
        )


@dataclass(frozen=True)
class RenewalPolicy:
    """When a certificate is renewed, and how a failed request is retried.

    Istio's ``SECRET_GRACE_PERIOD_RATIO`` and ``..._JITTER``: renew at ``ratio`` of the
    certificate's life, give or take ``jitter`` of it so that a fleet started together does
    not renew together. A failed request is retried with exponential backoff from
    ``retry_base_s`` up to ``retry_cap_s``, while the old certificate is still valid.
    """

    ratio: float = DEFAULT_RENEW_RATIO
    jitter: float = DEFAULT_RENEW_JITTER
    retry_base_s: float = 1.0
    retry_cap_s: float = 60.0


class CertificateManager:
    """Holds the current workload certificate and renews it before it expires.

    ``current`` is None until the first certificate arrives; ``changed`` is set (and replaced)
    on every new certificate so that SDS streams can wait for rotations.
    """

    def __init__(
        self,
        provider: CertificateProvider,
        spiffe_id: str,
        *,
        policy: RenewalPolicy = RenewalPolicy(),
        rng: random.Random | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_rotate: Callable[[WorkloadCertificate], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.provider = provider
        self.spiffe_id = spiffe_id
        self.current: WorkloadCertificate | None = None
        self._policy = policy
        self._rng = rng or random.Random()
        self._clock = clock
        self._on_rotate = on_rotate
        self._on_failure = on_failure
        self._changed = asyncio.Event()
        self._generation = 0

    @property
    def generation(self) -> int:
        """How many certificates have been obtained so far (0: none yet)."""
        return self._generation

    async def wait_for_change(self, seen_generation: int) -> int:
        """Return once a certificate newer than ``seen_generation`` exists; its generation."""
        while self._generation <= seen_generation:
            event = self._changed
            await event.wait()
        return self._generation

    async def fetch_once(self) -> WorkloadCertificate:
        """Generate a key, get it signed, check the answer, and make it current."""
        key, csr = make_csr(self.spiffe_id)
        chain, root = await self.provider.sign(csr)
        leaf = _chain_matches_key(chain, key, self.spiffe_id)
        if not root.strip():
            raise CertificateError("the CA returned no root certificate")
        cert = WorkloadCertificate(
            chain_pem=chain,
            key_pem=key_to_pem(key),
            root_pem=root,
            serial=leaf.serial_number,
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            received_at=self._clock(),
        )
        self.current = cert
        self._generation += 1
        old, self._changed = self._changed, asyncio.Event()
        old.set()
        log.info(
            "workload certificate obtained",
            extra={
                "spiffe_id": self.spiffe_id,
                "serial": f"{cert.serial:x}",
                "not_after": cert.not_after.isoformat(),
            },
        )
        if self._on_rotate:
            self._on_rotate(cert)
        return cert

    async def run(self) -> None:
        """Obtain the first certificate, then renew forever (cancel to stop)."""
        while True:
            if self.current is not None:
                await asyncio.sleep(self._until_renewal(self.current))
            await self._fetch_until_obtained()

    def _until_renewal(self, current: WorkloadCertificate) -> float:
        delay = renewal_delay(
            current.usable_from,
            current.not_after,
            self._clock(),
            ratio=self._policy.ratio,
            jitter=self._policy.jitter,
            sample=self._rng.random(),
        )
        log.debug("next certificate renewal", extra={"in_seconds": round(delay, 1)})
        return delay

    async def _fetch_until_obtained(self) -> None:
        attempt = 0
        while True:
            try:
                await self.fetch_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = retry_delay(
                    attempt,
                    base=self._policy.retry_base_s,
                    cap=self._policy.retry_cap_s,
                    sample=self._rng.random(),
                )
                attempt += 1
                log.warning(
                    "workload certificate request failed; retrying",
                    extra={"error": str(exc), "attempt": attempt, "retry_in_s": round(wait, 2)},
                )
                if self._on_failure:
                    self._on_failure(exc)
                await asyncio.sleep(wait)
